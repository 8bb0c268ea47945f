"""The evaluator: inputs, the float64 reference and error metrics for one problem.

Everything that judges a candidate's output lives here, shared by the tuner (which chooses) and
``bench`` (which reports): seeded random operands per problem, the exact float64 output of the
reference kernel, and the two error metrics every verdict records.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from autotune.problem import Problem


def problem_seed(problem: Problem) -> int:
    """A stable seed per problem, so every run (and process) tunes on the same inputs."""
    return zlib.crc32(problem.key.encode())


def random_inputs(problem: Problem, seed: int | None = None) -> tuple[np.ndarray, ...]:
    """Seeded standard-normal operands of the problem's shapes and dtype."""
    return problem.random_inputs(np.random.default_rng(problem_seed(problem) if seed is None else seed))


def rel_max_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``max|y − ref| / max(max|ref|, tiny)`` in float64."""
    diff = np.abs(np.asarray(y, dtype=np.float64) - ref)
    return float(diff.max() / max(float(np.abs(ref).max()), np.finfo(np.float64).tiny))


def rel_l2_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``‖y − ref‖₂ / max(‖ref‖₂, tiny)`` in float64."""
    diff = np.linalg.norm(np.asarray(y, dtype=np.float64) - ref)
    return float(diff / max(float(np.linalg.norm(ref)), np.finfo(np.float64).tiny))


def reference_output(problem: Problem, args: tuple[Any, ...]) -> np.ndarray:
    """The exact float64 output of a call with ``args`` (:meth:`Problem.exact`)."""
    return problem.exact(args)
