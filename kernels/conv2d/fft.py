"""FFT convolution: pointwise products in the frequency domain, channels contracted by complex GEMM.

1. zero-pad the input (conv padding), then real 2-D FFT of size (Fh, Fw) ≥ padded input, where
   (Fh, Fw) are sizes with only the prime factors 2, 3, 5, 7;
2. dilate the filter (zeros between taps) and take its real FFT at the same size
   (:func:`transform_filter`, reusable for a fixed weight);
3. cross-correlation is ``ifft(X · conj(W))``; the sum over input channels at each frequency is a
   complex GEMM ``Y[f] (N×K) = X[f] (N×C) · conj(W[f])ᵀ (C×K)``, batched over frequencies with
   :func:`kernels.pool.matmul` (MKL cgemm/zgemm);
4. inverse real FFT, crop the valid region (circular wrap-around never reaches it because the FFT
   is at least as large as the padded input), subsample by the stride, add the bias.

Strided problems compute the dense output and subsample it: correct, but the tuner will usually
find a better kernel. The transforms are ``torch.fft`` (float32 stays complex64) and, like the GEMMs,
run on the one OpenMP pool shared with PyTorch (:mod:`kernels.pool`).
"""

from __future__ import annotations

import numpy as np

from kernels import pool
from kernels.conv2d._common import add_bias, output_hw, pad_nchw
from kernels.registry import KernelSpec, register


def fft_shape(padded_hw: tuple[int, int]) -> tuple[int, int]:
    """FFT size for a padded input: the next sizes with only small prime factors."""
    return pool.next_fast_len(padded_hw[0]), pool.next_fast_len(padded_hw[1])


def transform_filter(w: np.ndarray, dilation, shape: tuple[int, int]) -> np.ndarray:
    """``conj(rfft2(dilated w))`` arranged (Fh·(Fw//2+1), C/groups, K) for the per-frequency GEMM."""
    k_out, c_per_group, kh, kw = w.shape
    dh, dw = dilation
    dilated = np.zeros((k_out, c_per_group, dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=w.dtype)
    dilated[:, :, ::dh, ::dw] = w
    spectrum = np.conj(pool.rfft2(dilated, shape))
    return np.ascontiguousarray(spectrum.reshape(k_out, c_per_group, -1).transpose(2, 1, 0))


def fft_with_filter(x, w_hat, k_out, khw, b, stride, padding, dilation, groups):
    """FFT conv of ``x`` with a filter spectrum from :func:`transform_filter`."""
    n_batch, c_in, h, w = x.shape
    c_per_group = c_in // groups
    k_per_group = k_out // groups
    xp = pad_nchw(x, padding)
    shape = fft_shape(xp.shape[2:])
    x_hat = pool.rfft2(xp, shape)  # (N, C, Fh, Fw//2+1)
    n_freq = x_hat.shape[2] * x_hat.shape[3]
    # (F, N, C), contiguous: torch.matmul on the transposed view took up to 17x longer (63x63 FFT)
    x_hat = np.ascontiguousarray(x_hat.reshape(n_batch, c_in, n_freq).transpose(2, 0, 1))
    y_hat = np.empty((n_freq, n_batch, k_out), dtype=x_hat.dtype)
    for g in range(groups):
        cs = slice(g * c_per_group, (g + 1) * c_per_group)
        ks = slice(g * k_per_group, (g + 1) * k_per_group)
        pool.matmul(x_hat[:, :, cs], w_hat[:, :, ks], out=y_hat[:, :, ks])
    y_hat = y_hat.transpose(1, 2, 0).reshape(n_batch, k_out, shape[0], -1)
    y_full = pool.irfft2(y_hat, shape)
    ho, wo = output_hw((h, w), khw, stride, padding, dilation)
    sh, sw = stride
    y = y_full[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    return add_bias(np.ascontiguousarray(y, dtype=x.dtype), b)


class FftFilter:
    """A weight whose spectra are kept: one per (dilation, FFT size), computed on first use.

    The FFT size depends on the input's padded size, which is unknown when the weight is
    prepared, so spectra are filled in lazily by the first call of each geometry.
    """

    def __init__(self, w: np.ndarray) -> None:
        self.w = np.array(w, order="C", copy=True)  # private: the caller's array may change
        self._spectra: dict[tuple[tuple[int, int], tuple[int, int]], np.ndarray] = {}

    def spectrum(self, dilation, shape: tuple[int, int]) -> np.ndarray:
        key = (tuple(dilation), tuple(shape))
        found = self._spectra.get(key)
        if found is None:
            found = self._spectra[key] = transform_filter(self.w, dilation, shape)
        return found


def prepare(w: np.ndarray) -> FftFilter:
    """The once-per-weight part of :func:`fft`: filter spectra, kept per geometry."""
    return FftFilter(w)


def fft(x, w, b, stride, padding, dilation, groups):
    """FFT convolution (torch.fft) with a batched complex GEMM over frequencies; any geometry.

    ``w`` is the raw weight or an :class:`FftFilter` from :func:`prepare`.
    """
    padded_hw = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
    shape = fft_shape(padded_hw)
    if isinstance(w, FftFilter):
        w_hat, raw = w.spectrum(dilation, shape), w.w
    else:
        w_hat, raw = transform_filter(w, dilation, shape), w
    return fft_with_filter(x, w_hat, raw.shape[0], raw.shape[2:], b, stride, padding, dilation, groups)


def workspace(problem) -> int:
    """Bytes :func:`fft` allocates beyond x and y: the filter spectrum twice (transform and its
    per-frequency layout), the input and output spectra, the full-size real output."""
    n_batch, c_in, h, w = problem.x_shape
    k_out, c_per_group, _, _ = problem.w_shape
    pt, pb, pl, pr = problem.padding
    fh, fw = fft_shape((h + pt + pb, w + pl + pr))
    n_freq = fh * (fw // 2 + 1)
    real = np.dtype(problem.dtype).itemsize
    complex_values = 2 * n_freq * c_per_group * k_out + n_freq * n_batch * (c_in + k_out)
    return 2 * real * complex_values + real * n_batch * k_out * fh * fw


def larger_than_1x1(problem) -> bool:
    """Whether the filter is larger than 1×1 (see ``declines`` in the spec)."""
    return tuple(problem.w_shape[2:]) != (1, 1)


register(
    KernelSpec(
        name="fft",
        op="conv2d",
        fn=fft,
        prepare=prepare,
        finite_only=True,
        worth_tuning=larger_than_1x1,
        declines="a 1×1 filter makes the conv a plain GEMM, which FFT's transforms only slow down",
        workspace=workspace,
        version=2,  # 2: contiguous operand for the per-frequency GEMM (much faster on some sizes)
    )
)
