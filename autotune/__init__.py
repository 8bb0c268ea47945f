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

#: public name → the module that defines it
_PUBLIC = {
    "conv2d": "autotune.api",
    "get_mode": "autotune.api",
    "matmul": "autotune.api",
    "reset": "autotune.api",
    "set_mode": "autotune.api",
    "set_tolerance": "autotune.api",
    "tune": "autotune.api",
    "tune_model": "autotune.models",
    "use_cache": "autotune.state",
    "ConvProblem": "autotune.problem",
    "MatmulProblem": "autotune.problem",
    "parse_problem": "autotune.problem",
    "Weight": "autotune.weights",
    "LowRank": "kernels.matmul.lowrank",
}

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
