"""Rule-based kernel choice without timing (``AUTOTUNE_MODE=heuristic``), in the spirit of
NNPACK's ``auto`` algorithm: a few comparisons on the problem's geometry.

The rules are distilled from this project's measurements on a 2-core AVX-512 EPYC
(``autotune bench --suite seed|resnet18|large-kernel|mnist-mlp`` and
``--shapes benchmarks/conv-kernels.yaml``; numbers in BENCHMARKS.md):

* tiny problems (< 1e6 multiply-adds): the serial Numba direct loop, 4–15× faster than any
  library call there (no thread wake-up, no dispatch layers: 5 µs for 49×49 ⊛ 3×3);
* large filters (≥ 7×7), stride 1, when the filter's spectrum is cheap (a fixed weight whose
  transform is kept, or few channel pairs): FFT, whose cost does not grow with the filter
  (11×11 on 16 channels with a fixed weight: 0.6 ms vs 1.7 ms for torch);
* float64: im2col — PyTorch's float64 convolution has no oneDNN path and runs 2–5× slower than
  OpenBLAS's dgemm behind im2col;
* other large filters (ResNet's 7×7/2 stem, AlexNet's 11×11/4): PyTorch's oneDNN;
* everything else: im2col + BLAS, the fastest on 8 of ResNet-18's 11 distinct layers (oneDNN
  wins the 256-channel 14×14 3×3 layer by 1.7× and two stride-2 layers by < 10%).

Winograd is never picked by rule: with these Numba transforms it loses to im2col on every layer
measured here. Approximate kernels are never picked by rule either: their error depends on the
data, so only tuning (with a tolerance) can admit them.
"""

from __future__ import annotations

from typing import Any

from autotune.problem import ConvProblem, MatmulProblem

TINY_FLOPS = 2e6
#: FFT without a kept spectrum pays C·K filter FFTs per call; below this many pairs they are cheap.
FFT_ONE_OFF_MAX_CHANNEL_PAIRS = 64


def choose_conv(problem: ConvProblem) -> tuple[str, dict[str, Any]]:
    """The kernel name and parameters the rules pick for a conv2d problem."""
    k_out, c_per_group, kh, kw = problem.w_shape
    if problem.flops < TINY_FLOPS:
        return "direct", {}
    large_filter = min(kh, kw) >= 7
    unit = problem.stride == (1, 1) and problem.dilation == (1, 1)
    cheap_spectrum = problem.weight is not None or c_per_group * k_out <= FFT_ONE_OFF_MAX_CHANNEL_PAIRS
    if large_filter and unit and cheap_spectrum:
        return "fft", {}
    if problem.dtype == "float64":
        return "im2col", {}
    if large_filter:
        return "torch", {}
    return "im2col", {}


def choose_matmul(problem: MatmulProblem) -> tuple[str, dict[str, Any]]:
    """numpy's BLAS call: as fast as torch's on large products, 2× faster on the small ones."""
    return "blas", {}
