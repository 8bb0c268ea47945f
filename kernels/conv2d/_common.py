"""Shared geometry for the conv2d candidates (the reference does not use this on purpose)."""

from __future__ import annotations

import numba
import numpy as np


def output_hw(hw: tuple[int, int], khw: tuple[int, int], stride, padding, dilation) -> tuple[int, int]:
    """Output height and width of a conv2d (floor division, as torch)."""
    (h, w), (kh, kw) = hw, khw
    pt, pb, pl, pr = padding
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return ho, wo


@numba.njit(cache=True, parallel=True)
def _pad_into(x, out, pt, pl):  # pragma: no cover - jitted
    n_batch, channels, h, w = x.shape
    for job in numba.prange(n_batch * channels):
        n = job // channels
        c = job % channels
        for i in range(h):
            out[n, c, pt + i, pl : pl + w] = x[n, c, i, :]


def pad_nchw(x: np.ndarray, padding, extra_bottom: int = 0, extra_right: int = 0) -> np.ndarray:
    """Zero-pad the two spatial axes (top, bottom, left, right), plus optional extra rows/columns.

    Returns ``x`` itself when there is nothing to pad.
    """
    pt, pb, pl, pr = padding
    if pt == pb == pl == pr == extra_bottom == extra_right == 0:
        return x
    n_batch, channels, h, w = x.shape
    out = np.zeros((n_batch, channels, h + pt + pb + extra_bottom, w + pl + pr + extra_right), dtype=x.dtype)
    _pad_into(x, out, pt, pl)
    return out


def add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``y += b`` broadcast over (N, K, Ho, Wo), in place."""
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y
