"""Estimate, then measure: how much faster is tuning that skips hopeless candidates, and what does
it cost?

    python benchmarks/pruned_tuning.py [--preset resnet18] [--batch 1,8] [--rounds 15]

1. tunes the preset into a fresh database with every candidate timed (the default);
2. tunes it into another fresh database with ``--prune``: candidates that this machine's earlier
   measurements (the problems tuned before, in the same run) put more than 3x behind the best
   measured so far are not tried (``autotune/estimate.py``);
3. re-times both choices of every problem side by side and prints pruned-choice time /
   exhaustive-choice time (the regret) with both tuning times.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def loaded_tuning():
    """The re-timing helpers of ``benchmarks/loaded_tuning.py`` (same comparison, other cause)."""
    spec = importlib.util.spec_from_file_location("loaded_tuning", HERE / "loaded_tuning.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def tune(preset: str, batch: str, cache_dir: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "autotune", "tune", "--preset", preset, "--batch", batch, *extra],
        env={**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="resnet18")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="autotune-pruned-"))
    exhaustive_dir, pruned_dir = root / "exhaustive", root / "pruned"
    exhaustive_dir.mkdir()
    pruned_dir.mkdir()
    exhaustive_s = tune(args.preset, args.batch, exhaustive_dir)
    pruned_s = tune(args.preset, args.batch, pruned_dir, "--prune")
    helpers = loaded_tuning()
    rows = helpers.retime(helpers.choices(exhaustive_dir), helpers.choices(pruned_dir), args.rounds)
    print(
        f"tuning {args.preset} --batch {args.batch}: exhaustive {exhaustive_s:.1f} s, "
        f"pruned {pruned_s:.1f} s ({pruned_s / exhaustive_s:.2f}x)"
    )
    print(f"{'problem':64} {'exhaustive choice':18} {'pruned choice':18} {'regret':>7}")
    for key, exhaustive_label, pruned_label, ratio in rows:
        print(f"{key[:64]:64} {exhaustive_label:18} {pruned_label:18} {ratio:7.2f}")
    print(
        f"worst regret {max(r[3] for r in rows):.2f}; "
        f"differing choices {sum(r[1] != r[2] for r in rows)} of {len(rows)}"
    )


if __name__ == "__main__":
    main()
