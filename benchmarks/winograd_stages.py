"""Where Winograd's time goes, and how accurate each tile size is, on ResNet-18/VGG-16 3×3 layers.

    python benchmarks/winograd_stages.py [--errors]

Stages (fixed weight, F(4×4), float32; all rows of tiles at once, then in the band of rows the
tuner offers, if any): the whole call, then the input transform, the α² GEMMs and the output
transform each timed alone (the tuner's score: 20th percentile of the clean runs, ms), and the
transforms' share of the three. ``--errors`` prints instead max|y − ref| / max|ref| of F(2×2),
F(4×4) and F(6×6) against PyTorch in float64 on one random-normal input per layer (batch 1).
Both tables are in BENCHMARKS.md §18.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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


def split(x: np.ndarray, prepared: W.WinogradFilter, band: int, runs: int) -> list[float]:
    """The whole call, then each stage alone over every band (ms): total, input, GEMMs, output."""
    batch, _, size, _ = x.shape
    m, k_out = prepared.tile, prepared.u.shape[2]
    tiles = (-(-size // m), -(-size // m))
    step = band or batch * tiles[0]
    parts = [range(r, min(r + step, batch * tiles[0])) for r in range(0, batch * tiles[0], step)]
    vs = [np.empty(((m + 2) ** 2, len(r) * tiles[1], x.shape[1]), np.float32) for r in parts]
    mms = [np.empty(((m + 2) ** 2, len(r) * tiles[1], k_out), np.float32) for r in parts]
    y, bias = np.empty((batch, k_out, size, size), np.float32), np.zeros(k_out, np.float32)
    return [
        p20_ms(lambda: W.winograd(x, prepared, None, (1, 1), PADDING, (1, 1), 1, tile=m, band=band), runs),
        p20_ms(
            lambda: [W.input_transform(x, PADDING, m, tiles, r, v) for r, v in zip(parts, vs, strict=True)],
            runs,
        ),
        p20_ms(lambda: [pool.matmul(v, prepared.u, out=mm) for v, mm in zip(vs, mms, strict=True)], runs),
        p20_ms(
            lambda: [W.output_transform(mm, bias, tiles, m, r, y) for r, mm in zip(parts, mms, strict=True)],
            runs,
        ),
    ]


def stages(batch: int, channels: int, size: int, k_out: int, m: int = 4) -> str:
    """The stage split of F(m×m) on one layer, all rows of tiles at once and in the tuner's band
    (if it offers one)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    prepared = W.prepare(rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32), m)
    runs = 20 if x.size < 4_000_000 else 6
    problem = ConvProblem(x.shape, (k_out, channels, 3, 3), padding=PADDING)
    bands = [0] + [p["band"] for p in W.tile_grid(problem) if p["tile"] == m and "band" in p]
    lines = []
    for band in bands:
        total, t_in, t_gemm, t_out = split(x, prepared, band, runs)
        share = (t_in + t_out) / (t_in + t_gemm + t_out)
        lines.append(
            f"{batch}x{channels}x{size}->{k_out} F({m}x{m}) band {band or 'all'}: total {total:.3f} ms = "
            f"input {t_in:.3f} + GEMMs {t_gemm:.3f} + output {t_out:.3f}; transforms {share:.0%}"
        )
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
