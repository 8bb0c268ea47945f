"""Cost of a cache hit: autotune.conv2d / autotune.matmul vs calling the chosen kernel directly.

    python benchmarks/hot_path.py

Tunes each problem once into a temporary database, then times (best of 7 repeats of N calls)
the public call and a direct call of the bound kernel with already-normalised arguments, for
numpy and for torch inputs. The difference is what the dispatcher adds on a hit: argument
normalisation, key construction, one dict lookup, and the torch<->numpy views.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit

import numpy as np
import torch

os.environ.setdefault("AUTOTUNE_CACHE_DIR", tempfile.mkdtemp(prefix="autotune-hot-"))

import autotune
from autotune import state

CALLS = 2000


def best_us(fn) -> float:
    return min(timeit.repeat(fn, number=CALLS, repeat=7)) / CALLS * 1e6


def last_bound():
    """The kernel the dispatcher bound for the call just made (its in-memory map keeps order)."""
    return next(reversed(state.STATE.bound.values()))


def conv_case(shape_x, shape_w, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape_x).astype(np.float32)
    w = rng.standard_normal(shape_w).astype(np.float32)
    autotune.conv2d(x, w, padding=padding)  # tune (or load) once
    kernel = last_bound()
    args = (x, w, None, (1, 1), (padding,) * 4, (1, 1), 1)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    direct = best_us(lambda: kernel(*args))
    via_numpy = best_us(lambda: autotune.conv2d(x, w, padding=padding))
    via_torch = best_us(lambda: autotune.conv2d(xt, wt, padding=padding))
    label = f"conv2d x={'x'.join(map(str, shape_x))} w={'x'.join(map(str, shape_w))} pad={padding}"
    return label, getattr(kernel, "__name__", str(kernel)), direct, via_numpy, via_torch


def matmul_case(m, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    autotune.matmul(a, b)
    kernel = last_bound()
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    direct = best_us(lambda: kernel(a, b))
    via_numpy = best_us(lambda: autotune.matmul(a, b))
    via_torch = best_us(lambda: autotune.matmul(at, bt))
    name = getattr(kernel, "__name__", str(kernel))
    return f"matmul a={m}x{k} b={k}x{n}", name, direct, via_numpy, via_torch


def main() -> None:
    rows = [
        conv_case((1, 1, 8, 8), (1, 1, 3, 3), 1),
        conv_case((1, 16, 16, 16), (16, 16, 3, 3), 1),
        matmul_case(8, 64, 32),
        matmul_case(1, 784, 512),
    ]
    print(f"database: {os.environ['AUTOTUNE_CACHE_DIR']}; {CALLS} calls x best of 7")
    print(f"{'problem':44} {'kernel':18} {'direct us':>10} {'numpy +us':>10} {'torch +us':>10}")
    for label, kernel, direct, via_numpy, via_torch in rows:
        print(f"{label:44} {kernel:18} {direct:10.2f} {via_numpy - direct:10.2f} {via_torch - direct:10.2f}")


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
