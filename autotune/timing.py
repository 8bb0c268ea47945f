"""Wall-clock measurement of one candidate: repeats, robust statistics, early cut.

The caller warms the candidate up first (its first call compiles Numba code and doubles as the
accuracy check), so nothing measured here includes compilation. Runs repeat until both
``min_runs`` and ``min_time_s`` are reached (or ``max_time_s`` is spent); the statistic is the
median, with the minimum and the interquartile range recorded beside it. A candidate whose first
two timed runs are both slower than ``cut_after_us`` stops there: it cannot win, and timing it
further would only spend the tuning budget (two runs, because a first run may still pay for page
faults of fresh buffers or waking threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

CUT_RUNS = 2


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated runs, in microseconds."""

    median_us: float
    min_us: float
    spread_us: float  # interquartile range (p75 − p25); 0 with fewer than 4 runs
    runs: int
    cut: bool = False  # stopped after CUT_RUNS runs because it could not win

    @property
    def rel_spread(self) -> float:
        """Spread as a fraction of the median: how far apart two timings can be and still tie."""
        return self.spread_us / self.median_us if self.median_us > 0 else 0.0


def summarize(samples_us: list[float], cut: bool = False) -> Timing:
    """Median, minimum and interquartile range of raw samples."""
    arr = np.asarray(samples_us, dtype=np.float64)
    spread = float(np.subtract(*np.percentile(arr, [75, 25]))) if arr.size >= 4 else 0.0
    return Timing(float(np.median(arr)), float(arr.min()), spread, int(arr.size), cut)


def measure(
    run: Callable[[], Any],
    *,
    min_runs: int = 5,
    min_time_s: float = 0.05,
    max_time_s: float = 1.0,
    max_runs: int = 10_000,
    cut_after_us: float | None = None,
) -> Timing:
    """Time ``run()`` repeatedly (already warmed up) and summarise.

    Stops once ``min_runs`` runs and ``min_time_s`` seconds are both reached, or ``max_time_s``
    (after at least one run) or ``max_runs`` is hit. With ``cut_after_us``, a first run slower
    than that ends the measurement at once (``Timing.cut``).
    """
    samples_us: list[float] = []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        samples_us.append((t1 - t0) / 1e3)
        if cut_after_us is not None and len(samples_us) == CUT_RUNS and min(samples_us) > cut_after_us:
            return summarize(samples_us, cut=True)
        elapsed_s = (t1 - start) / 1e9
        enough = len(samples_us) >= min_runs and elapsed_s >= min_time_s
        if enough or elapsed_s >= max_time_s or len(samples_us) >= max_runs:
            return summarize(samples_us)
