"""Reading database entries for people: summaries, fixed-width and markdown tables, units.

Shared by the CLI (``tune`` summary, ``show``, ``explain``) and ``bench``. Nothing here measures
or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autotune import tables
from autotune.evaluate import Verdict
from autotune.problem import Problem
from autotune.tuner import tolerance
from kernels.registry import label

#: Tokens equal to the defaults of the problem syntax; dropping them keeps a key parseable.
_DEFAULT_TOKENS = frozenset({"stride=1", "pad=0", "dilation=1", "groups=1"})


def short_key(key: str) -> str:
    """The problem key without default-valued fields (still valid problem syntax)."""
    return " ".join(token for token in key.split() if token not in _DEFAULT_TOKENS)


def fmt_time(us: float | None) -> str:
    """``812 us``, ``2.25 ms``, ``1.20 s``: three significant digits with a readable unit."""
    if us is None or not math.isfinite(us):
        return "-"
    # 999.7 us prints as 1.00 ms, not "1.00e+03 us": pick the unit after 3-digit rounding
    units = (("s", 1e6), ("ms", 1e3))
    value, unit = next(((us / scale, name) for name, scale in units if us >= 0.9995 * scale), (us, "us"))
    # '#' keeps trailing zeros (12.0, 1.50); a value that rounds up to 100 would print as "100."
    text = f"{value:.0f}" if value >= 1000 else f"{value:#.3g}".rstrip(".")
    return f"{text} {unit}"


def fmt_ratio(ratio: float | None) -> str:
    """``1.46x``; ``-`` when unknown."""
    return "-" if ratio is None else f"{ratio:.2f}x"


def fmt_err(err: float | None) -> str:
    return "-" if err is None else f"{err:.1e}"


def fmt_flops(flops: float) -> str:
    """``231 MFLOP``, ``3.7 GFLOP``."""
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOP"


def verdicts(entry: dict[str, Any]) -> list[Verdict]:
    """Every candidate of an entry: accepted ones fastest first, then the rejected ones."""
    found = [Verdict.from_dict(record) for record in (entry.get("candidates") or {}).values()]
    return sorted(found, key=lambda v: (not v.ok, v.time_us, v.label))


@dataclass(frozen=True)
class Summary:
    """One entry in a line: the choice, its time and error, and how much it beat the others.

    ``runner_up`` is the fastest accepted candidate of a *different* kernel (another tile size of
    the chosen kernel says little about why the kernel won); the ratios are the other's score
    (the timing the choice rests on, :mod:`autotune.timing`) over the choice's, so above 1 means
    the choice is faster.
    """

    key: str
    op: str
    choice: str
    median_us: float | None
    score_us: float | None
    rel_err: float | None
    tol: float | None
    vs_torch: float | None
    runner_up: str | None
    vs_runner_up: float | None
    tuned_at: str
    why: str

    def to_record(self) -> dict[str, Any]:
        """Plain data for ``show --format yaml|json``: the fields in order, the ratios as speedups."""
        names = {"key": "problem", "vs_torch": "speedup_vs_torch", "vs_runner_up": "speedup_vs_runner_up"}
        record = {names.get(name, name): value for name, value in asdict(self).items()}
        for name in ("speedup_vs_torch", "speedup_vs_runner_up"):
            record[name] = None if record[name] is None else round(record[name], 3)
        return record


def _ratio(other: Verdict | None, chosen: Verdict | None) -> float | None:
    if other is None or chosen is None or not math.isfinite(other.time_us) or not chosen.time_us:
        return None
    return other.time_us / chosen.time_us


def summarize(key: str, entry: dict[str, Any]) -> Summary:
    """The :class:`Summary` of one database entry."""
    choice = label(entry["choice"], dict(entry.get("params") or {}))
    candidates = verdicts(entry)
    chosen = next((v for v in candidates if v.label == choice), None)
    torch = next((v for v in candidates if v.kernel == "torch" and v.ok), None)
    runner_up = next((v for v in candidates if v.ok and v.kernel != entry["choice"]), None)
    return Summary(
        key=key,
        op=str((entry.get("problem") or {}).get("op", key.split()[0])),
        choice=choice,
        median_us=None if chosen is None else chosen.median_us,
        score_us=None if chosen is None else chosen.score_us,
        rel_err=None if chosen is None else chosen.rel_err,
        vs_torch=_ratio(torch, chosen),
        runner_up=None if runner_up is None else runner_up.label,
        vs_runner_up=_ratio(runner_up, chosen),
        tol=entry.get("tol"),
        tuned_at=str(entry.get("tuned_at", "")),
        why=str(entry.get("why", "")),
    )


def summary_cells(summary: Summary) -> list[str]:
    """The cells of :data:`SUMMARY_HEADERS` for one summary."""
    runner = "-" if summary.runner_up is None else f"{fmt_ratio(summary.vs_runner_up)} {summary.runner_up}"
    return [
        short_key(summary.key),
        summary.choice,
        fmt_time(summary.median_us if summary.score_us is None else summary.score_us),
        fmt_ratio(summary.vs_torch),
        runner,
        fmt_err(summary.rel_err),
    ]


SUMMARY_HEADERS = ["problem", "choice", "time", "vs torch", "vs runner-up", "rel_err"]


def _relative_speed(time_us: float | None, chosen_us: float | None) -> str:
    """``1.76x slower`` than the choice, or ``1.03x faster`` (a near-tie the choice won on accuracy)."""
    if not time_us or not chosen_us or not math.isfinite(time_us):
        return "time unknown"
    ratio = time_us / chosen_us
    return f"{ratio:.2f}x slower" if ratio >= 1 else f"{1 / ratio:.2f}x faster"


def explain_text(problem: Problem, entry: dict[str, Any], machine: dict[str, Any]) -> str:
    """Every candidate of ``entry``: accepted fastest-first, then rejected with reasons, then why."""
    candidates = verdicts(entry)
    chosen = summarize(problem.key, entry)
    chosen_us = chosen.median_us if chosen.score_us is None else chosen.score_us
    rows = []
    for verdict in candidates:
        if verdict.ok and verdict.label == chosen.choice:
            outcome = "chosen"
        elif verdict.ok:
            outcome = f"ok, {_relative_speed(verdict.time_us, chosen_us)}"
        else:
            outcome = f"rejected: {verdict.reason}"
        times = [fmt_time(us) for us in (verdict.score_us, verdict.median_us, verdict.min_us)]
        runs = f"{verdict.runs} ({verdict.preempted})" if verdict.runs else "-"
        faults = "-" if verdict.faults_per_run is None else f"{verdict.faults_per_run:.0f}"
        rows.append([verdict.label, *times, runs, faults, fmt_err(verdict.rel_err), outcome])
    tuned_at = str(entry.get("tuned_at", "?")).replace("T", " ")[:19]
    tol = entry.get("tol", tolerance(problem))
    header = [
        problem.key,
        f"  {fmt_flops(problem.flops)}; tolerance rel_err <= {tol:.0e}; "
        f"tuned {tuned_at} UTC in {entry.get('tuning_s', 0):.1f} s on {machine.get('cpu', '?')}",
        "",
    ]
    headers = ["candidate", "score", "median", "min", "runs (preempted)", "faults/run", "rel_err", "verdict"]
    table = tables.text(headers, rows, right=[1, 2, 3, 4, 5, 6])
    load = entry.get("load")
    seen = ""
    if isinstance(load, list) and len(load) == 2:
        seen = f"load average while tuning: {load[0]} -> {load[1]}; "
    note = (
        f"{seen}score = 20th percentile of the runs not preempted (the choice rests on it); "
        "faults/run = minor page faults, memory the allocator fetched from the OS"
    )
    return "\n".join([*header, table, "", note, f"why: {entry.get('why') or chosen.choice}"])


def layer_text(layers: Sequence[str], limit: int = 1) -> str:
    """``conv1``; ``layer1.0.conv1 +3`` when more than ``limit`` names share a shape."""
    if not layers:
        return ""
    shown = ", ".join(layers[:limit])
    return shown if len(layers) <= limit else f"{shown} +{len(layers) - limit}"
