"""Direct convolution: the definition as loops, arranged so the inner loop vectorises.

For every (batch, output channel) pair — the parallel axis — the output plane starts at the bias
and receives ``w[k,c,i,j] · x_pad[c, oh·sh + i·dh, ow·sw + j·dw]`` for each tap; the innermost
loop runs along an output row (contiguous input when the stride is 1), so LLVM emits SIMD
multiply-adds. Accumulation is in the input dtype — this is "direct at the same precision".
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.conv2d._common import output_hw, pad_nchw
from kernels.registry import KernelSpec, register


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _direct(xp, w, bias, sh, sw, dh, dw, groups, ho, wo):  # pragma: no cover - jitted
    n_batch = xp.shape[0]
    k_out, c_per_group, kh, kw = w.shape
    k_per_group = k_out // groups
    y = np.empty((n_batch, k_out, ho, wo), dtype=xp.dtype)
    for job in numba.prange(n_batch * k_out):
        n = job // k_out
        k = job % k_out
        c0 = (k // k_per_group) * c_per_group
        plane = y[n, k]
        plane[:, :] = bias[k]
        for c in range(c_per_group):
            src = xp[n, c0 + c]
            for i in range(kh):
                for j in range(kw):
                    tap = w[k, c, i, j]
                    for oh in range(ho):
                        row = src[oh * sh + i * dh]
                        out = plane[oh]
                        base = j * dw
                        for ow in range(wo):
                            out[ow] += tap * row[base + ow * sw]
    return y


def direct(x, w, b, stride, padding, dilation, groups):
    """Direct convolution with Numba ``prange`` over (batch, output channel); any geometry."""
    ho, wo = output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    bias = np.zeros(w.shape[0], dtype=x.dtype) if b is None else b
    xp = pad_nchw(x, padding)
    return _direct(xp, w, bias, stride[0], stride[1], dilation[0], dilation[1], groups, ho, wo)


register(KernelSpec(name="direct", op="conv2d", fn=direct))
