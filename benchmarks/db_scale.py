"""A large tuning database: first call, tune + store, and memory, in fresh processes.

    python benchmarks/db_scale.py --entries 100000
    python benchmarks/db_scale.py --entries 10000 --rebuild

Writes a database of N schema-valid matmul entries for this machine (each with four candidate
records, like a real entry) into a temporary AUTOTUNE_CACHE_DIR, the way autotune writes it (the
YAML file, then its index), then runs, each in a new
process (so nothing is cached in memory):

1. (``--rebuild`` only) ``first call, no index``: as after a hand edit of the file — the call
   parses the YAML and rebuilds the index;
2. ``first call``: ``autotune.matmul`` on a problem that is in the database — the call loads the
   database (from its index, as written with the file); the imports, kernel registration and
   machine fingerprint (the same for any database) are timed apart as start-up;
3. ``tune + store``: ``autotune.matmul`` on a problem that is not in the database — tunes it and
   stores the entry (appended to the journal: the file is above the journal threshold);
4. (``--compact`` only) ``autotune compact`` folding the journal into the YAML file (a CLI verb,
   never run by a library call; it parses and rewrites the whole file).

Prints one line per step: wall time of the measured part, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, time
t0 = time.perf_counter()
import numpy as np, autotune
from autotune import api, cache, machine, state
from kernels import registry
registry.load_all(); machine.fingerprint()  # process start-up, the same for any database size
imported = time.perf_counter() - t0
a = np.ones(({m}, 64), np.float32)
b = np.ones((64, {n}), np.float32)
tuned = []
state.STATE.listeners.append(lambda event, _: tuned.append(event == "tune-started"))
t1 = time.perf_counter()
autotune.matmul(a, b)
call = time.perf_counter() - t1
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over exec into ru_maxrss.
peak_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
result = {{"import_s": imported, "call_s": call, "tuned": sum(tuned), "rss_mb": peak_kb / 1024}}
print(json.dumps(result))
"""


def write_database(path: Path, count: int) -> float:
    """A database of ``count`` entries for this machine; returns the seconds it took to dump."""
    from autotune import cache
    from autotune.problem import MatmulProblem
    from kernels import registry

    db = cache.Database(path)
    digest = registry.kernel_set_digest("matmul")
    entries = {}
    for i in range(count):
        problem = MatmulProblem((i % 1000 + 1, 64), (64, i // 1000 + 1))
        entries[problem.key] = {
            "problem": problem.to_dict(),
            "choice": "blas",
            "params": {},
            "tol": 1e-4,
            "kernels": digest,
            "tuned_at": "2026-11-29T19:00:00.000+00:00",
            "tuning_s": 0.4,
            "why": "blas: 1.30x faster than torch, rel_err 1.2e-07 <= tol 1e-04",
            "candidates": {
                name: {
                    "kernel": name,
                    "median_us": 12.5,
                    "min_us": 11.9,
                    "runs": 9,
                    "rel_err": 1.2e-7,
                    "ok": True,
                }
                for name in ("blas", "torch", "log", "naive")
            },
        }
    doc = {
        "schema": cache.SCHEMA,
        "machines": {db.machine_id: {"fingerprint": db.machine, "entries": entries}},
    }
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with db.lock:  # as any autotune write: the YAML file, then its index
        db._write_locked(doc, {})
    return time.perf_counter() - started


def child(cache_dir: Path, m: int, n: int) -> dict:
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(m=m, n=n)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--reuse", type=Path, help="measure a database DIR written by an earlier run")
    parser.add_argument("--compact", action="store_true", help="also time `autotune compact` at the end")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="delete the index first (as after a hand edit): time its rebuild",
    )
    args = parser.parse_args()
    cache_dir = args.reuse or Path(tempfile.mkdtemp(prefix="autotune-scale-"))
    path = cache_dir / "autotune.yaml"
    if args.reuse is None:
        dump_s = write_database(path, args.entries)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.entries} entries, {size_mb:.1f} MB written in {dump_s:.1f} s ({cache_dir})")
    steps = [("first call", (1, 1)), ("tune + store (journal)", (1, 7000 + os.getpid() % 1000))]
    if args.rebuild:
        os.unlink(cache_dir / "autotune.yaml.index.json")
        steps.insert(0, ("first call, no index (rebuilt)", (2, 1)))
    for step, (m, n) in steps:
        result = child(cache_dir, m, n)
        print(
            f"{step:32s} call {result['call_s']:6.3f} s  (start-up {result['import_s']:.2f} s)  "
            f"tuned {result['tuned']}  peak RSS {result['rss_mb']:.0f} MB"
        )
    if not args.compact:
        return
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "autotune", "compact"],
        env={**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)},
        check=True,
        capture_output=True,
    )
    print(f"{'compact (CLI)':32s} {time.perf_counter() - started:6.1f} s")


if __name__ == "__main__":
    main()
