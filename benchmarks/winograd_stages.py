"""Where Winograd's time goes, and how accurate each tile size is, on ResNet-18/VGG-16 3×3 layers.

    python benchmarks/winograd_stages.py [--errors]

Stages (fixed weight, F(4×4), float32): in stages, the whole call, then the input transform, the
α² GEMMs and the output transform each timed alone (the tuner's score: 20th percentile of the
clean runs, ms), and the transforms' share of the three; fused (where the tuner offers it), the
whole call and its GEMMs alone (the same jobs' α² BLAS calls on V blocks already in place), the
transforms' share being what the GEMMs leave. ``--errors`` prints instead max|y − ref| / max|ref|
of F(2×2), F(4×4) and F(6×6) against PyTorch in float64 on one random-normal input per layer
(batch 1). BENCHMARKS.md §18 and §22 have both tables.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numba
import numpy as np
import torch
import torch.nn.functional as F

from autotune import timing
from autotune.problem import ConvProblem
from kernels import pool
from kernels.conv2d import winograd as W

STAGE_LAYERS = [(1, 64, 56, 64), (1, 128, 28, 128), (1, 256, 14, 256), (8, 64, 56, 64), (8, 128, 28, 128)]
STAGE_LAYERS += [(8, 256, 56, 256), (8, 512, 28, 512), (1, 64, 224, 64)]
ERROR_LAYERS = {
    "ResNet layer1": (64, 56, 64),
    "ResNet layer2": (128, 28, 128),
    "ResNet layer3": (256, 14, 256),
    "ResNet layer4": (512, 7, 512),
    "VGG conv1_2": (64, 224, 64),
    "VGG conv2_2": (128, 112, 128),
    "VGG conv3_2": (256, 56, 256),
    "VGG conv4_2": (512, 28, 512),
    "VGG conv5_1": (512, 14, 512),
}
PADDING = (1, 1, 1, 1)


def p20_ms(call: Callable[[], object], runs: int) -> float:
    """The tuner's score of ``call`` (20th percentile of the clean runs, at least ``runs``), ms;
    one call first, so that a kernel compiled on first use is not timed compiling."""
    call()
    return timing.measure(call, min_runs=runs, min_time_s=0.0, max_time_s=10.0).score_us / 1e3


def staged(x: np.ndarray, prepared: W.WinogradFilter, runs: int) -> list[float]:
    """In stages: the whole call, then each stage alone (ms): total, input, GEMMs, output."""
    batch, _, size, _ = x.shape
    m, k_out = prepared.tile, prepared.u.shape[2]
    tiles = (-(-size // m), -(-size // m))
    count = batch * tiles[0] * tiles[1]
    v = np.empty(((m + 2) ** 2, count, x.shape[1]), np.float32)
    mm = np.empty(((m + 2) ** 2, count, k_out), np.float32)
    y, bias = np.empty((batch, k_out, size, size), np.float32), np.zeros(k_out, np.float32)
    return [
        p20_ms(lambda: W.winograd(x, prepared, None, (1, 1), PADDING, (1, 1), 1, tile=m), runs),
        p20_ms(lambda: W.input_transform(x, PADDING, m, tiles, v), runs),
        p20_ms(lambda: pool.matmul(v, prepared.u, out=mm), runs),
        p20_ms(lambda: W.output_transform(mm, bias, tiles, m, y), runs),
    ]


@numba.njit(parallel=True)
def _job_gemms(u, count, block, channels):  # pragma: no cover - jitted
    """The fused call's GEMMs alone: each job's α² products of a (block × C) V by U."""
    alpha2, k_out = u.shape[0], u.shape[2]
    for job in numba.prange(-(-count // block)):
        rows = min(block, count - job * block)
        v = np.ones((alpha2, rows, channels), dtype=u.dtype)
        mm = np.empty((alpha2, rows, k_out), dtype=u.dtype)
        for i in range(alpha2):
            np.dot(v[i], u[i], mm[i])


def fused(x: np.ndarray, prepared: W.WinogradFilter, runs: int) -> list[float]:
    """Fused: the whole call and its GEMMs alone (ms)."""
    batch, channels, size, _ = x.shape
    m, u = prepared.tile, prepared.u
    count = batch * (-(-size // m)) ** 2
    block = W.fused_block(m, channels, u.shape[2], x.dtype.itemsize, count)
    return [
        p20_ms(lambda: W.winograd(x, prepared, None, (1, 1), PADDING, (1, 1), 1, tile=m, fused=1), runs),
        p20_ms(lambda: pool.on_calling_thread(lambda: _job_gemms(u, count, block, channels)), runs),
    ]


def stages(batch: int, channels: int, size: int, k_out: int, m: int = 4) -> str:
    """The stage split of F(m×m) on one layer in stages, and fused if the tuner offers it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    prepared = W.prepare(rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32), m)
    runs = 20 if x.size < 4_000_000 else 6
    total, t_in, t_gemm, t_out = staged(x, prepared, runs)
    share = (t_in + t_out) / (t_in + t_gemm + t_out)
    name = f"{batch}x{channels}x{size}->{k_out} F({m}x{m})"
    lines = [
        f"{name} in stages: total {total:.3f} ms = input {t_in:.3f} + GEMMs {t_gemm:.3f} + output "
        f"{t_out:.3f}; transforms {share:.0%}"
    ]
    problem = ConvProblem(x.shape, (k_out, channels, 3, 3), padding=PADDING)
    if {"tile": m, "fused": 1} in W.tile_grid(problem):
        total, t_gemm = fused(x, prepared, runs)
        share = 1 - t_gemm / total
        lines.append(f"{name} fused: total {total:.3f} ms, GEMMs {t_gemm:.3f}; transforms {share:.0%}")
    return "\n".join(lines)


def errors() -> None:
    rng = np.random.default_rng(0)
    print("| layer (batch 1, float32, random normal) | F(2×2) | F(4×4) | F(6×6) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (channels, size, k_out) in ERROR_LAYERS.items():
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        w = rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32)
        ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
        found = []
        for m in W.TILE_SIZES:
            y = W.winograd(x, w, None, (1, 1), PADDING, (1, 1), 1, tile=m)
            found.append(f"{np.abs(y - ref).max() / np.abs(ref).max():.1e}")
        print(f"| {name} {channels}×{size}×{size} → {k_out} | " + " | ".join(found) + " |")


if __name__ == "__main__":
    if "--errors" in sys.argv[1:]:
        errors()
    else:
        for layer in STAGE_LAYERS:
            print(stages(*layer), flush=True)
