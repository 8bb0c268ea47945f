"""Winograd F(m, 3) transform matrices by the Toom-Cook construction, exact in rationals.

Interpolation points 0, ±1, ±2, ±½ (∞ implicit); F(2, 3) reproduces Lavin & Gray's matrices up to
the sign of one row. Used by the kernel (:mod:`kernels.conv2d.winograd`) and by the generator of
its unrolled transforms (:mod:`kernels.conv2d._winograd_codegen`).
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np

#: Interpolation points (∞ is implicit) for each output tile size m with a 3-tap filter.
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: (Fraction(0), Fraction(1), Fraction(-1)),
    4: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)),
    6: (
        Fraction(0),
        Fraction(1),
        Fraction(-1),
        Fraction(2),
        Fraction(-2),
        Fraction(1, 2),
        Fraction(-1, 2),
    ),
}
TILE_SIZES: tuple[int, ...] = tuple(POINTS)


def _evaluation_matrix(points: tuple[Fraction, ...], columns: int) -> list[list[Fraction]]:
    """Rows ``[1, a, a², …]`` for each finite point, then the ∞ row ``[0, …, 0, 1]``."""
    rows = [[a**p for p in range(columns)] for a in points]
    rows.append([Fraction(0)] * (columns - 1) + [Fraction(1)])
    return rows


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss–Jordan inverse of a small rational matrix."""
    size = len(matrix)
    aug = [row[:] + [Fraction(int(i == j)) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        scale = aug[col][col]
        aug[col] = [v / scale for v in aug[col]]
        for r in range(size):
            if r != col and aug[r][col] != 0:
                factor = aug[r][col]
                aug[r] = [v - factor * p for v, p in zip(aug[r], aug[col], strict=True)]
    return [row[size:] for row in aug]


@cache
def winograd_matrices_exact(m: int, r: int = 3) -> tuple[list, list, list]:
    """Exact rational ``(Aᵀ, G, Bᵀ)`` for F(m, r) by Toom-Cook.

    Correlation is the transpose of polynomial multiplication ``s = u * g``. With evaluation
    matrices ``V_k`` (n × k, n = m + r − 1) Toom-Cook gives ``s = V_n⁻¹ [(V_m u) ⊙ (V_r g)]``, so
    ``y = V_mᵀ [(V_r g) ⊙ (V_n⁻ᵀ d)]``: ``Aᵀ = V_mᵀ``, ``G = V_r``, ``Bᵀ = V_n⁻ᵀ``. Row j of G is
    then divided by ``f_j = Π_{l≠j}(a_j − a_l)`` and row j of Bᵀ multiplied by it, which makes Bᵀ
    integral for integer points (the Lagrange scaling of Lavin's matrices).
    """
    points = POINTS[m]
    n = m + r - 1
    v_m = _evaluation_matrix(points, m)
    v_r = _evaluation_matrix(points, r)
    v_n_inv = _inverse(_evaluation_matrix(points, n))
    a_t = [[v_m[j][i] for j in range(n)] for i in range(m)]
    g = [row[:] for row in v_r]
    b_t = [[v_n_inv[j][i] for j in range(n)] for i in range(n)]
    for j, a_j in enumerate(points):
        f_j = Fraction(1)
        for l_idx, a_l in enumerate(points):
            if l_idx != j:
                f_j *= a_j - a_l
        g[j] = [v / f_j for v in g[j]]
        b_t[j] = [v * f_j for v in b_t[j]]
    return a_t, g, b_t


@cache
def winograd_matrices(m: int, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Aᵀ (m×α), G (α×3), Bᵀ (α×α))`` as arrays of ``dtype`` (read-only)."""
    arrays = []
    for matrix in winograd_matrices_exact(m):
        arr = np.array([[float(v) for v in row] for row in matrix], dtype=dtype)
        arr.setflags(write=False)
        arrays.append(arr)
    return tuple(arrays)
