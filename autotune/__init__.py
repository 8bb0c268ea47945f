"""autotune: cuDNN-style algorithm *find* for the CPU.

Keeps several implementations of conv2d and matmul, times them on this machine for each problem,
rejects any whose error against a float64 reference is too large, and remembers the fastest
acceptable one in a YAML database (``autotune.yaml``) so later calls dispatch straight to it.

    import autotune
    y = autotune.conv2d(x, w, b, padding=1)     # tunes on first sight, then a dict lookup
    c = autotune.matmul(a, b)
"""

import kernels  # noqa: F401  (first: sets the OpenMP wait policy before numba/torch load)

__version__ = "0.1.0"

from autotune.api import conv2d, get_mode, matmul, reset, set_mode, tune
from autotune.problem import ConvProblem, MatmulProblem, parse_problem
from autotune.tuner import set_tolerance
from autotune.weights import Weight
from kernels.matmul.lowrank import LowRank

__all__ = [
    "ConvProblem",
    "LowRank",
    "MatmulProblem",
    "Weight",
    "__version__",
    "conv2d",
    "get_mode",
    "matmul",
    "parse_problem",
    "reset",
    "set_mode",
    "set_tolerance",
    "tune",
]
