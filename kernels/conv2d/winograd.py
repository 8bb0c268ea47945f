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
    """u[ξ·α + ν, k, c] = Σ_ij G[ξ, i] w[k, c, i, j] G[ν, j] for one output channel, in float64."""
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
                u[xi * alpha + nu, k, c] = acc


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
    """``U[ξ·α + ν, k, c] = (G w[k, c] Gᵀ)[ξ, ν]``, shape (α², K, C/groups), C-contiguous.

    Accumulated in float64 and rounded once to ``w.dtype``; reuse it for a fixed weight.
    """
    _, g, _ = winograd_matrices(m)
    alpha = m + 2
    u = np.empty((alpha * alpha, w.shape[0], w.shape[1]), dtype=w.dtype)
    (_filter_parallel if u.size >= TRANSFORM_PARALLEL_MIN else _filter_serial)(w, g, u)
    return u


# The transforms below keep every innermost loop indexed by its own loop variable over
# contiguous views: Numba wraps negative indices, and an index that might be negative keeps LLVM
# from vectorising; per-band work sits in plain functions called from the prange body so that
# their loops are compiled as ordinary, vectorisable loops.


@numba.njit(cache=True, fastmath={"contract"})
def _input_band(band, b_t, m, rows, phases, out, first):  # pragma: no cover - jitted
    """Bᵀ d B for the tiles of one band of α input rows of one channel.

    ``band`` (α, width) input rows; ``rows`` (α, width) and ``phases`` (α, m, tiles_w + 1)
    scratch; writes ``out[ξ·α + ν, first + tw]`` for the band's tiles.
    """
    alpha, width = band.shape
    tiles_w = phases.shape[2] - 1
    for xi in range(alpha):  # vertical pass, contiguous along the width
        acc = rows[xi]
        acc[:] = 0.0
        for i in range(alpha):
            coef = b_t[xi, i]
            if coef != 0.0:
                src = band[i]
                for col in range(width):
                    acc[col] += coef * src[col]
    # Phase-major copy: rows[ξ, t·m + r] → phases[ξ, r, t], so that the horizontal pass reads
    # tile columns j = r + m·s contiguously as phases[ξ, r, s + tw].
    for xi in range(alpha):
        for r in range(m):
            dst = phases[xi, r]
            for t in range(tiles_w + 1):
                col = t * m + r
                dst[t] = rows[xi, col] if col < width else 0.0
    for xi in range(alpha):  # horizontal pass, contiguous along the tiles
        for nu in range(alpha):
            dst = out[xi * alpha + nu, first : first + tiles_w]
            dst[:] = 0.0
            for j in range(alpha):
                coef = b_t[nu, j]
                if coef != 0.0:
                    src = phases[xi, j % m, j // m : j // m + tiles_w]
                    for tw in range(tiles_w):
                        dst[tw] += coef * src[tw]


@numba.njit(cache=True)
def _input_job(xp, b_t, m, v, job):  # pragma: no cover - jitted
    """Every tile of one (batch, channel) plane: V[:, c, tiles of this plane]."""
    n_batch, channels, _, width = xp.shape
    alpha = b_t.shape[0]
    tiles_w = (width - 2) // m
    tiles_h = v.shape[2] // (n_batch * tiles_w)
    n = job // channels
    c = job % channels
    rows = np.empty((alpha, width), dtype=xp.dtype)
    phases = np.empty((alpha, m, tiles_w + 1), dtype=xp.dtype)
    for th in range(tiles_h):
        band = xp[n, c, th * m : th * m + alpha]
        _input_band(band, b_t, m, rows, phases, v[:, c], (n * tiles_h + th) * tiles_w)


@numba.njit(cache=True, parallel=True)
def _input_parallel(xp, b_t, m, v):  # pragma: no cover - jitted
    for job in numba.prange(xp.shape[0] * xp.shape[1]):
        _input_job(xp, b_t, m, v, job)


@numba.njit(cache=True)
def _input_serial(xp, b_t, m, v):  # pragma: no cover - jitted
    for job in range(xp.shape[0] * xp.shape[1]):
        _input_job(xp, b_t, m, v, job)


def input_transform(xp: np.ndarray, b_t: np.ndarray, m: int, tiles_h: int, tiles_w: int) -> np.ndarray:
    """V[ξ·α + ν, c, (n·tiles_h + th)·tiles_w + tw] = (Bᵀ d B)[ξ, ν] for every tile d.

    ``xp`` must be padded so that its width is exactly ``tiles_w·m + 2`` and its height at least
    ``tiles_h·m + 2``.
    """
    n_batch, channels = xp.shape[0], xp.shape[1]
    alpha = b_t.shape[0]
    v = np.empty((alpha * alpha, channels, n_batch * tiles_h * tiles_w), dtype=xp.dtype)
    (_input_parallel if v.size >= TRANSFORM_PARALLEL_MIN else _input_serial)(xp, b_t, m, v)
    return v


@numba.njit(cache=True, fastmath={"contract"})
def _output_band(mm_k, a_t, bias_k, first, cols, line, out_rows):  # pragma: no cover - jitted
    """Aᵀ M A + bias for one tile row of one output channel, cropped into ``out_rows``.

    ``mm_k`` (α², tiles) GEMM results of this channel; ``cols`` (α, m, tiles_w) and ``line``
    (tiles_w,) scratch; ``out_rows`` (≤ m, Wo) the output rows this tile row covers.
    """
    m, alpha = a_t.shape
    tiles_w = line.shape[0]
    wo = out_rows.shape[1]
    for xi in range(alpha):  # horizontal pass: M A along the tiles
        for e in range(m):
            dst = cols[xi, e]
            dst[:] = 0.0
            for nu in range(alpha):
                coef = a_t[e, nu]
                if coef != 0.0:
                    src = mm_k[xi * alpha + nu, first : first + tiles_w]
                    for tw in range(tiles_w):
                        dst[tw] += coef * src[tw]
    for a in range(out_rows.shape[0]):  # vertical pass, then scatter into the output row
        for e in range(m):
            line[:] = bias_k
            for xi in range(alpha):
                coef = a_t[a, xi]
                if coef != 0.0:
                    src = cols[xi, e]
                    for tw in range(tiles_w):
                        line[tw] += coef * src[tw]
            valid = (wo - e + m - 1) // m  # tiles whose column e falls inside the output
            dst = out_rows[a, e : e + (valid - 1) * m + 1 : m]
            for tw in range(valid):
                dst[tw] = line[tw]


@numba.njit(cache=True)
def _output_job(mm, a_t, bias, y, job):  # pragma: no cover - jitted
    """Every tile row of one (batch, output channel) plane of ``y``."""
    m, alpha = a_t.shape
    k_out, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    tiles_w = -(-wo // m)
    tiles_h = -(-ho // m)
    n = job // k_out
    k = job % k_out
    cols = np.empty((alpha, m, tiles_w), dtype=mm.dtype)
    line = np.empty(tiles_w, dtype=mm.dtype)
    for th in range(tiles_h):
        top = th * m
        first = (n * tiles_h + th) * tiles_w
        _output_band(mm[:, k], a_t, bias[k], first, cols, line, y[n, k, top : top + min(m, ho - top)])


@numba.njit(cache=True, parallel=True)
def _output_parallel(mm, a_t, bias, y):  # pragma: no cover - jitted
    for job in numba.prange(y.shape[0] * y.shape[1]):
        _output_job(mm, a_t, bias, y, job)


@numba.njit(cache=True)
def _output_serial(mm, a_t, bias, y):  # pragma: no cover - jitted
    for job in range(y.shape[0] * y.shape[1]):
        _output_job(mm, a_t, bias, y, job)


def output_transform(mm: np.ndarray, a_t: np.ndarray, bias: np.ndarray, out_shape) -> np.ndarray:
    """y[n, k, th·m + a, tw·m + e] = (Aᵀ M A)[a, e] + bias[k], cropped to ``out_shape``."""
    y = np.empty(out_shape, dtype=mm.dtype)
    (_output_parallel if mm.size >= TRANSFORM_PARALLEL_MIN else _output_serial)(mm, a_t, bias, y)
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
    v = input_transform(xp, b_t, m, tiles_h, tiles_w)
    if groups == 1:
        mm = pool.matmul(u, v)  # α² GEMMs of (K × C)·(C × tiles), batched so BLAS sees big operands
    else:
        k_per_group = k_out // groups
        mm = np.empty((alpha * alpha, k_out, v.shape[2]), dtype=x.dtype)
        for g in range(groups):
            ks = slice(g * k_per_group, (g + 1) * k_per_group)
            cs = slice(g * c_per_group, (g + 1) * c_per_group)
            pool.matmul(u[:, ks], v[:, cs], out=mm[:, ks])
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else b
    return output_transform(mm, a_t, bias, (n_batch, k_out, ho, wo))


@dataclass(frozen=True)
class WinogradFilter:
    """A weight pre-transformed for F(tile×tile, 3×3): ``u`` (α², K, C/groups) = G w Gᵀ."""

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
    )
)
