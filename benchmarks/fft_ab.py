"""The FFT kernel against its own version at an earlier commit, alternating in one process.

    python benchmarks/fft_ab.py --rev 987aa2b [--rounds 9]

Loads ``kernels/conv2d/fft.py`` as it was at ``--rev`` (``git show``; its registration is
skipped) beside today's, checks that both compute the same output, then times both on each
problem in alternating rounds (the tuner's score per round, :mod:`autotune.timing`) and prints
the medians and new/old. Alternating in one process cancels the drift of a shared machine that
separate runs of a few percent cannot (BENCHMARKS.md §19).
"""

from __future__ import annotations

import argparse

import numpy as np
from _at_commit import alternate, module_at

from kernels.conv2d import fft as new

#: (channels, image size, filter size, padding, overlap-save tile (0: whole image), fixed weight)
CASES = [
    (1, 256, 31, 0, 0, False),
    (1, 128, 63, 31, 0, False),
    (8, 64, 21, 10, 0, False),
    (16, 112, 15, 7, 32, False),
    (64, 56, 7, 3, 20, True),
    (32, 56, 7, 3, 20, True),
    (32, 56, 7, 3, 0, True),
    (16, 56, 11, 5, 0, True),
    (16, 64, 9, 4, 32, True),
    (16, 64, 9, 4, 0, True),
    (16, 112, 15, 7, 0, True),
    (8, 64, 21, 10, 0, True),
]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rev", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    old = module_at(args.rev, "kernels/conv2d/fft.py")
    rng = np.random.default_rng(0)
    for channels, size, taps, pad, tile, fixed in CASES:
        x = rng.standard_normal((1, channels, size, size), dtype=np.float32)
        w = rng.standard_normal((channels, channels, taps, taps), dtype=np.float32)
        b = rng.standard_normal(channels, dtype=np.float32)
        calls = []
        for module in (old, new):
            weight = module.prepare(w) if fixed else w
            calls.append(
                lambda m=module, wt=weight: m.fft(x, wt, b, (1, 1), (pad,) * 4, (1, 1), 1, tile)  # noqa: B023
            )
        np.testing.assert_allclose(calls[0](), calls[1](), rtol=1e-3, atol=1e-3)
        before, after = alternate(calls[0], calls[1], args.rounds)
        weight_kind = "fixed" if fixed else "one-off"
        print(
            f"1x{channels}x{size}x{size} * {channels}x{channels}x{taps}x{taps} "
            f"tile {tile:2d} {weight_kind:7}: "
            f"{args.rev} {before:7.0f} us, now {after:7.0f} us, now/then {after / before:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
