"""``autotune bench``: every kernel of a suite timed side by side, against torch and this machine's peak.

For each problem of a suite (a preset) the benchmark

1. runs every applicable exact kernel once on seeded inputs (warm-up: Numba compiles here) and
   checks its error against the float64 reference with the tuner's evaluator
   (:func:`autotune.evaluate.warm_up`);
2. times the candidates — and the public dispatcher call ``autotune.conv2d``/``autotune.matmul``
   itself — in :data:`ROUNDS` interleaved rounds (:func:`autotune.evaluate.interleaved`), so
   that a burst of load on a shared machine hits every candidate rather than one (median and
   minimum over all runs);
3. reports the dispatcher's pick (from the database; a problem not yet tuned is tuned first), its
   effective GFLOP/s (direct-equivalent FLOPs over the dispatcher's median time), its % of this
   machine's peak and its speed-up over torch.

The peak is the best of a few large float32 GEMMs (:data:`PEAK_N`³) through numpy's BLAS, measured
in the same run. A candidate whose warm-up run alone exceeds the per-candidate cap is not timed
again: its one (warm-up) run is reported and flagged ``capped``. The float64 reference (``naive``)
is timed once. Approximate kernels are left out (their error depends on the data; see the
studies).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotune import api, evaluate, machine, report, shapes, state, tables, timing, tuner
from autotune.bench import plot_if_possible
from autotune.evaluate import Verdict
from autotune.problem import ConvProblem, Problem
from autotune.weights import Weight
from kernels import registry

#: Interleaved timing rounds per problem.
ROUNDS = 3
#: Size of the square float32 GEMM that measures the machine's peak.
PEAK_N = 2048
PEAK_REPEATS = 5
#: Label of the public dispatcher call among the candidates.
DISPATCH = "autotune"


@dataclass
class CandidateTime:
    """One candidate's measurement (times in microseconds)."""

    label: str
    kernel: str
    params: dict[str, Any] = field(default_factory=dict)
    median_us: float | None = None
    min_us: float | None = None
    runs: int = 0
    rel_err: float | None = None
    ok: bool = False
    reason: str | None = None
    capped: bool = False
    gflops: float | None = None
    prepare_us: float | None = None  # one-time weight preparation (spec.prepare), not in the times


@dataclass
class ProblemResult:
    """Everything measured for one problem."""

    problem: str
    layers: list[str]
    flops: int
    pick: str
    candidates: list[CandidateTime]

    def get(self, label: str) -> CandidateTime | None:
        return next((c for c in self.candidates if c.label == label), None)

    def best_of(self, kernel: str) -> CandidateTime | None:
        """The fastest accepted setting of ``kernel`` (else its first, rejected, record)."""
        own = [c for c in self.candidates if c.kernel == kernel]
        accepted = [c for c in own if c.ok and c.median_us is not None]
        return min(accepted, key=lambda c: c.median_us) if accepted else (own[0] if own else None)

    @property
    def dispatch_us(self) -> float | None:
        found = self.get(DISPATCH)
        return None if found is None else found.median_us

    def speedup_vs_torch(self) -> float | None:
        torch_time, ours = self.best_of("torch"), self.dispatch_us
        if torch_time is None or not torch_time.ok or not ours or torch_time.median_us is None:
            return None
        return torch_time.median_us / ours


@dataclass
class BenchResult:
    """A whole benchmark run."""

    suite: str
    description: str
    command: str
    started_at: str
    wall_s: float
    machine: dict[str, Any]
    peak_gflops: float
    peak_method: str
    problems: list[ProblemResult]


# --- Measuring. ------------------------------------------------------------------------------


def measure_peak_gflops(n: int = PEAK_N, repeats: int = PEAK_REPEATS) -> float:
    """Best-of-``repeats`` GFLOP/s of an n×n×n float32 GEMM through numpy's BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    np.matmul(a, b)  # first call: thread pool start-up and page faults, not the GEMM
    best_s = min(_wall(lambda: np.matmul(a, b)) for _ in range(repeats))
    return 2 * n**3 / best_s / 1e9


def _wall(run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _dispatch_call(problem: Problem, inputs: tuple[np.ndarray, ...]) -> Callable[[], Any] | None:
    """The public API call for ``problem`` (None if its padding cannot be expressed there)."""
    if isinstance(problem, ConvProblem):
        top, bottom, left, right = problem.padding
        if top != bottom or left != right:
            return None
        x, w, b = inputs
        if problem.weight is not None:
            w = Weight(w)  # dispatched as a fixed weight, like a module parameter
        options = {
            "stride": problem.stride,
            "padding": (top, left),
            "dilation": problem.dilation,
            "groups": problem.groups,
        }
        return lambda: api.conv2d(x, w, b, **options)
    a, b = inputs
    if problem.weight is not None:
        b = Weight(b)
    return lambda: api.matmul(a, b)


def _record(verdict: Verdict, label: str | None = None) -> CandidateTime:
    """A candidate's row from its evaluator verdict."""
    return CandidateTime(
        label=label or verdict.label,
        kernel=verdict.kernel,
        params=dict(verdict.params),
        rel_err=verdict.rel_err,
        ok=verdict.reason is None,
        reason=verdict.reason,
        prepare_us=verdict.prepare_us,
    )


def _candidates(
    problem: Problem, args: tuple[Any, ...], ref: np.ndarray, cap_s: float
) -> tuple[list[CandidateTime], list[tuple[CandidateTime, Callable[[], Any]]]]:
    """Warm up and check every exact kernel setting with the tuner's evaluator: all rows, and the
    calls to time (a candidate whose warm-up exceeded ``cap_s`` keeps that one run, ``capped``)."""
    rows: list[CandidateTime] = []
    timed: list[tuple[CandidateTime, Callable[[], Any]]] = []
    tol = tuner.tolerance(problem)
    for spec in sorted(registry.specs(problem.op), key=lambda s: (s.name != "torch", s.reference)):
        excluded = spec.inapplicable(problem) or (
            None if spec.exact else "approximate: not benchmarked (see the studies)"
        )
        if excluded:
            rows.append(CandidateTime(label=spec.name, kernel=spec.name, reason=excluded))
            continue
        for params in spec.param_grid(problem):
            started = time.perf_counter()
            verdict, fn = evaluate.warm_up(spec, params, problem, args, ref, tol)
            row = _record(verdict)
            rows.append(row)
            # The reference is timed once: it is the slowest by design and only a yardstick.
            if fn is not None and (spec.reference or time.perf_counter() - started > cap_s):
                row.median_us = row.min_us = (time.perf_counter() - started) * 1e6
                row.runs, row.capped = 1, not spec.reference
            elif fn is not None:
                timed.append((row, lambda fn=fn: fn(*args)))
    return rows, timed


def bench_problem(item: shapes.Item, pick: str, cap_s: float) -> ProblemResult:
    """Time every exact kernel of one problem and the dispatcher, interleaved (see module doc)."""
    problem = item.problem
    inputs = evaluate.random_inputs(problem)
    args = problem.call_args(inputs)
    ref = problem.exact(args)
    rows, timed = _candidates(problem, args, ref, cap_s)
    dispatch = _dispatch_call(problem, inputs)
    if dispatch is not None:
        verdict = Verdict(kernel=DISPATCH, params={"pick": pick})
        usable = evaluate.judge(verdict, problem, np.asarray(dispatch()), ref, tuner.tolerance(problem))
        rows.append(_record(verdict, DISPATCH))
        if usable:
            timed.append((rows[-1], dispatch))
    samples = evaluate.interleaved(
        [call for _, call in timed], ROUNDS, min_runs=3, min_time_s=0.05, max_time_s=cap_s / ROUNDS
    )
    for (row, _), runs in zip(timed, samples, strict=True):
        summary = timing.summarize(runs)
        row.median_us, row.min_us, row.runs = summary.median_us, summary.min_us, summary.runs
    for row in rows:
        if row.median_us:
            row.gflops = problem.flops / row.median_us / 1e3
    return ProblemResult(problem.key, list(item.layers), problem.flops, pick, rows)


def dispatcher_pick(problem: Problem, budget_s: float) -> str:
    """The database's choice for ``problem``, tuning it first if it is not cached."""
    entry = state.database().lookup(problem.key)
    if entry is None:
        (entry,) = api.tune([problem], budget_s=budget_s)
    return registry.label(entry["choice"], dict(entry.get("params") or {}))


def run(
    shape_list: shapes.ShapeList,
    *,
    batches: Sequence[int] | None = None,
    dtypes: Sequence[str] | None = None,
    cap_s: float = 1.0,
    budget_s: float = tuner.DEFAULT_BUDGET_S,
    command: str = "",
    progress: bool = True,
) -> BenchResult:
    """Benchmark every problem of ``shape_list`` (see the module docstring)."""
    from tqdm import tqdm

    started = time.perf_counter()
    started_at = machine.now_iso()
    peak = measure_peak_gflops()
    items = shapes.expand(shape_list, batches, dtypes)
    results = []
    bar = tqdm(items, unit="problem", file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
    for item in bar:
        bar.set_description(report.short_key(item.problem.key)[:48])
        pick = dispatcher_pick(item.problem, budget_s)
        results.append(bench_problem(item, pick, cap_s))
    bar.close()
    return BenchResult(
        suite=shape_list.name,
        description=shape_list.description,
        command=command,
        started_at=started_at,
        wall_s=time.perf_counter() - started,
        machine=dict(machine.fingerprint()),
        peak_gflops=peak,
        peak_method=f"best of {PEAK_REPEATS} float32 {PEAK_N}x{PEAK_N}x{PEAK_N} GEMMs, numpy BLAS",
        problems=results,
    )


# --- Reporting. ------------------------------------------------------------------------------


def _kernel_columns(result: BenchResult) -> list[str]:
    names: list[str] = []
    for problem in result.problems:
        for candidate in problem.candidates:
            if candidate.kernel not in names and candidate.kernel != DISPATCH:
                names.append(candidate.kernel)
    return names


def _cell(candidate: CandidateTime | None) -> str:
    if candidate is None:
        return "n/a"
    if candidate.median_us is None:
        excluded = (candidate.reason or "").startswith(("not applicable", "approximate"))
        return "n/a" if excluded else "failed"
    text = report.fmt_time(candidate.median_us)
    if candidate.params:
        text += " (" + ",".join(f"{k}={v}" for k, v in candidate.params.items()) + ")"
    if candidate.capped:
        text += "*"
    if not candidate.ok:
        text += " ✗"
    return text


def _pct(result: BenchResult, problem: ProblemResult) -> tuple[float | None, float | None]:
    dispatch = problem.get(DISPATCH)
    gflops = None if dispatch is None else dispatch.gflops
    return gflops, None if gflops is None else 100 * gflops / result.peak_gflops


def table_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the side-by-side table (shared by the terminal and markdown output)."""
    kernels = _kernel_columns(result)
    headers = ["problem", "work", *kernels, "pick", "autotune()", "GFLOP/s", "% peak", "vs torch"]
    rows = []
    for problem in result.problems:
        gflops, pct = _pct(result, problem)
        rows.append(
            [
                report.short_key(problem.problem),
                report.fmt_flops(problem.flops),
                *(_cell(problem.best_of(kernel)) for kernel in kernels),
                problem.pick,
                report.fmt_time(problem.dispatch_us),
                "-" if gflops is None else f"{gflops:.3g}",
                "-" if pct is None else f"{pct:.1f}%",
                report.fmt_ratio(problem.speedup_vs_torch()),
            ]
        )
    return headers, rows


def _right(headers: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(headers) if name not in ("problem", "pick")]


def summary_text(result: BenchResult) -> str:
    """The terminal version of the table, with the peak."""
    headers, rows = table_rows(result)
    return "\n".join(
        [
            f"suite {result.suite}: {len(rows)} problems in {result.wall_s:.0f} s; "
            f"peak {result.peak_gflops:.1f} GFLOP/s ({result.peak_method})",
            tables.text(headers, rows, right=_right(headers)),
        ]
    )


def markdown(result: BenchResult) -> str:
    """``bench.md``: how it was measured, the table, the legend."""
    headers, rows = table_rows(result)
    machine = result.machine
    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items())
    threads = ", ".join(f"{k} {v}" for k, v in (machine.get("threads") or {}).items())
    isa = ", ".join(machine.get("isa") or [])
    lines = [
        f"# autotune bench: {result.suite}",
        "",
        f"{result.description[:1].upper()}{result.description[1:]}.",
        "",
        f"* command: `{result.command}`",
        f"* started {result.started_at}, wall time {result.wall_s:.0f} s",
        f"* machine: {machine.get('cpu')} ({machine.get('llvm_cpu')}, {isa}), {machine.get('cores')} cores;"
        f" threads: {threads}; {versions}; Python {platform.python_version()}",
        f"* peak: **{result.peak_gflops:.1f} GFLOP/s** ({result.peak_method}, same run)",
        "",
        tables.markdown(headers, rows, right=_right(headers)),
        "",
        "Kernel columns: median time of the kernel's fastest accepted setting (tile size in brackets);"
        " `✗` over the error tolerance (never chosen); `*` one run only (its warm-up exceeded the"
        " per-candidate cap); `n/a` not applicable. `naive` is the float64 reference, timed once."
        " `pick` is the database's choice, `autotune()` the median time of the public call that"
        " dispatches to it (argument checks and lookup included). GFLOP/s = direct-equivalent FLOPs"
        " (2·N·K·Ho·Wo·C/groups·kh·kw, or 2·m·k·n) / `autotune()` time; % peak against the GEMM above"
        " (above 100% is possible: FFT and Winograd do fewer arithmetic operations than they are credited);"
        " vs torch = torch's time / `autotune()` time. Medians of "
        f"{ROUNDS} interleaved rounds. Every measurement is in `bench.json`.",
        "",
        "![GFLOP/s per kernel](bench.png)",
        "",
    ]
    return "\n".join(lines)


def _axis_label(problem: ProblemResult) -> str:
    """The first layer name, else the short key without the op and dtype words."""
    if problem.layers:
        return problem.layers[0] + (f" +{len(problem.layers) - 1}" if len(problem.layers) > 1 else "")
    return " ".join(t for t in report.short_key(problem.problem).split()[1:] if "=" in t)


def plot(result: BenchResult, path: Path) -> None:
    """Grouped bars: effective GFLOP/s of every kernel per problem, log scale, peak as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = [k for k in _kernel_columns(result) if k != "naive"] + [DISPATCH]
    n_problems = len(result.problems)
    width = 0.8 / len(kernels)
    fig, ax = plt.subplots(figsize=(min(18.0, max(8.0, 0.55 * n_problems)), 6.0))
    positions = np.arange(n_problems)
    for i, kernel in enumerate(kernels):
        values = []
        for problem in result.problems:
            best = problem.get(DISPATCH) if kernel == DISPATCH else problem.best_of(kernel)
            values.append(best.gflops if best is not None and best.ok and best.gflops else 0.0)
        ax.bar(positions + (i - (len(kernels) - 1) / 2) * width, values, width, label=kernel)
    ax.axhline(result.peak_gflops, color="black", linestyle="--", linewidth=1, label="peak (fp32 GEMM)")
    ax.set_yscale("log")
    ax.set_ylabel("effective GFLOP/s (direct-equivalent)")
    ax.set_xticks(positions)
    ax.set_xticklabels([_axis_label(p) for p in result.problems], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("problem (input ⊛ filter)")
    ax.set_title(
        f"autotune bench {result.suite}: {result.machine.get('cpu')}\n"
        "bars above the GEMM peak: algorithms doing fewer multiplications than direct (Winograd, FFT)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: BenchResult, out_dir: Path) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and (with matplotlib) ``bench.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "bench.json", out_dir / "bench.md"]
    paths[0].write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result), encoding="utf-8")
    return paths + plot_if_possible(plot, result, out_dir / "bench.png")
