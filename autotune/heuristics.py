"""Kernel choice without timing (``AUTOTUNE_MODE=heuristic``).

First from the database (:func:`learned_conv`): the choice of the nearest problems tuned on this
machine, by distance in log-scaled features (work, channels, output size, filter, stride, batch).
When nothing tuned is near, rules in the spirit of NNPACK's ``auto`` algorithm: a few comparisons
on the problem's geometry (:func:`choose_conv`).

The rules are distilled from this project's measurements (``autotune bench --vs-torch --suite
resnet18|vgg16|seed`` and ``autotune bench --suite large-kernel|mnist-mlp``; numbers and machine
in BENCHMARKS.md):

* tiny problems (< 1e6 multiply-adds) with few channels (the seed's single-channel images): the
  serial Numba direct loop, faster than any library call there (no thread wake-up, no dispatch
  layers);
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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.problem import ConvProblem, MatmulProblem, parse_problem
from kernels import registry

TINY_FLOPS = 2e6
#: ... and few channels: a 16-channel 16×16 layer of 1.2 MFLOP already runs 2.8x faster in PyTorch.
TINY_MAX_CHANNEL_PAIRS = 16
#: FFT without a kept spectrum pays C·K filter FFTs per call; below this many pairs they are cheap.
FFT_ONE_OFF_MAX_CHANNEL_PAIRS = 64


def choose_conv(problem: ConvProblem) -> tuple[str, dict[str, Any]]:
    """The kernel name and parameters the rules pick for a conv2d problem."""
    k_out, c_per_group, kh, kw = problem.w_shape
    if problem.flops < TINY_FLOPS and c_per_group * k_out <= TINY_MAX_CHANNEL_PAIRS:
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


# ---------------------------------------------------------------------------------------------
# Learned from the database: the choice of the nearest tuned problems.

#: How many nearest tuned problems vote.
NEIGHBOURS = 3
#: Farther than this (Euclidean, in log2 units of the features) a tuned problem is not "near".
RADIUS = 3.0


def conv_features(problem: ConvProblem) -> np.ndarray:
    """log2 of work, channels in/out, output size, filter area, stride, batch, groups; fixed weight
    (log scale: a factor of two in any size is one unit of distance)."""
    n, c_in = problem.x_shape[:2]
    k_out, _, kh, kw = problem.w_shape
    ho, wo = problem.out_shape[2:]
    stride = problem.stride[0] * problem.stride[1]
    sizes = (problem.flops, c_in, k_out, ho * wo, kh * kw, stride, n, problem.groups)
    return np.array([*np.log2(np.maximum(sizes, 1)), 2.0 * (problem.weight == "fixed")])


@dataclass(frozen=True)
class Prediction:
    """A choice predicted from tuned neighbours: the kernel, its parameters, the neighbours
    (problem key, distance) that voted, nearest first."""

    name: str
    params: dict[str, Any]
    neighbours: list[tuple[str, float]]


def _fits(problem: ConvProblem, name: str, params: dict[str, Any]) -> bool:
    try:
        spec = registry.get(problem.op, name)
    except KeyError:
        return False
    if problem.dtype not in spec.dtypes or not spec.applies(problem):
        return False
    if not spec.exact and problem.tol is None:
        return False
    return not params or params in spec.param_grid(problem)


def learned_conv(problem: ConvProblem, entries: Mapping[str, Mapping[str, Any]]) -> Prediction | None:
    """The choice of the nearest tuned conv2d problems of the same dtype (None when none is near):
    the :data:`NEIGHBOURS` nearest within :data:`RADIUS` vote, weighted by closeness; a choice that
    does not apply to ``problem`` (or an approximate one for an exact call) gets no vote."""
    target = conv_features(problem)
    near: list[tuple[float, str, Mapping[str, Any]]] = []
    for key, entry in entries.items():
        if not key.startswith("conv2d") or key == problem.key:
            continue
        try:
            other = parse_problem(key)
        except ValueError:
            continue
        if other.dtype != problem.dtype or other.tol != problem.tol:
            continue
        distance = float(np.linalg.norm(conv_features(other) - target))  # type: ignore[arg-type]
        if distance <= RADIUS:
            near.append((distance, key, entry))
    near = sorted(near, key=lambda found: found[0])[:NEIGHBOURS]
    votes: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    for distance, _, entry in near:
        params = dict(entry.get("params") or {})
        if _fits(problem, str(entry.get("choice")), params):
            label = (str(entry["choice"]), tuple(sorted(params.items())))
            votes[label] = votes.get(label, 0.0) + 1.0 / (distance + 0.25)
    if not votes:
        return None
    name, params = max(votes, key=lambda label: votes[label])
    return Prediction(name, dict(params), [(key, round(distance, 2)) for distance, key, _ in near])


def choose(problem: Any, entries: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any], str]:
    """Heuristic mode's pick: learned from the database when a tuned neighbour is near, else the
    rules. Returns (name, params, a sentence saying where it came from)."""
    if isinstance(problem, ConvProblem):
        prediction = learned_conv(problem, entries)
        if prediction is not None:
            nearest = ", ".join(f"{key} (distance {distance:g})" for key, distance in prediction.neighbours)
            return prediction.name, prediction.params, f"from the nearest tuned problems: {nearest}"
        return (*choose_conv(problem), "by rule (no tuned problem near it on this machine)")
    if isinstance(problem, MatmulProblem):
        return (*choose_matmul(problem), "by rule")
    name, params = problem.EXACT_DEFAULT  # an op without rules here: its exact default
    return name, dict(params), "the op's exact default (no rules for this op)"
