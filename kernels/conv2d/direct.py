"""Direct convolution: the definition as loops, arranged so the inner loop vectorises.

For every (batch, output channel) pair — the parallel axis — the output plane starts at the bias
and receives ``w[k,c,i,j] · x_pad[c, oh·sh + i·dh, ow·sw + j·dw]`` for each tap. Accumulation is
in the input dtype — this is "direct at the same precision". Two inner schemes:

* **flat** (stride 1): a padded input plane is one flat row of ``hp·wp`` values, and the output
  row ``oh`` at full padded width starts at ``oh·wp``; a tap ``(i, j)`` then adds one contiguous
  run of ``(ho-1)·wp + wo`` inputs, starting at ``i·dh·wp + j·dw``, to one contiguous scratch run.
  The runs are long whatever the image width (a 7-wide output row is a 7-element loop, mostly
  scalar remainder; its flat run is 61 elements), four taps go in one pass (a quarter of the
  scratch loads and stores), and the wasted ``wp - wo`` columns per row are dropped when the
  scratch is copied out with the bias.
* **rows** (any stride): one output row at a time, one tap at a time.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.conv2d._common import PARALLEL_MIN_WORK, output_hw, pad_nchw
from kernels.registry import KernelSpec, register


@numba.njit(cache=True, fastmath={"contract"})
def _accumulate_rows(out, src, taps, sh, sw, dh, dw):  # pragma: no cover - jitted
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


@numba.njit(cache=True, fastmath={"contract"})
def _accumulate_flat(run, src, taps, dh, dw, wp):  # pragma: no cover - jitted
    """``run[p] += Σ_ij taps[i, j] · src[i·dh·wp + j·dw + p]``: stride 1 on a flattened plane."""
    kh, kw = taps.shape
    n_taps, length = kh * kw, run.shape[0]
    t = 0
    while t + 4 <= n_taps:  # four taps per pass over the scratch run
        i0, j0 = divmod(t, kw)
        i1, j1 = divmod(t + 1, kw)
        i2, j2 = divmod(t + 2, kw)
        i3, j3 = divmod(t + 3, kw)
        a0, a1, a2, a3 = taps[i0, j0], taps[i1, j1], taps[i2, j2], taps[i3, j3]
        o0, o1 = i0 * dh * wp + j0 * dw, i1 * dh * wp + j1 * dw
        o2, o3 = i2 * dh * wp + j2 * dw, i3 * dh * wp + j3 * dw
        s0, s1 = src[o0 : o0 + length], src[o1 : o1 + length]
        s2, s3 = src[o2 : o2 + length], src[o3 : o3 + length]
        for p in range(length):
            run[p] += a0 * s0[p] + a1 * s1[p] + a2 * s2[p] + a3 * s3[p]
        t += 4
    while t < n_taps:
        i0, j0 = divmod(t, kw)
        a0, o0 = taps[i0, j0], i0 * dh * wp + j0 * dw
        s0 = src[o0 : o0 + length]
        for p in range(length):
            run[p] += a0 * s0[p]
        t += 1


FLAT_CHUNK = 2048


@numba.njit(cache=True)
def _flat_plane(out, planes, taps, start, dh, dw):  # pragma: no cover - jitted
    """``out = start + Σ_c`` stride-1 correlation of ``planes[c]`` (padded) with ``taps[c]``, by
    flat runs (module docstring), one L1-sized chunk of the run at a time."""
    ho, wo = out.shape
    wp = planes.shape[2]
    length = (ho - 1) * wp + wo
    run = np.empty(min(FLAT_CHUNK, length), dtype=out.dtype)
    for p0 in range(0, length, FLAT_CHUNK):
        n_run = min(FLAT_CHUNK, length - p0)
        chunk = run[:n_run]
        chunk[:] = 0.0
        for c in range(planes.shape[0]):
            _accumulate_flat(chunk, planes[c].ravel()[p0:], taps[c], dh, dw, wp)
        for oh in range(p0 // wp, (p0 + n_run - 1) // wp + 1):  # the chunk's valid columns
            lo, hi = max(oh * wp, p0), min(oh * wp + wo, p0 + n_run)
            if lo < hi:
                seg, dst = chunk[lo - p0 : hi - p0], out[oh, lo - oh * wp : hi - oh * wp]
                for q in range(hi - lo):
                    dst[q] = seg[q] + start


@numba.njit(cache=True)
def _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups, flat):  # pragma: no cover - jitted
    """One (batch, output channel) plane: bias, then every input channel of its group."""
    k_out, c_per_group = w.shape[0], w.shape[1]
    n = job // k_out
    k = job % k_out
    c0 = (k // (k_out // groups)) * c_per_group
    start = 0.0 if bias is None else bias[k]
    if flat:
        _flat_plane(y[n, k], xp[n, c0 : c0 + c_per_group], w[k], start, dh, dw)
        return
    y[n, k] = start
    for c in range(c_per_group):
        _accumulate_rows(y[n, k], xp[n, c0 + c], w[k, c], sh, sw, dh, dw)


# Two drivers over the same job: the per-plane work lives in plain functions so that its loops
# are compiled (and vectorised) as ordinary loops, not as part of an outlined prange body.
@numba.njit(cache=True, parallel=True)
def _direct_parallel(y, xp, w, bias, sh, sw, dh, dw, groups, flat):  # pragma: no cover - jitted
    for job in numba.prange(y.shape[0] * y.shape[1]):
        _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups, flat)


@numba.njit(cache=True)
def _direct(y, xp, w, bias, sh, sw, dh, dw, groups):  # pragma: no cover - jitted
    """Every (batch, output channel) plane, on the worker threads when the problem is large."""
    flat = sh == 1 and sw == 1
    if y.size * w[0].size >= PARALLEL_MIN_WORK:
        _direct_parallel(y, xp, w, bias, sh, sw, dh, dw, groups, flat)
    else:
        for job in range(y.shape[0] * y.shape[1]):
            _direct_job(y, xp, w, bias, job, sh, sw, dh, dw, groups, flat)


@numba.njit(cache=True)
def _direct_small(x, w, bias, sh, sw, pt, pb, pl, pr, dh, dw, groups):  # pragma: no cover - jitted
    """The whole call in one compiled function (output size, padding, buffer) for a small input."""
    n_batch, channels, h, wd = x.shape
    k_out, _, kh, kw = w.shape
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = x
    if pt or pb or pl or pr:
        xp = np.zeros((n_batch, channels, h + pt + pb, wd + pl + pr), dtype=x.dtype)
        xp[:, :, pt : pt + h, pl : pl + wd] = x
    y = np.empty((n_batch, k_out, ho, wo), dtype=x.dtype)
    _direct(y, xp, w, bias, sh, sw, dh, dw, groups)
    return y


#: Inputs up to this many elements take :func:`_direct_small`: ~1 µs less Python per call, which
#: is most of the cost of a small single-channel convolution.
SMALL_INPUT = 1 << 16


def direct(x, w, b, stride, padding, dilation, groups):
    """Direct convolution with Numba ``prange`` over (batch, output channel); any geometry."""
    if x.size <= SMALL_INPUT:
        return _direct_small(x, w, b, stride[0], stride[1], *padding, dilation[0], dilation[1], groups)
    # Large buffers come from numpy, not Numba: numpy asks for huge pages on large arrays (a
    # 100 MB output allocated inside Numba page-faults ~25% slower).
    ho, wo = output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = np.empty((x.shape[0], w.shape[0], ho, wo), dtype=x.dtype)
    _direct(y, pad_nchw(x, padding), w, b, stride[0], stride[1], dilation[0], dilation[1], groups)
    return y


register(KernelSpec(name="direct", op="conv2d", fn=direct, version=2))  # 2: flat runs (stride 1)
