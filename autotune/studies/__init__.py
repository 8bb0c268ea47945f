"""Studies: the measurements that justify the kernels and their approximations.

Each study is a module here with

* ``NAME`` — the CLI name (``autotune study NAME``);
* ``add_arguments(parser: argparse.ArgumentParser) -> None`` — its extra options, if any;
* ``run(out: pathlib.Path, *, quick: bool = False, **options) -> pathlib.Path`` — computes,
  writes CSV + PNG plots + ``summary.md`` into ``out / NAME`` and returns that directory.

``--quick`` runs are small enough for the test suite (well under a minute each). Plots use
matplotlib's non-interactive Agg backend; everything runs on embedded data, no downloads.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: CLI name → module path. Adding a study means adding a module and a line here.
STUDIES: dict[str, str] = {
    "precision": "autotune.studies.precision",
    "svd-rank": "autotune.studies.svd_rank",
    "lns": "autotune.studies.lns",
    "mnist": "autotune.studies.mnist",
}


def load(name: str) -> ModuleType:
    """The study module called ``name`` (KeyError lists the known names)."""
    try:
        return importlib.import_module(STUDIES[name])
    except KeyError:
        raise KeyError(f"unknown study {name!r}; known: {', '.join(STUDIES)}") from None
