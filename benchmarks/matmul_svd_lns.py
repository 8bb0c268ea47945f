"""Benchmark: the svd and log_approx matmul kernels (issue #4's closing numbers).

Three tables, every timing taken side by side in one run (candidates interleaved round-robin, so
load from other processes hits all of them alike; the statistic is the median):

1. ``svd`` speed-up over the dense GEMM: a 1024×1024 activation times a 1024×1024 weight whose
   rank-r factors are precomputed (r = 16, 64, 256), next to the FLOP ratio ``mn / r(m + n)``.
   The dense GEMM is :func:`kernels.pool.matmul` (PyTorch's, on the one thread pool), the GEMM
   svd's own products use: numpy's threaded OpenBLAS alternating with them would measure the two
   thread pools fighting (BENCHMARKS.md §19);
2. ``log_approx`` relative error for f = 0…6 on a 128×128×128 standard-normal problem (also with
   the Mitchell hybrid on 2 low bits and with the output converted back to the log format);
3. full LAPACK SVD vs randomized HMT SVD time per rank fraction — the measurement behind
   ``kernels.matmul.lowrank.RANDOMIZED_MAX_FRACTION``.

    python benchmarks/matmul_svd_lns.py [--repeats 15] [--dtype float32] [--threads N] [--json out.json]

``--threads`` caps the BLAS (and OpenMP) threads; on a loaded 2-core machine one thread gives
steadier ratios, since a multi-threaded GEMM stalls whenever one of its threads is descheduled.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from kernels import pool
from kernels.matmul import lns
from kernels.matmul.lowrank import LowRank, randomized_svd
from kernels.matmul.svd import svd


def interleaved_ms(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, float]]:
    """(median, min) wall time in ms of each callable, timed round-robin after a warm-up call each.

    The minimum is reported beside the median because this machine is shared: the median says
    what a call costs under the current load, the minimum what the kernel costs undisturbed.
    """
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - started) * 1e3)
    return {name: (float(np.median(values)), float(np.min(values))) for name, values in samples.items()}


def svd_speedup(dtype: np.dtype, repeats: int, size: int = 1024) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((size, size)).astype(dtype)
    w = rng.standard_normal((size, size)).astype(dtype)
    ranks = (16, 64, 256)
    factors = {r: LowRank.from_matrix(w, r) for r in ranks}
    runs: dict[str, Callable[[], Any]] = {"gemm": lambda: pool.matmul(x, w)}
    for r in ranks:
        runs[f"svd r={r}"] = lambda r=r: svd(x, factors[r])
    times = interleaved_ms(runs, repeats)
    (gemm_median, gemm_min), (m, n) = times["gemm"], w.shape
    rows = []
    for r in ranks:
        svd_median, svd_min = times[f"svd r={r}"]
        rows.append(
            {
                "rank": r,
                "flop_ratio": m * n / (r * (m + n)),
                "speedup_median": gemm_median / svd_median,
                "speedup_min": gemm_min / svd_min,
                "gemm_median_ms": gemm_median,
                "svd_median_ms": svd_median,
                "gemm_min_ms": gemm_min,
                "svd_min_ms": svd_min,
            }
        )
    return rows


def lns_errors(dtype: np.dtype, size: int = 128) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)

    def errors(c: np.ndarray) -> tuple[float, float]:
        diff = c.astype(np.float64) - ref
        rel_max = float(np.abs(diff).max() / np.abs(ref).max())
        return rel_max, float(np.linalg.norm(diff) / np.linalg.norm(ref))

    rows = []
    for f in range(7):
        rel_max, rel_l2 = errors(lns.log_approx(a, b, f=f))
        row: dict[str, Any] = {"f": f, "rel_max": rel_max, "rel_l2": rel_l2}
        if f >= 2:
            row["hybrid2_rel_max"] = errors(lns.log_approx(a, b, f=f, hybrid_bits=2))[0]
        row["out_log_rel_max"] = errors(lns.log_approx(a, b, f=f, out_log=1))[0]
        rows.append(row)
    return rows


def svd_methods(dtype: np.dtype, repeats: int) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for size in (256, 512, 1024):
        a = rng.standard_normal((size, size)).astype(dtype)
        fractions = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2)
        runs: dict[str, Callable[[], Any]] = {"full": lambda a=a: np.linalg.svd(a, full_matrices=False)}
        for fraction in fractions:
            rank = int(size * fraction)
            runs[f"{fraction:.4f}"] = lambda a=a, rank=rank: randomized_svd(a, rank)
        times = interleaved_ms(runs, max(3, repeats // 2))
        full_median, full_min = times["full"]
        for fraction in fractions:
            randomized_median, randomized_min = times[f"{fraction:.4f}"]
            rows.append(
                {
                    "size": size,
                    "rank_fraction": fraction,
                    "randomized_over_full_median": randomized_median / full_median,
                    "randomized_over_full_min": randomized_min / full_min,
                    "full_median_ms": full_median,
                    "randomized_median_ms": randomized_median,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
        return "" if value is None else str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per candidate")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, help="cap BLAS/OpenMP threads (default: as configured)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    with threadpool_limits(limits=args.threads):
        results = {
            "dtype": args.dtype,
            "threads": args.threads,
            "svd_speedup": svd_speedup(dtype, args.repeats),
            "log_approx_error": lns_errors(dtype),
            "svd_full_vs_randomized": svd_methods(dtype, args.repeats),
        }
    threads = "configured" if args.threads is None else str(args.threads)
    print(
        f"svd vs dense GEMM ({args.dtype}, {threads} threads): 1024x1024 activation @ 1024x1024 weight, "
        "factors precomputed"
    )
    print(table(results["svd_speedup"]))
    print(f"\nlog_approx vs float64: 128x128x128 standard normal ({args.dtype} operands)")
    print(table(results["log_approx_error"]))
    print(f"\nfull (LAPACK gesdd) vs randomized (HMT, p=10, q=2) SVD of an n x n {args.dtype} matrix")
    print(table(results["svd_full_vs_randomized"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
