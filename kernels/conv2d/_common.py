"""Shared geometry for the conv2d candidates (the reference does not use this on purpose)."""

from __future__ import annotations

import numba
import numpy as np

from kernels import pool  # noqa: F401  (first: every conv kernel's threads on PyTorch's pool)


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


#: Scratch rows at least this long are moved four channels at a time, in 4×4 blocks
#: (:func:`rows_channels_last_by_quads`, :func:`rows_channels_first_by_quads`; the Winograd codelets
#: choose). Measured against the one-channel loops: 0.66-0.87x the transform's time where rows are
#: long (64-256 channels at 56-224 pixels), but 1.15-1.19x on rows of 22 columns (256 channels in
#: blocks of 5 tiles) (``benchmarks/winograd_ab.py``, BENCHMARKS.md §21).
QUAD_MIN_COLUMNS = 32


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
def rows_channels_last_by_quads(x, n, row0, col0, rows):  # pragma: no cover - jitted
    """:func:`rows_channels_last` four channels at a time, in 4×4 blocks: for long rows (see
    :data:`QUAD_MIN_COLUMNS`)."""
    height, width = x.shape[2], x.shape[3]
    channels = x.shape[1]
    lo, hi = max(0, -col0), max(0, min(rows.shape[1], width - col0))
    span = hi - lo
    whole, quads = span - span % 4, channels - channels % 4
    for i in range(rows.shape[0]):
        src_row = row0 + i
        if not _zero_outside(rows[i], src_row, height, lo, hi):
            continue
        band = rows[i, lo:hi]
        for c in range(0, quads, 4):
            s0 = x[n, c, src_row, col0 + lo : col0 + hi]
            s1 = x[n, c + 1, src_row, col0 + lo : col0 + hi]
            s2 = x[n, c + 2, src_row, col0 + lo : col0 + hi]
            s3 = x[n, c + 3, src_row, col0 + lo : col0 + hi]
            for j in range(0, whole, 4):
                d0, d1, d2, d3 = band[j], band[j + 1], band[j + 2], band[j + 3]
                d0[c], d0[c + 1], d0[c + 2], d0[c + 3] = s0[j], s1[j], s2[j], s3[j]
                d1[c], d1[c + 1], d1[c + 2], d1[c + 3] = s0[j + 1], s1[j + 1], s2[j + 1], s3[j + 1]
                d2[c], d2[c + 1], d2[c + 2], d2[c + 3] = s0[j + 2], s1[j + 2], s2[j + 2], s3[j + 2]
                d3[c], d3[c + 1], d3[c + 2], d3[c + 3] = s0[j + 3], s1[j + 3], s2[j + 3], s3[j + 3]
            for j in range(whole, span):
                band[j, c], band[j, c + 1], band[j, c + 2], band[j, c + 3] = s0[j], s1[j], s2[j], s3[j]
        for c in range(quads, channels):
            src = x[n, c, src_row, col0 + lo : col0 + hi]
            for j in range(span):
                band[j, c] = src[j]


@numba.njit(cache=True)
def rows_channels_first_by_quads(rows, bias, y, n, row0, col0):  # pragma: no cover - jitted
    """:func:`rows_channels_first` four channels at a time, in 4×4 blocks: for long rows (see
    :data:`QUAD_MIN_COLUMNS`)."""
    height, channels = y.shape[2], y.shape[1]
    cols = max(0, min(rows.shape[1], y.shape[3] - col0))
    whole, quads = cols - cols % 4, channels - channels % 4
    for a in range(rows.shape[0]):
        row = row0 + a
        if row >= height:
            break
        src = rows[a]
        for k in range(0, quads, 4):
            d0 = y[n, k, row, col0 : col0 + cols]
            d1 = y[n, k + 1, row, col0 : col0 + cols]
            d2 = y[n, k + 2, row, col0 : col0 + cols]
            d3 = y[n, k + 3, row, col0 : col0 + cols]
            b0, b1, b2, b3 = bias[k], bias[k + 1], bias[k + 2], bias[k + 3]
            for j in range(0, whole, 4):
                s0, s1, s2, s3 = src[j], src[j + 1], src[j + 2], src[j + 3]
                d0[j], d0[j + 1], d0[j + 2], d0[j + 3] = s0[k] + b0, s1[k] + b0, s2[k] + b0, s3[k] + b0
                d1[j], d1[j + 1], d1[j + 2], d1[j + 3] = (
                    s0[k + 1] + b1,
                    s1[k + 1] + b1,
                    s2[k + 1] + b1,
                    s3[k + 1] + b1,
                )
                d2[j], d2[j + 1], d2[j + 2], d2[j + 3] = (
                    s0[k + 2] + b2,
                    s1[k + 2] + b2,
                    s2[k + 2] + b2,
                    s3[k + 2] + b2,
                )
                d3[j], d3[j + 1], d3[j + 2], d3[j + 3] = (
                    s0[k + 3] + b3,
                    s1[k + 3] + b3,
                    s2[k + 3] + b3,
                    s3[k + 3] + b3,
                )
            for j in range(whole, cols):
                s = src[j]
                d0[j], d1[j], d2[j], d3[j] = s[k] + b0, s[k + 1] + b1, s[k + 2] + b2, s[k + 3] + b3
        for k in range(quads, channels):
            dst = y[n, k, row, col0 : col0 + cols]
            b = bias[k]
            for j in range(cols):
                dst[j] = src[j, k] + b
