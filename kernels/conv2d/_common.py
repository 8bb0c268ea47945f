"""Shared geometry for the conv2d candidates (the reference does not use this on purpose)."""

from __future__ import annotations

import numba
import numpy as np

from kernels import pool  # noqa: F401  (first: every conv kernel's threads on PyTorch's pool)
from kernels.simd import (
    LANES,
    LINE_BYTES,
    element_strides,
    fence,
    transpose8,
    transpose8_plus,
    transpose_lines_plus,
)


def output_hw(hw: tuple[int, int], khw: tuple[int, int], stride, padding, dilation) -> tuple[int, int]:
    """Output height and width of a conv2d (floor division, as torch)."""
    (h, w), (kh, kw) = hw, khw
    pt, pb, pl, pr = padding
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return ho, wo


#: Below this many multiply-adds (or elements moved) a kernel runs its serial Numba driver: waking
#: the worker threads costs more than such a problem takes on one core (the measured crossover of
#: direct conv is near 1e6 multiply-adds; BENCHMARKS.md has the seed preset's serial timings).
PARALLEL_MIN_WORK = 1 << 20


def pad_nchw(x: np.ndarray, padding, extra_bottom: int = 0, extra_right: int = 0) -> np.ndarray:
    """Zero-pad the two spatial axes (top, bottom, left, right), plus optional extra rows/columns.

    Returns ``x`` itself when there is nothing to pad.
    """
    pt, pb, pl, pr = padding
    if pt == pb == pl == pr == extra_bottom == extra_right == 0:
        return x
    n_batch, channels, h, w = x.shape
    out = np.zeros((n_batch, channels, h + pt + pb + extra_bottom, w + pl + pr + extra_right), dtype=x.dtype)
    out[:, :, pt : pt + h, pl : pl + w] = x  # one memory-bound copy; threads would not pay
    return out


def add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``y += b`` broadcast over (N, K, Ho, Wo), in place."""
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


#: Scratch rows at least this long are moved in 8×8 blocks of channels × columns, transposed in
#: vector registers (:func:`rows_channels_last_by_blocks`, :func:`rows_channels_first_by_blocks`;
#: the Winograd codelets choose). Measured against the one-channel loops (BENCHMARKS.md §25).
BLOCK_MIN_COLUMNS = 16


@numba.njit(cache=True)
def _zero_outside(dst, src_row, height, lo, hi):  # pragma: no cover - jitted
    """Zero a gathered scratch row ``dst`` where it lies outside the image (the padding): all of
    it if input row ``src_row`` does, else its columns before ``lo`` and from ``hi``. Returns
    whether any of the row is inside."""
    if src_row < 0 or src_row >= height or lo >= hi:
        dst[:, :] = 0
        return False
    dst[:lo, :] = 0
    dst[hi:, :] = 0
    return True


@numba.njit(cache=True)
def rows_channels_last(x, n, row0, col0, rows):  # pragma: no cover - jitted
    """rows[i, j, c] = x[n, c, row0 + i, col0 + j]; zero outside ``x`` (the padding).

    Gathers a block of NCHW rows channel-last into a scratch that tiled kernels then read with
    their SIMD lanes across channels; ``row0`` and ``col0`` may be negative (top/left padding).
    """
    height, width = x.shape[2], x.shape[3]
    lo, hi = max(0, -col0), max(0, min(rows.shape[1], width - col0))
    for i in range(rows.shape[0]):
        src_row = row0 + i
        if not _zero_outside(rows[i], src_row, height, lo, hi):
            continue
        band = rows[i, lo:hi]
        for c in range(x.shape[1]):  # one contiguous read per channel: prefetchers follow it
            src = x[n, c, src_row, col0 + lo : col0 + hi]
            for j in range(hi - lo):
                band[j, c] = src[j]


@numba.njit(cache=True)
def rows_channels_first(rows, bias, y, n, row0, col0):  # pragma: no cover - jitted
    """y[n, k, row0 + a, col0 + j] = rows[a, j, k] + bias[k], cropped to ``y``'s height and width.

    The inverse of :func:`rows_channels_last` for a block of output rows, with the bias fused.
    """
    height = y.shape[2]
    cols = max(0, min(rows.shape[1], y.shape[3] - col0))
    for a in range(rows.shape[0]):
        row = row0 + a
        if row >= height:
            break
        src = rows[a]
        for k in range(y.shape[1]):
            dst = y[n, k, row, col0 : col0 + cols]
            b = bias[k]
            for j in range(cols):
                dst[j] = src[j, k] + b


@numba.njit(cache=True)
def rows_channels_last_by_blocks(x, n, row0, col0, rows):  # pragma: no cover - jitted
    """:func:`rows_channels_last` in 8×8 blocks of channels × columns, each transposed in vector
    registers (:func:`kernels.simd.transpose8`); the one-channel loop takes the edges, and all of
    it where either array's last axis is not contiguous."""
    xs, x_whole = element_strides(x)
    rs, r_whole = element_strides(rows)
    if not (x_whole and r_whole):
        rows_channels_last(x, n, row0, col0, rows)
        return
    height, width, channels = x.shape[2], x.shape[3], x.shape[1]
    lo, hi = max(0, -col0), max(0, min(rows.shape[1], width - col0))
    span = hi - lo
    whole, blocks = span - span % LANES, channels - channels % LANES
    for i in range(rows.shape[0]):
        src_row = row0 + i
        if not _zero_outside(rows[i], src_row, height, lo, hi):
            continue
        band = rows[i, lo:hi]
        for c in range(0, blocks, LANES):
            src = n * xs[0] + c * xs[1] + src_row * xs[2] + col0 + lo
            dst = i * rs[0] + lo * rs[1] + c
            for j in range(0, whole, LANES):
                transpose8(x, src + j, xs[1], rows, dst + j * rs[1], rs[1])
            for cc in range(c, c + LANES):
                tail = x[n, cc, src_row, col0 + lo : col0 + hi]
                for j in range(whole, span):
                    band[j, cc] = tail[j]
        for c in range(blocks, channels):
            src_c = x[n, c, src_row, col0 + lo : col0 + hi]
            for j in range(span):
                band[j, c] = src_c[j]


#: Outputs at least this large, with rows at least :data:`STREAM_MIN_LINES` cache lines wide,
#: leave :func:`rows_channels_first_by_blocks` through streaming stores (:func:`_rows_streamed`).
#: Measured on fused Winograd F(4×4), alternating with the cached stores in one process
#: (BENCHMARKS.md §29): 1×64×224×224 0.96x and 1×128×112×112 0.97x the time per call, 0.97x and
#: 0.98x in chains of four layers, each reading the last one's output (from memory instead of
#: cache); streamed too, chains of 56-column layers took 1.04-1.06x, so narrower rows keep the
#: cache.
STREAM_MIN_BYTES = 512 << 10
STREAM_MIN_LINES = 4


@numba.njit(cache=True)
def rows_channels_first_by_blocks(rows, bias, y, n, row0, col0):  # pragma: no cover - jitted
    """:func:`rows_channels_first` in 8×8 blocks of columns × channels, each transposed in vector
    registers with the bias added (:func:`kernels.simd.transpose8_plus`); the one-channel loop
    takes the edges, and all of it where an array's last axis is not contiguous. Large outputs
    with wide rows (:data:`STREAM_MIN_BYTES`) take :func:`_rows_streamed` for the blocks."""
    rs, r_whole = element_strides(rows)
    ys, y_whole = element_strides(y)
    _, b_whole = element_strides(bias)
    if not (r_whole and y_whole and b_whole):
        rows_channels_first(rows, bias, y, n, row0, col0)
        return
    height, channels = y.shape[2], y.shape[1]
    cols = max(0, min(rows.shape[1], y.shape[3] - col0))
    count = max(0, min(rows.shape[0], height - row0))
    whole, blocks = cols - cols % LANES, channels - channels % LANES
    line = LINE_BYTES // y.itemsize
    wide = y.shape[3] >= STREAM_MIN_LINES * line and whole >= line
    streamed = wide and y.size * y.itemsize >= STREAM_MIN_BYTES and ys[1] % line == 0
    if streamed:
        _rows_streamed(rows, rs, bias, y, ys, n, row0, col0, count, whole, blocks)
    for a in range(count):
        row = row0 + a
        src = rows[a]
        for k in range(0, blocks, LANES):
            if not streamed:
                dst = n * ys[0] + k * ys[1] + row * ys[2] + col0
                for j in range(0, whole, LANES):
                    transpose8_plus(rows, a * rs[0] + j * rs[1] + k, rs[1], y, dst + j, ys[1], bias, k)
            for kk in range(k, k + LANES):
                tail = y[n, kk, row, col0 : col0 + cols]
                b = bias[kk]
                for j in range(whole, cols):
                    tail[j] = src[j, kk] + b
        for k in range(blocks, channels):
            dst_k = y[n, k, row, col0 : col0 + cols]
            b = bias[k]
            for j in range(cols):
                dst_k[j] = src[j, k] + b


@numba.njit(cache=True)
def _rows_streamed(rows, rs, bias, y, ys, n, row0, col0, count, whole, blocks):  # pragma: no cover
    """The whole 8×8 blocks of :func:`rows_channels_first_by_blocks` (``whole`` columns of
    ``count`` rows, ``blocks`` channels) in each channel's memory order, every whole cache line of
    the output written by one streaming store (:func:`kernels.simd.transpose_lines_plus`), the
    blocks that are not part of one by :func:`kernels.simd.transpose8_plus`; then a fence.

    A streaming store skips the cache: no read of the line before it is overwritten, and no
    eviction of what the job keeps there (its V, M and U). Where the rows are the output's whole
    width, one row follows the other in memory, and a line that straddles two rows (56 float32
    columns are 3.5 lines) is streamed too: from a block at the end of one row and one at the
    start of the next.
    """
    line = LINE_BYTES // y.itemsize
    per_line = line // LANES  # blocks of eight columns per line (2 float32, 1 float64)
    per_row = whole // LANES
    joined = col0 == 0 and whole == y.shape[3] == ys[2]  # rows contiguous in memory
    base = y.ctypes.data // y.itemsize
    total = count * per_row
    for k in range(0, blocks, LANES):
        plane = n * ys[0] + k * ys[1] + col0
        i = 0
        while i < total:
            a, j = i // per_row, (i % per_row) * LANES
            dst, at = plane + (row0 + a) * ys[2] + j, a * rs[0] + j * rs[1] + k
            if (base + dst) % line == 0 and i + per_line <= total and (joined or j + line <= whole):
                a2, j2 = (i + 1) // per_row, ((i + 1) % per_row) * LANES  # the next block in memory
                at2 = a2 * rs[0] + j2 * rs[1] + k
                transpose_lines_plus(rows, at, at2, rs[1], y, dst, ys[1], bias, k)
                i += per_line
            else:
                transpose8_plus(rows, at, rs[1], y, dst, ys[1], bias, k)
                i += 1
    fence()


@numba.njit(cache=True)
def rows_lane_blocks(x, n, row0, col0, rows):  # pragma: no cover - jitted
    """rows[cb, j, i, l] = x[n, cb·8 + l, row0 + i, col0 + j]; zero outside ``x`` and beyond its
    channels.

    The lane-blocked scratch of the FFT tile codelets: every vector of 8 channels of a (row,
    column) sits at a constant offset from its neighbours' (``(j·rows + i)·8``), so a codelet's
    loads and stores each have one base and LLVM vectorises them without runtime alias checks
    per stream. Whole 8×8 blocks of channels × columns are transposed in vector registers.
    """
    rows[:] = 0
    xs, x_whole = element_strides(x)
    height, width, channels = x.shape[2], x.shape[3], x.shape[1]
    blocks, span, depth = rows.shape[0], rows.shape[1], rows.shape[2]
    lo, hi = max(0, -col0), max(0, min(span, width - col0))
    flat = rows.reshape(rows.size)
    for i in range(depth):
        src_row = row0 + i
        if src_row < 0 or src_row >= height:
            continue
        for cb in range(blocks):
            lanes = min(LANES, channels - cb * LANES)
            j = lo
            if x_whole and lanes == LANES:
                src = n * xs[0] + cb * LANES * xs[1] + src_row * xs[2] + col0
                while j + LANES <= hi:
                    transpose8(x, src + j, xs[1], flat, ((cb * span + j) * depth + i) * LANES, depth * LANES)
                    j += LANES
            for jj in range(j, hi):
                for lane in range(lanes):
                    rows[cb, jj, i, lane] = x[n, cb * LANES + lane, src_row, col0 + jj]


@numba.njit(cache=True)
def lane_blocks_channels_first(out, bias, y, n, row0, col0):  # pragma: no cover - jitted
    """y[n, kb·8 + l, row0 + i, col0 + j] = out[kb, j, i, l] + bias[kb·8 + l], cropped to ``y``.

    The inverse of :func:`rows_lane_blocks` for output rows, with the bias fused; whole 8×8
    blocks of columns × channels transposed in vector registers."""
    ys, y_whole = element_strides(y)
    height, width, channels = y.shape[2], y.shape[3], y.shape[1]
    blocks, span, depth = out.shape[0], out.shape[1], out.shape[2]
    cols = max(0, min(span, width - col0))
    flat = out.reshape(out.size)
    for i in range(depth):
        row = row0 + i
        if row >= height:
            break
        for kb in range(blocks):
            lanes = min(LANES, channels - kb * LANES)
            j = 0
            if y_whole and lanes == LANES:
                dst = n * ys[0] + kb * LANES * ys[1] + row * ys[2] + col0
                while j + LANES <= cols:
                    src = ((kb * span + j) * depth + i) * LANES
                    transpose8_plus(flat, src, depth * LANES, y, dst + j, ys[1], bias, kb * LANES)
                    j += LANES
            for jj in range(j, cols):
                for lane in range(lanes):
                    k = kb * LANES + lane
                    y[n, k, row, col0 + jj] = out[kb, jj, i, lane] + bias[k]
