"""Where FFT-on-16×16-windows' time goes, and how accurate it is, on large-filter layers.

    python benchmarks/fft_tiles_stages.py [--errors] [--rounds 7]

Stages (fixed weight, float32): the whole fused call (``kernels.conv2d.fft_tiles``), and its 128
slot GEMMs alone — the same jobs' BLAS calls, on blocks of V already in place, in one parallel
region — so that the transforms' share (gather, forward FFTs, inverse FFTs, scatter) is what
the GEMMs leave; plus the one-off weight's call. The calls alternate over the rounds, as in
``winograd_stages.py`` (medians of the tuner's score, ms). ``--errors`` prints instead
max|y − ref| / max|ref| against PyTorch in float64 of fft_tiles and of the whole-image FFT
(float32, one random-normal input per layer). BENCHMARKS.md §27 has both tables.
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
import torch
import torch.nn.functional as F
from winograd_stages import alternating_ms

from kernels import pool
from kernels.conv2d import fft, fft_tiles

#: (batch, channels, image, filter) with K = C and "same" padding: the large-kernel suites' layers.
LAYERS = [(1, 32, 56, 7), (1, 16, 64, 9), (1, 16, 56, 11), (1, 64, 56, 7), (8, 32, 56, 7), (1, 128, 28, 7)]


@numba.njit(parallel=True)
def _gemms(v, u, mm):  # pragma: no cover - jitted
    """The fused call's GEMMs alone: job j multiplies its block's V (128, 2·block, C) by U."""
    for job in numba.prange(v.shape[0]):
        for i in range(v.shape[1]):
            np.dot(v[job, i], u[i], mm[job, i])


def operands(layer: tuple[int, int, int, int]):
    n, c, hw, k = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((c, c, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    return x, w, b, (k // 2,) * 4


def stages(layer, rounds: int) -> str:
    x, w, b, padding = operands(layer)
    n, c, hw, k = layer
    prepared = fft_tiles.prepare(w)
    u = prepared.u((1, 1))
    m = fft_tiles.outputs_per_window((k, k))
    windows = n * (-(-hw // m)) ** 2
    block = fft_tiles.default_block(c, c, 4, windows)
    jobs = -(-windows // block)
    v = np.random.default_rng(1).standard_normal((jobs, fft_tiles.SLOTS, 2 * block, c)).astype(np.float32)
    mm = np.empty((jobs, fft_tiles.SLOTS, 2 * block, 2 * c), dtype=np.float32)
    args = ((1, 1), padding, (1, 1), 1)
    calls = [
        lambda: fft_tiles.fft_tiles(x, prepared, b, *args),
        lambda: pool.on_calling_thread(lambda: _gemms(v, u, mm)),
        lambda: fft_tiles.fft_tiles(x, w, b, *args),
    ]
    found = alternating_ms(calls, runs=20, rounds=rounds)
    whole, gemms, one_off = np.median(found, axis=0)
    share = np.median(1 - found[:, 1] / found[:, 0])
    label = f"{n}×{c}×{hw}×{hw} ⊛ {c}×{c}×{k}×{k}"
    return (
        f"| {label} | m={m}, {windows} windows, {jobs} jobs of {block} | {whole:.3f} | {gemms:.3f} "
        f"| {100 * share:.0f}% | {one_off:.3f} |"
    )


def errors(layer) -> str:
    x, w, b, padding = operands(layer)
    pt, pb, pl, pr = padding
    xt = F.pad(torch.from_numpy(x.astype(np.float64)), (pl, pr, pt, pb))
    ref = F.conv2d(xt, torch.from_numpy(w.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()
    args = ((1, 1), padding, (1, 1), 1)
    scale = np.abs(ref).max()
    tiles = np.abs(fft_tiles.fft_tiles(x, w, b, *args) - ref).max() / scale
    whole = np.abs(fft.fft(x, w, b, *args) - ref).max() / scale
    n, c, hw, k = layer
    return f"| {n}×{c}×{hw}×{hw} ⊛ {k}×{k} | {tiles:.1e} | {whole:.1e} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--errors", action="store_true", help="accuracy against PyTorch in float64 instead")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    if options.errors:
        print("| layer | fft_tiles | fft (whole image) |\n| --- | ---: | ---: |")
        for layer in LAYERS:
            print(errors(layer))
        return
    print(
        "| layer | geometry | fused call (ms) | slot GEMMs alone (ms) | transforms' share "
        "| one-off weight (ms) |\n| --- | --- | ---: | ---: | ---: | ---: |"
    )
    for layer in LAYERS:
        print(stages(layer, options.rounds), flush=True)


if __name__ == "__main__":
    main()
