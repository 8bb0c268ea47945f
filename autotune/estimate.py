"""Estimate before measuring: a candidate's time from this machine's earlier measurements.

FFTW's planner can *estimate* a plan's cost instead of measuring it. Here the model is the
simplest one that the database supports: every timed candidate of every conv2d entry of this
machine gives that kernel setting an effective rate (direct-equivalent FLOPs per µs) on that
kind of problem — same filter size, stride, weight kind, dtype, few (< 16) or many channels (3
leave Winograd 20-50x below its rate on 256), batch 1 or more. A problem's estimate for a kernel
setting is its FLOPs over the *best* rate of that kind: a candidate is skipped only when even its
best showing is hopeless (a kernel skipped is never measured again: not held to its worst).

Measurements in which every run was preempted (a burst of load, not the kernel) are left out,
unless the runs were long (:data:`autotune.timing.LONG_RUN_US`: rarely clean, little changed).
The tuner uses it to skip candidates that cannot win (:data:`autotune.tuner.PRUNE_FACTOR`
slower than the best time measured so far), with the estimate as the recorded reason; without
measurements of a kind, nothing is estimated and the candidate is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.evaluate import recorded_us
from autotune.problem import ConvProblem, Problem, parse_problem
from autotune.timing import LONG_RUN_US

Kind = tuple[str, str]  # (kernel label, problem kind)


def problem_kind(problem: ConvProblem) -> str:
    """What makes rates comparable: filter size, stride, weight kind, dtype, channels, batch."""
    _, c_per_group, kh, kw = problem.w_shape
    weight = "fixed" if problem.weight == "fixed" else "one-off"
    sizes = ("few" if c_per_group < 16 else "many") + (" batch 1" if problem.x_shape[0] == 1 else " batched")
    return f"{kh}x{kw} stride {problem.stride[0]}x{problem.stride[1]} {weight} {problem.dtype} {sizes}"


def rates(entries: Mapping[str, Mapping[str, Any]]) -> dict[Kind, float]:
    """Best effective rate (FLOPs/µs) per (kernel label, problem kind) over the entries."""
    found: dict[Kind, list[float]] = {}
    for key, entry in entries.items():
        if not key.startswith("conv2d") or not entry.get("candidates"):
            continue
        try:
            problem = parse_problem(key)
        except ValueError:
            continue
        kind = problem_kind(problem)  # type: ignore[arg-type]
        for label, record in entry["candidates"].items():
            clean = (record.get("runs") or 0) > (record.get("preempted") or 0)
            if (time_us := recorded_us(record)) and (clean or (record.get("min_us") or 0) >= LONG_RUN_US):
                found.setdefault((label, kind), []).append(problem.flops / float(time_us))
    return {kind: max(values) for kind, values in found.items()}


def estimate_us(problem: Problem, label: str, known: Mapping[Kind, float]) -> float | None:
    """``problem``'s estimated time with kernel setting ``label`` (None without measurements)."""
    if not isinstance(problem, ConvProblem):
        return None
    rate = known.get((label, problem_kind(problem)))
    return None if not rate else problem.flops / rate
