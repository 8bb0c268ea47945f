"""Are choices made on a loaded machine as good as those made on a quiet one?

    python benchmarks/loaded_tuning.py [--preset resnet18] [--batch 1] [--rounds 15]

1. tunes the preset into a fresh database on the machine as it is (run it quiet);
2. tunes it again into a second fresh database while another process keeps one core busy
   (a pure-Python spin loop, as a user's other job would);
3. back on the quiet machine, re-times both choices of every problem interleaved in one process
   (20th percentile of clean runs) and prints loaded-choice time / quiet-choice time.

The goal is every ratio <= 1.2: load may change which of two near-equal kernels wins, never pick
one clearly slower.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def tune(preset: str, batch: str, cache_dir: Path, *flags: str, loaded: bool = False) -> float:
    """Run ``autotune tune`` (with ``flags``) into ``cache_dir``, with one core kept busy if
    ``loaded``; returns the seconds it took."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if loaded else None
    try:
        time.sleep(0.5 if loaded else 0)
        env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "autotune", "tune", "--preset", preset, "--batch", batch, *flags],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - started
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def choices(cache_dir: Path) -> dict[str, str]:
    """Problem key → chosen kernel label, from this machine's section of the database."""
    import yaml

    from autotune import cache, machine
    from kernels import registry

    doc = yaml.safe_load((cache_dir / cache.FILENAME).read_text())
    section = doc["machines"][machine.fingerprint_id(machine.fingerprint())]
    return {key: registry.label(e["choice"], e.get("params") or {}) for key, e in section["entries"].items()}


def retime(quiet: dict[str, str], loaded: dict[str, str], rounds: int) -> list[tuple[str, str, str, float]]:
    """Per problem: (key, quiet choice, loaded choice, loaded time / quiet time)."""
    import autotune
    from autotune import evaluate, timing
    from autotune.problem import parse_problem

    rows = []
    for key, quiet_label in quiet.items():
        loaded_label = loaded[key]
        if loaded_label == quiet_label:
            rows.append((key, quiet_label, loaded_label, 1.0))
            continue
        problem = parse_problem(key)
        x, w, b = evaluate.random_inputs(problem)
        pad = problem.padding

        def call(label: str, x=x, w=w, b=b, problem=problem, pad=pad):
            return lambda: autotune.conv2d(
                x, w, b, stride=problem.stride, padding=(pad[0], pad[2]), method=label
            )

        calls = {label: call(label) for label in (quiet_label, loaded_label)}
        samples: dict[str, list] = {label: [] for label in calls}
        for fn in calls.values():
            fn()
        for _ in range(rounds):
            for label, fn in calls.items():
                samples[label].extend(timing.run_once(fn) for _ in range(3))
        score = {label: timing.summarize(found).score_us for label, found in samples.items()}
        rows.append((key, quiet_label, loaded_label, score[loaded_label] / score[quiet_label]))
    return rows


def arguments(doc: str, batch: str, repeats: bool = False) -> argparse.Namespace:
    """--preset, --batch, --rounds (shared with benchmarks/pruned_tuning.py, which adds --repeats)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="resnet18")
    parser.add_argument("--batch", default=batch)
    parser.add_argument("--rounds", type=int, default=15)
    if repeats:
        parser.add_argument("--repeats", type=int, default=2)
        parser.add_argument(
            "--control", action="store_true", help="A/A: the second tune is exhaustive too (the noise floor)"
        )
    return parser.parse_args()


def two_databases(prefix: str, first: str, second: str) -> tuple[Path, Path]:
    """Two fresh database folders under one temporary root."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    for name in (first, second):
        (root / name).mkdir()
    return root / first, root / second


def main() -> None:
    args = arguments(__doc__, "1")
    quiet_dir, loaded_dir = two_databases("autotune-loaded-", "quiet", "loaded")
    quiet_s = tune(args.preset, args.batch, quiet_dir, loaded=False)
    loaded_s = tune(args.preset, args.batch, loaded_dir, loaded=True)
    rows = retime(choices(quiet_dir), choices(loaded_dir), args.rounds)
    print(f"tuning: quiet {quiet_s:.0f} s, one core busy {loaded_s:.0f} s")
    print(f"{'problem':64} {'quiet choice':18} {'loaded choice':18} {'loaded/quiet':>12}")
    for key, quiet_label, loaded_label, ratio in rows:
        print(f"{key:64} {quiet_label:18} {loaded_label:18} {ratio:12.2f}")
    print(
        f"worst loaded/quiet: {max(r[3] for r in rows):.2f}; differing choices: "
        f"{sum(r[1] != r[2] for r in rows)} of {len(rows)}"
    )


if __name__ == "__main__":
    main()
