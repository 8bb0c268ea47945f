"""Why autotune defaults OMP_WAIT_POLICY=PASSIVE: mixing Numba, OpenBLAS and PyTorch in one process.

    python benchmarks/omp_policy.py            # runs each policy in a fresh subprocess

Numba's parallel loops run on the system libgomp, PyTorch on its own bundled libgomp, GEMMs on
OpenBLAS's pthreads. Under a spinning wait policy the idle threads of one runtime keep the cores
busy while another runtime needs them. Each policy is measured in its own process (the policy is
read once, when libgomp loads): medians of repeated calls, microseconds.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

POLICIES = {
    "PASSIVE (autotune default)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default (spin 300k)": {"OMP_WAIT_POLICY": "", "UNSET_POLICY": "1"},
    "GOMP_SPINCOUNT=10000": {"OMP_WAIT_POLICY": "", "UNSET_POLICY": "1", "GOMP_SPINCOUNT": "10000"},
}

CHILD = r"""
import os, time
if os.environ.get("UNSET_POLICY"):
    os.environ.pop("OMP_WAIT_POLICY", None)
    import kernels  # noqa: F401  (its setdefault would restore PASSIVE; pop it again after)
    os.environ.pop("OMP_WAIT_POLICY", None)
import numpy as np
from kernels.conv2d import direct, im2col, vendor

def case(x_shape, w_shape, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    return (x, w, None, (1, 1), (pad,) * 4, (1, 1), 1)

def median_us(fn, n):
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)

tiny = case((1, 1, 49, 49), (1, 1, 3, 3), 0)
mid = case((1, 16, 32, 32), (16, 16, 3, 3), 1)
big = case((1, 64, 56, 56), (64, 64, 3, 3), 1)
rows = {
    "torch 49x49*3x3": median_us(lambda: vendor.torch_conv2d(*tiny), 300),
    "torch 16ch 32x32": median_us(lambda: vendor.torch_conv2d(*mid), 200),
    "torch 64ch 56x56": median_us(lambda: vendor.torch_conv2d(*big), 50),
    "im2col 64ch 56x56": median_us(lambda: im2col.im2col(*big), 50),
    "direct->torch->im2col 16ch": median_us(
        lambda: (direct.direct(*mid), vendor.torch_conv2d(*mid), im2col.im2col(*mid)), 200),
    "torch->im2col 64ch": median_us(lambda: (vendor.torch_conv2d(*big), im2col.im2col(*big)), 50),
}
print(repr(rows))
"""


def main() -> None:
    results = {}
    for name, env in POLICIES.items():
        child_env = {**os.environ, **env}
        done = subprocess.run([sys.executable, "-c", CHILD], env=child_env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr)
        results[name] = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    cases = list(next(iter(results.values())))
    print(f"{'median us':28}" + "".join(f"{name:>30}" for name in results))
    for case in cases:
        print(f"{case:28}" + "".join(f"{results[name][case]:30.1f}" for name in results))


if __name__ == "__main__":
    main()
