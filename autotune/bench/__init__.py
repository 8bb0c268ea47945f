"""Benchmarks over the dispatch core (``autotune bench``).

* :mod:`autotune.bench.suite` — every kernel of a suite timed side by side with the tuner's
  evaluator, against torch and this machine's peak (``bench.json``/``.md``/``.png``);
* :mod:`autotune.bench.versus` — plain PyTorch in a process of its own against the dispatcher in
  another, alternating rounds (``--vs-torch``, ``--model``);
* :mod:`autotune.bench.cli` — the verb. Importing this package is light: the CLI registers the
  verb at start-up without loading numpy.

The plots need matplotlib (the ``[studies]`` extra); without it the JSON and markdown are written
and :func:`plot_if_possible` says how to get the figure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def plot_if_possible(draw: Callable[[Any, Path], None], result: Any, path: Path) -> list[Path]:
    """``[path]`` after ``draw(result, path)``; ``[]`` with a note on stderr when matplotlib is
    not installed (the numbers are in the JSON and markdown either way)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            f"no plot ({path.name}): matplotlib is not installed; pip install 'autotune[studies]'",
            file=sys.stderr,
        )
        return []
    draw(result, path)
    return [path]
