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


@numba.njit(cache=True)
def rows_channels_last(x, n, row0, col0, rows):  # pragma: no cover - jitted
    """rows[i, j, c] = x[n, c, row0 + i, col0 + j]; zero outside ``x`` (the padding).

    Gathers a block of NCHW rows channel-last into a scratch that tiled kernels then read with
    their SIMD lanes across channels; ``row0`` and ``col0`` may be negative (top/left padding).
    """
    height, width = x.shape[2], x.shape[3]
    lo, hi = max(0, -col0), max(0, min(rows.shape[1], width - col0))
    for i in range(rows.shape[0]):
        dst = rows[i]
        src_row = row0 + i
        if src_row < 0 or src_row >= height or lo >= hi:
            dst[:, :] = 0
            continue
        dst[:lo, :] = 0
        dst[hi:, :] = 0
        band = dst[lo:hi]
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
