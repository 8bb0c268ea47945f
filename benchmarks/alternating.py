"""Do our kernels and PyTorch slow each other down when they alternate in one process?

    python benchmarks/alternating.py [--import-first torch|autotune] [--rounds 15]

For each of our conv kernels (forced with ``method=``) on a ResNet-18 layer, and for the matmul
kernels next to ResNet-18's first 3×3 layer, in one process: PyTorch's ``F.conv2d`` alone, the
kernel alone, and the pair ``F.conv2d`` then the kernel, interleaved in rounds (any load hits all
three). Prints each time (20th percentile of the runs
not preempted, see autotune/timing.py) and ``pair / (torch + kernel)``: 1.0 means neither leaves
anything behind that slows the other (spinning threads of another pool, cold caches); the goal is
<= 1.1.
"""

from __future__ import annotations

import argparse

CASES = [
    ("direct", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("im2col", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("winograd(tile=4)", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("winograd(tile=4,fused=1)", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("fft", (1, 64, 28, 28), (64, 64, 5, 5), 1, 2),
    ("pointwise", (1, 64, 56, 56), (128, 64, 1, 1), 2, 0),
]
#: (method, its ranks, A's shape, B's shape): matmul kernels beside the first conv case. rank_A
#: factors the activation on every call (LAPACK), rank_B the weight once.
MATMUL_CASES = [
    ("svd", {"rank_B": 64}, (256, 1024), (1024, 1024)),
    ("svd", {"rank_A": 32}, (256, 1024), (1024, 1024)),
    ("blas", {}, (256, 1024), (1024, 1024)),
]


def sample_us(run, runs: int) -> list:
    from autotune import timing

    return [timing.run_once(run) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--import-first", choices=["torch", "autotune"], default="torch")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.import_first == "autotune":
        import autotune
    import numpy as np
    import torch
    import torch.nn.functional as F

    import autotune
    from kernels import pool

    print(f"imported first: {args.import_first}; threads: {pool.report()}")
    rng = np.random.default_rng(0)
    print(f"{'kernel':18} {'problem':34} {'torch':>9} {'kernel':>9} {'pair':>9} {'pair/sum':>8}")
    for method, x_shape, w_shape, stride, pad in CASES:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)

        def torch_call(xt=xt, wt=wt, stride=stride, pad=pad):
            with torch.no_grad():
                return F.conv2d(xt, wt, None, stride, pad)

        def ours(x=x, w=w, method=method, stride=stride, pad=pad):
            return autotune.conv2d(x, w, stride=stride, padding=pad, method=method)

        problem = f"{'x'.join(map(str, x_shape))} * {'x'.join(map(str, w_shape))}"
        compare(method, problem, torch_call, ours, args.rounds)
        if method == CASES[0][0]:
            first_conv = torch_call
    for method, ranks, a_shape, b_shape in MATMUL_CASES:
        a = rng.standard_normal(a_shape, dtype=np.float32)
        weight = autotune.Weight(rng.standard_normal(b_shape, dtype=np.float32))  # factored once

        def matmul(a=a, weight=weight, method=method, ranks=ranks):
            return autotune.matmul(a, weight, method=method, **ranks)

        label = method + "".join(f"({name}={value})" for name, value in ranks.items())
        problem = f"{a_shape[0]}x{a_shape[1]} @ {b_shape[0]}x{b_shape[1]}"
        compare(label, problem, first_conv, matmul, args.rounds)


def compare(label: str, problem: str, torch_call, ours, rounds: int) -> None:
    """Time PyTorch's call, ours and the pair in interleaved rounds; print the row."""
    from autotune import timing

    def pair():
        torch_call()
        ours()

    calls = {"torch": torch_call, "kernel": ours, "pair": pair}
    for call in calls.values():
        call()
        call()
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].extend(sample_us(call, 3))
    score = {name: timing.summarize(found).score_us for name, found in samples.items()}
    ratio = score["pair"] / (score["torch"] + score["kernel"])
    print(
        f"{label:18} {problem:34} {score['torch']:9.0f} {score['kernel']:9.0f} "
        f"{score['pair']:9.0f} {ratio:8.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
