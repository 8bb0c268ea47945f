"""autotune: cuDNN-style algorithm *find* for the CPU.

Keeps several implementations of conv2d and matmul, times them on this machine for each problem,
rejects any whose error against a float64 reference is too large, and remembers the fastest
acceptable one in a YAML database (``autotune.yaml``) so later calls dispatch straight to it.

    import autotune
    y = autotune.conv2d(x, w, b, padding=1)     # tunes on first sight, then a dict lookup
    c = autotune.matmul(a, b)

The public names are imported on first use, so that ``import autotune`` (and ``autotune --help``)
does not pay for numpy, Numba and PyTorch before they are needed.
"""

import importlib
from typing import Any

import kernels  # noqa: F401  (light: the thread pool is configured when a kernel module loads)
from autotune._version import __version__

_MODULES = {
    "autotune.api": ("conv2d", "get_mode", "matmul", "reset", "set_mode", "set_tolerance", "tune"),
    "autotune.models": ("tune_model",),
    "autotune.problem": ("ConvProblem", "MatmulProblem", "parse_problem"),
    "autotune.state": ("use_cache",),
    "autotune.weights": ("Weight",),
    "kernels.matmul.lowrank": ("LowRank",),
}
#: public name → the module that defines it
_PUBLIC = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, e.g. ``autotune.tuner``) on first access."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
