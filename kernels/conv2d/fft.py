"""FFT convolution: pointwise products in the frequency domain, channels summed per frequency.

1. transform the input (real 2-D FFT, ``torch.fft``), in one of two geometries:

   * **whole image** (``tile`` 0): the unpadded input at a size ``F ≥ H + max(top, bottom)``
     (and ≥ the filter's extent and the dense output; per axis, even, prime factors 2, 3, 5, 7
     only, or 2 and 3 only with ``smooth=3``, which the tuner tries too where the size differs).
     The conv padding becomes a circular shift of the filter: tap ``u`` sits at
     ``(d·u − top) mod F``, so the outputs start at index 0 and every index the correlation
     reads outside the image falls on the transform's zero padding. No padded copy, and a
     transform up to ``top`` smaller per axis than the padded image;
   * **overlap-save tiles** (``tile`` T): the padded input cut into T×T windows overlapping by the
     filter's extent minus one; each window's circular correlation is exact on its first
     ``T − extent + 1`` outputs per axis, which tile the dense output;

2. the filter's spectrum at the same size (:func:`transform_filter`, kept for a fixed weight);
3. per frequency, ``Y[k] = Σ_c X[c] · conj(W[k, c])`` over the group's channels, one of two ways
   (:func:`contract`): with few rows (batch × tiles) a Numba loop whose SIMD lanes run across the
   frequencies, in the transforms' own layout, no re-layout; with many, a batched complex GEMM per
   frequency (:func:`kernels.pool.matmul`, MKL cgemm/zgemm) between transposes in 8×8 blocks
   (:func:`kernels.simd.transpose_batch`: in vector registers);
4. inverse real FFT, then the valid outputs are cropped (stride 1: one PyTorch addition of the
   bias over a strided view) or gathered (every stride-th, one Numba pass), adding the bias.

Strided problems compute the dense output and keep every stride-th: correct, but the tuner will
usually find a better kernel. float32 stays complex64. The transforms, the GEMMs and the Numba
loops all run on the one OpenMP pool shared with PyTorch (:mod:`kernels.pool`).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import torch

from kernels import pool
from kernels.conv2d._common import output_hw, pad_nchw
from kernels.registry import KernelSpec, register
from kernels.simd import transpose_batch


class Geometry(NamedTuple):
    """Where the transforms sit: FFT size, dense outputs per tile, tiles per axis, filter shift."""

    fft: tuple[int, int]
    step: tuple[int, int]
    tiles: tuple[int, int]
    shift: tuple[int, int]  # the filter's circular shift (whole image: the top/left padding)
    tiled: bool  # overlap-save windows of the padded input (else the whole image, unpadded)


def extent(dilation, khw) -> tuple[int, int]:
    """The (dilated) filter's footprint on the input: ``d·(k − 1) + 1`` per axis."""
    return (dilation[0] * (khw[0] - 1) + 1, dilation[1] * (khw[1] - 1) + 1)


def geometry(
    hw: tuple[int, int], padding, footprint: tuple[int, int], tile: int, smooth: int = 7
) -> Geometry:
    """The transforms' geometry for an ``hw`` input; ``tile`` 0 is the whole image (module
    docstring), whose FFT size has no prime factor above ``smooth``."""
    pt, pb, pl, pr = padding
    dense = (hw[0] + pt + pb - footprint[0] + 1, hw[1] + pl + pr - footprint[1] + 1)
    if tile == 0:
        sizes = (  # reads outside the image land on zeros, taps and outputs have distinct indices
            pool.next_fast_len(max(hw[0] + max(pt, pb), footprint[0], dense[0]), smooth),
            pool.next_fast_len(max(hw[1] + max(pl, pr), footprint[1], dense[1]), smooth),
        )
        return Geometry(sizes, sizes, (1, 1), (pt, pl), False)
    step = [min(tile - e + 1, d) for e, d in zip(footprint, dense, strict=True)]
    count = [-(-d // s) for d, s in zip(dense, step, strict=True)]
    return Geometry((tile, tile), (step[0], step[1]), (count[0], count[1]), (0, 0), True)


#: The Numba contraction (SIMD lanes across frequencies, no re-layout) is used while rows (batch ×
#: tiles) × C/groups × K/groups stays at most this; above, the complex GEMM and its transposes pay.
#: Measured (whole calls, BENCHMARKS.md §20): the loop is 1.1-2.4x faster up to 12,544 (1, 2, 4 or
#: 8 rows of 16-32 channels; 49 tiles of 16), ties at 9,216-16,384, is 1.3-1.4x slower from 36,864
#: (64 channels in 9-16 tiles).
LANES_MAX = 16384


def uses_lanes(rows: int, c_per_group: int, k_per_group: int) -> bool:
    """True when :func:`contract` takes the Numba loop rather than the GEMMs (see ``LANES_MAX``)."""
    return rows * c_per_group * k_per_group <= LANES_MAX


def transform_filter(w: np.ndarray, dilation, where: Geometry, lanes: bool) -> np.ndarray:
    """``conj(rfft2)`` of the dilated, shifted filter: (K, C/groups, F) for the Numba contraction,
    (F, K, C/groups) for the GEMMs (``F`` = Fh·(Fw//2+1) frequencies)."""
    k_out, c_per_group, kh, kw = w.shape
    (fh, fw), (sh, sw) = where.fft, where.shift
    rows = (np.arange(kh) * dilation[0] - sh) % fh
    cols = (np.arange(kw) * dilation[1] - sw) % fw
    placed = np.zeros((k_out, c_per_group, fh, fw), dtype=w.dtype)
    placed[:, :, rows[:, None], cols[None, :]] = w
    spectrum = np.conj(pool.rfft2(placed, (fh, fw))).reshape(k_out, c_per_group, -1)
    if lanes:
        return spectrum
    flat = spectrum.reshape(1, k_out * c_per_group, -1)
    out = np.empty((1, flat.shape[2], flat.shape[1]), dtype=flat.dtype)
    transpose_batch(flat, out)
    return out.reshape(-1, k_out, c_per_group)


@numba.njit(cache=True, parallel=True, fastmath=True)
def _contract_lanes(x_hat, w_hat, groups, y_hat):  # pragma: no cover - jitted
    """y_hat[n, k, t, :] = Σ_c x_hat[n, c, t, :] · w_hat[k, c, :] over k's group's channels.

    Four channels per pass over the frequencies: the accumulator row is loaded and stored once
    for four products (2.4x faster than one channel per pass on 16 channels, BENCHMARKS.md §20).
    """
    n_batch, _, n_tiles, n_freq = x_hat.shape
    k_out, c_per_group = w_hat.shape[0], w_hat.shape[1]
    k_per_group = k_out // groups
    for job in numba.prange(n_batch * n_tiles * k_out):
        n, t, k = job // (n_tiles * k_out), (job // k_out) % n_tiles, job % k_out
        c0 = (k // k_per_group) * c_per_group
        acc = y_hat[n, k, t]
        acc[:] = 0
        c = 0
        while c + 4 <= c_per_group:
            x0, x1, x2, x3 = (
                x_hat[n, c0 + c, t],
                x_hat[n, c0 + c + 1, t],
                x_hat[n, c0 + c + 2, t],
                x_hat[n, c0 + c + 3, t],
            )
            w0, w1, w2, w3 = w_hat[k, c], w_hat[k, c + 1], w_hat[k, c + 2], w_hat[k, c + 3]
            for f in range(n_freq):
                acc[f] += x0[f] * w0[f] + x1[f] * w1[f] + x2[f] * w2[f] + x3[f] * w3[f]
            c += 4
        for rest in range(c, c_per_group):
            xv, wv = x_hat[n, c0 + rest, t], w_hat[k, rest]
            for f in range(n_freq):
                acc[f] += xv[f] * wv[f]


def contract(x_hat: np.ndarray, w_hat: np.ndarray, groups: int, lanes: bool) -> np.ndarray:
    """Y (N, K, T, F) from X (N, C, T, F) and a spectrum from :func:`transform_filter`."""
    n_batch, c_in, n_tiles, n_freq = x_hat.shape
    if lanes:
        y_hat = np.empty((n_batch, w_hat.shape[0], n_tiles, n_freq), dtype=x_hat.dtype)
        _contract_lanes(x_hat, w_hat, groups, y_hat)
        return y_hat
    k_out, c_per_group = w_hat.shape[1], w_hat.shape[2]
    by_freq = np.empty((n_freq, c_in, n_batch, n_tiles), dtype=x_hat.dtype)  # X_f: C × (N·T) per f
    for n in range(n_batch):
        transpose_batch(x_hat[n], by_freq[:, :, n, :].transpose(1, 0, 2))
    out = np.empty((n_freq, k_out, n_batch, n_tiles), dtype=x_hat.dtype)  # Wᵀ_f (K × C) · X_f
    k_per_group = k_out // groups
    for g in range(groups):
        cs, ks = slice(g * c_per_group, (g + 1) * c_per_group), slice(g * k_per_group, (g + 1) * k_per_group)
        x_f = by_freq[:, cs].reshape(n_freq, c_per_group, -1)
        pool.matmul(w_hat[:, ks, :], x_f, out=out[:, ks].reshape(n_freq, k_per_group, -1))
    y_hat = np.empty((n_batch, k_out, n_tiles, n_freq), dtype=x_hat.dtype)
    for n in range(n_batch):
        transpose_batch(out[:, :, n, :].transpose(1, 0, 2), y_hat[n])
    return y_hat


@numba.njit(cache=True, parallel=True)
def _gather(tiles, rows, cols, bias, y):  # pragma: no cover - jitted
    """y[n, k, i, j] = tiles[n, k, tile row, tile col, row in tile, col in tile] + bias[k], with
    the tile and in-tile indices of output row i in ``rows[:, i]`` and of column j in ``cols[:, j]``."""
    n_batch, k_out, height, width = y.shape
    for job in numba.prange(n_batch * k_out):
        n, k = job // k_out, job % k_out
        for i in range(height):
            src = tiles[n, k, rows[0, i], :, rows[1, i]]
            dst = y[n, k, i]
            for j in range(width):
                dst[j] = src[cols[0, j], cols[1, j]] + bias[k]


def _positions(count: int, stride: int, step: int) -> np.ndarray:
    """(tile, index in tile) of every stride-th dense output along one axis."""
    dense = np.arange(count) * stride
    return np.stack([dense // step, dense % step]).astype(np.int64)


def fft_with_filter(x, w_hat, lanes, where: Geometry, khw, b, stride, padding, dilation, groups):
    """FFT conv of ``x`` with a spectrum from :func:`transform_filter` for geometry ``where``
    (from :func:`geometry`; ``where.tiled`` says overlap-save) and the contraction's layout."""
    n_batch, c_in = x.shape[:2]
    (fh, fw), (sh, sw), (th, tw) = where.fft, where.step, where.tiles
    if where.tiled:
        need = ((th - 1) * sh + fh, (tw - 1) * sw + fw)
        padded = (x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3])
        extra = [max(0, n - p) for n, p in zip(need, padded, strict=True)]
        xp = pad_nchw(x, padding, extra_bottom=extra[0], extra_right=extra[1])
        s = xp.strides
        windows = np.lib.stride_tricks.as_strided(
            xp, (n_batch, c_in, th, tw, fh, fw), (s[0], s[1], sh * s[2], sw * s[3], s[2], s[3])
        )
    else:
        windows = x.reshape(n_batch, c_in, 1, 1, *x.shape[2:])  # zero-padded to (fh, fw) by the FFT
    x_hat = pool.rfft2(windows, (fh, fw)).reshape(n_batch, c_in, th * tw, -1)
    y_hat = contract(x_hat, w_hat, groups, lanes)
    k_out = y_hat.shape[1]
    y_tiles = pool.irfft2(y_hat.reshape(n_batch, k_out, th, tw, fh, fw // 2 + 1), (fh, fw))
    ho, wo = output_hw(x.shape[2:], khw, stride, padding, dilation)
    y = np.empty((n_batch, k_out, ho, wo), dtype=x.dtype)
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else np.asarray(b, dtype=x.dtype)
    if tuple(stride) == (1, 1):
        _crop(y_tiles, where.step, bias, y)
    else:
        _gather(y_tiles, _positions(ho, stride[0], sh), _positions(wo, stride[1], sw), bias, y)
    return y


def _crop(y_tiles: np.ndarray, step: tuple[int, int], bias: np.ndarray, y: np.ndarray) -> None:
    """``y`` = the valid outputs of every tile, side by side, plus the bias (stride 1).

    One PyTorch addition over a strided view, on the one pool (the whole image is a plain crop):
    3.5x faster than :func:`_gather`'s indexed loop on 32 channels of 56×56 from 60×60
    transforms, 1.3–2x with tiles (BENCHMARKS.md §24).
    """
    n_batch, k_out, th, tw = y_tiles.shape[:4]
    ho, wo = y.shape[2:]
    with torch.no_grad():
        tiles = pool.tensor(y_tiles)
        if th * tw == 1:
            valid = tiles[:, :, 0, 0, :ho, :wo]
        else:  # (n, k, tile row, tile col, row, col) -> (n, k, tile row·row, tile col·col): one copy
            side_by_side = tiles[..., : step[0], : step[1]].permute(0, 1, 2, 4, 3, 5)
            valid = side_by_side.reshape(n_batch, k_out, th * step[0], tw * step[1])[:, :, :ho, :wo]
        torch.add(valid, pool.tensor(bias).reshape(1, k_out, 1, 1), out=torch.from_numpy(y))


class FftFilter:
    """A weight whose spectra are kept: one per (dilation, geometry, layout), made on first use.

    The geometry depends on the input's size, which is unknown when the weight is prepared, so
    spectra are filled in lazily by the first call of each geometry.
    """

    def __init__(self, w: np.ndarray) -> None:
        self.w = np.array(w, order="C", copy=True)  # private: the caller's array may change
        self._spectra: dict[tuple, np.ndarray] = {}

    def spectrum(self, dilation, where: Geometry, lanes: bool) -> np.ndarray:
        key = (tuple(dilation), where, lanes)
        found = self._spectra.get(key)
        if found is None:
            found = self._spectra[key] = transform_filter(self.w, dilation, where, lanes)
        return found


def prepare(w: np.ndarray, tile: int = 0, smooth: int = 7) -> FftFilter:
    """The once-per-weight part of :func:`fft`: filter spectra, kept per geometry. ``tile`` and
    ``smooth`` are the call's parameters (the FFT size is known only with the input's size:
    computed then)."""
    del tile, smooth  # every setting shares one FftFilter; without them, fixed-weight tiles failed
    return FftFilter(w)


def _check_parameters(tile, smooth, footprint: tuple[int, int]) -> None:
    """ValueError naming ``tile`` or ``smooth`` unless they describe a transform :func:`fft` makes."""
    integral = isinstance(tile, (int, np.integer)) and not isinstance(tile, bool)
    if not integral or (tile != 0 and tile < max(footprint)):
        raise ValueError(
            f"fft: tile must be 0 (the whole image) or an FFT size of at least the (dilated) filter's "
            f"extent {max(footprint)}, got {tile!r}"
        )
    if isinstance(smooth, bool) or smooth not in (3, 5, 7):
        raise ValueError(
            f"fft: smooth (the FFT size's largest prime factor) must be 3, 5 or 7, got {smooth!r}"
        )
    if tile != 0 and smooth != 7:
        raise ValueError(
            f"fft: smooth applies to the whole-image transform (tile 0); tile {tile} is the FFT size"
        )


def fft(x, w, b, stride, padding, dilation, groups, tile=0, smooth=7):
    """FFT convolution (torch.fft), channels summed per frequency; any geometry.

    ``w`` is the raw weight or an :class:`FftFilter` from :func:`prepare`. ``tile`` 0 transforms
    the whole image, at the smallest even size ≥ what it needs with no prime factor above
    ``smooth``; a size (e.g. 32) cuts the padded input into overlapping tiles of that FFT size.
    """
    raw = w.w if isinstance(w, FftFilter) else w
    footprint = extent(dilation, raw.shape[2:])
    _check_parameters(tile, smooth, footprint)
    where = geometry(x.shape[2:], padding, footprint, tile, smooth)
    rows = x.shape[0] * where.tiles[0] * where.tiles[1]
    lanes = uses_lanes(rows, raw.shape[1], raw.shape[0] // groups)
    if isinstance(w, FftFilter):
        w_hat = w.spectrum(dilation, where, lanes)
    else:
        w_hat = transform_filter(w, dilation, where, lanes)
    return fft_with_filter(x, w_hat, lanes, where, raw.shape[2:], b, stride, padding, dilation, groups)


#: Overlap-save tile sizes (FFT sizes) offered to the tuner, besides the whole image.
TILES = (20, 32, 64)


def tile_grid(problem) -> list[dict[str, int]]:
    """The whole image; again at a size of factors 2 and 3 only where that is another size (the
    smallest size is not always the fastest transform: 72×72 took less than 70×70, 64×64 than
    60×60, BENCHMARKS.md §26); then each tile size at least twice the filter's extent and smaller
    than the padded input (a tile as large as the image is the whole-image transform)."""
    _, _, h, w = problem.x_shape
    pt, pb, pl, pr = problem.padding
    footprint = extent(problem.dilation, problem.w_shape[2:])
    sizes = [geometry((h, w), problem.padding, footprint, 0, smooth).fft for smooth in (7, 3)]
    smooth = [{"smooth": 3}] if sizes[1] != sizes[0] else []
    smaller = min(h + pt + pb, w + pl + pr)
    return [{}] + smooth + [{"tile": t} for t in TILES if 2 * max(footprint) <= t < smaller]


def workspace(problem) -> int:
    """Bytes :func:`fft` allocates beyond x and y for the whole-image transform: the filter
    spectrum twice (transform and its per-frequency layout), the input and output spectra twice
    (the GEMMs' layout), the full-size real output. Tiled settings need less; this bound covers
    the kernel's largest."""
    n_batch, c_in, h, w = problem.x_shape
    k_out, c_per_group, _, _ = problem.w_shape
    footprint = extent(problem.dilation, problem.w_shape[2:])
    fh, fw = geometry((h, w), problem.padding, footprint, 0, smooth=3).fft  # the largest whole-image size
    n_freq = fh * (fw // 2 + 1)
    real = np.dtype(problem.dtype).itemsize
    complex_values = 2 * n_freq * c_per_group * k_out + 2 * n_freq * n_batch * (c_in + k_out)
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
        version=8,  # 2: contiguous GEMM operand; 3: overlap-save tiles; 4: fixed-weight tiles run;
        # 5: unpadded whole-image transform, Numba contraction for few rows, Numba re-layouts;
        # 6: stride-1 outputs cropped by one PyTorch addition; 7: re-layouts in vector registers;
        # 8: whole-image sizes of factors 2 and 3 offered (smooth=3)
    )
)
