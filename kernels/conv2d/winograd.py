"""Winograd minimal-filtering convolution F(m×m, 3×3) (Lavin & Gray, 2016), m ∈ {2, 4, 6}.

For each α×α input tile ``d`` (α = m + 2, tiles overlap by 2) and each filter ``g``:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

Summing over input channels happens in the transformed domain, which turns the work into α²
independent GEMMs ``M[ξ,ν] = U[ξ,ν] (K×C) · V[ξ,ν] (C×tiles)`` — those go to BLAS. The three
stages:

1. filter transform ``U = G g Gᵀ`` (once per weight; :func:`transform_filter`),
2. input transform ``V = Bᵀ d B`` over all tiles (Numba, parallel over rows of tiles),
3. output transform ``Y = Aᵀ M A`` (Numba, likewise), cropping the partial edge tiles and adding
   the bias.

The transforms work channel-last (NHWC in, NHWK out, one copy each way): every innermost loop
runs over the channels, so the SIMD lanes hold channels and the tile loops carry no short-vector
overhead — the transforms run several times faster than in NCHW, where the lanes ran along a row
of 14 tiles (BENCHMARKS.md §15). The GEMMs are then ``M[ξ,ν] = V[ξ,ν] (tiles×C) · U[ξ,ν] (C×K)``.

The transform matrices come from the Toom-Cook construction (:func:`winograd_matrices`) with
interpolation points 0, ±1, ±2, ±½ — computed exactly in rationals, so F(2,3) reproduces Lavin's
matrices up to the sign of one row. Larger tiles do fewer multiplications (α²/m² per output:
4 → 2.25 → 1.78) but their transforms have larger entries, so float32 error grows with m; the
tuner's accuracy check decides whether a tile size is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numba
import numpy as np

from kernels import pool
from kernels.conv2d._common import PARALLEL_MIN_WORK, output_hw, pad_nchw
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
#: Transforms do a few flops per element they write; below this size they run serially.
TRANSFORM_PARALLEL_MIN = PARALLEL_MIN_WORK // 4


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


@numba.njit(cache=True)
def _filter_job(w, g, u, k):  # pragma: no cover - jitted
    """u[ξ·α + ν, c, k] = Σ_ij G[ξ, i] w[k, c, i, j] G[ν, j] for one output channel, in float64."""
    _, c_per_group, kh, kw = w.shape
    alpha = g.shape[0]
    half = np.empty((alpha, kw), dtype=np.float64)  # G g, one filter at a time
    for c in range(c_per_group):
        for xi in range(alpha):
            for j in range(kw):
                acc = 0.0
                for i in range(kh):
                    acc += g[xi, i] * w[k, c, i, j]
                half[xi, j] = acc
        for xi in range(alpha):
            for nu in range(alpha):
                acc = 0.0
                for j in range(kw):
                    acc += half[xi, j] * g[nu, j]
                u[xi * alpha + nu, c, k] = acc


# Every transform has a serial and a parallel driver over the same job function (see
# PARALLEL_MIN_WORK: waking threads costs more than a small transform).
@numba.njit(cache=True, parallel=True)
def _filter_parallel(w, g, u):  # pragma: no cover - jitted
    for k in numba.prange(w.shape[0]):
        _filter_job(w, g, u, k)


@numba.njit(cache=True)
def _filter_serial(w, g, u):  # pragma: no cover - jitted
    for k in range(w.shape[0]):
        _filter_job(w, g, u, k)


def transform_filter(w: np.ndarray, m: int) -> np.ndarray:
    """``U[ξ·α + ν, c, k] = (G w[k, c] Gᵀ)[ξ, ν]``, shape (α², C/groups, K), C-contiguous.

    Accumulated in float64 and rounded once to ``w.dtype``; reuse it for a fixed weight.
    """
    _, g, _ = winograd_matrices(m)
    alpha = m + 2
    u = np.empty((alpha * alpha, w.shape[1], w.shape[0]), dtype=w.dtype)
    (_filter_parallel if u.size >= TRANSFORM_PARALLEL_MIN else _filter_serial)(w, g, u)
    return u


# The transforms below keep every innermost loop indexed by its own loop variable over
# contiguous views: Numba wraps negative indices, and an index that might be negative keeps LLVM
# from vectorising; per-row work sits in plain functions called from the prange body so that
# their loops are compiled as ordinary, vectorisable loops.


@numba.njit(cache=True, fastmath={"contract"})
def _input_row(xh, b_t, m, th_count, tw_count, v, job):  # pragma: no cover - jitted
    """One row of tiles: v[ξ·α+ν, tile, c] = (Bᵀ d B)[ξ, ν] for each tile d of xh (N, Hp, Wp, C).

    Channel-last, so every innermost loop runs over the channels, contiguous: SIMD lanes across
    channels, separable passes (rows, then columns) through a per-tile scratch kept in cache.
    """
    channels = xh.shape[3]
    alpha = b_t.shape[0]
    n = job // th_count
    th = job % th_count
    tmp = np.empty((alpha, alpha, channels), dtype=xh.dtype)
    for tw in range(tw_count):
        tile = job * tw_count + tw
        for xi in range(alpha):
            for j in range(alpha):
                acc = tmp[xi, j]
                acc[:] = 0.0
                for i in range(alpha):
                    coef = b_t[xi, i]
                    if coef != 0.0:
                        src = xh[n, th * m + i, tw * m + j]
                        for c in range(channels):
                            acc[c] += coef * src[c]
        for xi in range(alpha):
            for nu in range(alpha):
                dst = v[xi * alpha + nu, tile]
                dst[:] = 0.0
                for j in range(alpha):
                    coef = b_t[nu, j]
                    if coef != 0.0:
                        src = tmp[xi, j]
                        for c in range(channels):
                            dst[c] += coef * src[c]


@numba.njit(cache=True, parallel=True)
def _input_parallel(xh, b_t, m, th_count, tw_count, v):  # pragma: no cover - jitted
    for job in numba.prange(xh.shape[0] * th_count):
        _input_row(xh, b_t, m, th_count, tw_count, v, job)


@numba.njit(cache=True)
def _input_serial(xh, b_t, m, th_count, tw_count, v):  # pragma: no cover - jitted
    for job in range(xh.shape[0] * th_count):
        _input_row(xh, b_t, m, th_count, tw_count, v, job)


def input_transform(xp: np.ndarray, b_t: np.ndarray, m: int, tiles_h: int, tiles_w: int) -> np.ndarray:
    """V[ξ·α + ν, (n·tiles_h + th)·tiles_w + tw, c] = (Bᵀ d B)[ξ, ν] for every tile d.

    ``xp`` (N, C, H, W) must be padded so that it holds ``tiles·m + 2`` rows and columns.
    """
    xh = pool.channels_last(xp)
    alpha = b_t.shape[0]
    v = np.empty((alpha * alpha, xp.shape[0] * tiles_h * tiles_w, xp.shape[1]), dtype=xp.dtype)
    driver = _input_parallel if v.size >= TRANSFORM_PARALLEL_MIN else _input_serial
    driver(xh, b_t, m, tiles_h, tiles_w, v)
    return v


@numba.njit(cache=True, fastmath={"contract"})
def _output_row(mm, a_t, bias, th_count, tw_count, yh, job):  # pragma: no cover - jitted
    """One row of tiles: yh[n, th·m + a, tw·m + e, k] = (Aᵀ M A)[a, e] + bias[k], channel-last."""
    m, alpha = a_t.shape
    k_out = yh.shape[3]
    n = job // th_count
    th = job % th_count
    tmp = np.empty((m, alpha, k_out), dtype=mm.dtype)
    for tw in range(tw_count):
        tile = job * tw_count + tw
        for a in range(m):
            for nu in range(alpha):
                acc = tmp[a, nu]
                acc[:] = 0.0
                for xi in range(alpha):
                    coef = a_t[a, xi]
                    if coef != 0.0:
                        src = mm[xi * alpha + nu, tile]
                        for k in range(k_out):
                            acc[k] += coef * src[k]
        for a in range(m):
            for e in range(m):
                dst = yh[n, th * m + a, tw * m + e]
                dst[:] = bias
                for nu in range(alpha):
                    coef = a_t[e, nu]
                    if coef != 0.0:
                        src = tmp[a, nu]
                        for k in range(k_out):
                            dst[k] += coef * src[k]


@numba.njit(cache=True, parallel=True)
def _output_parallel(mm, a_t, bias, th_count, tw_count, yh):  # pragma: no cover - jitted
    for job in numba.prange(yh.shape[0] * th_count):
        _output_row(mm, a_t, bias, th_count, tw_count, yh, job)


@numba.njit(cache=True)
def _output_serial(mm, a_t, bias, th_count, tw_count, yh):  # pragma: no cover - jitted
    for job in range(yh.shape[0] * th_count):
        _output_row(mm, a_t, bias, th_count, tw_count, yh, job)


def output_transform(mm: np.ndarray, a_t: np.ndarray, bias: np.ndarray, out_shape, tiles) -> np.ndarray:
    """y (N, K, Ho, Wo) from M (α², tiles, K): Aᵀ M A per tile, plus the bias, cropped."""
    m = a_t.shape[0]
    n_batch, k_out, ho, wo = out_shape
    yh = np.empty((n_batch, tiles[0] * m, tiles[1] * m, k_out), dtype=mm.dtype)
    driver = _output_parallel if mm.size >= TRANSFORM_PARALLEL_MIN else _output_serial
    driver(mm, a_t, bias, tiles[0], tiles[1], yh)
    return pool.channels_first(yh[:, :ho, :wo])


def winograd_with_filter(x, u, b, padding, groups, m):
    """Winograd conv of ``x`` with a pre-transformed filter ``u`` (α², C/groups, K) from
    :func:`transform_filter`."""
    a_t, _, b_t = winograd_matrices(m, x.dtype.name)
    n_batch, _, h, w = x.shape
    c_per_group, k_out = u.shape[1], u.shape[2]
    ho, wo = output_hw((h, w), (3, 3), (1, 1), padding, (1, 1))
    tiles_h, tiles_w = -(-ho // m), -(-wo // m)
    # Extra zero rows/columns so every tile, including the partial edge ones, is a full α×α block.
    extra_h = tiles_h * m + 2 - (h + padding[0] + padding[1])
    extra_w = tiles_w * m + 2 - (w + padding[2] + padding[3])
    xp = pad_nchw(x, padding, max(extra_h, 0), max(extra_w, 0))
    v = input_transform(xp, b_t, m, tiles_h, tiles_w)  # (α², tiles, C)
    if groups == 1:
        mm = pool.matmul(v, u)  # α² GEMMs of (tiles × C)·(C × K), batched so BLAS sees big operands
    else:
        k_per_group = k_out // groups
        mm = np.empty((*v.shape[:2], k_out), dtype=x.dtype)
        for g in range(groups):
            ks = slice(g * k_per_group, (g + 1) * k_per_group)
            cs = slice(g * c_per_group, (g + 1) * c_per_group)
            # contiguous operands: torch.matmul on strided slices takes a slow path
            part = pool.matmul(np.ascontiguousarray(v[:, :, cs]), np.ascontiguousarray(u[:, :, ks]))
            mm[:, :, ks] = part
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else b
    return output_transform(mm, a_t, bias, (n_batch, k_out, ho, wo), (tiles_h, tiles_w))


@dataclass(frozen=True)
class WinogradFilter:
    """A weight pre-transformed for F(tile×tile, 3×3): ``u`` (α², C/groups, K) = G w Gᵀ."""

    u: np.ndarray
    tile: int


def prepare(w: np.ndarray, tile: int = 2) -> WinogradFilter:
    """The once-per-weight part of :func:`winograd`: the filter transform."""
    _check_tile(tile)
    return WinogradFilter(transform_filter(w, tile), tile)


def _check_tile(tile: int) -> None:
    if tile not in POINTS:
        raise ValueError(f"winograd: tile must be one of {TILE_SIZES}, got {tile!r}")


def winograd(x, w, b, stride, padding, dilation, groups, tile=2):
    """Winograd F(m×m, 3×3) with batched BLAS GEMMs in the transformed domain (m = ``tile``).

    ``w`` is the raw weight (K, C/groups, 3, 3) or a :class:`WinogradFilter` from :func:`prepare`.
    """
    _check_tile(tile)
    if isinstance(w, WinogradFilter):
        if w.tile != tile:
            raise ValueError(f"winograd: weight prepared for tile={w.tile}, called with tile={tile}")
        u = w.u
    else:
        u = transform_filter(w, tile)
    return winograd_with_filter(x, u, b, padding, groups, tile)


def applies(problem) -> bool:
    """Whether F(m, 3) computes the problem: 3×3 filters, stride 1, dilation 1."""
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
        needs="3×3 filters, stride 1, dilation 1 (the only case F(m, 3) computes)",
        param_grid=tile_grid,
        defaults={"tile": 2},
        prepare=prepare,
        finite_only=True,
        version=2,  # 2: channel-last transforms, filter layout (α², C, K)
    )
)
