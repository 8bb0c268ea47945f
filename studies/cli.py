"""``autotune study NAME``: runs one study module (see :mod:`studies`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.cli._common import (
    CommandError,
    UsageError,
    check_out_dir,
    note,
    verb,
)


def cmd_study(args: argparse.Namespace) -> int:
    import studies

    def unavailable(exc: ImportError) -> CommandError:
        message = f"study {args.name!r} is not available in this installation: {exc}"
        if (exc.name or "").split(".")[0] in studies.EXTRAS:
            message += "; install the studies' dependencies with: pip install 'autotune[studies]'"
        return CommandError(message)

    try:
        module = studies.load(args.name)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    except ImportError as exc:
        raise unavailable(exc) from None
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=f"autotune study {args.name}", description=doc)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output root (default: reports/)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run (as in the tests)")
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = getattr(module, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    options = vars(parser.parse_args(args.study_args))
    out, quick = options.pop("out"), options.pop("quick")
    check_out_dir(out)
    try:
        written = module.run(out, quick=quick, **options)
    except ImportError as exc:  # a dependency imported on first use (scikit-learn's digits)
        if (exc.name or "").split(".")[0] not in studies.EXTRAS:
            raise
        raise unavailable(exc) from None
    except (FileNotFoundError, ValueError) as exc:  # e.g. a --data directory without MNIST files
        raise CommandError(f"study {args.name}: {exc}") from None
    note(f"study {args.name}: wrote {written}")
    return 0


def add_study_verb(subparsers: Any) -> None:
    """Register ``autotune study``."""
    from studies import STUDIES

    study = verb(
        subparsers,
        "study",
        cmd_study,
        "Run a study: CSV + PNG plots + summary.md into OUT/NAME.",
        "common options: --out DIR (default reports/), --quick (small and fast).\n"
        "study-specific options: autotune study NAME --help",
    )
    study.usage = "autotune study NAME [--out DIR] [--quick] [study options]"
    study.add_argument("name", choices=list(STUDIES), metavar="NAME", help=f"one of: {', '.join(STUDIES)}")
    study.add_argument("study_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
