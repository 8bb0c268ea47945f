"""Estimate, then measure: how much faster is tuning that skips hopeless candidates, and what does
it cost?

    python benchmarks/pruned_tuning.py [--preset resnet18] [--batch 1,8] [--rounds 15] [--repeats 2]
                                       [--control]

1. tunes the preset into a fresh database with every candidate timed (the default);
2. tunes it into another fresh database with ``--prune``: candidates that this machine's earlier
   measurements (times relative to PyTorch's on the problems tuned before, in the same run) put
   more than 2x behind what they must beat are not tried (``autotune/estimate.py``), and the rest
   are screened (timed briefly; the close race of autotune/tuner.py times the leaders in full);
   with ``--control``, the second tune is exhaustive too: the regret two identical tunes show;
3. repeats 1-2 ``--repeats`` times, alternating (the time of a whole tune varies by 2x between
   stretches on a shared machine), into fresh databases each time;
4. re-times both choices of every problem side by side (the first pair of databases) and prints
   pruned-choice time / exhaustive-choice time (the regret) with all tuning times.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent


def loaded_tuning():
    """The re-timing helpers of ``benchmarks/loaded_tuning.py`` (same comparison, other cause)."""
    spec = importlib.util.spec_from_file_location("loaded_tuning", HERE / "loaded_tuning.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    helpers = loaded_tuning()
    args = helpers.arguments(__doc__, "1,8", repeats=True)
    times: dict[str, list[float]] = {"exhaustive": [], "pruned": []}
    for repeat in range(args.repeats):
        exhaustive_dir, pruned_dir = helpers.two_databases("autotune-pruned-", "exhaustive", "pruned")
        times["exhaustive"].append(helpers.tune(args.preset, args.batch, exhaustive_dir))
        flags = () if args.control else ("--prune",)  # A/A control: the regret of tuning twice
        times["pruned"].append(helpers.tune(args.preset, args.batch, pruned_dir, *flags))
        if repeat == 0:
            dirs = exhaustive_dir, pruned_dir
    rows = helpers.retime(helpers.choices(dirs[0]), helpers.choices(dirs[1]), args.rounds)
    exhaustive_s, pruned_s = sum(times["exhaustive"]), sum(times["pruned"])
    print(
        f"tuning {args.preset} --batch {args.batch}, {args.repeats} alternating repeats: exhaustive "
        f"{' '.join(f'{t:.1f}' for t in times['exhaustive'])} s, pruned "
        f"{' '.join(f'{t:.1f}' for t in times['pruned'])} s (total {pruned_s / exhaustive_s:.2f}x)"
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
