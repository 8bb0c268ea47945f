"""FFT convolution in emulated low-precision floating point, on a radix-2 FFT of our own.

A library FFT cannot be rounded step by step, so this is an iterative radix-2 decimation-in-time
FFT (bit-reversal permutation, then log2 P butterfly stages) in which every real operation is
rounded to the compute format ``comp``:

    t = w·b   (tr = rnd(rnd(wr·br) − rnd(wi·bi)), ti = rnd(rnd(wr·bi) + rnd(wi·br)))
    a' = rnd(a + t),  b' = rnd(a − t)

with the twiddle factors ``w = exp(∓2πij/P)`` computed in float64 and rounded once to ``comp``.
The inverse transform halves both outputs of every butterfly (exact: a power of two), spreading
the 1/P normalisation over the stages so that float16 intermediates do not overflow.

Convolution (cross-correlation) of an input zero-padded to P×P, P a power of two ≥ the padded
size: ``y = IFFT2( Σ_c X[c] · conj(W[k, c]) )`` cropped to the valid region, plus the bias.

* ``X`` (forward FFT of the stored input): every operation in ``comp``, result stored in ``store``;
* ``conj(W)`` (the weight spectrum): float64 from the stored weights, rounded once to ``store``
  (computed once per weight, like a Winograd ``U``);
* the channel sum of complex products and the inverse FFT in ``comp``; ``y`` stored in ``store``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from studies.lowprec.float_conv import Padding, _output_hw, _pad, _stored_operands
from studies.lowprec.rounding import FloatFormat, rnd, round_array


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


def twiddles(size: int, comp: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """``cos(2πj/P)`` and ``sin(2πj/P)`` for j < P/2, rounded to ``comp``."""
    angle = 2.0 * np.pi * np.arange(size // 2) / size
    return round_array(np.cos(angle), comp), round_array(np.sin(angle), comp)


@numba.njit(cache=True)
def _fft_inplace(re, im, cos_t, sin_t, inverse, comp):  # pragma: no cover - jitted
    """Radix-2 DIT FFT of (re, im) in place; forward uses exp(−2πij/P), inverse exp(+2πij/P)/P."""
    size = re.shape[0]
    j = 0
    for i in range(1, size):  # bit-reversal permutation (exact)
        bit = size >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            re[i], re[j] = re[j], re[i]
            im[i], im[j] = im[j], im[i]
    sign = 1.0 if inverse else -1.0
    span = 2
    while span <= size:
        half = span // 2
        stride = size // span
        for start in range(0, size, span):
            for q in range(half):
                wr = cos_t[q * stride]
                wi = sign * sin_t[q * stride]
                a, b = start + q, start + q + half
                tr = rnd(rnd(wr * re[b], comp) - rnd(wi * im[b], comp), comp)
                ti = rnd(rnd(wr * im[b], comp) + rnd(wi * re[b], comp), comp)
                ar, ai = re[a], im[a]
                re[a], im[a] = rnd(ar + tr, comp), rnd(ai + ti, comp)
                re[b], im[b] = rnd(ar - tr, comp), rnd(ai - ti, comp)
                if inverse:  # exact halving spreads 1/P over the stages
                    re[a], im[a] = rnd(0.5 * re[a], comp), rnd(0.5 * im[a], comp)
                    re[b], im[b] = rnd(0.5 * re[b], comp), rnd(0.5 * im[b], comp)
        span *= 2


@numba.njit(cache=True)
def fft2_rounded(re, im, cos_t, sin_t, inverse, comp):  # pragma: no cover - jitted
    """2-D FFT of a square (P, P) complex array held as (re, im), rows then columns, in place."""
    size = re.shape[0]
    line_re, line_im = np.empty(size), np.empty(size)
    for axis in range(2):
        for r in range(size):
            for q in range(size):  # explicit copies: Numba slice assignment is slow to compile
                line_re[q] = re[r, q] if axis == 0 else re[q, r]
                line_im[q] = im[r, q] if axis == 0 else im[q, r]
            _fft_inplace(line_re, line_im, cos_t, sin_t, inverse, comp)
            for q in range(size):
                if axis == 0:
                    re[r, q], im[r, q] = line_re[q], line_im[q]
                else:
                    re[q, r], im[q, r] = line_re[q], line_im[q]


@numba.njit(cache=True)
def _spectra(xp, size, cos_t, sin_t, store, comp):  # pragma: no cover - jitted
    """Forward FFT of every (n, c) plane, zero-padded to (size, size), rounded to ``store``."""
    n_batch, channels, h, w = xp.shape
    re = np.zeros((n_batch, channels, size, size))
    im = np.zeros((n_batch, channels, size, size))
    for n in range(n_batch):
        for c in range(channels):
            plane_re = np.zeros((size, size))
            plane_im = np.zeros((size, size))
            for i in range(h):
                for j in range(w):
                    plane_re[i, j] = xp[n, c, i, j]
            fft2_rounded(plane_re, plane_im, cos_t, sin_t, False, comp)
            for i in range(size):
                for j in range(size):
                    re[n, c, i, j] = rnd(plane_re[i, j], store)
                    im[n, c, i, j] = rnd(plane_im[i, j], store)
    return re, im


@numba.njit(cache=True)
def _correlate_spectra(x_re, x_im, w_re, w_im, cos_t, sin_t, bias, ho, wo, store, comp):  # pragma: no cover
    """y[n, k] = IFFT2(Σ_c X[n, c] · Wc[k, c])[:ho, :wo] + bias[k]; ``Wc`` is already conj(W)."""
    n_batch, channels, size, _ = x_re.shape
    k_out = w_re.shape[0]
    y = np.empty((n_batch, k_out, ho, wo))
    for n in range(n_batch):
        for k in range(k_out):
            acc_re = np.zeros((size, size))
            acc_im = np.zeros((size, size))
            for c in range(channels):
                for i in range(size):
                    for j in range(size):
                        xr, xi = x_re[n, c, i, j], x_im[n, c, i, j]
                        wr, wi = w_re[k, c, i, j], w_im[k, c, i, j]
                        pr = rnd(rnd(xr * wr, comp) - rnd(xi * wi, comp), comp)
                        pi = rnd(rnd(xr * wi, comp) + rnd(xi * wr, comp), comp)
                        acc_re[i, j] = rnd(acc_re[i, j] + pr, comp)
                        acc_im[i, j] = rnd(acc_im[i, j] + pi, comp)
            fft2_rounded(acc_re, acc_im, cos_t, sin_t, True, comp)
            for oh in range(ho):
                for ow in range(wo):
                    y[n, k, oh, ow] = rnd(rnd(acc_re[oh, ow] + bias[k], comp), store)
    return y


def fft_lowprec(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: Padding,
    store: FloatFormat,
    comp: FloatFormat,
) -> np.ndarray:
    """FFT conv (stride 1, dilation 1) with the rounding described in the module docstring.

    x (N, C, H, W), w (K, C, kh, kw), b (K,) or None, float64; returns float64 (N, K, Ho, Wo)
    holding ``store``-format values.
    """
    x_st, w_st, b_st = _stored_operands(x, w, b, store)
    xp = _pad(x_st, padding)
    size = next_pow2(max(xp.shape[2:]))
    ho, wo = _output_hw(x.shape[2:], w.shape[2:], (1, 1), padding, (1, 1))
    cos_t, sin_t = twiddles(size, comp)
    x_re, x_im = _spectra(xp, size, cos_t, sin_t, store.spec, comp.spec)
    w_conj = np.conj(np.fft.fft2(w_st, s=(size, size)))  # float64, once per weight
    w_re, w_im = round_array(w_conj.real, store), round_array(w_conj.imag, store)
    return _correlate_spectra(x_re, x_im, w_re, w_im, cos_t, sin_t, b_st, ho, wo, store.spec, comp.spec)
