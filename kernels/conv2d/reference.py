"""The float64 reference conv2d (``method="naive"``) and the tuner's float64 oracle.

The reference is deliberately independent of the candidates: plain loops straight from the
definition, padding by bounds checks instead of a padded copy, float64 accumulation, no BLAS, no
shared helpers; the tests check every kernel against it and against PyTorch in float64.

The tuner checks candidates against :func:`torch_float64` (``ConvProblem.exact``): PyTorch's conv2d
on float64 operands, which also accumulates in float64 and shares no code with our candidates or
with the vendor's float32 path (oneDNN has no float64 kernel). It agrees with the loops to ~1e-15
and is 7-15x faster (0.05 s against 0.8 s on 8x128x28x28 ⊛ 128x128x3x3): the loops were the
largest fixed cost of tuning a large layer.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.registry import KernelSpec, register


@numba.njit(cache=True, parallel=True)
def _correlate_f64(x, w, b, sh, sw, pt, pl, dh, dw, groups, ho, wo):  # pragma: no cover - jitted
    n_batch, _, h, wd = x.shape
    k_out, c_per_group, kh, kw = w.shape
    k_per_group = k_out // groups
    y = np.empty((n_batch, k_out, ho, wo), dtype=np.float64)
    for job in numba.prange(n_batch * k_out):
        n = job // k_out
        k = job % k_out
        g = k // k_per_group
        for oh in range(ho):
            for ow in range(wo):
                acc = b[k]
                for c in range(c_per_group):
                    ci = g * c_per_group + c
                    for i in range(kh):
                        ih = oh * sh - pt + i * dh
                        if ih < 0 or ih >= h:
                            continue
                        for j in range(kw):
                            iw = ow * sw - pl + j * dw
                            if iw < 0 or iw >= wd:
                                continue
                            acc += x[n, ci, ih, iw] * w[k, c, i, j]
                y[n, k, oh, ow] = acc
    return y


def conv2d_reference(x, w, b, stride, padding, dilation, groups):
    """Direct-definition conv2d in float64; returns float64 (the oracle), or ``x.dtype`` via naive.

    ``y[n,k,oh,ow] = b[k] + Σ_{c,i,j} x[n, g·C/G + c, oh·sh − pt + i·dh, ow·sw − pl + j·dw] · w[k,c,i,j]``
    with out-of-range input positions reading as zero (padding).
    """
    sh, sw = stride
    pt, pb, pl, pr = padding
    dh, dw = dilation
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    bias = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    return _correlate_f64(
        np.asarray(x, dtype=np.float64),
        np.asarray(w, dtype=np.float64),
        bias,
        sh,
        sw,
        pt,
        pl,
        dh,
        dw,
        groups,
        ho,
        wo,
    )


def torch_float64(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """conv2d by PyTorch on float64 copies of the operands (asymmetric padding applied first)."""
    import torch  # the reference loops above stay importable without it

    pt, pb, pl, pr = padding
    wide = [None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in (x, w, b)]
    with torch.no_grad():
        xt = torch.nn.functional.pad(wide[0], (pl, pr, pt, pb)) if pt or pb or pl or pr else wide[0]
        return torch.nn.functional.conv2d(xt, wide[1], wide[2], stride, 0, dilation, groups).numpy()


def naive(x, w, b, stride, padding, dilation, groups):
    """Float64 reference loops, result cast to the input dtype (slow; for checking, not speed)."""
    return conv2d_reference(x, w, b, stride, padding, dilation, groups).astype(x.dtype, copy=False)


def small_enough(problem) -> bool:
    """Whether the problem is small enough to be worth timing (see ``declines``)."""
    n, k, ho, wo = problem.out_shape
    return n * k * ho * wo * int(np.prod(problem.w_shape[1:])) <= 2**24


register(
    KernelSpec(
        name="naive",
        op="conv2d",
        fn=naive,
        reference=True,
        worth_tuning=small_enough,
        declines="float64 loops only win on tiny problems; tried up to 2^24 multiply-adds",
    )
)
