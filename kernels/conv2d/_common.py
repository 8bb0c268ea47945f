"""Shared geometry for the conv2d candidates (the reference does not use this on purpose)."""

from __future__ import annotations

import numba
import numpy as np

from kernels import pool  # noqa: F401  (first: every conv kernel's threads on PyTorch's pool)
from kernels.simd import LANES, element_strides, transpose8, transpose8_plus


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


@numba.njit(cache=True)
def rows_channels_first_by_blocks(rows, bias, y, n, row0, col0):  # pragma: no cover - jitted
    """:func:`rows_channels_first` in 8×8 blocks of columns × channels, each transposed in vector
    registers with the bias added (:func:`kernels.simd.transpose8_plus`); the one-channel loop
    takes the edges, and all of it where an array's last axis is not contiguous."""
    rs, r_whole = element_strides(rows)
    ys, y_whole = element_strides(y)
    _, b_whole = element_strides(bias)
    if not (r_whole and y_whole and b_whole):
        rows_channels_first(rows, bias, y, n, row0, col0)
        return
    height, channels = y.shape[2], y.shape[1]
    cols = max(0, min(rows.shape[1], y.shape[3] - col0))
    whole, blocks = cols - cols % LANES, channels - channels % LANES
    for a in range(rows.shape[0]):
        row = row0 + a
        if row >= height:
            break
        src = rows[a]
        for k in range(0, blocks, LANES):
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
