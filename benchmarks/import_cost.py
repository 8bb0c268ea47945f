"""Does ``import autotune`` (and running its kernels) slow down the user's own PyTorch calls?

    python benchmarks/import_cost.py [--rounds 20]

In one process, with torch imported first as users do: times ``F.conv2d`` on ResNet-18's 3x3
and 1x1 layers (20th percentile of clean runs, interleaved rounds) before anything of autotune
is loaded; then imports autotune and runs each of its Numba kernels once (so Numba's threads
exist); then times the same ``F.conv2d`` calls again. Prints after/before per layer and the
geometric mean; the goal is <= 1.03. PyTorch's own speed can switch within a process (a 140 µs
1×1 stride-2 call between 139 and 214-227 µs, in either direction, BENCHMARKS.md §24), which this
before/after cannot tell from the import; ``autotune bench --vs-torch --control imported``, across
fresh processes, can.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

LAYERS = [
    ((1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ((1, 128, 28, 28), (128, 128, 3, 3), 1, 1),
    ((1, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ((1, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ((1, 64, 56, 56), (128, 64, 1, 1), 2, 0),
    ((8, 128, 28, 28), (128, 128, 3, 3), 1, 1),
]


def clean_runs_us(call, runs: int) -> list[float]:
    """Wall times of runs during which the process was not preempted."""
    found = []
    for _ in range(runs):
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        t0 = time.perf_counter_ns()
        call()
        wall = (time.perf_counter_ns() - t0) / 1e3
        if resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw == switches:
            found.append(wall)
    return found


def measure(calls, rounds: int) -> list[float]:
    samples = [[] for _ in calls]
    for _ in range(rounds):
        for index, call in enumerate(calls):
            samples[index].extend(clean_runs_us(call, 3))
    return [float(np.percentile(s, 20)) if s else float("nan") for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    calls = []
    for x_shape, w_shape, stride, pad in LAYERS:
        x, w = torch.randn(*x_shape), torch.randn(*w_shape)
        calls.append(lambda x=x, w=w, stride=stride, pad=pad: F.conv2d(x, w, None, stride, pad))
    with torch.no_grad():
        for call in calls:
            call()
        before = measure(calls, args.rounds)
        import autotune

        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 16, 20, 20), dtype=np.float32)
        w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
        for method in ("direct", "im2col", "winograd", "fft", "torch"):
            autotune.conv2d(x, w, padding=1, method=method)
        after = measure(calls, args.rounds)
    ratios = []
    print(f"{'layer':40} {'before us':>10} {'after us':>10} {'after/before':>12}")
    for (x_shape, w_shape, stride, _), b, a in zip(LAYERS, before, after, strict=True):
        ratios.append(a / b)
        name = f"{'x'.join(map(str, x_shape))} * {'x'.join(map(str, w_shape))} s{stride}"
        print(f"{name:40} {b:10.0f} {a:10.0f} {a / b:12.3f}")
    print(f"geo-mean after/before: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f}")


if __name__ == "__main__":
    main()
