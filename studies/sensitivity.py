"""Error sensitivity of the conv algorithms in float16: input scale and offset, channels, FFT size.

Three sweeps the standard-normal tables cannot show, all with fp16 storage (the emulated kernels
of :mod:`studies.lowprec`), against the float64 reference:

* **input scale and offset**: x = s·z (zero mean) and x = s·max(z, 0) (ReLU-like, non-zero mean),
  z standard normal, s = 2^−6 … 2^15, fp16 storage with an fp32 accumulator. Winograd's transformed
  inputs V and the FFT's input spectrum are stored in fp16: large |V| (F(6)'s Bᵀ and Aᵀ have
  entries up to ~10) and the FFT's DC term (the sum of a whole padded tile, large when the mean is
  not zero) overflow fp16 (max 65504) long before x does. An overflowed output is infinite or NaN;
  the plot marks it at the top.
* **channel count** C = 4 … 256 (8x8 images, 4 filters, standard normal), fp16 with an fp16 and
  with an fp32 accumulator: rounding errors of a sum of 9·C terms grow like √C when they are
  independent and like C in the worst case.
* **FFT size**: the FFT's padded size P = 8 … 64 (input size P − 2 with padding 1), fp16 storage
  with an fp32 and an fp16 accumulator, beside direct on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotune.evaluate import rel_max_error
from kernels.conv2d.reference import conv2d_reference
from studies import _plots
from studies.lowprec.float_conv import direct_lowprec, winograd_lowprec
from studies.lowprec.float_fft import fft_lowprec
from studies.lowprec.rounding import FLOAT16, FLOAT32, FloatFormat

PAD = (1, 1, 1, 1)
Conv = Callable[[np.ndarray, np.ndarray, np.ndarray, FloatFormat], np.ndarray]


def _algorithms() -> dict[str, Conv]:
    """name → conv(x, w, b, accumulator) with fp16 storage."""
    algs: dict[str, Conv] = {"direct": lambda x, w, b, acc: direct_lowprec(x, w, b, PAD, FLOAT16, acc)}
    for m in (2, 4, 6):
        algs[f"F({m}x{m},3x3)"] = lambda x, w, b, acc, m=m: winograd_lowprec(
            x, w, b, PAD, FLOAT16, acc, tile=m
        )
    algs["FFT"] = lambda x, w, b, acc: fft_lowprec(x, w, b, PAD, FLOAT16, acc)
    return algs


@dataclass
class SensitivityRow:
    """One error of one algorithm at one point of one sweep (``sensitivity.csv``)."""

    sweep: str  # "scale", "channels", "fft size"
    inputs: str  # "zero-mean", "ReLU-like", "standard normal"
    accumulator: str
    algorithm: str
    x: float  # the swept value: scale s, channels C, or FFT size P
    rel_max: float  # inf when the output overflowed


def _error(y: np.ndarray, ref: np.ndarray) -> float:
    return rel_max_error(y, ref) if np.all(np.isfinite(y)) else float("inf")


def scale_sweep(
    scales: list[float], channels: int = 8, size: int = 12, seed: int = 0
) -> list[SensitivityRow]:
    """Every algorithm at fp16 storage, fp32 accumulation, on scaled zero-mean and ReLU-like inputs."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((1, channels, size, size))
    w, b = rng.standard_normal((4, channels, 3, 3)) / 3, np.zeros(4)
    rows = []
    for inputs, base in (("zero-mean", z), ("ReLU-like", np.maximum(z, 0))):
        for s in scales:
            x = s * base
            ref = conv2d_reference(x, w, b, (1, 1), PAD, (1, 1), 1)
            for name, conv in _algorithms().items():
                rows.append(
                    SensitivityRow("scale", inputs, "fp32", name, s, _error(conv(x, w, b, FLOAT32), ref))
                )
    return rows


def channel_sweep(channel_counts: list[int], seed: int = 0) -> list[SensitivityRow]:
    """direct, F(4x4,3x3) and FFT vs C, fp16 storage with fp16 and fp32 accumulators."""
    rows = []
    algs = {k: v for k, v in _algorithms().items() if k in ("direct", "F(4x4,3x3)", "FFT")}
    for c in channel_counts:
        rng = np.random.default_rng((seed, c))
        x, w, b = rng.standard_normal((1, c, 8, 8)), rng.standard_normal((4, c, 3, 3)), np.zeros(4)
        rows += _accumulator_rows("channels", c, algs, x, w, b)
    return rows


def fft_size_sweep(sizes: list[int], channels: int = 8, seed: int = 0) -> list[SensitivityRow]:
    """FFT and direct vs the FFT's padded size P (input P − 2, padding 1), both accumulators."""
    rows = []
    algs = {k: v for k, v in _algorithms().items() if k in ("direct", "FFT")}
    for p in sizes:
        rng = np.random.default_rng((seed, p))
        x = rng.standard_normal((1, channels, p - 2, p - 2))
        w, b = rng.standard_normal((4, channels, 3, 3)), np.zeros(4)
        rows += _accumulator_rows("fft size", p, algs, x, w, b)
    return rows


def _accumulator_rows(panel: str, value: int, algs: dict, x, w, b) -> list[SensitivityRow]:
    """One row per algorithm and accumulator (fp16, fp32) on standard-normal operands."""
    ref = conv2d_reference(x, w, b, (1, 1), PAD, (1, 1), 1)
    rows = []
    for acc in (FLOAT16, FLOAT32):
        label = "fp16" if acc is FLOAT16 else "fp32"
        for name, conv in algs.items():
            error = _error(conv(x, w, b, acc), ref)
            rows.append(SensitivityRow(panel, "standard normal", label, name, value, error))
    return rows


def measure(quick: bool) -> list[SensitivityRow]:
    """The three sweeps (coarser grids with ``quick``)."""
    scales = [2.0**k for k in (range(-6, 16, 3) if quick else range(-6, 16))]
    channels = [4, 16, 64] if quick else [4, 8, 16, 32, 64, 128, 256]
    sizes = [8, 16, 32] if quick else [8, 16, 32, 64]
    return scale_sweep(scales) + channel_sweep(channels) + fft_size_sweep(sizes)


COLORS = {
    "direct": "tab:blue",
    "F(2x2,3x3)": "tab:green",
    "F(4x4,3x3)": "tab:olive",
    "F(6x6,3x3)": "tab:orange",
    "FFT": "tab:purple",
}


def _series(rows: list[SensitivityRow], **match: object) -> tuple[list[float], list[float]]:
    chosen = sorted((r for r in rows if all(getattr(r, k) == v for k, v in match.items())), key=lambda r: r.x)
    return [r.x for r in chosen], [r.rel_max for r in chosen]


def plot(rows: list[SensitivityRow], path: Path) -> Path:
    """Four panels: scale (zero-mean, ReLU-like), channels, FFT size; overflow marked at the top."""
    fig, axes = _plots.figure(4, width_in=4.6, height_in=4.4)
    top = 2.0
    for ax, inputs in zip(axes[:2], ("zero-mean", "ReLU-like"), strict=True):
        for index, (name, color) in enumerate(COLORS.items()):
            xs, ys = _series(rows, sweep="scale", inputs=inputs, algorithm=name)
            finite = [(x, y) for x, y in zip(xs, ys, strict=True) if np.isfinite(y)]
            over = [x for x, y in zip(xs, ys, strict=True) if not np.isfinite(y)]
            ax.plot(*zip(*finite, strict=True), "o-", ms=3, color=color, label=name) if finite else None
            ax.plot(over, [top * 1.7**index] * len(over), "x", ms=7, color=color)  # stacked, one row each
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(
            "input scale s (x = s·z)" if inputs == "zero-mean" else "input scale s (x = s·max(z, 0))"
        )
        ax.set_title(
            f"{inputs} inputs, fp16 storage, fp32 acc.\n× at the top: output overflowed (inf/NaN)", fontsize=9
        )
    ax = axes[2]
    for name in ("direct", "F(4x4,3x3)", "FFT"):
        for acc, style in (("fp16", "o-"), ("fp32", "s--")):
            xs, ys = _series(rows, sweep="channels", algorithm=name, accumulator=acc)
            ax.plot(xs, ys, style, ms=3, color=COLORS[name], label=f"{name}, acc {acc}")
    xs, ys = _series(rows, sweep="channels", algorithm="direct", accumulator="fp16")
    if xs:
        for power, label in ((0.5, "∝ √C"), (1.0, "∝ C")):
            ax.plot(xs, [ys[0] * (x / xs[0]) ** power for x in xs], ":", color="0.3", lw=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input channels C (8x8 images, fp16 storage)")
    ax.set_title("error vs channel count", fontsize=9)
    ax = axes[3]
    for name in ("direct", "FFT"):
        for acc, style in (("fp16", "o-"), ("fp32", "s--")):
            xs, ys = _series(rows, sweep="fft size", algorithm=name, accumulator=acc)
            ax.plot(xs, ys, style, ms=3, color=COLORS[name], label=f"{name}, acc {acc}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("FFT size P (input (P−2)², padding 1, fp16 storage)")
    ax.set_title("error vs FFT size", fontsize=9)
    for ax in axes:
        ax.set_ylabel("relative max error")
        _plots.log_grid(ax)
        ax.legend(fontsize=7)
    fig.suptitle("Winograd and FFT in fp16 beyond standard-normal data (8 channels unless swept)")
    return _plots.save(fig, path)


def findings(rows: list[SensitivityRow]) -> list[str]:
    """Where each algorithm overflows, and how error grows with C and P, in numbers."""
    lines = []
    for inputs in ("zero-mean", "ReLU-like"):
        cells = []
        for name in COLORS:
            xs, ys = _series(rows, sweep="scale", inputs=inputs, algorithm=name)
            over = [x for x, y in zip(xs, ys, strict=True) if not np.isfinite(y)]
            cells.append(f"{name} from s = 2^{int(np.log2(min(over)))}" if over else f"{name} never")
        lines.append(
            f"* **Overflow, {inputs} inputs** (fp16 storage, fp32 accumulator): " + "; ".join(cells) + "."
        )
    for acc in ("fp16", "fp32"):
        xs, ys = _series(rows, sweep="channels", algorithm="direct", accumulator=acc)
        if len(xs) > 1 and ys[0] > 0:
            slope = np.polyfit(np.log(xs), np.log(ys), 1)[0]
            lines.append(
                f"* **Channels, direct, acc {acc}**: error {ys[0]:.1e} at C = {xs[0]:.0f} → {ys[-1]:.1e} at "
                f"C = {xs[-1]:.0f}, growth ∝ C^{slope:.2f} (√C would be 0.5, the worst case 1)."
            )
    for acc in ("fp16", "fp32"):
        xs, ys = _series(rows, sweep="fft size", algorithm="FFT", accumulator=acc)
        _, ds = _series(rows, sweep="fft size", algorithm="direct", accumulator=acc)
        if xs:
            cells = ", ".join(
                f"P = {x:.0f}: {y:.1e} (direct {d:.1e})" for x, y, d in zip(xs, ys, ds, strict=True)
            )
            lines.append(f"* **FFT size, acc {acc}**: {cells}.")
    return lines
