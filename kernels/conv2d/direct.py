"""Direct convolution: the definition as loops, arranged so the inner loop vectorises.

For every (batch, output channel) pair — the parallel axis — the output plane starts at the bias
and receives ``w[k,c,i,j] · x_pad[c, oh·sh + i·dh, ow·sw + j·dw]`` for each tap; the innermost
loop runs along an output row (contiguous input when the stride is 1, written as its own loop so
LLVM emits SIMD multiply-adds). Accumulation is in the input dtype — this is "direct at the same precision".
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.conv2d._common import PARALLEL_MIN_WORK, output_hw, pad_nchw
from kernels.registry import KernelSpec, register


@numba.njit(cache=True, fastmath={"contract"})
def _accumulate_plane(out, src, taps, sh, sw, dh, dw):  # pragma: no cover - jitted
    """``out[oh, ow] += Σ_ij taps[i, j] · src[oh·sh + i·dh, ow·sw + j·dw]`` for one channel pair."""
    ho, wo = out.shape
    kh, kw = taps.shape
    for oh in range(ho):
        dst = out[oh]
        for i in range(kh):
            row = src[oh * sh + i * dh]
            for j in range(kw):
                tap = taps[i, j]
                start = j * dw
                # Index only with the loop variable: Numba wraps negative indices, and an index
                # that *might* be negative (start + ow with a runtime start) keeps LLVM from
                # vectorising. A contiguous slice also keeps the unit stride known (about 4x
                # faster per plane); the two branches keep the two slice layouts apart.
                if sw == 1:
                    contiguous = row[start : start + wo]
                    for ow in range(wo):
                        dst[ow] += tap * contiguous[ow]
                else:
                    strided = row[start : start + (wo - 1) * sw + 1 : sw]
                    for ow in range(wo):
                        dst[ow] += tap * strided[ow]


@numba.njit(cache=True)
def _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups):  # pragma: no cover - jitted
    """One (batch, output channel) plane: bias, then every input channel of its group."""
    k_out, c_per_group = w.shape[0], w.shape[1]
    n = job // k_out
    k = job % k_out
    c0 = (k // (k_out // groups)) * c_per_group
    y[n, k] = bias[k]
    for c in range(c_per_group):
        _accumulate_plane(y[n, k], xp[n, c0 + c], w[k, c], sh, sw, dh, dw)


# Two drivers over the same job: the per-plane work lives in plain functions so that its loops
# are compiled (and vectorised) as ordinary loops, not as part of an outlined prange body.
@numba.njit(cache=True, parallel=True)
def _direct_parallel(y, xp, w, bias, sh, sw, dh, dw, groups):  # pragma: no cover - jitted
    for job in numba.prange(y.shape[0] * y.shape[1]):
        _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups)


@numba.njit(cache=True)
def _direct_serial(y, xp, w, bias, sh, sw, dh, dw, groups):  # pragma: no cover - jitted
    for job in range(y.shape[0] * y.shape[1]):
        _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups)


def direct(x, w, b, stride, padding, dilation, groups):
    """Direct convolution with Numba ``prange`` over (batch, output channel); any geometry."""
    n_batch, k_out = x.shape[0], w.shape[0]
    ho, wo = output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else b
    xp = pad_nchw(x, padding)
    y = np.empty((n_batch, k_out, ho, wo), dtype=x.dtype)
    macs = y.size * w[0].size
    driver = _direct_parallel if macs >= PARALLEL_MIN_WORK else _direct_serial
    driver(y, xp, w, bias, stride[0], stride[1], dilation[0], dilation[1], groups)
    return y


register(KernelSpec(name="direct", op="conv2d", fn=direct))
