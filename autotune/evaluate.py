"""The evaluator: how one candidate kernel is run, checked and timed on one problem.

Shared by the tuner (which chooses among the candidates) and ``autotune bench`` (which reports
them side by side), so both judge a kernel the same way: seeded inputs and their exact result,
:func:`warm_up` (bind, prepare, run once, check) and :func:`interleaved` timing. Steps 1, 3 and 5
of docs/architecture.md, "A tune".
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune import timing
from autotune.problem import Problem
from kernels.registry import KernelSpec, label


def problem_seed(problem: Problem) -> int:
    """A stable seed per problem, so every run (and process) tunes on the same inputs."""
    return zlib.crc32(problem.key.encode())


def random_inputs(problem: Problem, seed: int | None = None) -> tuple[np.ndarray, ...]:
    """Seeded standard-normal operands of the problem's shapes and dtype."""
    return problem.random_inputs(np.random.default_rng(problem_seed(problem) if seed is None else seed))


def rel_max_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``max|y − ref| / max(max|ref|, tiny)`` in float64."""
    diff = np.abs(np.asarray(y, dtype=np.float64) - ref)
    return float(diff.max() / max(float(np.abs(ref).max()), np.finfo(np.float64).tiny))


def rel_l2_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``‖y − ref‖₂ / max(‖ref‖₂, tiny)`` in float64, summed without BLAS: ``np.linalg.norm``'s dot
    woke OpenBLAS's threads, which then spun beside the next timed runs (BENCHMARKS.md §19)."""
    norm = lambda a: float(np.sqrt(np.square(a).sum()))  # noqa: E731
    return norm(np.asarray(y, dtype=np.float64) - ref) / max(norm(ref), np.finfo(np.float64).tiny)


def recorded_us(record: Mapping[str, Any]) -> float | None:
    """A stored candidate record's time: its score, else its median (entries from before the score)."""
    return record.get("score_us") or record.get("median_us")


@dataclass
class Verdict:
    """One candidate's outcome."""

    kernel: str
    params: dict[str, Any] = field(default_factory=dict)
    median_us: float | None = None
    min_us: float | None = None
    spread_us: float | None = None
    score_us: float | None = None  # 20th percentile of the clean runs: what the choice rests on
    prepare_us: float | None = None  # one-time cost of the spec's ``prepare`` (not in median_us)
    runs: int = 0
    preempted: int = 0  # timed runs during which this process was preempted (excluded from score)
    faults_per_run: float | None = None  # median minor page faults of a timed run
    rel_err: float | None = None
    rel_l2: float | None = None
    ok: bool = False
    reason: str | None = None

    @property
    def label(self) -> str:
        return label(self.kernel, self.params)

    @property
    def time_us(self) -> float:
        """The time the choice compares: the score (entries from before it: the median)."""
        if self.score_us is not None:
            return self.score_us
        return self.median_us if self.median_us is not None else float("inf")

    def record(self, result: timing.Timing, keep_min: bool = False) -> None:
        """Take a measurement's statistics (with ``keep_min``, the fastest run seen before stays)."""
        fastest = self.min_us if keep_min and self.min_us is not None else float("inf")
        self.median_us, self.min_us, self.score_us = result.median_us, result.min_us, result.score_us
        self.spread_us, self.runs, self.preempted = result.spread_us, result.runs, result.preempted
        self.faults_per_run = result.faults_per_run
        self.min_us = min(self.min_us, fastest)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"kernel": self.kernel}
        if self.params:
            record["params"] = dict(self.params)
        for name in ("median_us", "min_us", "score_us", "spread_us", "prepare_us"):
            value = getattr(self, name)
            if value is not None:
                record[name] = float(f"{value:.4g}")
        if self.runs:
            record["runs"] = self.runs
            record["preempted"] = self.preempted
        if self.faults_per_run is not None:
            record["faults_per_run"] = float(f"{self.faults_per_run:.3g}")
        for name in ("rel_err", "rel_l2"):
            value = getattr(self, name)
            if value is not None:
                record[name] = float(f"{value:.3e}")
        record["ok"] = self.ok
        if self.reason:
            record["reason"] = self.reason
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Verdict:
        names = ("median_us", "min_us", "score_us", "spread_us", "prepare_us", "rel_err", "rel_l2")
        known = {k: record.get(k) for k in names}
        return cls(
            kernel=str(record["kernel"]),
            params=dict(record.get("params") or {}),
            runs=int(record.get("runs") or 0),
            preempted=int(record.get("preempted") or 0),
            faults_per_run=record.get("faults_per_run"),
            ok=bool(record.get("ok")),
            reason=record.get("reason"),
            **known,
        )


def prepared_call(
    spec: KernelSpec, params: dict[str, Any], problem: Problem, args: tuple[Any, ...], verdict: Verdict
) -> Callable[..., Any]:
    """``spec`` bound to ``params``; for a fixed weight (``problem.weight``) with the spec's
    ``prepare`` applied to it once (its cost goes to ``verdict.prepare_us``, not the call's)."""
    fn = spec.bind(params)
    if spec.prepare is None or problem.weight is None:
        return fn
    started = time.perf_counter()
    prepared = spec.prepare(args[1], **params)
    verdict.prepare_us = (time.perf_counter() - started) * 1e6
    return lambda x, _weight, *rest: fn(x, prepared, *rest)


def judge(verdict: Verdict, problem: Problem, y: Any, ref: np.ndarray, tol: float) -> bool:
    """Record ``y``'s errors against ``ref`` in ``verdict``; False if ``y`` is not an output of
    the problem's shape and dtype at all. A non-finite or inaccurate output gets a reason."""
    expected = tuple(problem.out_shape)
    if not isinstance(y, np.ndarray) or y.shape != expected:
        verdict.reason = f"wrong output: shape {getattr(y, 'shape', type(y).__name__)}, expected {expected}"
        return False
    if y.dtype != np.dtype(problem.dtype):
        verdict.reason = f"wrong output dtype {y.dtype}, expected {problem.dtype}"
        return False
    if not np.all(np.isfinite(y)):
        verdict.reason, verdict.rel_err = "non-finite output (inf/nan)", float("inf")
        return True
    verdict.rel_err, verdict.rel_l2 = rel_max_error(y, ref), rel_l2_error(y, ref)
    if verdict.rel_err > tol:
        verdict.reason = f"inaccurate: rel_err {verdict.rel_err:.2e} > tol {tol:.0e}"
    return True


def warm_up(
    spec: KernelSpec, params: dict[str, Any], problem: Problem, args: tuple, ref: np.ndarray, tol: float
) -> tuple[Verdict, Callable[..., Any] | None]:
    """Bind, prepare, run once and check one candidate setting; returns its verdict so far and
    the call to time (None when it failed or produced no usable output)."""
    verdict = Verdict(kernel=spec.name, params=dict(params))
    try:
        fn = prepared_call(spec, params, problem, args, verdict)
        y = fn(*args)
    except Exception as exc:  # a failing candidate is data, never an escaping exception
        verdict.reason = f"failed: {type(exc).__name__}: {exc}"[:300]
        return verdict, None
    return verdict, fn if judge(verdict, problem, y, ref, tol) else None


def interleaved(
    calls: Sequence[Callable[[], Any]],
    rounds: int,
    stop: Callable[[int], bool] = lambda _round: False,
    **measure: Any,
) -> list[list[timing.Sample]]:
    """Time ``calls`` in ``rounds`` alternating rounds (``timing.collect(**measure)`` each);
    ``stop(round)`` may end early. Returns every call's samples, all rounds together."""
    samples: list[list[timing.Sample]] = [[] for _ in calls]
    for round_ in range(rounds):
        if stop(round_):
            break
        for call, found in zip(calls, samples, strict=True):
            found.extend(timing.collect(call, **measure)[0])
    return samples
