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


def _contract(x_hat: np.ndarray, w_hat: np.ndarray, k_out: int, groups: int) -> np.ndarray:
    """Per frequency, ``Y (rows × K) = X (rows × C) · W (C × K)`` for each group: x_hat (F, rows, C)
    contiguous (torch.matmul on a transposed view was up to 17x slower), w_hat (F, C/groups, K)."""
    c_per_group, k_per_group = x_hat.shape[2] // groups, k_out // groups
    y_hat = np.empty((*x_hat.shape[:2], k_out), dtype=x_hat.dtype)
    for g in range(groups):
        cs = slice(g * c_per_group, (g + 1) * c_per_group)
        ks = slice(g * k_per_group, (g + 1) * k_per_group)
        pool.matmul(x_hat[:, :, cs], w_hat[:, :, ks], out=y_hat[:, :, ks])
    return y_hat


def extent(dilation, khw) -> tuple[int, int]:
    """The (dilated) filter's footprint on the input: ``d·(k − 1) + 1`` per axis."""
    return (dilation[0] * (khw[0] - 1) + 1, dilation[1] * (khw[1] - 1) + 1)


def tiles_for(padded_hw: tuple[int, int], footprint: tuple[int, int], tile: int) -> tuple:
    """Overlap-save geometry: FFT size per axis, dense outputs per tile, tiles per axis.

    ``tile`` 0 means one tile of the whole padded input (FFT size :func:`fft_shape`).
    """
    sizes = fft_shape(padded_hw) if tile == 0 else (tile, tile)
    dense = [p - e + 1 for p, e in zip(padded_hw, footprint, strict=True)]
    step = [min(s - e + 1, d) for s, e, d in zip(sizes, footprint, dense, strict=True)]
    count = [-(-d // t) for d, t in zip(dense, step, strict=True)]
    return (sizes[0], sizes[1]), (step[0], step[1]), (count[0], count[1])


def fft_with_filter(x, w_hat, k_out, khw, b, stride, padding, dilation, groups, tile=0):
    """FFT conv of ``x`` with a filter spectrum from :func:`transform_filter` at the tile size.

    Overlap-save: the padded input is cut into ``tile``-sized windows that overlap by the
    filter's extent minus one; each window's circular cross-correlation is exact on its first
    ``tile − extent + 1`` outputs per axis, which tile the dense output.
    """
    n_batch, c_in = x.shape[:2]
    padded_hw = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
    (fh, fw), (sh, sw), (th, tw) = tiles_for(padded_hw, extent(dilation, khw), tile)
    need = ((th - 1) * sh + fh, (tw - 1) * sw + fw)
    extra = [max(0, n - p) for n, p in zip(need, padded_hw, strict=True)] if tile else [0, 0]
    xp = pad_nchw(x, padding, extra_bottom=extra[0], extra_right=extra[1])
    if tile:
        s = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp, (n_batch, c_in, th, tw, fh, fw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3])
        )
    else:
        windows = xp.reshape(n_batch, c_in, 1, 1, *xp.shape[2:])
    x_hat = pool.rfft2(windows, (fh, fw))  # (N, C, th, tw, fh, fw//2+1)
    n_freq, rows = fh * (fw // 2 + 1), n_batch * th * tw
    x_hat = np.ascontiguousarray(x_hat.reshape(n_batch, c_in, th, tw, n_freq).transpose(4, 0, 2, 3, 1))
    y_hat = _contract(x_hat.reshape(n_freq, rows, c_in), w_hat, k_out, groups)
    y_hat = y_hat.reshape(fh, fw // 2 + 1, n_batch, th, tw, k_out).transpose(2, 5, 3, 4, 0, 1)
    y_tiles = pool.irfft2(np.ascontiguousarray(y_hat), (fh, fw))[..., :sh, :sw]  # valid part
    y_dense = y_tiles.transpose(0, 1, 2, 4, 3, 5).reshape(n_batch, k_out, th * sh, tw * sw)
    ho, wo = output_hw(x.shape[2:], khw, stride, padding, dilation)
    y = y_dense[:, :, : (ho - 1) * stride[0] + 1 : stride[0], : (wo - 1) * stride[1] + 1 : stride[1]]
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


def prepare(w: np.ndarray, tile: int = 0) -> FftFilter:
    """The once-per-weight part of :func:`fft`: filter spectra, kept per geometry. ``tile`` is
    the call's parameter (its FFT size is known only with the input's size: computed then)."""
    del tile  # every setting shares one FftFilter; without the parameter, fixed-weight tiles failed
    return FftFilter(w)


def fft(x, w, b, stride, padding, dilation, groups, tile=0):
    """FFT convolution (torch.fft) with a batched complex GEMM over frequencies; any geometry.

    ``w`` is the raw weight or an :class:`FftFilter` from :func:`prepare`. ``tile`` 0 transforms
    the whole padded image; a size (e.g. 32) cuts it into overlapping tiles of that FFT size.
    """
    padded_hw = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
    raw = w.w if isinstance(w, FftFilter) else w
    shape = tiles_for(padded_hw, extent(dilation, raw.shape[2:]), tile)[0]
    w_hat = w.spectrum(dilation, shape) if isinstance(w, FftFilter) else transform_filter(w, dilation, shape)
    return fft_with_filter(x, w_hat, raw.shape[0], raw.shape[2:], b, stride, padding, dilation, groups, tile)


#: Overlap-save tile sizes (FFT sizes) offered to the tuner, besides the whole image.
TILES = (20, 32, 64)


def tile_grid(problem) -> list[dict[str, int]]:
    """The whole image, then each tile size at least twice the filter's extent and smaller than
    the padded input (a tile as large as the image is the whole-image transform)."""
    _, _, h, w = problem.x_shape
    pt, pb, pl, pr = problem.padding
    largest = max(extent(problem.dilation, problem.w_shape[2:]))
    smaller = min(h + pt + pb, w + pl + pr)
    return [{}] + [{"tile": t} for t in TILES if 2 * largest <= t < smaller]


def workspace(problem) -> int:
    """Bytes :func:`fft` allocates beyond x and y for the whole-image transform: the filter
    spectrum twice (transform and its per-frequency layout), the input and output spectra, the
    full-size real output. Tiled settings need less; this bound covers the kernel's largest."""
    n_batch, c_in, h, w = problem.x_shape
    k_out, c_per_group, _, _ = problem.w_shape
    pt, pb, pl, pr = problem.padding
    fh, fw = fft_shape((h + pt + pb, w + pl + pr))
    n_freq = fh * (fw // 2 + 1)
    real = np.dtype(problem.dtype).itemsize
    complex_values = 2 * n_freq * c_per_group * k_out + n_freq * n_batch * (c_in + k_out)
    return 2 * real * complex_values + real * n_batch * k_out * fh * fw


def promising(problem) -> bool:
    """A filter with more taps than 3×3, stride 1 (see ``declines`` in the spec)."""
    return problem.w_shape[2] * problem.w_shape[3] > 9 and tuple(problem.stride) == (1, 1)


register(
    KernelSpec(
        name="fft",
        op="conv2d",
        fn=fft,
        prepare=prepare,
        finite_only=True,
        worth_tuning=promising,
        # Measured on every ResNet-18/VGG-16 3x3 layer: 15-350x slower than the best with a one-off
        # weight, 1.6-3x with a fixed one; the seed's 3x3 problems: 10-100x (BENCHMARKS.md §5);
        # ResNet-18's 7x7 stride-2 conv1: 40-80x.
        declines="filters of 3×3 or fewer taps (the transforms cost more than the products they save; "
        "Winograd is the small-filter fast algorithm) and strides (FFT computes every stride-1 output "
        "and keeps 1/stride² of them)",
        workspace=workspace,
        param_grid=tile_grid,
        version=4,  # 2: contiguous GEMM operand; 3: overlap-save tiles; 4: fixed-weight tiles run
    )
)
