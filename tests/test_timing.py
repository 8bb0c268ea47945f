"""Timings that can be trusted: a robust score, preempted runs detected, contaminated ones re-timed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from autotune import timing, tuner
from autotune.problem import ConvProblem
from autotune.timing import Sample
from kernels import registry
from kernels.registry import KernelSpec

SMALL = ConvProblem((1, 4, 12, 12), (4, 4, 3, 3), padding=(1, 1, 1, 1))


def test_score_ignores_injected_outliers():
    steady = [100.0 + i % 3 for i in range(30)]
    outliers = [50_000.0] * 6  # a fifth of the runs hit by descheduling
    result = timing.summarize(steady + outliers)
    assert 100.0 <= result.score_us <= 102.0
    assert result.min_us == 100.0
    assert result.median_us < 103.0  # the median moves a little, the score not at all


def test_preempted_runs_do_not_count_even_when_they_are_the_majority():
    samples = [Sample(4_000.0, True)] * 20 + [Sample(100.0 + i, False) for i in range(5)]
    result = timing.summarize(samples)
    assert result.preempted == 20 and result.clean == 5
    assert 100.0 <= result.score_us <= 101.0
    assert result.median_us == 4_000.0  # recorded as seen


def test_too_few_clean_runs_fall_back_to_all_runs_and_are_flagged():
    result = timing.summarize([Sample(300.0, True)] * 4 + [Sample(100.0, False)])
    assert result.contaminated
    assert result.score_us == pytest.approx(np.percentile([300.0] * 4 + [100.0], timing.SCORE_PERCENTILE))


def fake_preemption(monkeypatch, pattern):
    """Make ``timing`` see an involuntary context switch in the runs that ``pattern`` marks."""
    marks = iter(pattern)
    state = {"switches": 0, "inside": False}

    def switches() -> int:
        if state["inside"]:  # after a run: count one switch if this run is marked
            state["switches"] += next(marks, False)
        state["inside"] = not state["inside"]
        return state["switches"]

    monkeypatch.setattr(timing, "_involuntary_switches", switches)


def test_a_measurement_keeps_going_until_it_has_enough_clean_runs(monkeypatch):
    fake_preemption(monkeypatch, [True] * 7)
    samples, cut = timing.collect(lambda: None, min_runs=3, min_time_s=0.0)
    assert not cut
    assert [s.preempted for s in samples] == [True] * 7 + [False] * 3


def test_long_runs_need_not_be_clean(monkeypatch):
    """Runs of LONG_RUN_US or more are rarely clean on a shared machine and lose little to one
    switch: after min_runs of them the measurement stops, and it is not flagged for re-timing."""
    fake_preemption(monkeypatch, [True] * 100)
    long_s = 1.2 * timing.LONG_RUN_US / 1e6
    samples, _ = timing.collect(lambda: time.sleep(long_s), min_runs=3, min_time_s=0.0, max_time_s=5.0)
    assert len(samples) == 3 and all(s.preempted for s in samples)
    assert not timing.summarize(samples).contaminated
    short = timing.summarize([Sample(100.0, True)] * 3)
    assert short.contaminated  # short preempted runs: re-timed
    inflated = [Sample(2 * timing.LONG_RUN_US, True)] * 3 + [Sample(100.0, True)]
    assert timing.summarize(inflated).contaminated  # long only by load: its fastest run says so


def test_a_short_kernel_slowed_down_by_load_keeps_looking_for_clean_runs(monkeypatch):
    fake_preemption(monkeypatch, [True] * 6)
    durations = iter([0.0] + [1.2 * timing.LONG_RUN_US / 1e6] * 5)  # fast once, then slowed
    samples, _ = timing.collect(lambda: time.sleep(next(durations, 0.0)), min_runs=3, min_time_s=0.0)
    assert len(samples) == 6 + 3 and sum(not s.preempted for s in samples) == 3


def test_long_preempted_runs_still_give_their_kind_a_relative_time():
    from autotune import estimate

    long = 2 * timing.LONG_RUN_US
    record = {"score_us": long, "median_us": long, "min_us": long, "runs": 2}
    vendor = {"score_us": long / 4, "min_us": long / 4, "runs": 9, "preempted": 0}
    entries = {
        SMALL.key: {"candidates": {"torch": vendor, "direct": {**record, "preempted": 2}}},
        "conv2d x=1x4x16x16 w=4x4x3x3 stride=1 pad=1 dilation=1 groups=1 float32": {
            "candidates": {"torch": vendor, "direct": {**record, "min_us": 100.0, "preempted": 2}}
        },  # long only by load: left out
    }
    known = estimate.relative_times(entries)
    assert {label for label, _ in known} == {"torch", "direct"}
    assert {known[("direct", kind)] for kind in estimate.problem_kinds(SMALL)} == {4.0}


def test_the_tuner_re_times_a_contaminated_candidate_and_records_what_it_saw(monkeypatch, throwaway_kernels):
    """Every run of the first measurement is preempted; the re-timing later is clean."""
    state = {"preempt": True}
    real = timing._involuntary_switches
    counter = {"n": 0}

    def switches() -> int:
        counter["n"] += 1
        return counter["n"] if state["preempt"] else real()

    def slow_then_fine(x, w, b, stride, padding, dilation, groups):
        """Correct; every run of its first measurement is preempted (and slow)."""
        if state["preempt"]:
            time.sleep(0.002)
        return registry.get("conv2d", "direct").fn(x, w, b, stride, padding, dilation, groups)

    throwaway_kernels(KernelSpec(name="loaded", op="conv2d", fn=slow_then_fine))
    original_time = tuner._time

    def time_then_calm_down(search, verdict, fn):
        monkeypatch.setattr(timing, "_involuntary_switches", switches if verdict.kernel == "loaded" else real)
        original_time(search, verdict, fn)
        if verdict.kernel == "loaded":
            state["preempt"] = False
            monkeypatch.setattr(timing, "_involuntary_switches", real)

    monkeypatch.setattr(tuner, "_time", time_then_calm_down)
    result = tuner.tune_problem(SMALL, min_runs=3, min_time_s=0.0, budget_s=2.0)
    verdict = next(v for v in result.candidates if v.kernel == "loaded")
    assert verdict.ok
    assert verdict.preempted < verdict.runs  # re-timed: clean runs replaced the preempted ones
    assert verdict.score_us < 2_000
    entry = result.to_entry()
    record = entry["candidates"]["loaded"]
    assert {"score_us", "preempted", "runs", "median_us", "min_us"} <= set(record)
    assert len(entry["load"]) == 2 and all(np.isfinite(v) or np.isnan(v) for v in entry["load"])


def test_choice_rests_on_the_score_not_the_median():
    noisy = tuner.Verdict(
        kernel="noisy", median_us=900.0, min_us=480.0, score_us=500.0, rel_err=1e-7, ok=True
    )
    steady = tuner.Verdict(
        kernel="steady", median_us=700.0, min_us=690.0, score_us=700.0, rel_err=1e-7, ok=True
    )
    winner, why = tuner.choose([steady, noisy], tol=1e-4)
    assert winner is noisy and "1.40x faster" in why


def test_the_vendor_is_kept_unless_another_kernel_is_clearly_faster():
    def verdict(kernel: str, score: float) -> tuner.Verdict:
        return tuner.Verdict(
            kernel=kernel, median_us=score, min_us=score, score_us=score, rel_err=1e-7, ok=True
        )

    vendor, close, clear = verdict("torch", 120.0), verdict("pointwise", 100.0), verdict("direct", 80.0)
    winner, why = tuner.choose([close, vendor], tol=1e-4)  # 1.2x faster alone: not enough
    assert winner is vendor and f"within {tuner.VENDOR_MARGIN:.0%}" in why
    assert tuner.choose([close, vendor, clear], tol=1e-4)[0] is clear  # 1.5x: taken


def test_a_choice_against_the_vendor_rests_on_its_better_of_two_stretches():
    """The vendor measured during a stall (3x its real time) is timed again before it loses; a
    vendor that really is slower stays slower."""

    def verdict(kernel: str, score: float) -> tuner.Verdict:
        return tuner.Verdict(
            kernel=kernel, median_us=score, min_us=score, score_us=score, rel_err=1e-7, ok=True
        )

    def sleeper(seconds: float):
        return lambda *args: time.sleep(seconds)

    search = tuner._Search(SMALL, (), np.zeros(1), 1e-4, 1.0, min_runs=3, min_time_s=0.0)
    stalled, rival = verdict(tuner.VENDOR, 30_000.0), verdict("rival", 10_000.0)
    search.timed = {id(stalled): sleeper(0.001), id(rival): sleeper(0.010)}
    tuner._vendor_again(search, [rival, stalled])
    assert stalled.time_us < 5_000 and stalled.runs >= 3
    assert tuner.choose([rival, stalled], tol=1e-4)[0] is stalled

    slower = verdict(tuner.VENDOR, 30_000.0)
    search.timed = {id(slower): sleeper(0.040), id(rival): sleeper(0.010)}
    tuner._vendor_again(search, [rival, slower])
    assert slower.time_us == 30_000.0  # the second stretch was no better: the first one stands
    assert tuner.choose([rival, slower], tol=1e-4)[0] is rival


def test_a_leading_vendor_races_only_challengers_that_could_beat_it_by_the_margin():
    def verdict(kernel: str, score: float, fastest: float) -> tuner.Verdict:
        return tuner.Verdict(
            kernel=kernel, median_us=score, min_us=fastest, score_us=score, rel_err=1e-7, ok=True
        )

    def nap():
        time.sleep(0.001)

    vendor, near, fast = (
        verdict(tuner.VENDOR, 2000.0, 1900.0),
        verdict("near", 2100.0, 1900.0),
        verdict("fast", 2100.0, 1400.0),
    )
    search = tuner._Search(SMALL, (), np.zeros(1), 1e-4, 5.0, min_runs=3, min_time_s=0.0)
    search.timed = {id(vendor): nap, id(near): nap, id(fast): nap}
    tuner._settle_close_race(search, [vendor, near])  # 1900 us cannot beat 2000 by 30%: no race
    assert vendor.runs == near.runs == 0
    tuner._settle_close_race(search, [vendor, near, fast])  # 1400 us could: those two race
    assert vendor.runs > 0 and fast.runs > 0 and near.runs == 0
    search.screen = True  # screened times are rough: the usual race (within 50%) runs
    vendor, near = verdict(tuner.VENDOR, 2000.0, 1900.0), verdict("near", 2100.0, 1900.0)
    search.timed = {id(vendor): nap, id(near): nap}
    tuner._settle_close_race(search, [vendor, near])
    assert vendor.runs > 0 and near.runs > 0


def test_page_faults_of_a_run_are_counted_and_recorded():
    """Fresh memory from the OS shows up per run (the allocator effect behind BENCHMARKS §1)."""

    def touch_fresh_pages():
        buffer = np.empty(64 << 20, dtype=np.uint8)  # 64 MB: mapped fresh, faulted in when written
        buffer[::4096] = 1

    result = timing.measure(touch_fresh_pages, min_runs=3, min_time_s=0.0)
    assert result.faults_per_run >= (64 << 20) // (2 << 20)  # at least one per huge page
    quiet = timing.measure(lambda: None, min_runs=3, min_time_s=0.0)
    assert quiet.faults_per_run == 0
    verdict = tuner.Verdict(kernel="k")
    verdict.record(result)
    assert verdict.to_dict()["faults_per_run"] == pytest.approx(result.faults_per_run, rel=1e-2)
