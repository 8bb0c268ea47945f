"""Estimate before measuring: a candidate's time from this machine's earlier measurements.

FFTW's planner can *estimate* a plan's cost instead of measuring it. Here each timed candidate
of each conv2d entry gives its kernel setting a time *relative to the vendor's* on that kind of
problem (filter size, stride, weight kind, dtype, few or many channels, batch 1 or more; else the
same kind at any batch). The estimate is the vendor's time on the new problem (timed first)
times the *smallest* such ratio: only a candidate hopeless even at its best is skipped. A ratio
carries size, cache fit and fixed costs, which a FLOP rate did not (BENCHMARKS.md §19).
Measurements whose runs were all preempted, and short, are left out. The tuner skips candidates
estimated :data:`autotune.tuner.PRUNE_FACTOR` behind what they must beat, the estimate recorded
as the reason; a kind never measured is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.evaluate import recorded_us
from autotune.problem import ConvProblem, Problem, parse_problem
from autotune.timing import LONG_RUN_US

Kind = tuple[str, str]  # (kernel label, problem kind)
#: The baseline every relative time is taken against (:data:`autotune.tuner.VENDOR`).
VENDOR = "torch"


def problem_kinds(problem: ConvProblem) -> tuple[str, str]:
    """What makes relative times comparable, with the batch (1 or more), then without it."""
    _, c_per_group, kh, kw = problem.w_shape
    weight = "fixed" if problem.weight == "fixed" else "one-off"
    kind = f"{kh}x{kw} stride {problem.stride[0]}x{problem.stride[1]} {weight} {problem.dtype}"
    kind += " few" if c_per_group < 16 else " many"
    return f"{kind} {'batch 1' if problem.x_shape[0] == 1 else 'batched'}", kind


def _usable_us(record: Mapping[str, Any] | None) -> float | None:
    """A record's time, unless every run was preempted (and short)."""
    if not record or not (time_us := recorded_us(record)):
        return None
    clean = (record.get("runs") or 0) > (record.get("preempted") or 0)
    return float(time_us) if clean or (record.get("min_us") or 0) >= LONG_RUN_US else None


def relative_times(entries: Mapping[str, Mapping[str, Any]]) -> dict[Kind, float]:
    """Smallest time relative to the vendor's per (kernel label, problem kind) over the entries."""
    found: dict[Kind, list[float]] = {}
    for key, entry in entries.items():
        if not key.startswith("conv2d") or not (candidates := entry.get("candidates")):
            continue
        try:
            problem = parse_problem(key)
        except ValueError:
            continue
        if (vendor_us := _usable_us(candidates.get(VENDOR))) is None:
            continue
        for label, record in candidates.items():
            if (time_us := _usable_us(record)) is not None:
                for kind in problem_kinds(problem):  # type: ignore[arg-type]
                    found.setdefault((label, kind), []).append(time_us / vendor_us)
    return {kind: min(values) for kind, values in found.items()}


def estimate_us(problem: Problem, label: str, known: Mapping[Kind, float], vendor_us: float) -> float | None:
    """``problem``'s estimated time with kernel setting ``label``, given the vendor's measured
    ``vendor_us`` on it (None without measurements of the kind)."""
    if not isinstance(problem, ConvProblem):
        return None
    kinds = [(label, kind) for kind in problem_kinds(problem)]
    relative = next((known[kind] for kind in kinds if kind in known), None)
    return None if relative is None else relative * vendor_us
