"""PyTorch's own conv in a fresh process: page faults per call before and after one large free.

    python benchmarks/torch_page_faults.py plain    # a fresh process, nothing else done
    python benchmarks/torch_page_faults.py warm     # first allocate and free one 4 MiB array

glibc maps every allocation above its mmap threshold (128 KiB at start) afresh from the OS and
unmaps it on free, so each call faults its temporaries in 4 KiB at a time. Freeing one mapped
chunk raises the threshold to that chunk's size (up to 32 MiB), and from then on such
allocations come from the heap. Prints faults per call and the time (the tuner's score) of
``F.conv2d`` on 1×64×56×56 ⊛ 64×64×3×3 (BENCHMARKS.md §18).
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
import torch
import torch.nn.functional as F

from autotune import timing


def faults_per_call(call, calls: int = 50) -> float:
    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def p20_ms(call, calls: int = 100) -> float:
    """The tuner's score of ``call`` (20th percentile of the clean runs, at least ``calls``), ms."""
    return timing.measure(call, min_runs=calls, min_time_s=0.0, max_time_s=10.0).score_us / 1e3


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=("plain", "warm"), default="plain")
    mode = parser.parse_args().mode
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    with torch.no_grad():
        if mode == "warm":
            chunk = np.empty(4 << 20, np.uint8)
            chunk[::4096] = 1  # touch it, then free it: glibc raises its mmap threshold
            del chunk
        conv = lambda: F.conv2d(x, w, padding=1)  # noqa: E731
        print(f"{mode}: {faults_per_call(conv):.0f} page faults per call, {p20_ms(conv):.3f} ms")
