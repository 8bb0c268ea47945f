"""The ``autotune`` command (also ``python -m autotune``): tune ahead of time, inspect, benchmark.

The verbs (the command-line contract) are listed in README.md, "The command". Exit status: 0
success; 2 usage error (bad arguments, bad problem syntax, unknown preset, invalid shapes file, an
``--out`` that cannot be written); 1 failure, with a one-line message (also when ``tune`` could not
save its results); 130 interrupted (Ctrl-C) — ``tune`` keeps every problem finished before the
interrupt, because each one is written to the database as soon as it is tuned. No verb prints a
traceback: a damaged database is reported in one line.

Only light modules are imported at start-up; numpy, Numba and PyTorch load with the verb that
needs them, so ``autotune --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import autotune
from autotune import cache
from autotune.bench.cli import add_bench_verb
from autotune.cli._common import CommandError, Formatter, UsageError
from autotune.cli.database import add_database_verbs, add_inspection_verbs
from autotune.cli.tune import add_tune_verb
from studies.cli import add_study_verb

__all__ = ["CommandError", "UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``autotune`` argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(
        prog="autotune",
        formatter_class=Formatter,
        description=(
            "cuDNN-style algorithm find for the CPU: time every conv2d/matmul kernel per problem,\n"
            "reject inaccurate ones, remember the fastest in a YAML database.\n\n"
            f"database: $AUTOTUNE_CACHE_DIR/{cache.FILENAME} if set, else cache/ of a writable checkout,\n"
            "else the user cache directory."
        ),
        epilog="examples:\n  autotune tune --preset seed && autotune show\n"
        "  autotune explain conv2d x=1x1x49x49 w=1x1x3x3\n"
        "  autotune bench --suite resnet18\n\n"
        "'autotune VERB --help' describes each verb.",
    )
    parser.add_argument("--version", action="version", version=f"autotune {autotune.__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_tune_verb(subparsers)
    add_inspection_verbs(subparsers)
    add_database_verbs(subparsers)
    # The verbs of the layers over the core register themselves (imported light: no numpy).
    add_bench_verb(subparsers)
    add_study_verb(subparsers)
    return parser


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings (e.g. a corrupt database moved aside) as one ``autotune: warning:`` line."""

    def show(message: Any, *_: Any, **__: Any) -> None:  # warnings.showwarning's signature
        print(f"autotune: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``autotune`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        if getattr(args, "budget", False) is None:
            from autotune.tuner import DEFAULT_BUDGET_S

            args.budget = DEFAULT_BUDGET_S
        with _one_line_warnings():
            try:
                return int(args.handler(args) or 0)
            except UsageError as exc:
                args.parser.error(str(exc))  # prints the verb's usage line; exits 2
            except CommandError as exc:
                print(f"autotune {args.verb}: error: {exc}", file=sys.stderr)
                return 1
            except BrokenPipeError:
                raise  # not a failure of the verb: handled below, quietly
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                # Last line of defence (e.g. a database file damaged in a way the schema check
                # did not foresee): one line, never a traceback.
                print(f"autotune {args.verb}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
    except SystemExit as exit_:  # argparse: --help/--version (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        print("autotune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early, e.g. `autotune show | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
