"""How good is heuristic mode's pick? Leave-one-out over the problems tuned on this machine.

    AUTOTUNE_CACHE_DIR=DIR python benchmarks/heuristic_regret.py

For every conv2d entry of this machine's database (tune the presets into DIR first, e.g.
``autotune tune --preset resnet18 --batch 1,8`` and likewise vgg16, large-kernel, seed): hide it,
predict its kernel from the rest (``heuristics.learned_conv``, falling back to the rules when no
tuned problem is near) and by the rules alone (``heuristics.choose_conv``), and look the predicted
kernel's time up among the hidden entry's own measurements. Regret = that time / the fastest
accepted candidate's time (1.0 = the best pick). Prints the median and worst regret of both.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from autotune import heuristics, state
from autotune.problem import ConvProblem, parse_problem
from kernels import registry


def measured_us(entry: dict[str, Any], name: str, params: dict[str, Any]) -> float | None:
    """The entry's time of ``name(params)`` (score, else median); any setting of ``name`` if that
    exact one was not tried; None if the kernel has no time there."""
    candidates = entry.get("candidates") or {}
    record = candidates.get(registry.label(name, params))
    if record is None:
        timed = [r for r in candidates.values() if r.get("kernel") == name and r.get("median_us")]
        record = min(timed, key=lambda r: r.get("score_us") or r["median_us"]) if timed else None
    if record is None or not record.get("median_us"):
        return None
    return float(record.get("score_us") or record["median_us"])


def best_us(entry: dict[str, Any]) -> float:
    return min(
        float(r.get("score_us") or r["median_us"]) for r in entry["candidates"].values() if r.get("ok")
    )


def main() -> None:
    db = state.database()
    entries = {k: e for k, e in db.full_entries().items() if k.startswith("conv2d") and e.get("candidates")}
    rows = {"learned": [], "rules": []}
    fallbacks = untimed = 0
    picks: list[tuple[float, str, str, str]] = []  # (regret, heuristic, predicted kernel, problem)
    for key, entry in entries.items():
        problem = parse_problem(key)
        assert isinstance(problem, ConvProblem)
        others = {k: e for k, e in entries.items() if k != key}
        prediction = heuristics.learned_conv(problem, others)
        rule = heuristics.choose_conv(problem)
        if prediction is None:
            fallbacks += 1
        learned = rule if prediction is None else (prediction.name, prediction.params)
        best = best_us(entry)
        for label, (name, params) in (("learned", learned), ("rules", rule)):
            found = measured_us(entry, name, params)
            if found is None:
                untimed += 1
                continue
            rows[label].append(found / best)
            picks.append((found / best, label, name, key))
    print(f"database: {db.path}; {len(entries)} conv2d problems tuned on this machine")
    print(f"{'heuristic':10} {'problems':>9} {'median regret':>14} {'geo-mean':>9} {'worst regret':>13}")
    for label, regrets in rows.items():
        geo = statistics.geometric_mean(regrets)
        print(
            f"{label:10} {len(regrets):9d} {statistics.median(regrets):14.3f} {geo:9.3f} {max(regrets):13.2f}"
        )
    print(f"learned fell back to the rules on {fallbacks} problems; {untimed} predictions had no time")
    print("regrets above 1.2:")
    for regret, label, name, key in sorted(picks, reverse=True):
        if regret > 1.2:
            print(f"  {regret:5.2f} {label:8} {name:10} {key}")


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
