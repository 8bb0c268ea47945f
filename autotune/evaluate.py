"""The evaluator: inputs, the float64 reference and error metrics for one problem.

Everything that judges a candidate's output lives here, shared by the tuner (which chooses) and
``bench`` (which reports): seeded random operands per problem, the exact float64 output of the
reference kernel, and the two error metrics every verdict records.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from autotune.problem import ConvProblem, Problem
from kernels import registry


def problem_seed(problem: Problem) -> int:
    """A stable seed per problem, so every run (and process) tunes on the same inputs."""
    return zlib.crc32(problem.key.encode())


def random_inputs(problem: Problem, seed: int | None = None) -> tuple[np.ndarray, ...]:
    """Seeded standard-normal operands of the problem's shapes and dtype."""
    rng = np.random.default_rng(problem_seed(problem) if seed is None else seed)
    dtype = np.dtype(problem.dtype)

    def normal(shape: Sequence[int]) -> np.ndarray:
        return rng.standard_normal(tuple(shape)).astype(dtype)

    if isinstance(problem, ConvProblem):
        return normal(problem.x_shape), normal(problem.w_shape), normal(problem.w_shape[:1])
    return normal(problem.a_shape), normal(problem.b_shape)


def rel_max_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``max|y − ref| / max(max|ref|, tiny)`` in float64."""
    diff = np.abs(np.asarray(y, dtype=np.float64) - ref)
    return float(diff.max() / max(float(np.abs(ref).max()), np.finfo(np.float64).tiny))


def rel_l2_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``‖y − ref‖₂ / max(‖ref‖₂, tiny)`` in float64."""
    diff = np.linalg.norm(np.asarray(y, dtype=np.float64) - ref)
    return float(diff / max(float(np.linalg.norm(ref)), np.finfo(np.float64).tiny))


def call_args(problem: Problem, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """Positional arguments of a kernel call for this problem."""
    if isinstance(problem, ConvProblem):
        x, w, b = inputs
        return (x, w, b, problem.stride, problem.padding, problem.dilation, problem.groups)
    return tuple(inputs)


def reference_output(problem: Problem, args: tuple[Any, ...]) -> np.ndarray:
    """The float64 reference kernel's output for a call with ``args`` (operands widened)."""
    wide = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
    return np.asarray(registry.reference(problem.op).fn(*wide), dtype=np.float64)
