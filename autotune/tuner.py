"""Measure every applicable candidate of one problem, check its accuracy, choose.

The tuner never knows what a kernel computes: it asks the registry which kernels apply, runs and
checks each with the evaluator (:mod:`autotune.evaluate`), times it (:mod:`autotune.timing`) and
keeps a verdict for every candidate — ``ok`` or a ``reason``. The search and the choice are
described in docs/architecture.md, "A tune".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from autotune import estimate, evaluate, machine, timing
from autotune.evaluate import Verdict, random_inputs, rel_max_error
from autotune.machine import now_iso
from autotune.problem import Problem
from autotune.state import STATE
from kernels import registry
from kernels.registry import KernelSpec, label

log = logging.getLogger("autotune.tuner")

#: A candidate whose first timed runs all exceed this multiple of the best median is cut.
CUT_FACTOR = 4.0
#: Near-ties are resolved by accuracy only within this relative distance of the fastest.
TIE_CAP = 0.05
#: The vendor kernel is kept unless another is faster by more than this: isolated wins of 10-29%
#: measured 0.81-0.93x against PyTorch in its own process, or inside a converted model (cache and
#: thread transitions, another stretch of a noisy machine; BENCHMARKS.md §1, §16).
VENDOR = estimate.VENDOR
VENDOR_MARGIN = 0.30
#: A race re-times leaders interleaved: up to RACE_SIZE whose fastest run is within RACE_MARGIN of
#: the leader's score (wide: stretches of timing on a shared machine see different load), in
#: RACE_ROUNDS alternating rounds that time each leader like RACE_TIMING; a leading vendor races
#: only those whose fastest run beat it by VENDOR_MARGIN (screened ones: give or take SCREEN_SLACK).
RACE_MARGIN, RACE_SIZE, RACE_ROUNDS, SCREEN_SLACK = 0.5, 3, 7, 0.25
#: A leading vendor with this share of its runs preempted measured a loaded machine (quiet: under
#: 10%; one core busy: 29-58%; BENCHMARKS.md §24), where stretches differ: it races like any leader.
LOADED_SHARE = 0.25
RACE_TIMING = {"min_runs": 2, "min_time_s": 0.01, "max_time_s": 0.2}
#: Pruning: a candidate estimated PRUNE_FACTOR times slower than what it must beat (the best so
#: far, the vendor by its margin) is not tried once the best takes PRUNE_MIN_US (below, fixed costs
#: set the time); the others are screened: timed like one race round, the race alone timing the
#: leaders in full (a kernel whose own threads preempt the caller never has clean runs: the cap of
#: RACE_TIMING ends its screening).
PRUNE_FACTOR, PRUNE_MIN_US = 2.0, 300.0
#: Per-problem tuning budget (seconds). Past it, remaining candidates are timed once.
DEFAULT_BUDGET_S = 5.0


def tolerance(problem: Problem) -> float:
    """The tolerance a problem is tuned to: its own ``tol`` or the process's dtype default."""
    return problem.tol if problem.tol is not None else STATE.tolerances[problem.dtype]


@dataclass
class TuneResult:
    """Everything learned about one problem: the choice and every candidate's verdict."""

    problem: Problem
    choice: str
    params: dict[str, Any]
    tol: float
    candidates: list[Verdict]
    tuned_at: str
    tuning_s: float
    why: str = ""
    load: tuple[float, float] = (float("nan"), float("nan"))  # 1-min load average before, after

    def to_entry(self) -> dict[str, Any]:
        """The YAML entry (see :mod:`autotune.cache`)."""
        return {
            "problem": self.problem.to_dict(),
            "choice": self.choice,
            "params": dict(self.params),
            # Full precision: the dispatcher compares it with the current tolerance.
            "tol": float(self.tol),
            "kernels": registry.kernel_set_digest(self.problem.op),
            "tuned_at": self.tuned_at,
            "tuning_s": round(self.tuning_s, 3),
            "load": [round(value, 2) for value in self.load],
            "why": self.why,
            "candidates": {v.label: v.to_dict() for v in self.candidates},
        }


# --- Candidates. -----------------------------------------------------------------------------


def _exclusion(spec: KernelSpec, problem: Problem) -> str | None:
    """Why ``spec`` is not a candidate for ``problem`` (None if it is)."""
    if not spec.exact and problem.tol is None:
        reason = "approximate: eligible only with an explicit tol= (or forced with method=)"
        return spec.inapplicable(problem) or reason
    return spec.inapplicable(problem) or spec.unpromising(problem) or _over_memory_cap(spec, problem)


def _over_memory_cap(spec: KernelSpec, problem: Problem) -> str | None:
    """Why ``spec``'s workspace for ``problem`` is too large to try (None if it fits the cap)."""
    if spec.workspace is None or (need := spec.workspace(problem)) <= (cap := machine.memory_cap()):
        return None
    return (
        f"not tried: needs {need / 2**30:.2f} GiB of workspace, over the cap of {cap / 2**30:.2f} GiB "
        f"(AUTOTUNE_MEMORY_CAP share of available memory; method= forces it)"
    )


def _order(spec_list: list[KernelSpec]) -> list[KernelSpec]:
    """Vendor first (a strong early baseline makes early cuts effective), reference last."""
    return sorted(spec_list, key=lambda s: (s.name != "torch", s.reference))


@dataclass
class _Search:
    """State shared by the candidates of one problem while tuning."""

    problem: Problem
    args: tuple[Any, ...]
    ref: np.ndarray
    tol: float
    budget_s: float
    min_runs: int
    min_time_s: float
    started: float = field(default_factory=time.perf_counter)
    best_us: float = float("inf")
    vendor_us: float = float("inf")
    cut: list[tuple[Verdict, Callable[..., Any]]] = field(default_factory=list)
    contaminated: list[Verdict] = field(default_factory=list)  # too few clean runs: re-time
    timed: dict[int, Callable[..., Any]] = field(default_factory=dict)  # id(verdict) -> its call
    warm_up_s: float = 0.0  # first calls (Numba compilation on a fresh install) are not budgeted
    #: (args, reference) of extra inputs an approximate candidate must also meet the tolerance on.
    probes: list[tuple[tuple[Any, ...], np.ndarray]] = field(default_factory=list)
    relative: dict[tuple[str, str], float] = field(default_factory=dict)  # autotune.estimate; {}: no pruning
    screen: bool = False  # pruned tuning: every candidate timed briefly, the race times the leaders

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started - self.warm_up_s > self.budget_s


def _run_once(search: _Search, spec: KernelSpec, params: dict[str, Any]) -> tuple[Verdict, Any]:
    """Warm-up/accuracy call; returns the verdict so far and the bound function (None if failed)."""
    started = time.perf_counter()
    verdict, fn = evaluate.warm_up(spec, params, search.problem, search.args, search.ref, search.tol)
    search.warm_up_s += time.perf_counter() - started  # Numba compiles here: not budgeted
    if fn is not None and not spec.exact and verdict.rel_err is not None and math.isfinite(verdict.rel_err):
        _check_probes(search, fn, verdict)
        if verdict.rel_err > search.tol and verdict.reason is None:
            verdict.reason = f"inaccurate: rel_err {verdict.rel_err:.2e} > tol {search.tol:.0e}"
    return verdict, fn


def _check_probes(search: _Search, fn: Callable[..., Any], verdict: Verdict) -> None:
    """Raise ``verdict.rel_err`` to the worst error of an approximate candidate on the probes.

    An approximate kernel's error depends on the data: tuned only on the caller's first operands
    it may fail on the next ones, tuned only on random data it may fail on the caller's.
    """
    for probe_args, probe_ref in search.probes:
        try:
            y = fn(probe_args[0], *search.args[1:])  # the weight (maybe prepared) is shared
        except Exception as exc:
            verdict.reason = f"failed on random probe data: {type(exc).__name__}: {exc}"[:300]
            return
        if not np.all(np.isfinite(y)):
            verdict.rel_err = float("inf")
            return
        verdict.rel_err = max(verdict.rel_err, rel_max_error(y, probe_ref))


def _probes(problem: Problem, args: tuple[Any, ...], given: bool) -> list[tuple[tuple[Any, ...], np.ndarray]]:
    """Random-normal first operands with the caller's weight, when the caller's inputs are given
    (approximate kernels are eligible only then)."""
    if not given or problem.tol is None:
        return []
    probe_args = (random_inputs(problem)[0], *args[1:])
    return [(probe_args, problem.exact(probe_args))]


def _time(search: _Search, verdict: Verdict, fn: Callable[..., Any]) -> None:
    quick = search.over_budget()
    limits = {"min_runs": search.min_runs, "min_time_s": search.min_time_s}
    if quick or (search.screen and verdict.kernel != VENDOR):  # screened; the baseline in full
        limits = {"min_runs": 1, "min_time_s": 0.0} if quick else RACE_TIMING
    result = timing.measure(
        lambda: fn(*search.args),
        **{"max_time_s": max(0.2, search.budget_s / 4), **limits},
        cut_after_us=CUT_FACTOR * search.best_us,  # none while the best is unknown (infinite)
    )
    verdict.record(result)
    if result.cut and verdict.reason is None:
        verdict.reason = (
            f"slow: {result.runs} runs, fastest {result.min_us:.0f} us > {CUT_FACTOR:g}x the best "
            f"{search.best_us:.0f} us (cut early)"
        )
        search.cut.append((verdict, fn))
    elif result.contaminated and not quick and not search.screen:
        search.contaminated.append(verdict)
    verdict.ok = verdict.reason is None
    if verdict.ok:
        search.best_us = min(search.best_us, result.score_us)
        search.vendor_us = result.score_us if verdict.kernel == VENDOR else search.vendor_us
        search.timed[id(verdict)] = fn


def _second_chance(search: _Search) -> None:
    """Re-time, within the budget, the candidates cut early: a burst of load can make two runs of a
    good kernel look hopeless. Screening re-times only cuts resting on short preempted runs alone.
    (Too few clean runs, not cut: re-timed in the race.)"""
    for verdict, fn in list(search.cut):
        if search.over_budget():
            return
        if search.screen and (verdict.preempted < verdict.runs or verdict.min_us >= timing.LONG_RUN_US):
            continue  # screening: a cut resting on a clean run, or on long runs, stands
        verdict.reason = None
        _time(search, verdict, fn)


def _settle_close_race(search: _Search, verdicts: list[Verdict]) -> None:
    """Re-time the fastest accepted candidates interleaved when they are close: each was timed in
    its own stretch, so a burst of load during one can swap their order. The leader and up to
    :data:`RACE_SIZE` − 1 others whose fastest run came within :data:`RACE_MARGIN` of its score
    are timed in alternating rounds, with any accepted candidate whose measurement had too few
    clean runs; their statistics become those of all their race runs (the minimum stays). A leading
    vendor timed in full races only the doubtful and those whose fastest run beat it by
    :data:`VENDOR_MARGIN` (no one else can change the choice), screened ones within
    :data:`SCREEN_SLACK` of that; on a loaded machine (:data:`LOADED_SHARE`) like any leader."""
    ranked = sorted((v for v in verdicts if v.ok), key=lambda v: v.time_us)
    if not ranked:
        return
    limit = ranked[0].time_us * (1 + RACE_MARGIN)
    if ranked[0].kernel == VENDOR and ranked[0].preempted < LOADED_SHARE * max(1, ranked[0].runs):
        limit = ranked[0].time_us / (1 + VENDOR_MARGIN) * (1 + SCREEN_SLACK * search.screen)
    leaders = [ranked[0], *(v for v in ranked[1:RACE_SIZE] if v.min_us <= limit)]
    doubtful = [v for v in ranked if any(v is c for c in search.contaminated)]
    leaders += [v for v in doubtful if all(v is not x for x in leaders)]
    if len(leaders) < 2:
        return
    calls = [partial(search.timed[id(v)], *search.args) for v in leaders]
    samples = evaluate.interleaved(
        calls, RACE_ROUNDS, stop=lambda r: r >= 3 and search.over_budget(), **RACE_TIMING
    )
    for verdict, runs in zip(leaders, samples, strict=True):
        verdict.record(timing.summarize(runs), keep_min=True)


def _vendor_again(search: _Search, verdicts: list[Verdict]) -> None:
    """Time the vendor once more, alone, when another kernel would be chosen over it; its better
    stretch counts. PyTorch in a busy process sometimes runs 1.5-2.5x slower for a stretch of
    seconds (BENCHMARKS.md §16): a choice against it should not rest on one such stretch."""
    vendor = next((v for v in verdicts if v.ok and v.kernel == VENDOR), None)
    if vendor is None or choose(verdicts, search.tol)[0] is vendor:
        return
    call = partial(search.timed[id(vendor)], *search.args)
    again = timing.measure(call, min_runs=search.min_runs, min_time_s=search.min_time_s)
    if again.score_us < vendor.time_us:
        vendor.record(again, keep_min=True)


def _candidates(search: _Search, spec: KernelSpec) -> list[Verdict]:
    """Every verdict of one kernel: one per parameter setting tried (``first_accurate``: settings in
    order, never pruned, up to the first accurate one, the only one timed)."""
    verdicts, first = [], spec.search == "first_accurate"
    for params in spec.param_grid(search.problem):
        if not first and (pruned := _pruned(search, spec, params)) is not None:
            verdicts.append(pruned)
            continue
        verdict, fn = _run_once(search, spec, params)
        verdicts.append(verdict)
        if fn is not None and not (first and verdict.reason is not None):
            _time(search, verdict, fn)
            if first:
                break
    return verdicts


def _pruned(search: _Search, spec: KernelSpec, params: dict[str, Any]) -> Verdict | None:
    """A "not tried" verdict when this machine's earlier measurements put the candidate beyond
    :data:`PRUNE_FACTOR` times what it must beat: the best time so far, and the vendor's by
    :data:`VENDOR_MARGIN` (None: measure it)."""
    if not search.relative or not np.isfinite(search.vendor_us) or search.best_us < PRUNE_MIN_US:
        return None
    bar = min(search.best_us, search.vendor_us / (1 + VENDOR_MARGIN))
    name = label(spec.name, params)
    estimated = estimate.estimate_us(search.problem, name, search.relative, search.vendor_us)
    if estimated is None or estimated <= PRUNE_FACTOR * bar:
        return None
    reason = (
        f"not tried: estimated {estimated:.0f} us from this machine's earlier measurements "
        f"(> {PRUNE_FACTOR:g}x the {bar:.0f} us to beat; tune without --prune times it)"
    )
    return Verdict(kernel=spec.name, params=dict(params), reason=reason)


def choose(candidates: list[Verdict], tol: float) -> tuple[Verdict, str]:
    """The fastest eligible verdict and a sentence saying why.

    The vendor kernel is kept when it is within :data:`VENDOR_MARGIN` of the fastest; other
    near-ties (within the measured spread, capped at :data:`TIE_CAP`) go to the most accurate.
    """
    eligible = sorted((v for v in candidates if v.ok), key=lambda v: v.time_us)
    if not eligible:
        raise RuntimeError("no candidate passed: " + "; ".join(f"{v.label}: {v.reason}" for v in candidates))
    fastest = eligible[0]
    vendor = next((v for v in eligible if v.kernel == VENDOR), None)
    vendor_limit = fastest.time_us * (1 + VENDOR_MARGIN)
    if vendor is not None and vendor is not fastest and vendor.time_us <= vendor_limit:
        why = (
            f"{vendor.label}: within {VENDOR_MARGIN:.0%} of the fastest ({fastest.label}, "
            f"{vendor.time_us / fastest.time_us:.2f}x its time); the vendor's native call is kept on "
            f"near-ties; rel_err {vendor.rel_err:.1e} <= tol {tol:.0e}"
        )
        return vendor, why
    # a fastest vendor keeps the choice: others must beat it by the margin, not tie on accuracy
    band = 0.0 if fastest is vendor else min(TIE_CAP, max(fastest.spread_us or 0.0, 0.0) / fastest.time_us)
    tied = [v for v in eligible if v.time_us <= fastest.time_us * (1 + band)]
    winner = min(tied, key=lambda v: (v.rel_err, v.time_us))
    others = [v for v in eligible if v is not winner]
    if winner is not fastest:
        why = (
            f"{winner.label}: within the timing spread ({band:.1%}) of {fastest.label} and more "
            f"accurate (rel_err {winner.rel_err:.1e} vs {fastest.rel_err:.1e}); tol {tol:.0e}"
        )
    elif others:
        runner_up = others[0]
        why = (
            f"{winner.label}: {runner_up.time_us / winner.time_us:.2f}x faster than "
            f"{runner_up.label}, rel_err {winner.rel_err:.1e} <= tol {tol:.0e}"
        )
    else:
        rejected = sum(not v.ok and not (v.reason or "").startswith("not applicable") for v in candidates)
        why = (
            f"{winner.label}: the only accepted candidate ({rejected} rejected, see their reasons), "
            f"rel_err {winner.rel_err:.1e} <= tol {tol:.0e}"
        )
    return winner, why


def tune_problem(
    problem: Problem,
    *,
    inputs: tuple[np.ndarray, ...] | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    min_runs: int = 5,
    min_time_s: float = 0.05,
    relative: dict[tuple[str, str], float] | None = None,
    screen: bool = False,
) -> TuneResult:
    """Time and check every applicable kernel for ``problem``; return the verdicts and the choice.

    ``inputs`` defaults to seeded random-normal operands; pass the real ones when approximate
    kernels are eligible (their error depends on the data). With ``relative``
    (:func:`autotune.estimate.relative_times`), candidates estimated :data:`PRUNE_FACTOR` slower
    than what they must beat go untried; with ``screen``, every candidate is timed briefly and
    only the leaders (the race) in full."""
    STATE.notify("tune-started", problem)
    log.info("tuning %s", problem.key)
    load_before = timing.load_average()
    args = problem.call_args(random_inputs(problem) if inputs is None else inputs)
    tol = tolerance(problem)
    search = _Search(problem, args, problem.exact(args), tol, budget_s, min_runs, min_time_s, screen=screen)
    search.probes, search.relative = _probes(problem, args, inputs is not None), dict(relative or {})

    verdicts: list[Verdict] = []
    for spec in _order(registry.specs(problem.op)):
        if excluded := _exclusion(spec, problem):
            verdicts.append(Verdict(kernel=spec.name, reason=excluded))
            continue
        verdicts.extend(_candidates(search, spec))
    _second_chance(search)
    _settle_close_race(search, verdicts)
    _vendor_again(search, verdicts)
    winner, why = choose(verdicts, tol)
    verdicts.sort(key=lambda v: (not v.ok, v.time_us))
    result = TuneResult(
        problem=problem,
        choice=winner.kernel,
        params=winner.params,
        tol=tol,
        candidates=verdicts,
        tuned_at=now_iso(),
        tuning_s=time.perf_counter() - search.started,
        why=why,
        load=(load_before, timing.load_average()),
    )
    STATE.notify("tune-finished", result)
    return result
