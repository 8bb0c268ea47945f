"""Rule-based kernel choice without timing (``AUTOTUNE_MODE=heuristic``), in the spirit of
NNPACK's ``auto`` algorithm: a few comparisons on the problem's geometry.

The rules are distilled from this project's measurements (``autotune bench --vs-torch --suite
resnet18|vgg16|seed`` and ``autotune bench --suite large-kernel|mnist-mlp``; numbers and machine
in BENCHMARKS.md):

* tiny problems (< 1e6 multiply-adds): the serial Numba direct loop, faster than any library call
  there (no thread wake-up, no dispatch layers);
* large filters (≥ 7×7), stride 1, when the filter's spectrum is cheap (a fixed weight whose
  transform is kept, or few channel pairs): FFT, whose cost does not grow with the filter;
* float64: im2col — PyTorch's float64 convolution has no oneDNN fast path and runs several times
  slower than the float64 GEMM behind im2col;
* everything else in float32: PyTorch's oneDNN, which the tuner chose on nearly every float32
  layer of ResNet-18 and VGG-16 once all kernels shared one thread pool (it runs near the
  machine's GEMM peak there; the pointwise and Winograd wins it does not pick are a few percent).

Winograd is never picked by rule: it wins only on some large batch-8 layers, which tuning finds.
Approximate kernels are never picked by rule either: their error depends on the data, so only
tuning (with a tolerance) can admit them.
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
    return "torch", {}


def choose_matmul(problem: MatmulProblem) -> tuple[str, dict[str, Any]]:
    """numpy's BLAS call: as fast as torch's on large products, 2× faster on the small ones."""
    return "blas", {}
