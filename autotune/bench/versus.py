"""``autotune bench --vs-torch``: autotune against plain PyTorch, each in a process of its own.

What a user compares is not our kernels against PyTorch inside our process but their program with
autotune against the same program without it. So two worker processes (``_worker.py``)
run side by side:

* **torch**: ``torch.nn.functional.conv2d`` (or the plain model) in a process that never imports
  autotune — PyTorch's defaults, what the user would run instead;
* **autotune**: ``autotune.conv2d`` (or the model after ``autotune.nn.convert``), dispatching from
  the database; a problem not yet in it is tuned by this process first, so the tuning runs with
  the very thread settings of the calls it serves. ``import_first`` chooses whether torch or
  autotune is imported first.

Both get the same seeded shapes. Each of :data:`ROUNDS` rounds runs in a *fresh* pair of processes
(the autotune side tunes in the first and reads the database after), timing alternates between
them per problem and the order flips every round, so load on a shared machine hits both; a side's
time in a round is the 20th percentile of its runs that were not preempted
(:mod:`autotune.timing`), and its time is the median over rounds. Fresh processes because the same
call differs between two processes by up to 8% and drifts within one (BENCHMARKS.md §17): one
pair of processes measured one draw of that, not the typical user's process. The report gives
per problem both times, the speed-up torch/autotune, autotune's pick, GFLOP/s and % of this
machine's peak, and the tuner's in-process timing of torch next to torch's own-process timing
(they should agree: one thread pool, ``kernels/pool.py``); then the geometric mean and the worst.

``control="plain"`` is the A/A run that tells how far apart two *identical* processes are: the
autotune side is replaced by a second plain-PyTorch process. Its ratios are the noise floor a real
run's rows should be read against (the same ``F.conv2d`` call differs between processes by their
heap history and page faults, BENCHMARKS.md §1). ``control="imported"`` measures what merely
having autotune in the process costs the user's own calls: the second process imports autotune
(in the ``import_first`` order) and runs each of its Numba kernels once, then times the very same
plain ``F.conv2d`` calls. ``warm_heap`` has both processes allocate and free 30 MiB first, so that
neither pays glibc's fresh pages on every large output (a process that has run its model once
does not; without it a single-problem run can charge one side thousands of faults per call).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotune import report, shapes, tables, timing
from autotune.bench import plot_if_possible
from autotune.problem import ConvProblem

#: Alternating timing rounds per problem.
ROUNDS = 5
WORKER = Path(__file__).with_name("_worker.py")
SIDES = ("torch", "autotune")


@dataclass
class Row:
    """One problem (or the whole model) measured on both sides (times in microseconds)."""

    problem: str
    layers: list[str]
    flops: int
    torch_us: float
    autotune_us: float
    pick: str = ""
    tuner_torch_us: float | None = None  # the tuner's in-process timing of the torch candidate
    preempted: dict[str, int] = field(default_factory=dict)
    #: Median minor page faults of a call per side: the allocator effect (BENCHMARKS.md §1), which
    #: makes the same ``F.conv2d`` slower in the process that faults.
    faults: dict[str, float] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.torch_us / self.autotune_us


@dataclass
class VersusResult:
    """A whole side-by-side run."""

    suite: str
    command: str
    import_first: str
    peak_gflops: float
    threads: dict[str, Any]
    rows: list[Row]
    control: str = ""  # "plain": an A/A run; "imported": plain calls beside a process with autotune
    warm_heap: bool = False  # both processes raised glibc's mmap threshold first

    def geomean(self) -> float:
        return math.exp(sum(math.log(r.speedup) for r in self.rows) / len(self.rows))

    def worst(self) -> Row:
        return min(self.rows, key=lambda r: r.speedup)


class Worker:
    """A worker process speaking JSON lines."""

    def __init__(self, side: str, env: dict[str, str]) -> None:
        self.side = side
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited (code {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.ask_quietly({"op": "quit"})
            self.process.wait(timeout=30)

    def ask_quietly(self, request: dict[str, Any]) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass


def _worker_env(side: str) -> dict[str, str]:
    env = dict(os.environ)
    if side == "torch":  # PyTorch's own defaults: nothing autotune might have set
        for name in ("AUTOTUNE_MODE", "NUMBA_THREADING_LAYER_PRIORITY"):
            env.pop(name, None)
    return env


def _problem_record(problem: ConvProblem) -> dict[str, Any]:
    return {**problem.to_dict(), "key": problem.key}


def _stats(samples: Sequence[Sequence[Any]]) -> timing.Timing:
    return timing.summarize(
        [timing.Sample(float(wall), bool(hit), int(faults)) for wall, hit, faults in samples]
    )


def _round(
    request: dict[str, Any], role: dict[str, str], count: int, flip: bool, min_time_s: float, progress: Any
) -> tuple[dict[str, Any], list[dict[str, list]]]:
    """One round in a fresh pair of processes: (their setup replies, per call index and side the
    samples), the sides alternating per call in the order given by ``flip``."""
    workers = {side: Worker(side, _worker_env(role[side])) for side in SIDES}
    try:
        setup = {side: workers[side].ask({**request, "side": role[side]}) for side in SIDES}
        samples: list[dict[str, list]] = []
        for index in range(count):
            found: dict[str, list] = {}
            for side in SIDES[::-1] if flip else SIDES:
                reply = workers[side].ask(
                    {"op": "time", "index": index, "min_runs": 3, "min_time_s": min_time_s}
                )
                found[side] = reply["samples"]
            samples.append(found)
            progress.update(1)
        return setup, samples
    finally:
        for worker in workers.values():
            worker.close()


def run(
    *,
    items: Sequence[shapes.Item] = (),
    model: str | None = None,
    input_shape: Sequence[int] = (),
    import_first: str = "torch",
    rounds: int = ROUNDS,
    min_time_s: float = 0.05,
    suite: str = "",
    command: str = "",
    control: str = "",
    warm_heap: bool = False,
) -> VersusResult:
    """Measure ``items`` (conv2d problems) or ``model`` on both sides; see the module docstring."""
    from tqdm import tqdm

    from autotune.bench.suite import measure_peak_gflops

    peak = measure_peak_gflops()
    request: dict[str, Any] = {"op": "setup", "seed": 0, "import_first": import_first, "warm_heap": warm_heap}
    if model:
        request.update(model=model, input=list(input_shape))
    else:
        request["problems"] = [_problem_record(item.problem) for item in items]  # type: ignore[arg-type]
    role = {"torch": "torch", "autotune": {"": "autotune", "plain": "torch"}.get(control, control)}
    count = 1 if model else len(items)
    per_round = []
    with tqdm(total=count * rounds, desc="vs torch", unit="call", leave=False) as progress:
        for round_ in range(rounds):  # the first round's autotune process tunes what the database lacks
            setup, samples = _round(request, role, count, round_ % 2 == 1, min_time_s, progress)
            per_round.append(samples)
    entries = setup["autotune"].get("entries", {})
    rows = []
    for index in range(count):
        stats = {side: [_stats(samples[index][side]) for samples in per_round] for side in SIDES}
        typical = {side: float(np.median([t.score_us for t in stats[side]])) for side in SIDES}
        if model:
            name, layers, flops, entry = (
                model,
                [f"input {'x'.join(map(str, input_shape))}"],
                0,
                {"pick": "model"},
            )
        else:
            problem = items[index].problem
            name, layers, flops = problem.key, list(items[index].layers), problem.flops
            entry = entries.get(problem.key, {})
        rows.append(
            Row(
                problem=name,
                layers=layers,
                flops=flops,
                torch_us=typical["torch"],
                autotune_us=typical["autotune"],
                pick=f"torch ({control} control)" if control else entry.get("pick", "?"),
                tuner_torch_us=entry.get("tuner_torch_us"),
                preempted={side: sum(t.preempted for t in stats[side]) for side in SIDES},
                faults={side: float(np.median([t.faults_per_run for t in stats[side]])) for side in SIDES},
            )
        )
    threads = setup["autotune"].get("threads", {})
    return VersusResult(suite, command, import_first, peak, threads, rows, control, warm_heap)


# --- Reporting. ------------------------------------------------------------------------------


def _gflops(row: Row, us: float) -> str:
    return f"{row.flops / us / 1e3:.0f}" if row.flops else ""


def table(result: VersusResult) -> tuple[list[str], list[list[str]]]:
    headers = [
        "problem",
        "layers",
        "pick",
        "torch (own process)",
        "autotune",
        "speed-up",
        "GFLOP/s torch / ours",
        "% peak ours",
        "tuner's torch / own",
        "page faults torch / ours",
    ]
    rows = []
    for row in result.rows:
        trust = f"{row.tuner_torch_us / row.torch_us:.2f}" if row.tuner_torch_us else ""
        pct = f"{100 * row.flops / row.autotune_us / 1e3 / result.peak_gflops:.0f}%" if row.flops else ""
        rows.append(
            [
                report.short_key(row.problem),
                report.layer_text(row.layers),
                row.pick,
                report.fmt_time(row.torch_us),
                report.fmt_time(row.autotune_us),
                f"{row.speedup:.2f}x",
                f"{_gflops(row, row.torch_us)} / {_gflops(row, row.autotune_us)}" if row.flops else "",
                pct,
                trust,
                "/".join(f"{row.faults.get(side, 0):.0f}" for side in SIDES) if row.faults else "",
            ]
        )
    return headers, rows


def summary_text(result: VersusResult) -> str:
    headers, rows = table(result)
    worst = result.worst()
    return "\n".join(
        [
            tables.text(headers, rows, right=[3, 4, 5, 6, 7, 8, 9]),
            f"geo-mean speed-up vs torch in its own process: {result.geomean():.3f}x; worst "
            f"{worst.speedup:.2f}x ({report.short_key(worst.problem)}); {_sides(result)}; "
            f"peak {result.peak_gflops:.0f} GFLOP/s",
        ]
    )


def _sides(result: VersusResult) -> str:
    heap = "; both heaps warmed (30 MiB allocated and freed first)" if result.warm_heap else ""
    if result.control == "imported":
        first = result.import_first
        return f"control run: plain PyTorch, beside it with autotune imported ({first} first){heap}"
    if result.control:
        return f"control run: plain PyTorch in both processes (A/A){heap}"
    return f"imported first: {result.import_first}{heap}"


def markdown(result: VersusResult) -> str:
    headers, rows = table(result)
    worst = result.worst()
    return "\n".join(
        [
            f"`{result.command}` — {len(result.rows)} rows, {_sides(result)}, threads {result.threads}",
            "",
            tables.markdown(headers, rows, right=[3, 4, 5, 6, 7, 8, 9]),
            "",
            f"Geo-mean speed-up **{result.geomean():.3f}x**, worst {worst.speedup:.2f}x "
            f"({report.short_key(worst.problem)}); peak {result.peak_gflops:.0f} GFLOP/s.",
        ]
    )


def write(result: VersusResult, out_dir: Path) -> list[Path]:
    """``versus.json``, ``versus.md`` and ``versus.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / "versus.json", out_dir / "versus.md", out_dir / "versus.png"
    record = {**asdict(result), "geomean": result.geomean()}
    json_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(result) + "\n", encoding="utf-8")
    return [json_path, md_path, *plot_if_possible(plot, result, png_path)]


def load(path: Path) -> VersusResult:
    """A :class:`VersusResult` back from its ``versus.json`` (to re-plot or compare runs)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    rows = [Row(**row) for row in record.pop("rows")]
    record.pop("geomean", None)
    return VersusResult(**record, rows=rows)


def plot(result: VersusResult, path: Path) -> None:
    """Speed-up over plain PyTorch per problem (bars from parity, 1.0), coloured by the pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = sorted({row.pick.split("(")[0] for row in result.rows})
    colours = {pick: plt.get_cmap("tab10")(i) for i, pick in enumerate(picks)}
    fig, ax = plt.subplots(figsize=(min(18.0, max(7.0, 0.45 * len(result.rows))), 5.5))
    positions = np.arange(len(result.rows))
    for pick in picks:
        chosen = [i for i, row in enumerate(result.rows) if row.pick.split("(")[0] == pick]
        gains = [result.rows[i].speedup - 1.0 for i in chosen]
        ax.bar(positions[chosen], gains, bottom=1.0, color=colours[pick], label=pick)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(0.95, color="grey", linestyle=":", linewidth=1, label="0.95 (acceptance floor)")
    ax.set_ylabel("speed-up over plain PyTorch\n(its time / autotune's)")
    ax.set_xlabel("problem (each side in a process of its own, alternating rounds)")
    ax.set_xticks(positions)
    ax.set_xticklabels(
        [report.short_key(r.problem).removeprefix("conv2d ").replace(" float32", "") for r in result.rows],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_title(
        f"autotune vs plain PyTorch: {result.suite}, {_sides(result)}; geo-mean {result.geomean():.3f}x",
        fontsize=10,
    )
    ax.legend(title="autotune's pick", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
