"""Rule-based kernel choice without timing (``AUTOTUNE_MODE=heuristic``), in the spirit of
NNPACK's ``auto`` algorithm: a few comparisons on the problem's geometry.

The rules are distilled from this project's own measurements (``autotune tune --preset resnet18``
and ``--preset seed``, ``autotune bench``; see BENCHMARKS.md) on a 2-core AVX-512 EPYC:

* tiny problems (< ~2 MFLOP): per-call overhead dominates; the Numba direct loop has the least;
* 3×3, stride 1, dilation 1 with enough channels: Winograd F(4×4, 3×3) (2.25 multiplies per
  output instead of 9, BLAS GEMMs, float32 error ~1e-5 — well inside the 1e-4 default);
* large kernels (≥ 7×7, stride 1) on large planes with few channels: FFT, whose cost does not
  grow with the kernel size;
* everything else: PyTorch's oneDNN convolution, the strongest general-purpose kernel here.

Approximate kernels are never picked by rule: their error depends on the data, so only tuning
(with a tolerance) can admit them.
"""

from __future__ import annotations

from typing import Any

from autotune.problem import ConvProblem, MatmulProblem

TINY_FLOPS = 2e6


def choose_conv(problem: ConvProblem) -> tuple[str, dict[str, Any]]:
    """The kernel name and parameters the rules pick for a conv2d problem."""
    _, c_in, h, w = problem.x_shape
    k_out, c_per_group, kh, kw = problem.w_shape
    _, _, ho, wo = problem.out_shape
    unit = problem.stride == (1, 1) and problem.dilation == (1, 1)
    if problem.flops < TINY_FLOPS:
        return "direct", {}
    if unit and (kh, kw) == (3, 3) and problem.groups == 1 and min(c_in, k_out) >= 16 and min(ho, wo) >= 8:
        return "winograd", {"tile": 4}
    if unit and min(kh, kw) >= 7 and problem.groups == 1 and c_per_group * k_out <= 1024 and h * w >= 1024:
        return "fft", {}
    return "torch", {}


def choose_matmul(problem: MatmulProblem) -> tuple[str, dict[str, Any]]:
    """Small products: numpy's BLAS call has less overhead than torch's; large ones: equal."""
    return "blas", {}
