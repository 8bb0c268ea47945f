"""``svd``: matmul with truncated-SVD operands, never rebuilding a dense matrix.

Each operand given a rank is replaced by its rank-r truncated SVD (:class:`LowRank`); an operand
without a rank stays exact. With ``A ≈ U_a diag(s_a) V_aᵀ`` (m×k, rank r_a) and
``B ≈ U_b diag(s_b) V_bᵀ`` (k×n, rank r_b) the product is evaluated thin GEMMs first:

* dense A, factored B: ``C = ((A U_b) diag(s_b)) V_bᵀ`` — ``2·m·r_b·(k + n)`` flops;
* factored A, dense B: ``C = U_a (diag(s_a) (V_aᵀ B))`` — ``2·r_a·n·(k + m)`` flops;
* both factored: the r_a×r_b core ``diag(s_a) (V_aᵀ U_b) diag(s_b)`` first, then
  ``(U_a core) V_bᵀ`` or ``U_a (core V_bᵀ)``, whichever needs fewer flops;

against ``2·m·k·n`` for the dense product. So a rank-r weight pays off only when
``r < k·n / (k + n)``; the tuner's rank grid stops there.

Tuning (``exact=False``: eligible only with a caller's ``tol=``): the right operand is the weight.
``param_grid`` walks ``rank_b`` over a √2-geometric grid (1, 2, 3, 4, 6, 8, 11, 16, 23, …) below
that break-even rank, and the tuner's ``first_accurate`` search keeps the first (smallest) rank whose
error meets the tolerance. ``prepare`` factors the weight once at that rank, so timings — and the
dispatcher's calls — are for the product with precomputed factors. The activation is never
rank-searched: it changes every call, so a rank found for one activation says nothing about the
next; ``rank_a`` is honoured only when the caller gives it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernels import pool
from kernels.matmul.lowrank import LowRank
from kernels.registry import KernelSpec, register

Operand = np.ndarray | LowRank


def truncated(x: Operand, rank: int | None) -> Operand:
    """``x`` as a rank-``rank`` LowRank (None: unchanged; a LowRank is truncated, never refactored)."""
    if rank is None:
        return x
    if isinstance(x, LowRank):
        return x if rank == x.rank else x.truncate(rank)
    return LowRank.from_matrix(x, rank)


#: Products of fewer multiply-adds run on numpy's BLAS, which keeps them on the calling thread
#: (OpenBLAS threads only larger GEMMs) and costs less per call than PyTorch's dispatch.
SMALL_PRODUCT = 1 << 18


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; beyond :data:`SMALL_PRODUCT`, on the one pool (:func:`kernels.pool.matmul`).
    numpy's own threaded BLAS here made a following PyTorch convolution and this product cost
    3.9-4.3x their separate times (its threads spin after the call; BENCHMARKS.md §19)."""
    if a.shape[0] * a.shape[1] * b.shape[1] < SMALL_PRODUCT:
        return a @ b
    return pool.matmul(a, b)


def _dense_times_factored(a: np.ndarray, b: LowRank) -> np.ndarray:
    left = _mm(a, b.u)  # (m, r): the thin GEMM first
    left *= b.s  # scale the small intermediate, not a factor (factors stay shared and unchanged)
    return _mm(left, b.vt)


def _factored_times_dense(a: LowRank, b: np.ndarray) -> np.ndarray:
    right = _mm(a.vt, b)  # (r, n)
    right *= a.s[:, None]
    return _mm(a.u, right)


def _factored_times_factored(a: LowRank, b: LowRank) -> np.ndarray:
    core = _mm(a.vt, b.u)  # (r_a, r_b)
    core *= a.s[:, None]
    core *= b.s
    m, n = a.shape[0], b.shape[1]
    r_a, r_b = core.shape
    if m * r_a * r_b + m * r_b * n <= r_a * r_b * n + m * r_a * n:
        return _mm(_mm(a.u, core), b.vt)
    return _mm(a.u, _mm(core, b.vt))


def lowrank_matmul(a: Operand, b: Operand) -> np.ndarray:
    """``a @ b`` where either operand may be a LowRank; C-contiguous, in the operands' dtype."""
    if isinstance(a, LowRank):
        c = _factored_times_factored(a, b) if isinstance(b, LowRank) else _factored_times_dense(a, b)
    elif isinstance(b, LowRank):
        c = _dense_times_factored(a, b)
    else:
        c = _mm(a, b)
    return np.ascontiguousarray(c)


def svd(a: Operand, b: Operand, rank_a: int | None = None, rank_b: int | None = None) -> np.ndarray:
    """Truncated-SVD matmul: ``A_ra @ B_rb`` evaluated from the factors (see the module docstring).

    Args:
        a: (m, k) float32/float64 array or LowRank.
        b: (k, n) array or LowRank of the same dtype (the weight; pass ``prepare_svd``'s result to
            reuse its factors).
        rank_a, rank_b: truncation ranks (None: keep that operand as given).

    Returns:
        (m, n) C-contiguous array of the operands' dtype.
    """
    return lowrank_matmul(truncated(a, rank_a), truncated(b, rank_b))


def prepare_svd(b: Operand, rank_a: int | None = None, rank_b: int | None = None) -> Operand:
    """The weight's rank-``rank_b`` factors, computed once (``rank_a`` concerns the activation)."""
    return truncated(b, rank_b)


#: Ratio between consecutive ranks of the tuning grid: the rank found is at most √2 × the smallest
#: accurate one, and a walk up the grid costs a bounded multiple of the last factorisation.
RANK_STEP = math.sqrt(2.0)


def rank_grid(k: int, n: int) -> list[int]:
    """Ranks ``r < k·n/(k + n)`` of a (k, n) weight — those that save flops — √2-geometric from 1.

    Always at least ``[1]``, so a weight too small to gain still gets a verdict saying why.
    """
    break_even = k * n / (k + n)
    ranks: list[int] = []
    step = 0
    while (rank := round(RANK_STEP**step)) < break_even:
        if not ranks or rank != ranks[-1]:
            ranks.append(rank)
        step += 1
    return ranks or [1]


def svd_param_grid(problem: Any) -> list[dict[str, Any]]:
    """Ranks fixed by the problem, else a rank_b search over :func:`rank_grid` (smallest first)."""
    if problem.rank_a is not None or problem.rank_b is not None:
        fixed = {"rank_a": problem.rank_a, "rank_b": problem.rank_b}
        return [{name: rank for name, rank in fixed.items() if rank is not None}]
    return [{"rank_b": rank} for rank in rank_grid(*problem.b_shape)]


register(
    KernelSpec(
        name="svd",
        op="matmul",
        fn=svd,
        exact=False,
        param_grid=svd_param_grid,
        search="first_accurate",
        prepare=prepare_svd,
        finite_only=True,  # one NaN/Inf in b spreads through its SVD factors to every output
    )
)
