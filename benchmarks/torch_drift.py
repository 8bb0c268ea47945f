"""Does a tune leave the process slower for PyTorch's own calls? And how much does the same call
drift within one process anyway?

    python benchmarks/torch_drift.py [--no-tune]

Times three ``F.conv2d`` calls of ResNet-18 (1×512×7×7 ⊛ 3×3, 1×256×14×14 ⊛ 3×3 stride 2,
8×64×56×56 ⊛ 1×1 stride 2) in batches of 200 calls (20th percentile), three batches; then
``import autotune`` and tunes three ResNet-18 problems into ``$AUTOTUNE_CACHE_DIR`` (not with
``--no-tune``); then times the calls again in three batches. Prints the batches and the best
after/before ratio per call (BENCHMARKS.md §17).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = [((1, 512, 7, 7), (512, 512, 3, 3), 1, 1), ((1, 256, 14, 14), (512, 256, 3, 3), 2, 1)]
SHAPES += [((8, 64, 56, 56), (128, 64, 1, 1), 2, 0)]
TUNED = ["conv2d x=1x64x56x56 w=64x64x3x3 pad=1", "conv2d x=1x512x7x7 w=512x512x3x3 pad=1"]
TUNED += ["conv2d x=1x128x28x28 w=128x128x3x3 pad=1"]


def batch(data: list, calls: int = 200) -> list[float]:
    """20th percentile of ``calls`` timed calls of each conv, µs."""
    found = []
    for x, w, b, stride, pad in data:
        times = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            F.conv2d(x, w, b, stride, pad)
            times.append((time.perf_counter_ns() - t0) / 1e3)
        found.append(sorted(times)[len(times) // 5])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-tune", action="store_true", help="import autotune but tune nothing")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = [(torch.randn(*x), torch.randn(*w), torch.randn(w[0]), s, p) for x, w, s, p in SHAPES]
    before = [batch(data) for _ in range(3)]
    import autotune

    if not args.no_tune:
        autotune.tune(TUNED)
    after = [batch(data) for _ in range(3)]
    for i, (x, *_rest) in enumerate(data):
        old, new = [b[i] for b in before], [a[i] for a in after]
        print(
            f"{'x'.join(map(str, x.shape)):12} before {' '.join(f'{t:6.0f}' for t in old)} us, after "
            f"{' '.join(f'{t:6.0f}' for t in new)} us; best after/best before {min(new) / min(old):.3f}"
        )


if __name__ == "__main__":
    main()
