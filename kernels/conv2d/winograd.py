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

They run either in stages, each over every tile with the GEMMs between them as one batched
``torch.matmul``, or fused (``fused=1``): one parallel region whose jobs each take whole rows
of tiles (:func:`fused_jobs`) through input transform, α² GEMMs (scipy's BLAS on the job's
thread, through Numba's ``np.dot``) and output transform while the job's V and M are in the
core's cache — the scheme of NNPACK and of oneDNN's former Winograd (BENCHMARKS.md §22, §28).

The transforms work channel-last inside a row of tiles: the row's α input rows are gathered
from NCHW into an NHWC scratch (zero padding included) that stays in cache, and the output rows
are written back to NCHW from a scratch the same way — no padded, NHWC or NHWK copy of a whole
tensor; long scratch rows move in 8×8 blocks transposed in vector registers (:mod:`kernels.simd`,
§25), and into a large output with wide rows as whole cache lines by streaming stores, which
neither read the line first nor evict the job's V, M and U (§29). Each tile's transform, eight
channels at a time, is one :func:`kernels.simd.sandwich8`:
``Bᵀ d B`` (or ``Aᵀ M A``) from α² vector loads to α² (m²) vector stores in registers, with the
sums of the transform's symmetric points shared (generated codelets,
:mod:`kernels.conv2d._winograd_codelets`; BENCHMARKS.md §28). The GEMMs are then
``M[ξ,ν] = V[ξ,ν] (tiles×C) · U[ξ,ν] (C×K)``.

The transform matrices come from the Toom-Cook construction (:mod:`kernels.conv2d.winograd_matrices`)
with interpolation points 0, ±1, ±2, ±½, computed exactly in rationals. Larger tiles do fewer
multiplications (α²/m² per output: 4 → 2.25 → 1.78) but their transforms have larger entries, so
float32 error grows with m; the tuner's accuracy check decides whether a tile size is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

from kernels import pool, workspace
from kernels.conv2d import _winograd_codelets as codelets
from kernels.conv2d._common import output_hw
from kernels.conv2d.winograd_matrices import (  # noqa: F401  (re-exported: the kernel's matrices)
    POINTS,
    TILE_SIZES,
    winograd_matrices,
    winograd_matrices_exact,
)
from kernels.registry import KernelSpec, register
from kernels.simd import LANES, transpose8


@numba.njit(cache=True)
def _channel_last(flat, c0, count, taps):  # pragma: no cover - jitted
    """taps[q, k] = flat[k, c0·9 + q] for q < count·9: a block of input channels' weights moved
    channel-last, in 8×8 blocks transposed in vector registers, the edges element by element."""
    k_out, width = flat.shape
    cols = count * 9
    k_whole, q_whole = k_out - k_out % LANES, cols - cols % LANES
    for k0 in range(0, k_whole, LANES):
        for q0 in range(0, q_whole, LANES):
            transpose8(flat, k0 * width + c0 * 9 + q0, width, taps, q0 * k_out + k0, k_out)
    for q in range(q_whole, cols):
        for k in range(k_whole):
            taps[q, k] = flat[k, c0 * 9 + q]
    for k in range(k_whole, k_out):
        for q in range(cols):
            taps[q, k] = flat[k, c0 * 9 + q]


@numba.njit(cache=True, parallel=True)
def _filter_transform(flat, g, u):  # pragma: no cover - jitted
    """u[ξ·α + ν, c, :] = Σ_ij G[ξ, i] G[ν, j] w[:, c, i, j], in float64, rounded once to u's dtype.

    ``flat`` is the weight as (K, C/groups·9), C-contiguous. A job takes eight input channels:
    their weights moved channel-last into a scratch in cache (:func:`_channel_last`), then every
    innermost loop runs over the output channels, contiguous (SIMD lanes across filters; each
    tap widened as it is read). Each output row is one three-term expression over rows already in
    cache (G has three columns). Against a whole-weight transpose first and term-by-term sums:
    0.32–0.50x the time on the ResNet/VGG weights, bit for bit the same (BENCHMARKS.md §26).
    """
    k_out, c_per_group = flat.shape[0], flat.shape[1] // 9
    alpha = g.shape[0]
    for job in numba.prange((c_per_group + LANES - 1) // LANES):
        c0 = job * LANES
        count = min(LANES, c_per_group - c0)
        taps = np.empty((count * 9, k_out), dtype=flat.dtype)  # row c·9 + i·3 + j: tap (i, j) of c
        _channel_last(flat, c0, count, taps)
        half = np.empty((alpha, 3, k_out))  # G g for every filter of one input channel
        for c in range(count):
            row = c * 9
            for xi in range(alpha):
                g0, g1, g2 = g[xi, 0], g[xi, 1], g[xi, 2]
                for j in range(3):
                    s0, s1, s2, dst = taps[row + j], taps[row + 3 + j], taps[row + 6 + j], half[xi, j]
                    for k in range(k_out):
                        dst[k] = g0 * s0[k] + g1 * s1[k] + g2 * s2[k]
            for xi in range(alpha):
                h0, h1, h2 = half[xi, 0], half[xi, 1], half[xi, 2]
                for nu in range(alpha):
                    a0, a1, a2, dst = g[nu, 0], g[nu, 1], g[nu, 2], u[xi * alpha + nu, c0 + c]
                    for k in range(k_out):
                        dst[k] = a0 * h0[k] + a1 * h1[k] + a2 * h2[k]


def transform_filter(w: np.ndarray, m: int, out: np.ndarray | None = None) -> np.ndarray:
    """``U[ξ·α + ν, c, k] = (G w[k, c] Gᵀ)[ξ, ν]``, shape (α², C/groups, K), C-contiguous, into
    ``out`` if given (a one-off weight's U in scratch memory: 38 MB for 512×512 filters and F(4×4),
    which fresh from the OS took longer to fault in than to compute, BENCHMARKS.md §22).

    Accumulated in float64 and rounded once to ``w.dtype``; reuse it for a fixed weight.
    """
    _, g, _ = winograd_matrices(m)
    alpha = m + 2
    k_out, c_per_group = w.shape[:2]
    u = np.empty((alpha * alpha, c_per_group, k_out), dtype=w.dtype) if out is None else out
    _filter_transform(np.ascontiguousarray(w).reshape(k_out, c_per_group * 9), g, u)
    return u


def input_transform(x: np.ndarray, padding, m: int, tiles: tuple[int, int], v: np.ndarray) -> None:
    """V[ξ·α + ν, r·tiles_w + tw, c] = (Bᵀ d B)[ξ, ν] for every tile d of padded ``x`` (row of tiles
    ``r`` = n·tiles_h + th), into ``v``.

    Reads ``x`` (N, C, H, W) as it is: each row of tiles gathers its α input rows channel-last,
    zero-padded, into a scratch that stays in cache, so neither a padded copy nor an NHWC copy of
    the whole input is made (the padding beyond ``x`` covers the partial edge tiles as well).
    """
    block = _block(m, x.shape[1], x.dtype.itemsize)
    consts = _constants(m, 0, x.dtype)
    codelets.INPUT[m](x, padding[0], padding[2], v, consts, *tiles, block, 0, x.shape[0] * tiles[0])


def output_transform(mm: np.ndarray, bias: np.ndarray, tiles: tuple[int, int], m: int, y) -> None:
    """y (N, K, Ho, Wo) from the M (α², tiles, K) of all its tiles: Aᵀ M A per tile, plus the
    bias, cropped.

    Each row of tiles is transformed channel-last into a scratch in cache and written into the
    NCHW output from there, so no NHWC copy of the whole output is made.
    """
    block = _block(m, mm.shape[2], mm.dtype.itemsize)
    rows = y.shape[0] * tiles[0]
    codelets.OUTPUT[m](mm, _constants(m, 1, mm.dtype), bias, *tiles, block, y, 0, rows)


#: A transform job's scratch rows (α rows of its block of tiles, channel-last) stay within this.
BLOCK_BYTES = 128 << 10


def _block(m: int, channels: int, itemsize: int) -> int:
    """Tiles per transform job: as many as keep its scratch within :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // ((m + 2) * m * channels * itemsize))


@cache
def _constants(m: int, which: int, dtype: np.dtype) -> np.ndarray:
    """The coefficient magnitudes a generated transform reads (``which``: 0 input, 1 output)."""
    values = codelets.CONSTANTS[m][which] or (0.0,)  # F(2×2) needs none; Numba wants an array
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def winograd_with_filter(x, u, b, padding, groups, m, fused=0):
    """Winograd conv of ``x`` with a pre-transformed filter ``u`` (α², C/groups, K) from
    :func:`transform_filter`, in stages over all tiles (``fused`` 0) or fused (1; grouped
    convolutions run in stages either way).

    In stages, each transform runs over every tile and the α² GEMMs see the largest operands
    (``torch.matmul``); fused, each job of a few tiles runs its input transform, GEMMs and output
    transform back to back on one thread while V and M are in its cache. Which pays depends on
    the layer (:func:`tile_grid`).
    """
    n_batch, c_in, h, w = x.shape
    k_out = u.shape[2]
    ho, wo = output_hw((h, w), (3, 3), (1, 1), padding, (1, 1))
    tiles = (-(-ho // m), -(-wo // m))
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else b
    y = workspace.line_aligned_empty((n_batch, k_out, ho, wo), x.dtype)
    if fused and groups == 1:
        return _fused(x, u, bias, padding, m, tiles, y)
    count = n_batch * tiles[0] * tiles[1]
    alpha2 = (m + 2) ** 2
    v = workspace.scratch("winograd.v", (alpha2 * count * c_in,), x.dtype).reshape(alpha2, count, c_in)
    mm = workspace.scratch("winograd.m", (alpha2 * count * k_out,), x.dtype).reshape(alpha2, count, k_out)
    input_transform(x, padding, m, tiles, v)
    _products(v, u, groups, mm)
    output_transform(mm, bias, tiles, m, y)
    return y


#: A fused job's V and M (α² × tiles × (C + K)) stay within this, so that they are still in the
#: core's cache when its GEMMs read V and its output transform reads M. Measured (BENCHMARKS.md
#: §22): 512 KiB-2 MiB alike on 64 channels; on 128-256 channels 512 KiB 1.07-1.31x and 2 MiB
#: 1.04-1.95x the time of 1 MiB; 128 KiB 1.1-1.4x slower everywhere.
FUSED_BYTES = 1 << 20


#: The share of a core's L2 that a fused job's V and M and all of U may fill together when U is to
#: stay there from one job to the next (the rest holds the gathered rows and the lines of x and y
#: in flight). On 64 channels (U 0.6 MB, L2 2 MiB): jobs of half a row of 224×224 took 0.89x the
#: time of whole rows (1.6 MB with U), two rows of 8×64×56×56 0.91x the time of four (BENCHMARKS.md §28).
CACHE_SHARE = 0.6


def fused_jobs(m: int, channels: int, k_out: int, itemsize: int, rows: int, tiles_w: int) -> tuple[int, int]:
    """How the fused call splits its ``rows`` rows of ``tiles_w`` tiles into jobs: ``(rows per
    job, pieces per row)``, one of them 1.

    A job never straddles two rows of tiles (a job that started mid-row gathered and scattered
    short runs of columns: 1×64×56×56 took 1.2x the time of whole rows, BENCHMARKS.md §28). Every
    job reads all of U: where U fits in the core's L2 beside a job (:data:`CACHE_SHARE`), it stays
    there and a job's V and M get what is left of that share; else U streams in for every job and
    V and M get :data:`FUSED_BYTES`. Rows larger than that are cut into equal pieces, as are rows
    too few for the threads. Otherwise the job size minimises the time of the busiest thread,
    modelled in bytes: jobs per thread × (the job's V and M + U where it streams); ties go to
    fewer jobs. Against four jobs per thread at least (the rule before): 1×128×28×28 0.63x,
    1×256×14×14 0.46x the time.
    """
    return _planned_jobs(m, channels, k_out, itemsize, rows, tiles_w, numba.get_num_threads())


@cache
def _planned_jobs(m: int, channels: int, k_out: int, itemsize: int, rows: int, tiles_w: int, threads: int):
    """:func:`fused_jobs` for ``threads`` threads, computed once per layer, as it runs on every
    call (:data:`CACHE_SHARE` and the L2 size are read then: a change to either needs
    ``_planned_jobs.cache_clear()``)."""
    tile_bytes = (m + 2) ** 2 * (channels + k_out) * itemsize
    u_bytes = (m + 2) ** 2 * channels * k_out * itemsize
    share = int(CACHE_SHARE * workspace.core_cache_bytes())
    streamed = 0 if u_bytes + FUSED_BYTES // 4 <= share else u_bytes
    budget = FUSED_BYTES if streamed else min(FUSED_BYTES, share - u_bytes)
    row_bytes = tiles_w * tile_bytes
    if row_bytes > budget or rows < threads:
        pieces = max(-(-row_bytes // budget), min(tiles_w, -(-threads // rows)))
        return 1, -(-tiles_w // -(-tiles_w // pieces))  # no empty last piece

    def busiest(per_job: int) -> tuple[int, int]:
        jobs = -(-rows // per_job)
        return -(-jobs // threads) * (per_job * row_bytes + streamed), jobs

    return min(range(1, min(rows, budget // row_bytes) + 1), key=busiest), 1


def _fused(x, u, bias, padding, m, tiles, y):
    """The fused call (``codelets.FUSED``): one parallel region, whose jobs call BLAS on their own
    thread (OpenBLAS limited to it, so that none of its workers wakes inside PyTorch's pool)."""
    rows = x.shape[0] * tiles[0]
    split = fused_jobs(m, u.shape[1], u.shape[2], x.dtype.itemsize, rows, tiles[1])
    consts = _constants(m, 0, x.dtype), _constants(m, 1, x.dtype)
    fused = codelets.FUSED[m]
    pool.on_calling_thread(lambda: fused(x, padding[0], padding[2], u, bias, *consts, *tiles, *split, y))
    return y


def _products(v: np.ndarray, u: np.ndarray, groups: int, mm: np.ndarray) -> None:
    """M = V·U: α² GEMMs of (tiles × C)·(C × K) per group, batched so BLAS sees big operands."""
    if groups == 1:
        pool.matmul(v, u, out=mm)
        return
    c_per_group, k_per_group = u.shape[1], u.shape[2] // groups
    for g in range(groups):
        ks = slice(g * k_per_group, (g + 1) * k_per_group)
        cs = slice(g * c_per_group, (g + 1) * c_per_group)
        # contiguous operands: torch.matmul on strided slices takes a slow path
        v_g, u_g = np.ascontiguousarray(v[:, :, cs]), np.ascontiguousarray(u[:, :, ks])
        pool.matmul(v_g, u_g, out=mm[:, :, ks])


@dataclass(frozen=True)
class WinogradFilter:
    """A weight pre-transformed for F(tile×tile, 3×3): ``u`` (α², C/groups, K) = G w Gᵀ."""

    u: np.ndarray
    tile: int


def prepare(w: np.ndarray, tile: int = 2, fused: int = 0) -> WinogradFilter:
    """The once-per-weight part of :func:`winograd`: the filter transform (``fused`` does not
    change it)."""
    del fused
    _check_tile(tile)
    return WinogradFilter(transform_filter(w, tile), tile)


def _check_tile(tile: int, fused: int = 0) -> None:
    if tile not in POINTS:
        raise ValueError(f"winograd: tile must be one of {TILE_SIZES}, got {tile!r}")
    if fused not in (0, 1) or isinstance(fused, float):
        raise ValueError(f"winograd: fused must be 0 (in stages) or 1 (fused), got {fused!r}")


def winograd(x, w, b, stride, padding, dilation, groups, tile=2, fused=0):
    """Winograd F(m×m, 3×3) with the α² GEMMs in the transformed domain (m = ``tile``), in
    stages or ``fused`` (:func:`winograd_with_filter`).

    ``w`` is the raw weight (K, C/groups, 3, 3) or a :class:`WinogradFilter` from :func:`prepare`.
    """
    _check_tile(tile, fused)
    if isinstance(w, WinogradFilter):
        if w.tile != tile:
            raise ValueError(f"winograd: weight prepared for tile={w.tile}, called with tile={tile}")
        u = w.u
    else:  # a one-off weight: its U lives for this call only
        shape = ((tile + 2) ** 2, w.shape[1], w.shape[0])
        u = transform_filter(w, tile, out=workspace.scratch("winograd.u", shape, w.dtype))
    return winograd_with_filter(x, u, b, padding, groups, tile, fused)


def applies(problem) -> bool:
    """Whether F(m, 3) computes the problem: 3×3 filters, stride 1, dilation 1."""
    return (
        tuple(problem.w_shape[2:]) == (3, 3)
        and tuple(problem.stride) == (1, 1)
        and tuple(problem.dilation) == (1, 1)
    )


def promising(problem) -> bool:
    """At least :data:`MIN_CHANNEL_PAIRS` (C/groups)·(K/groups): the α² GEMMs must repay the transforms."""
    c_per_group = problem.w_shape[1]
    return c_per_group * (problem.w_shape[0] // problem.groups) >= MIN_CHANNEL_PAIRS


#: Below this many channel pairs Winograd is not tuned: on 1×1, 4×4 and 8×8 channels (56×56 images)
#: it measured 7x, 3.5x and 1.5x slower than PyTorch, and every such call would compile it.
MIN_CHANNEL_PAIRS = 64


#: The fused setting is offered while U (α² × C/groups × K) is at most this: every fused job reads
#: all of U. Measured (BENCHMARKS.md §22): fused 0.7-0.95x the staged time with U up to 9.4 MB
#: (256 channels, F(4×4)), 1.4-6.5x with 17-38 MB (256 channels F(6×6), 512 channels).
FUSED_U_BYTES = 12 << 20


def tile_grid(problem) -> list[dict[str, int]]:
    """Every tile size whose single tile is not larger than the output, in stages; then each
    fused, where the layer has one group and U is small enough (:data:`FUSED_U_BYTES`)."""
    ho, wo = problem.out_shape[2:]
    useful = [m for m in TILE_SIZES if m == 2 or m <= max(ho, wo)]
    grid = [{"tile": m} for m in useful]
    k_out, c_per_group = problem.w_shape[:2]
    for m in useful:
        u_bytes = (m + 2) ** 2 * c_per_group * k_out * np.dtype(problem.dtype).itemsize
        if problem.groups == 1 and u_bytes <= FUSED_U_BYTES:
            grid.append({"tile": m, "fused": 1})
    return grid


register(
    KernelSpec(
        name="winograd",
        op="conv2d",
        fn=winograd,
        applies=applies,
        needs="3×3 filters, stride 1, dilation 1 (the only case F(m, 3) computes)",
        worth_tuning=promising,
        declines=f"fewer than {MIN_CHANNEL_PAIRS} channel pairs (C/groups × K/groups): the α² GEMMs are too "
        "small to repay the transforms",
        param_grid=tile_grid,
        defaults={"tile": 2},
        prepare=prepare,
        finite_only=True,
        version=12,  # 12: wide outputs leave through streaming stores (whole cache lines);
        # 11: each tile's transform in vector registers (simd.sandwich8);
        # 10: fused jobs of whole rows of tiles, sized by the busiest thread;
        # 9: filter transform in blocks of 8 channels, one expression per row;
        # 8: gather, scatter and the weight's re-layout in 8×8 register blocks;
        # 7: each transform pass one loop for all its outputs (inputs read once);
        # 6: fused jobs (transform, GEMMs, transform per block of tiles) instead of bands;
        # 5: V written row ξ by row ξ, 4×4 blocks on long rows; 4: bands, contiguous gather;
        # 3: generated transforms on row scratches; 2: channel-last, filter (α², C, K)
    )
)
