"""im2col + GEMM: gather every receptive field into a column, then one BLAS GEMM per group.

``col[n, g, (c·kh + i)·kw + j, oh·Wo + ow] = x_pad[n, g·C/G + c, oh·sh + i·dh, ow·sw + j·dw]``
(a Numba gather, parallel over input channels), then
``y[n, g] = w[g] (K/G × C/G·kh·kw) @ col[n, g] (C/G·kh·kw × Ho·Wo)`` through
:func:`kernels.pool.matmul` (MKL, on the OpenMP threads shared with PyTorch and Numba). The GEMM
output is already NCHW, so no transpose follows.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels import pool
from kernels.conv2d._common import PARALLEL_MIN_WORK, add_bias, output_hw, pad_nchw
from kernels.registry import KernelSpec, register


@numba.njit(cache=True)
def _gather_plane(src, col_rows, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover - jitted
    """Columns of one input channel: ``col_rows[i·kw + j, oh·Wo + ow] = src[oh·sh + i·dh, ow·sw + j·dw]``.

    Copies index contiguous views with the loop variable only (see direct.py: a possibly
    negative index keeps Numba's loops scalar).
    """
    for i in range(kh):
        for j in range(kw):
            dst = col_rows[i * kw + j]
            for oh in range(ho):
                out = dst[oh * wo : oh * wo + wo]
                row = src[oh * sh + i * dh]
                start = j * dw
                if sw == 1:
                    contiguous = row[start : start + wo]
                    for ow in range(wo):
                        out[ow] = contiguous[ow]
                else:
                    strided = row[start : start + (wo - 1) * sw + 1 : sw]
                    for ow in range(wo):
                        out[ow] = strided[ow]


@numba.njit(cache=True)
def _gather_job(xp, col, job, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover - jitted
    """The columns of one (batch, input channel) plane into its rows of ``col``."""
    c_in = xp.shape[1]
    c_per_group = c_in // col.shape[1]
    n = job // c_in
    c = job % c_in
    first = (c % c_per_group) * kh * kw
    rows = col[n, c // c_per_group, first : first + kh * kw]
    _gather_plane(xp[n, c], rows, kh, kw, sh, sw, dh, dw, ho, wo)


@numba.njit(cache=True, parallel=True)
def _gather_parallel(xp, col, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover - jitted
    for job in numba.prange(xp.shape[0] * xp.shape[1]):
        _gather_job(xp, col, job, kh, kw, sh, sw, dh, dw, ho, wo)


@numba.njit(cache=True)
def _gather_serial(xp, col, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover - jitted
    for job in range(xp.shape[0] * xp.shape[1]):
        _gather_job(xp, col, job, kh, kw, sh, sw, dh, dw, ho, wo)


def gather_columns(xp, groups, kh, kw, stride, dilation, ho, wo) -> np.ndarray:
    """``col`` (N, G, C/G·kh·kw, Ho·Wo) from the padded input (serially when small)."""
    n_batch, c_in = xp.shape[0], xp.shape[1]
    col = np.empty((n_batch, groups, c_in // groups * kh * kw, ho * wo), dtype=xp.dtype)
    driver = _gather_parallel if col.size >= PARALLEL_MIN_WORK else _gather_serial
    driver(xp, col, kh, kw, *stride, *dilation, ho, wo)
    return col


def im2col(x, w, b, stride, padding, dilation, groups):
    """im2col gather (Numba) + one BLAS GEMM per (batch, group)."""
    n_batch = x.shape[0]
    k_out, c_per_group, kh, kw = w.shape
    ho, wo = output_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    col = gather_columns(pad_nchw(x, padding), groups, kh, kw, stride, dilation, ho, wo)
    w_groups = w.reshape(groups, k_out // groups, c_per_group * kh * kw)
    y = pool.matmul(w_groups, col)  # (N, G, K/G, Ho·Wo): NCHW once reshaped
    return add_bias(y.reshape(n_batch, k_out, ho, wo), b)


register(KernelSpec(name="im2col", op="conv2d", fn=im2col))
