"""Kernel choice without timing (``AUTOTUNE_MODE=heuristic``).

First the choice of the nearest problems tuned on this machine (:func:`learned_conv`; distance in
log-scaled work, channels, output size, filter, stride, batch); with none near, rules in the
spirit of NNPACK's ``auto`` (:func:`choose_conv`), distilled from BENCHMARKS.md and listed with
their reasons in docs/architecture.md, "Heuristic mode".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.evaluate import recorded_us
from autotune.problem import ConvProblem, MatmulProblem, parse_problem
from autotune.tuner import VENDOR, VENDOR_MARGIN
from kernels import registry

TINY_FLOPS = 2e6
#: ... and few channels: a 16-channel 16×16 layer of 1.2 MFLOP already runs 2.8x faster in PyTorch.
TINY_MAX_CHANNEL_PAIRS = 16
#: FFT without a kept spectrum pays C·K filter FFTs per call; below this many pairs they are cheap,
#: and with this many taps a tile's worth of each is.
FFT_ONE_OFF_MAX_CHANNEL_PAIRS, TILED_FFT_MIN_TAPS = 64, 121
#: ``fft_tiles``: the filter extents it wins on, channels needed each side, and outputs (N·Ho·Wo)
#: that repay a fixed and a one-off weight's slot matrices (BENCHMARKS.md §27).
TILE_FFT_EXTENTS, TILE_FFT_MIN_CHANNELS, TILE_FFT_MIN_OUTPUTS = (7, 13), 16, (28 * 28, 56 * 56)
#: A first layer's work per output element, and glibc's largest mmap threshold (see the rules).
FIRST_LAYER_TAPS, FAULTING_OUTPUT_BYTES = 64, 32 * 2**20


def choose_conv(problem: ConvProblem) -> tuple[str, dict[str, Any]]:
    """The kernel name and parameters the rules pick for a conv2d problem."""
    k_out, c_per_group, kh, kw = problem.w_shape
    if problem.flops < TINY_FLOPS and c_per_group * k_out <= TINY_MAX_CHANNEL_PAIRS:
        return "direct", {}
    unit = problem.stride == (1, 1) and problem.dilation == (1, 1)
    outputs = problem.out_shape[0] * problem.out_shape[2] * problem.out_shape[3]
    tile_fft = TILE_FFT_EXTENTS[0] <= max(kh, kw) <= TILE_FFT_EXTENTS[1] and problem.groups == 1
    tile_fft &= min(c_per_group, k_out) >= TILE_FFT_MIN_CHANNELS  # else 0.4-1.1x PyTorch (§27)
    if unit and tile_fft and outputs >= TILE_FFT_MIN_OUTPUTS[problem.weight is None]:
        return "fft_tiles", {}
    cheap_spectrum = problem.weight is not None or c_per_group * k_out <= FFT_ONE_OFF_MAX_CHANNEL_PAIRS
    if min(kh, kw) >= 7 and unit and (cheap_spectrum or kh * kw >= TILED_FFT_MIN_TAPS):
        grid = registry.get("conv2d", "fft").param_grid(problem)
        tiles = [p for p in grid if "tile" in p]  # smallest first
        return "fft", tiles[0] if tiles and not cheap_spectrum else {}
    out_bytes = math.prod(problem.out_shape) * (4 if problem.dtype == "float32" else 8)
    if unit and c_per_group * kh * kw < FIRST_LAYER_TAPS and out_bytes > FAULTING_OUTPUT_BYTES:
        return "direct", {}
    if problem.dtype == "float64":
        return "im2col", {}
    return "torch", {}


def choose_matmul(problem: MatmulProblem) -> tuple[str, dict[str, Any]]:
    """numpy's BLAS call: as fast as torch's on large products, 2× faster on the small ones."""
    return "blas", {}


# --- Learned from the database: the choice of the nearest tuned problems. --------------------

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


def _relative_times(entry: Mapping[str, Any]) -> dict[tuple[str, tuple], float]:
    """log(time / PyTorch's time) of each accepted, timed kernel setting of a tuned entry (empty
    without a PyTorch time to compare with)."""
    times = {
        (str(r.get("kernel")), tuple(sorted((r.get("params") or {}).items()))): recorded_us(r)
        for r in (entry.get("candidates") or {}).values()
        if r.get("ok") and recorded_us(r)
    }
    vendor = times.get((VENDOR, ()))
    return {label: math.log(t / vendor) for label, t in times.items()} if vendor else {}


def learned_conv(problem: ConvProblem, entries: Mapping[str, Mapping[str, Any]]) -> Prediction | None:
    """From the :data:`NEIGHBOURS` nearest tuned conv2d problems within :data:`RADIUS` (same dtype;
    None if none): each kernel setting that applies gets its time relative to PyTorch's there
    (closeness-weighted geometric mean); the fastest wins, PyTorch unless beaten by the tuner's
    vendor margin. (Votes on choices carried a batch-8 Winograd win onto a 4x smaller image.)"""
    target = conv_features(problem)
    near: list[tuple[float, str, dict[tuple[str, tuple], float]]] = []
    for key, entry in entries.items():
        if not key.startswith("conv2d") or key == problem.key:
            continue
        try:
            other = parse_problem(key)
        except ValueError:
            continue
        if other.dtype != problem.dtype or other.tol != problem.tol or not (ratios := _relative_times(entry)):
            continue
        distance = float(np.linalg.norm(conv_features(other) - target))  # type: ignore[arg-type]
        if distance <= RADIUS:
            near.append((distance, key, ratios))
    near = sorted(near, key=lambda found: found[0])[:NEIGHBOURS]
    seen: dict[tuple[str, tuple], list[tuple[float, float]]] = {}
    for distance, _, ratios in near:
        for label, ratio in ratios.items():
            if _fits(problem, label[0], dict(label[1])):
                seen.setdefault(label, []).append((1.0 / (distance + 0.25), ratio))
    if not seen:
        return None
    predicted = {
        label: sum(w * r for w, r in pairs) / sum(w for w, _ in pairs) for label, pairs in seen.items()
    }
    best = min(predicted, key=lambda label: predicted[label])
    if (VENDOR, ()) in predicted and predicted[best] > predicted[(VENDOR, ())] - math.log(1 + VENDOR_MARGIN):
        best = (VENDOR, ())
    return Prediction(best[0], dict(best[1]), [(key, round(distance, 2)) for distance, key, _ in near])


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
