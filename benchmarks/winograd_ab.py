"""The Winograd transforms against their own version at an earlier commit, alternating in one process.

    python benchmarks/winograd_ab.py --rev 3ddc639 [--rounds 7] [--tiles 2,4,6] [--filter]

Loads the generated ``kernels/conv2d/_winograd_codelets.py``, the gather and scatter helpers
of ``kernels/conv2d/_common.py`` and the intrinsics of ``kernels/simd.py`` as they were at
``--rev`` beside today's, checks that both give
the same V and the same output (to float32 rounding: fused multiply-adds may round the same sums
differently), then times the input and the output transform of F(m×m) on ResNet-18/VGG-16 layers
(all rows of tiles at once) in alternating rounds, the tuner's score per round
(:mod:`autotune.timing`), and prints the medians and now/then (BENCHMARKS.md §21, §23).
``--filter`` compares the filter transform instead (``winograd.transform_filter`` at ``--rev``;
a one-off weight pays it on every call), on the layers' weight shapes (§26). ``--fused`` compares
whole fused calls (transforms and GEMMs, jobs split as today's ``fused_jobs`` splits them; the
fused driver's arguments must be the same at ``--rev``, as from 7616242 on; §28); ``--chain``
compares chains of four fused calls, each reading the last one's output, as a network's next
layer would (§29).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from _at_commit import alternate, module_at

from kernels import pool, workspace
from kernels.conv2d import _winograd_codelets as new
from kernels.conv2d import winograd as W

#: (output channels, input channels) of the ResNet-18/VGG-16 3×3 weights.
WEIGHTS = [(64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (512, 256), (512, 512)]

#: (batch, channels, image size): the 64-channel layers with many tiles first.
LAYERS = [(8, 64, 56), (1, 64, 224), (1, 64, 56), (1, 128, 112), (8, 128, 28), (1, 256, 56), (1, 512, 14)]
PADDING = (1, 1, 1, 1)


def transforms(codelets, x: np.ndarray, m: int) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]]:
    """The input and the output transform of F(m×m) on ``x`` with ``codelets``; each returns what
    it wrote (V, and y from a fixed random M)."""
    batch, channels, size, _ = x.shape
    tiles = (-(-size // m), -(-size // m))
    rows, alpha2 = batch * tiles[0], (m + 2) ** 2
    v = np.empty((alpha2, rows * tiles[1], channels), x.dtype)
    mm = np.random.default_rng(1).standard_normal(v.shape).astype(x.dtype)
    y, bias = np.empty_like(x), np.zeros(channels, x.dtype)
    block = W._block(m, channels, x.dtype.itemsize)
    k_in, k_out = W._constants(m, 0, x.dtype), W._constants(m, 1, x.dtype)

    def forward() -> np.ndarray:
        codelets.INPUT[m](x, PADDING[0], PADDING[2], v, k_in, *tiles, block, 0, rows)
        return v

    def backward() -> np.ndarray:
        codelets.OUTPUT[m](mm, k_out, bias, *tiles, block, y, 0, rows)
        return y

    return forward, backward


def fused_call(codelets, x: np.ndarray, u: np.ndarray, m: int) -> Callable[[], np.ndarray]:
    """The fused F(m×m) call of ``codelets`` on ``x`` with the transformed filter ``u``; returns y."""
    batch, channels, size, _ = x.shape
    tiles = (-(-size // m), -(-size // m))
    split = W.fused_jobs(m, channels, u.shape[2], x.dtype.itemsize, batch * tiles[0], tiles[1])
    y = workspace.line_aligned_empty((batch, u.shape[2], size, size), x.dtype)  # as the kernel's own
    bias = np.zeros(u.shape[2], x.dtype)
    consts = W._constants(m, 0, x.dtype), W._constants(m, 1, x.dtype)

    def call() -> np.ndarray:
        pool.on_calling_thread(
            lambda: codelets.FUSED[m](x, *PADDING[::2], u, bias, *consts, *tiles, *split, y)
        )
        return y

    return call


def _chain(codelets, x: np.ndarray, u: np.ndarray, m: int, depth: int) -> Callable[[], np.ndarray]:
    """``depth`` fused calls in a row, each on the last one's output (each its own, line-aligned)."""
    calls = [fused_call(codelets, x, u, m)]
    for _ in range(depth - 1):
        calls.append(fused_call(codelets, calls[-1](), u, m))
    return lambda: [call() for call in calls][-1]


def compare_fused(old, tiles: list[int], rounds: int, rev: str, depth: int = 1) -> None:
    """Whole fused calls, ``rev``'s codelets against today's, on the layers with a fused candidate;
    with ``depth`` > 1 chains of that many calls, each reading the last one's output (as a
    network's next layer reads it: from cache, or from memory where the output was streamed)."""
    rng = np.random.default_rng(0)
    for m in tiles:
        for batch, channels, size in LAYERS:
            w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(
                np.float32
            )  # chains stay O(1)
            u = W.transform_filter(w, m)
            if u.nbytes > W.FUSED_U_BYTES:
                continue
            x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
            then, now = (_chain(codelets, x, u, m, depth) for codelets in (old, new))
            expected = then().copy()
            # the same sums, grouped differently: F(6×6) rounds to about 1e-4 of the largest output
            np.testing.assert_allclose(now(), expected, rtol=0, atol=2e-4 * np.abs(expected).max())
            before, after = alternate(then, now, rounds)
            what = "fused" if depth == 1 else f"fused, {depth} chained"
            print(
                f"F({m}x{m}) {batch}x{channels}x{size}x{size} {what}: {rev} {before:8.0f} us, "
                f"now {after:8.0f} us, now/then {after / before:.2f}",
                flush=True,
            )


def compare_filter_transforms(rev: str, tiles: list[int], rounds: int) -> None:
    """Today's ``transform_filter`` against ``rev``'s on every weight shape; both must agree bit for bit."""
    old = module_at(rev, "kernels/conv2d/winograd.py")
    rng = np.random.default_rng(0)
    for m in tiles:
        for k_out, c_in in WEIGHTS:
            w = rng.standard_normal((k_out, c_in, 3, 3), dtype=np.float32)
            u_then, u_now = (np.empty(((m + 2) ** 2, c_in, k_out), np.float32) for _ in range(2))

            def then(w=w, m=m, u=u_then) -> np.ndarray:
                return old.transform_filter(w, m, out=u)

            def now(w=w, m=m, u=u_now) -> np.ndarray:
                return W.transform_filter(w, m, out=u)

            np.testing.assert_array_equal(now(), then())
            before, after = alternate(then, now, rounds)
            print(
                f"F({m}x{m}) filter {k_out}x{c_in}x3x3: {rev} {before:8.0f} us, now {after:8.0f} us, "
                f"now/then {after / before:.2f}",
                flush=True,
            )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rev", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tiles", default="4", help="tile sizes m, comma-separated (default: 4)")
    parser.add_argument("--filter", action="store_true", help="compare the filter transform instead")
    parser.add_argument("--fused", action="store_true", help="compare whole fused calls instead")
    parser.add_argument("--chain", action="store_true", help="compare chains of four fused calls instead")
    args = parser.parse_args()
    if args.filter:
        compare_filter_transforms(args.rev, [int(t) for t in args.tiles.split(",")], args.rounds)
        return
    simd = {"kernels.simd": module_at(args.rev, "kernels/simd.py")}  # the intrinsics, as they were
    helpers = module_at(args.rev, "kernels/conv2d/_common.py", simd)  # the gather and scatter it calls
    old = module_at(
        args.rev, "kernels/conv2d/_winograd_codelets.py", {"kernels.conv2d._common": helpers, **simd}
    )
    if args.fused or args.chain:
        depth = 4 if args.chain else 1
        compare_fused(old, [int(t) for t in args.tiles.split(",")], args.rounds, args.rev, depth)
        return
    rng = np.random.default_rng(0)
    for m in (int(t) for t in args.tiles.split(",")):
        for batch, channels, size in LAYERS:
            x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
            pairs = zip(transforms(old, x, m), transforms(new, x, m), strict=True)
            for stage, (then, now) in zip(("input", "output"), pairs, strict=True):
                expected = then().copy()  # the same sums; fused multiply-adds may round them differently
                np.testing.assert_allclose(now(), expected, rtol=0, atol=1e-6 * np.abs(expected).max())
                before, after = alternate(then, now, args.rounds)
                print(
                    f"F({m}x{m}) {batch}x{channels}x{size}x{size} {stage:6}: {args.rev} {before:8.0f} us, "
                    f"now {after:8.0f} us, now/then {after / before:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
