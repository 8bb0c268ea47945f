"""Winograd minimal-filtering convolution F(m×m, 3×3) (Lavin & Gray, 2016), m ∈ {2, 4, 6}.

For each α×α input tile ``d`` (α = m + 2, tiles overlap by 2) and each filter ``g``:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

Summing over input channels happens in the transformed domain, which turns the work into α²
independent GEMMs ``M[ξ,ν] = U[ξ,ν] (K×C) · V[ξ,ν] (C×tiles)`` — those go to BLAS. The three
stages:

1. filter transform ``U = G g Gᵀ`` (once per weight; :func:`transform_filter`),
2. input transform ``V = Bᵀ d B`` over all tiles (Numba, parallel over channels),
3. output transform ``Y = Aᵀ M A`` (Numba, parallel over output channels), cropping the partial
   edge tiles and adding the bias.

The transform matrices come from the Toom-Cook construction (:func:`winograd_matrices`) with
interpolation points 0, ±1, ±2, ±½ — computed exactly in rationals, so F(2,3) reproduces Lavin's
matrices up to the sign of one row. Larger tiles do fewer multiplications (α²/m² per output:
4 → 2.25 → 1.78) but their transforms have larger entries, so float32 error grows with m; the
tuner's accuracy check decides whether a tile size is acceptable.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numba
import numpy as np

from kernels.conv2d._common import output_hw, pad_nchw
from kernels.registry import KernelSpec, register

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


def transform_filter(w: np.ndarray, m: int) -> np.ndarray:
    """``U[ξ, ν, k, c] = (G w[k, c] Gᵀ)[ξ, ν]`` reshaped to (α², K, C/groups), C-contiguous.

    Computed in float64 and rounded once to ``w.dtype``; reuse it for a fixed weight.
    """
    _, g, _ = winograd_matrices(m)
    alpha = m + 2
    u = np.einsum("xi,kcij,yj->xykc", g, w.astype(np.float64), g, optimize=True)
    return np.ascontiguousarray(u.reshape(alpha * alpha, w.shape[0], w.shape[1]), dtype=w.dtype)


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _input_transform(xp, b_t, m, tiles_h, tiles_w):  # pragma: no cover - jitted
    """V[ξ·α + ν, c, (n·tiles_h + th)·tiles_w + tw] = (Bᵀ d B)[ξ, ν] for every tile d."""
    n_batch, channels, _, width = xp.shape
    alpha = b_t.shape[0]
    n_tiles = n_batch * tiles_h * tiles_w
    v = np.empty((alpha * alpha, channels, n_tiles), dtype=xp.dtype)
    for job in numba.prange(n_batch * channels):
        n = job // channels
        c = job % channels
        rows = np.empty((alpha, width), dtype=xp.dtype)  # Bᵀ applied down a band of α rows
        for th in range(tiles_h):
            top = th * m
            for xi in range(alpha):
                rows[xi, :] = 0.0
                for i in range(alpha):
                    coef = b_t[xi, i]
                    if coef != 0.0:
                        src = xp[n, c, top + i]
                        for col in range(width):
                            rows[xi, col] += coef * src[col]
            first = (n * tiles_h + th) * tiles_w
            for xi in range(alpha):
                for nu in range(alpha):
                    dst = v[xi * alpha + nu, c]
                    for tw in range(tiles_w):
                        dst[first + tw] = 0.0
                    for j in range(alpha):
                        coef = b_t[nu, j]
                        if coef != 0.0:
                            for tw in range(tiles_w):
                                dst[first + tw] += coef * rows[xi, tw * m + j]
    return v


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _output_transform(mm, a_t, bias, n_batch, tiles_h, tiles_w, ho, wo):  # pragma: no cover
    """y[n, k, th·m + a, tw·m + e] = (Aᵀ M A)[a, e] + bias[k], cropped to (Ho, Wo)."""
    m, alpha = a_t.shape
    k_out = mm.shape[1]
    y = np.empty((n_batch, k_out, ho, wo), dtype=mm.dtype)
    for job in numba.prange(n_batch * k_out):
        n = job // k_out
        k = job % k_out
        cols = np.empty((alpha, m, tiles_w), dtype=mm.dtype)  # M A for one tile row
        for th in range(tiles_h):
            first = (n * tiles_h + th) * tiles_w
            for xi in range(alpha):
                for e in range(m):
                    for tw in range(tiles_w):
                        cols[xi, e, tw] = 0.0
                    for nu in range(alpha):
                        coef = a_t[e, nu]
                        if coef != 0.0:
                            src = mm[xi * alpha + nu, k]
                            for tw in range(tiles_w):
                                cols[xi, e, tw] += coef * src[first + tw]
            for a in range(m):
                oh = th * m + a
                if oh >= ho:
                    break
                out = y[n, k, oh]
                for e in range(m):
                    for tw in range(tiles_w):
                        ow = tw * m + e
                        if ow < wo:
                            acc = bias[k]
                            for xi in range(alpha):
                                acc += a_t[a, xi] * cols[xi, e, tw]
                            out[ow] = acc
    return y


def winograd_with_filter(x, u, b, padding, groups, m):
    """Winograd conv of ``x`` with a pre-transformed filter ``u`` from :func:`transform_filter`."""
    a_t, _, b_t = winograd_matrices(m, x.dtype.name)
    alpha = m + 2
    n_batch, _, h, w = x.shape
    k_out, c_per_group = u.shape[1], u.shape[2]
    ho, wo = output_hw((h, w), (3, 3), (1, 1), padding, (1, 1))
    tiles_h, tiles_w = -(-ho // m), -(-wo // m)
    # Extra zero rows/columns so every tile, including the partial edge ones, is a full α×α block.
    extra_h = tiles_h * m + 2 - (h + padding[0] + padding[1])
    extra_w = tiles_w * m + 2 - (w + padding[2] + padding[3])
    xp = pad_nchw(x, padding, max(extra_h, 0), max(extra_w, 0))
    v = _input_transform(xp, b_t, m, tiles_h, tiles_w)
    if groups == 1:
        mm = np.matmul(u, v)  # α² GEMMs of (K × C)·(C × tiles), batched so BLAS sees big operands
    else:
        k_per_group = k_out // groups
        mm = np.empty((alpha * alpha, k_out, v.shape[2]), dtype=x.dtype)
        for g in range(groups):
            ks = slice(g * k_per_group, (g + 1) * k_per_group)
            cs = slice(g * c_per_group, (g + 1) * c_per_group)
            mm[:, ks] = np.matmul(u[:, ks], v[:, cs])
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else b
    return _output_transform(mm, a_t, bias, n_batch, tiles_h, tiles_w, ho, wo)


def winograd(x, w, b, stride, padding, dilation, groups, tile=2):
    """Winograd F(m×m, 3×3) with batched BLAS GEMMs in the transformed domain (m = ``tile``)."""
    if tile not in POINTS:
        raise ValueError(f"winograd: tile must be one of {TILE_SIZES}, got {tile!r}")
    return winograd_with_filter(x, transform_filter(w, tile), b, padding, groups, tile)


def applies(problem) -> bool:
    """3×3 filters, stride 1, dilation 1 (the only case F(m, 3) computes)."""
    return (
        tuple(problem.w_shape[2:]) == (3, 3)
        and tuple(problem.stride) == (1, 1)
        and tuple(problem.dilation) == (1, 1)
    )


def tile_grid(problem) -> list[dict[str, int]]:
    """Try every tile size whose single tile is not larger than the output."""
    ho, wo = problem.out_shape[2:]
    useful = [m for m in TILE_SIZES if m == 2 or m <= max(ho, wo)]
    return [{"tile": m} for m in useful]


register(
    KernelSpec(
        name="winograd",
        op="conv2d",
        fn=winograd,
        applies=applies,
        param_grid=tile_grid,
        defaults={"tile": 2},
    )
)
