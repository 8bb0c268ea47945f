"""Shared geometry for the conv2d candidates (the reference does not use this on purpose)."""

from __future__ import annotations

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
