"""Studies: the measurements that justify the kernels and their approximations.

Research code beside the library: it uses only the public API of :mod:`autotune` and the kernels
in :mod:`kernels` (plus its own emulated low-precision kernels in :mod:`studies.lowprec`), and
needs the ``[studies]`` extra (``pip install 'autotune[studies]'``), which the core does not.

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
    "precision": "studies.precision",
    "svd-rank": "studies.svd_rank",
    "lns": "studies.lns",
    "mnist": "studies.mnist",
}

#: Top-level modules of the ``[studies]`` extra (PIL comes with matplotlib): a study failing to
#: import one of these means the extra is not installed.
EXTRAS: frozenset[str] = frozenset({"matplotlib", "PIL", "sklearn", "skimage", "ml_dtypes"})


def load(name: str) -> ModuleType:
    """The study module called ``name`` (KeyError lists the known names)."""
    try:
        return importlib.import_module(STUDIES[name])
    except KeyError:
        raise KeyError(f"unknown study {name!r}; known: {', '.join(STUDIES)}") from None
