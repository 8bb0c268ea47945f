"""What every verb of the ``autotune`` command shares: errors, argument types, help layout."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune import shapes
from autotune.problem import DTYPES

PROBLEM_SYNTAX = """\
problem syntax (fields left out take the defaults in brackets):
  conv2d x=NxCxHxW w=KxCxKHxKW [stride=1] [pad=0] [dilation=1] [groups=1] [float32|float64]
  matmul a=MxK b=KxN [float32|float64]
  stride/dilation: S or SH,SW; pad: P, PH,PW or TOP,BOTTOM,LEFT,RIGHT; with groups=G w is KxC/GxKHxKW
  e.g. conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 float32"""


class UsageError(Exception):
    """The command line cannot be acted on (exit status 2)."""


class CommandError(Exception):
    """The command was understood but failed (exit status 1, one-line message)."""


def batch_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def dtype_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",")]
    bad = [v for v in values if v not in DTYPES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown dtype {bad[0]!r}; expected {', '.join(DTYPES)}")
    return values


def shard_arg(text: str) -> tuple[int, int]:
    try:
        return shapes.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive sizes joined by x (e.g. 1x3x224x224), got {text!r}"
        )
    return dims


def model_spec(text: str) -> str:
    path, sep, name = text.rpartition(":")
    if not sep or not name.isidentifier() or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"expected FILE.py:FACTORY with an existing file, got {text!r}")
    return text


def check_out_dir(path: Path, option: str = "--out") -> None:
    """UsageError unless ``path`` is, or can be created as, a writable directory — checked by
    creating it and a probe file in it before any work, so a long run never ends in a write error
    (permission bits alone say nothing for root, or on a read-only file system)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def note(message: str) -> None:
    """Progress and status lines go to stderr, so stdout carries only tables and data."""
    print(message, file=sys.stderr, flush=True)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the hand-wrapped descriptions and examples; show defaults of options that have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def verb(
    subparsers: Any, name: str, handler: Callable[[argparse.Namespace], int], summary: str, details: str = ""
) -> argparse.ArgumentParser:
    description = summary + ("\n\n" + details if details else "")
    parser = subparsers.add_parser(name, help=summary, description=description, formatter_class=Formatter)
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def add_model_options(model_group: Any, input_group: Any, model_help: str) -> None:
    """``--model FILE.py:FACTORY`` (into ``model_group``) and its ``--input NxCxHxW``."""
    model_group.add_argument(
        "--model", type=model_spec, metavar="FILE.py:FACTORY", help=f"{model_help} (needs --input)"
    )
    input_group.add_argument(
        "--input", type=shape_arg, metavar="1x3x224x224", help="the model's example input shape"
    )


def add_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        type=seconds,
        metavar="SECONDS",
        help="tuning time budget per problem (default: 5); past it the remaining candidates are timed once",
    )
