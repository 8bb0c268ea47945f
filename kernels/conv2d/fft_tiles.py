"""FFT convolution on 16×16 tiles with unrolled codelets (NNPACK's ``ft16x16``), fused per block.

The whole-image :mod:`kernels.conv2d.fft` pays for large spectra: at batch 1 its per-frequency
channel sum reads the filter spectrum once per call (17 MB for 32×32 channels of 64×64), at
memory speed. Here the padded input is cut into 16×16 windows that overlap by the filter's extent
minus one (overlap-save, windows ``m`` apart, ``m`` ≤ 17 − extent): the filter spectrum has 128
complex frequencies per channel pair (1 MB for 32×32 channels), each window's circular
correlation is exact on its first m×m outputs, and the channel sum becomes one real GEMM per
frequency — the work that runs at BLAS speed.

* **Spectra as real GEMM operands.** The 16×16 real DFT has 256 real degrees of freedom, kept as
  128 *slots*, each a complex value: X[u, v] for u = 1..7 and all v (112), the real rows u = 0
  and u = 8 at v = 1..7 (14), and two slots pairing the four real frequencies ((0,0) with (0,8),
  (8,0) with (8,8)). A block's V for one slot is a real matrix, Re X of its windows' C channels
  as rows, then Im X; one GEMM per slot multiplies it by ``U = (Re W | −Im W) / 256`` (C × 2K:
  the inverse DFT's 1/256 folded in), giving P = Re X·U above and Q = Im X·U below, and the
  inverse transform reads Σ_c X·conj(W) (a correlation) as Re = P_re − Q_im, Im = P_im + Q_re
  (a pair slot's two real frequencies as P_re and −Q_im). Against one (2C × 2K) matrix per slot
  it is the same arithmetic with half the filter's memory.
* **Transforms** are generated straight-line FFTs (:mod:`kernels.conv2d._fft_codegen`): a real
  DFT down the 16 gathered rows of a row of windows, over every column at once (shared by the
  overlapping windows), then a DFT along each window's half-spectrum rows into its slots. The
  inverse runs the other way and keeps only the first m rows and columns. SIMD lanes run across
  channels, 8 a vector, in a lane-blocked scratch gathered from NCHW by 8×8 register transposes
  (:func:`kernels.conv2d._common.rows_lane_blocks`; the scatter back adds the bias); operands
  pass through stack buffers so that LLVM vectorises the codelets (docs/architecture.md).
* **Fused**: a job takes a block of windows through transform, 128 GEMMs (BLAS on its own
  thread, through Numba's ``np.dot``) and inverse transform while its V and M are in cache.

Stride 1, one group; any dilation, filters of extent 4 to 13 (m from 4 to 12: the codelets are
generated for even m).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numba
import numpy as np

from kernels import pool, workspace
from kernels.conv2d import _fft_codelets as codelets
from kernels.conv2d._common import output_hw
from kernels.conv2d.fft import extent
from kernels.registry import KernelSpec, register

#: The FFT size of a window, and its frequency slots (see the module docstring).
SIZE, SLOTS = 16, 128
#: Outputs per window and axis the inverse codelets exist for.
OUTPUTS = tuple(sorted(codelets.FUSED))


def outputs_per_window(footprint: tuple[int, int]) -> int:
    """The valid outputs per window and axis used: the largest generated m ≤ 17 − extent."""
    usable = [m for m in OUTPUTS if m <= SIZE + 1 - max(footprint)]
    if not usable:
        raise ValueError(
            f"fft_tiles: the (dilated) filter's extent {max(footprint)} leaves fewer than "
            f"{OUTPUTS[0]} outputs per 16×16 window; it takes extents up to {SIZE + 1 - OUTPUTS[0]}"
        )
    return usable[-1]


@cache
def _constants(dtype: np.dtype) -> np.ndarray:
    array = np.array(codelets.CONSTANTS, dtype=dtype)
    array.setflags(write=False)
    return array


@numba.njit(cache=True, parallel=True)
def _taps(w, dilation_h, dilation_w, scale, taps):  # pragma: no cover - jitted
    """taps[c, k, i·dh, j·dw] = w[k, c, i, j]·scale; zero elsewhere (dilation's gaps, the padding
    of the columns to a multiple of 8)."""
    k_out, channels, kh, kw = w.shape
    for c in numba.prange(channels):
        taps[c] = 0
        for k in range(k_out):
            for i in range(kh):
                row = taps[c, k, i * dilation_h]
                for j in range(kw):
                    row[j * dilation_w] = w[k, c, i, j] * scale


def transform_filter(w: np.ndarray, dilation, out: np.ndarray | None = None) -> np.ndarray:
    """U (128, C, 2K) of the module docstring, in ``w``'s dtype, into ``out`` if given.

    Computed by the input's codelets on the filters seen from each input channel (C "images" of
    K channels, scaled by 1/256 first), whose last pass writes the slot matrices' rows directly
    (:func:`kernels.conv2d._fft_codelets.rows_forward_filter`).
    """
    k_out, channels = w.shape[:2]
    eh, ew = extent(dilation, w.shape[2:])
    # columns zero-padded to a multiple of 8: whole 8×8 blocks for the gather's register
    # transpose (4x faster than its element loop on 7×7 filters)
    taps = np.empty((channels, k_out, eh, -(-ew // 8) * 8), dtype=w.dtype)
    _taps(np.ascontiguousarray(w), dilation[0], dilation[1], w.dtype.type(1.0 / (SIZE * SIZE)), taps)
    u = np.empty((SLOTS, channels, 2 * k_out), dtype=w.dtype) if out is None else out
    codelets.transform_filters(taps, u, _constants(w.dtype))
    return u


@dataclass
class TileFilter:
    """A weight whose slot matrices are kept, one per dilation (made on first use)."""

    w: np.ndarray
    _u: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def u(self, dilation) -> np.ndarray:
        key = (int(dilation[0]), int(dilation[1]))
        found = self._u.get(key)
        if found is None:
            found = self._u[key] = transform_filter(self.w, key)
        return found


def prepare(w: np.ndarray, block: int = 0) -> TileFilter:
    """The once-per-weight part of :func:`fft_tiles`: the slot matrices (``block`` does not change them)."""
    del block
    return TileFilter(np.array(w, order="C", copy=True))


#: A fused job's V and M (128 slots × 2 rows a window × (C + 2K)) stay within this. Larger blocks make
#: the slot GEMMs' M dimension larger, which pays more than keeping V and M in L2: on 64 channels
#: of 56×56 (36 windows), 18 windows a job took 0.76x the time of 9 and 0.6x that of 6.
FUSED_BYTES = 4 << 20


def default_block(channels: int, k_out: int, itemsize: int, windows: int) -> int:
    """Windows per fused job: V and M within :data:`FUSED_BYTES`, and a number of jobs that is a
    multiple of the threads (so that they finish together)."""
    threads = numba.get_num_threads()
    largest = max(1, FUSED_BYTES // (SLOTS * 2 * (channels + 2 * k_out) * itemsize))
    jobs = threads * -(-windows // (threads * largest))
    return -(-windows // jobs)


def _check(stride, groups, block) -> None:
    if tuple(stride) != (1, 1):
        raise ValueError(f"fft_tiles: stride must be 1, got {tuple(stride)}")
    if groups != 1:
        raise ValueError(f"fft_tiles: groups must be 1, got {groups}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 0:
        raise ValueError(f"fft_tiles: block must be 0 (chosen per problem) or a window count, got {block!r}")


def fft_tiles(x, w, b, stride, padding, dilation, groups, block=0):
    """Overlap-save FFT convolution on 16×16 windows (module docstring); ``w`` is the raw weight
    or a :class:`TileFilter` from :func:`prepare`; ``block`` windows per fused job (0: chosen)."""
    _check(stride, groups, block)
    raw = w.w if isinstance(w, TileFilter) else w
    k_out, channels = raw.shape[:2]
    m = outputs_per_window(extent(dilation, raw.shape[2:]))
    if isinstance(w, TileFilter):
        u = w.u(dilation)
    else:  # a one-off weight: its slot matrices live for this call only
        shape = (SLOTS, channels, 2 * k_out)
        u = transform_filter(raw, dilation, out=workspace.scratch("fft_tiles.u", shape, raw.dtype))
    ho, wo = output_hw(x.shape[2:], raw.shape[2:], stride, padding, dilation)
    tiles = (-(-ho // m), -(-wo // m))
    y = np.empty((x.shape[0], k_out, ho, wo), dtype=x.dtype)
    bias = np.zeros(k_out, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    windows = x.shape[0] * tiles[0] * tiles[1]
    block = block or default_block(channels, k_out, x.dtype.itemsize, windows)
    fused, consts = codelets.FUSED[m], _constants(x.dtype)
    pool.on_calling_thread(lambda: fused(x, padding[0], padding[2], u, bias, consts, *tiles, block, y))
    return y


def applies(problem) -> bool:
    """Stride 1, one group, a (dilated) filter extent of 4 to 13."""
    footprint = extent(problem.dilation, problem.w_shape[2:])
    return (
        tuple(problem.stride) == (1, 1)
        and problem.groups == 1
        and 4 <= max(footprint) <= SIZE + 1 - OUTPUTS[0]
    )


def promising(problem) -> bool:
    """A filter extent of at least :data:`MIN_EXTENT` and :data:`MIN_CHANNELS` channels each
    side: the slot GEMMs must repay the transforms."""
    k_out, c_in = problem.w_shape[:2]
    footprint = extent(problem.dilation, problem.w_shape[2:])
    return max(footprint) >= MIN_EXTENT and min(c_in, k_out) >= MIN_CHANNELS


#: Not tuned below these: on 5×5 filters it measured 0.5-1.0x PyTorch's speed with a fixed weight
#: (64-256 channels, 14×14-28×28 images), on a 3-channel 224×224 input 0.4x (lanes of 8 channels
#: mostly empty, slot GEMMs 3 deep), BENCHMARKS.md §27; and every first call compiles codelets.
MIN_EXTENT, MIN_CHANNELS = 6, 8


def workspace_bytes(problem) -> int:
    """Beyond x and y: a one-off weight's slot matrices (128 × C × 2K) and the filters' padded
    taps, each thread's job scratch (V and M within :data:`FUSED_BYTES`) and its gathered rows."""
    c_in, w = problem.x_shape[1], problem.x_shape[3]
    k_out, _, kh, kw = problem.w_shape
    itemsize = np.dtype(problem.dtype).itemsize
    slot_matrices = SLOTS * c_in * 2 * k_out * itemsize
    taps = c_in * k_out * kh * problem.dilation[0] * (kw * problem.dilation[1] + 8) * itemsize
    lanes = -(-max(c_in, k_out) // 8) * 8
    rows = 2 * lanes * (w + 2 * SIZE) * SIZE * itemsize  # a row of windows, gathered and half-transformed
    return slot_matrices + taps + numba.get_num_threads() * (FUSED_BYTES + rows)


register(
    KernelSpec(
        name="fft_tiles",
        op="conv2d",
        fn=fft_tiles,
        applies=applies,
        needs="stride 1, one group, a (dilated) filter extent of 4 to 13",
        worth_tuning=promising,
        declines=f"filter extents under {MIN_EXTENT} or fewer than {MIN_CHANNELS} channels in or out: the "
        "slot GEMMs do not repay the transforms",
        prepare=prepare,
        finite_only=True,
        workspace=workspace_bytes,
        version=1,
    )
)
