"""im2col + GEMM: gather every receptive field into a column, then one BLAS GEMM per group.

``col[n, g, (c·kh + i)·kw + j, oh·Wo + ow] = x_pad[n, g·C/G + c, oh·sh + i·dh, ow·sw + j·dw]``
(a Numba gather, parallel over input channels), then
``y[n, g] = w[g] (K/G × C/G·kh·kw) @ col[n, g] (C/G·kh·kw × Ho·Wo)`` through ``np.matmul``, whose
stacked GEMMs go to BLAS. The GEMM output is already NCHW, so no transpose follows.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.conv2d._common import add_bias, output_hw, pad_nchw
from kernels.registry import KernelSpec, register


@numba.njit(cache=True, parallel=True)
def _gather_columns(xp, groups, kh, kw, sh, sw, dh, dw, ho, wo):  # pragma: no cover - jitted
    n_batch, c_in = xp.shape[0], xp.shape[1]
    c_per_group = c_in // groups
    col = np.empty((n_batch, groups, c_per_group * kh * kw, ho * wo), dtype=xp.dtype)
    for job in numba.prange(n_batch * c_in):
        n = job // c_in
        c = job % c_in
        g = c // c_per_group
        c_local = c % c_per_group
        src = xp[n, c]
        for i in range(kh):
            for j in range(kw):
                dst = col[n, g, (c_local * kh + i) * kw + j]
                for oh in range(ho):
                    row = src[oh * sh + i * dh]
                    offset = oh * wo
                    for ow in range(wo):
                        dst[offset + ow] = row[ow * sw + j * dw]
    return col


def im2col(x, w, b, stride, padding, dilation, groups):
    """im2col gather (Numba) + one BLAS GEMM per (batch, group)."""
    n_batch = x.shape[0]
    k_out, c_per_group, kh, kw = w.shape
    ho, wo = output_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    xp = pad_nchw(x, padding)
    col = _gather_columns(xp, groups, kh, kw, *stride, *dilation, ho, wo)
    w_groups = w.reshape(groups, k_out // groups, c_per_group * kh * kw)
    y = np.matmul(w_groups, col)  # (N, G, K/G, Ho·Wo): NCHW once reshaped
    return add_bias(y.reshape(n_batch, k_out, ho, wo), b)


register(KernelSpec(name="im2col", op="conv2d", fn=im2col))
