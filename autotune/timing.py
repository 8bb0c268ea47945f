"""Wall-clock measurement of one candidate: repeats, preemption detection, a robust statistic.

The caller warms the candidate up first (compilation, the accuracy check). Each run records the
process's involuntary context switches (``getrusage``): a run during which a thread was switched
out while runnable measured the scheduler — a 2-thread kernel waits for its descheduled worker
for a whole time slice — so only *clean* runs count towards ``min_runs`` (except long runs,
:data:`LONG_RUN_US`). The choice rests on :attr:`Timing.score_us`, the 20th percentile of the
clean runs: unlike the mean or median it ignores the slow tail that load and page faults add,
unlike the minimum it is not one lucky run. A candidate whose first two runs (a first may still
pay for fresh buffers) both exceed ``cut_after_us`` is cut: it cannot win.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CUT_RUNS = 2
#: Percentile of the clean runs that a choice rests on.
SCORE_PERCENTILE = 20.0
#: With fewer clean runs than this, the score falls back to all runs (and is flagged).
MIN_CLEAN = 3
#: Runs this long are rarely clean on a shared machine (something wakes up every few ms) and lose
#: little to one switch: after ``min_runs`` runs all this long, clean or not, a measurement may
#: stop (the fastest run decides: load cannot make a short kernel's fastest run long).
LONG_RUN_US = 5_000.0


@dataclass(frozen=True)
class Sample:
    """One timed run: wall time, whether the process was preempted, minor page faults taken."""

    wall_us: float
    preempted: bool
    faults: int = 0


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated runs, in microseconds."""

    median_us: float
    min_us: float
    spread_us: float  # interquartile range (p75 − p25) of all runs; 0 with fewer than 4 runs
    runs: int
    cut: bool = False  # stopped after CUT_RUNS runs because it could not win
    score_us: float = 0.0  # SCORE_PERCENTILE of the clean runs: what the choice rests on
    preempted: int = 0  # runs during which a thread of this process was switched out
    faults_per_run: float = 0.0  # median minor page faults of a run

    @property
    def clean(self) -> int:
        return self.runs - self.preempted

    @property
    def contaminated(self) -> bool:
        """Too few clean runs to trust the score (long runs aside): the measurement should be repeated."""
        return self.clean < MIN_CLEAN and not self.cut and self.min_us < LONG_RUN_US


try:
    import resource
except ImportError:  # not on POSIX: no preemption signal, every run counts as clean
    resource = None  # type: ignore[assignment]


def _involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw if resource else 0


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def run_once(run: Callable[[], Any]) -> Sample:
    """Time one call of ``run``; note whether this process was preempted meanwhile and how many
    minor page faults it took (fresh memory from the OS: an allocator effect, not the kernel's,
    that differs between processes — BENCHMARKS.md §1)."""
    faults = _page_faults()
    switches = _involuntary_switches()
    t0 = time.perf_counter_ns()
    run()
    t1 = time.perf_counter_ns()
    preempted = _involuntary_switches() != switches
    return Sample((t1 - t0) / 1e3, preempted, _page_faults() - faults)


def summarize(samples: Sequence[Sample | float], cut: bool = False) -> Timing:
    """Median, minimum, interquartile range and the robust score of raw samples.

    Plain numbers are taken as clean runs.
    """
    runs = [s if isinstance(s, Sample) else Sample(float(s), False) for s in samples]
    wall = np.asarray([s.wall_us for s in runs], dtype=np.float64)
    clean = np.asarray([s.wall_us for s in runs if not s.preempted], dtype=np.float64)
    basis = clean if clean.size >= MIN_CLEAN else wall
    spread = float(np.subtract(*np.percentile(wall, [75, 25]))) if wall.size >= 4 else 0.0
    return Timing(
        median_us=float(np.median(wall)),
        min_us=float(wall.min()),
        spread_us=spread,
        runs=int(wall.size),
        cut=cut,
        score_us=float(np.percentile(basis, SCORE_PERCENTILE)),
        preempted=int(wall.size - clean.size),
        faults_per_run=float(np.median([s.faults for s in runs])),
    )


def collect(
    run: Callable[[], Any],
    *,
    min_runs: int = 5,
    min_time_s: float = 0.05,
    max_time_s: float = 1.0,
    max_runs: int = 10_000,
    cut_after_us: float | None = None,
) -> tuple[list[Sample], bool]:
    """Raw samples of ``run()`` (already warmed up) and whether the measurement was cut. Stops
    once ``min_runs`` clean runs (or long ones, :data:`LONG_RUN_US`) and ``min_time_s`` seconds are
    both reached, or ``max_time_s`` (after at least one run) or ``max_runs`` is hit; with
    ``cut_after_us``, two first runs both slower than that end the measurement at once."""
    samples: list[Sample] = []
    clean, fastest = 0, float("inf")
    start = time.perf_counter()
    while True:
        sample = run_once(run)
        samples.append(sample)
        clean += not sample.preempted
        if (
            cut_after_us is not None
            and len(samples) == CUT_RUNS
            and min(s.wall_us for s in samples) > cut_after_us
        ):
            return samples, True
        elapsed_s = time.perf_counter() - start
        fastest = min(fastest, sample.wall_us)  # long even at its fastest: load cannot explain it
        long_runs = len(samples) >= min_runs and fastest >= LONG_RUN_US
        enough = (clean >= min_runs or long_runs) and elapsed_s >= min_time_s
        if enough or elapsed_s >= max_time_s or len(samples) >= max_runs:
            return samples, False


def measure(run: Callable[[], Any], **options: Any) -> Timing:
    """Time ``run()`` repeatedly (already warmed up) and summarise (options as :func:`collect`)."""
    samples, cut = collect(run, **options)
    return summarize(samples, cut=cut)


def load_average() -> float:
    """The 1-minute load average (recorded with a tuning result: how busy the machine was)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float("nan")
