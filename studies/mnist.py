"""MNIST study: an SVD-compressed MLP — accuracy vs compression vs measured runtime.

**Default data: scikit-learn's 8x8 digits (1797 images), not MNIST** — they ship with the installed
packages, so the study runs without a download; real MNIST is read from its IDX files with
``--data DIR``. A ``d-512-128-10`` MLP (d = 784 on MNIST, 64 on the digits) is trained with a
fixed seed (and, for the accuracies, with ``--seeds`` seeds in all). Then, for every combination
of ranks on a grid (one list per layer, ``dense`` = keep the layer), its linear layers are
replaced by :class:`autotune.nn.SVDLinear` layers holding the truncated SVD of the trained weights,
and the study records

* the compression ratio: dense weights / factored weights of the compressed layers,
  ``Σ in·out / Σ r·(in + out)`` (biases are kept as they are and not counted), and the whole
  model's parameter ratio beside it;
* test accuracy, through the dispatcher (``model.eval()`` + ``torch.no_grad()``), with its 95%
  Wilson interval for the test-set size and the same compression after every training seed;
* the whole forward pass's runtime at batch 1 and batch 1000 through the dispatcher: every model
  is warmed up first (its first call tunes each new GEMM shape), then timed in interleaved rounds
  (each round times every model once, in a shuffled order) so that the load of this shared
  machine falls on all models alike; the statistic is the median over rounds, with the minimum
  beside it (on a loaded machine preemption adds whole scheduler ticks to some runs);
* with ``--finetune E``: the accuracy after E epochs of fine-tuning of the factored model (all
  parameters, torch autograd).

Writes ``mnist.csv``, ``mnist_accuracy_vs_compression.png``, ``mnist_runtime_vs_compression.png``,
``mnist_accuracy_vs_runtime.png`` (Pareto fronts marked) and ``summary.md`` into ``out/mnist``.

Threads: BLAS, torch and Numba run on one thread during the study unless ``--threads`` says
otherwise (see :func:`pinned_threads` for the measurement that motivates it).

Tuning database: the GEMM choices behind the timings are part of the result, so unless
``AUTOTUNE_CACHE_DIR`` is set (then the user's database is used), the study tunes into a private
database in ``out/mnist/autotune-cache/``: the run is self-contained, a re-run into the same
directory reuses its tuning, and the user's database is not filled with study-only shapes. Inspect
it with ``AUTOTUNE_CACHE_DIR=out/mnist/autotune-cache autotune show``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from autotune import nn as atnn
from autotune import state, timing
from kernels.matmul.lowrank import LowRank
from studies import _tables as tables
from studies.data import N_CLASSES, Dataset, load_dataset

NAME = "mnist"
HIDDEN: tuple[int, int] = (512, 128)
LAYERS: tuple[str, ...] = ("fc1", "fc2", "fc3")
#: Sets of compressed layers, the order of plot legends and colours: fc1, fc2, fc3, fc1+fc2, ….
GROUPS: tuple[str, ...] = tuple(
    "+".join(combo) for n in range(1, len(LAYERS) + 1) for combo in itertools.combinations(LAYERS, n)
)
#: Batch sizes of the runtime measurement.
BATCHES: tuple[int, ...] = (1, 1000)
#: Accuracy is evaluated in chunks of this many rows (the last one zero-padded), so evaluation
#: reuses the GEMM shapes the timing tunes instead of tuning one more shape per layer.
EVAL_BATCH = 1000
#: Each timing sample repeats the forward pass until it lasts about this long (timer resolution).
SAMPLE_S = 2e-3
Ranks = tuple[int | None, ...]
#: Training seeds per run: every compressed model's accuracy is reported over this many trainings.
SEEDS = 3
#: z of the two-sided 95% Wilson interval of a test accuracy.
Z95 = 1.959963984540054


# ---------------------------------------------------------------------------------------------
# Options.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options (``--out`` and ``--quick`` belong to the CLI)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory with the MNIST IDX files (DIR, DIR/raw or DIR/MNIST/raw; .gz or not); "
        "default: scikit-learn's embedded 8x8 digits (64-wide input layer)",
    )
    parser.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune every factored model for EPOCHS epochs and record the accuracy it recovers",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs of the dense model (default: per data set)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling")
    parser.add_argument(
        "--seeds",
        type=int,
        default=SEEDS,
        help=f"training seeds whose accuracy is reported (seed, seed+1, …; default {SEEDS}); timings "
        "and fine-tuning use the first",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of BLAS, torch and Numba during the study (default 1: reproducible on a shared "
        "machine; 0: leave the libraries' defaults)",
    )


@dataclass(frozen=True)
class TrainSettings:
    """Adam with a fixed seed; ``epochs`` depends on the data set size."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def default_epochs(dataset: Dataset, quick: bool) -> int:
    """Digits: 1437 images, 23 steps an epoch — 30 epochs take seconds. MNIST: 3 (1 if quick)."""
    if dataset.name == "digits":
        return 30
    return 1 if quick else 3


def rank_grid(in_features: int, out_features: int, quick: bool) -> Ranks:
    """``None`` (dense) and the powers of two that compress: r·(in + out) < in·out.

    Quick runs keep two ranks (a mild and a strong compression) of the layer.
    """
    breakeven = in_features * out_features / (in_features + out_features)
    ranks = [2**k for k in range(1, 16) if 2**k < breakeven]
    if quick:
        ranks = sorted({ranks[-1], ranks[len(ranks) // 2 - 1]}) if len(ranks) > 1 else ranks
    return (None, *sorted(ranks, reverse=True))


# ---------------------------------------------------------------------------------------------
# Model, training, evaluation.


def build_mlp(n_features: int, seed: int) -> torch.nn.Sequential:
    """``Linear(d,512) → ReLU → Linear(512,128) → ReLU → Linear(128,10)`` of autotune Linears."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        atnn.Linear(n_features, HIDDEN[0]),
        torch.nn.ReLU(),
        atnn.Linear(HIDDEN[0], HIDDEN[1]),
        torch.nn.ReLU(),
        atnn.Linear(HIDDEN[1], N_CLASSES),
    )


def linear_indices(model: torch.nn.Sequential) -> list[int]:
    """Positions of fc1, fc2, fc3 in the Sequential."""
    return [i for i, m in enumerate(model) if isinstance(m, (torch.nn.Linear, atnn.SVDLinear))]


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, settings: TrainSettings) -> float:
    """Minimise cross-entropy with Adam (torch autograd; the layers' training fallback).

    Args:
        x: float32 (n, d); y: int64 (n,).

    Returns:
        wall-clock seconds spent.
    """
    started = time.perf_counter()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(yt), generator=generator).split(settings.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xt[batch]), yt[batch]).backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - started


def predict(model: torch.nn.Module, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Predicted classes (n,) through the dispatcher, in zero-padded chunks of ``batch`` rows."""
    model.eval()
    labels = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            padded = np.zeros((batch, x.shape[1]), dtype=x.dtype)
            padded[: len(chunk)] = chunk  # rows are independent: padding cannot change a result
            labels.append(model(torch.from_numpy(padded))[: len(chunk)].argmax(dim=1).numpy())
    return np.concatenate(labels)


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(predict(model, x) == y))


# ---------------------------------------------------------------------------------------------
# Compression.


@dataclass(frozen=True)
class LayerShape:
    in_features: int
    out_features: int

    @property
    def dense_weights(self) -> int:
        return self.in_features * self.out_features

    def factored_weights(self, rank: int) -> int:
        return rank * (self.in_features + self.out_features)


def compression_ratio(shapes: Sequence[LayerShape], ranks: Ranks) -> float:
    """Σ in·out / Σ r·(in + out) over the compressed layers (1.0 when none is)."""
    pairs = [(shape, r) for shape, r in zip(shapes, ranks, strict=True) if r is not None]
    if not pairs:
        return 1.0
    return sum(s.dense_weights for s, _ in pairs) / sum(s.factored_weights(r) for s, r in pairs)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def compress(model: torch.nn.Sequential, factors: Sequence[LowRank], ranks: Ranks) -> torch.nn.Sequential:
    """A copy of ``model`` whose linear layer i is an SVDLinear of rank ``ranks[i]`` (None: kept)."""
    compressed = copy.deepcopy(model)
    for index, full, rank in zip(linear_indices(compressed), factors, ranks, strict=True):
        if rank is not None:
            dense = compressed[index]
            compressed[index] = atnn.SVDLinear.from_lowrank(
                full.truncate(rank), dense.bias, dtype=dense.weight.dtype
            )
    return compressed.eval()


def layer_factors(model: torch.nn.Sequential) -> list[LowRank]:
    """Full SVD (float64, LAPACK) of each linear layer's weight, computed once for all ranks."""
    return [
        LowRank.from_matrix(model[i].weight.detach().to(torch.float64).numpy(), method="full")
        for i in linear_indices(model)
    ]


# ---------------------------------------------------------------------------------------------
# Timing.


def _sample_inner(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Forward passes per timing sample so that one sample lasts about :data:`SAMPLE_S`."""
    started = time.perf_counter()
    model(x)
    return max(1, round(SAMPLE_S / max(time.perf_counter() - started, 1e-7)))


def time_forward(
    models: dict[str, torch.nn.Module], x: torch.Tensor, *, rounds: int, seed: int = 0
) -> dict[str, timing.Timing]:
    """Per-call time of ``model(x)`` for each model, in interleaved rounds (already warmed up).

    Each round times every model once (one sample = the mean over ``inner`` back-to-back calls),
    in an order shuffled per round; the result summarises the ``rounds`` samples per model
    (median, min, interquartile range, in µs per forward pass).
    """
    order = list(models)
    shuffler = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in order}
    with torch.no_grad():
        inner = {name: _sample_inner(models[name], x) for name in order}
        for _ in range(rounds):
            shuffler.shuffle(order)
            for name in order:
                model, n = models[name], inner[name]
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    model(x)
                samples[name].append((time.perf_counter_ns() - t0) / n / 1e3)
    return {name: timing.summarize(values) for name, values in samples.items()}


@contextmanager
def study_cache(directory: Path) -> Iterator[Path]:
    """Use ``directory`` as the tuning database unless ``AUTOTUNE_CACHE_DIR`` is set."""
    if os.environ.get("AUTOTUNE_CACHE_DIR"):
        yield state.database().path.parent
        return
    with state.use_cache(directory) as used:
        yield used


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run BLAS, torch and Numba on ``threads`` threads (0: leave them alone).

    Why one thread by default: with two threads on two cores shared with other work, a GEMM waits
    for its second thread to get a time slice — a 1000x64 @ 64x512 sgemm then takes two scheduler
    ticks instead of well under one whenever both cores are busy.
    Such bimodal timings would also mislead the tuner. The dispatcher's in-memory choices and the
    machine fingerprint (which records thread counts) are recomputed on entry and exit, so choices
    tuned here are filed under this thread setting and never reused under another.
    """
    if not threads:
        yield
        return
    saved = (torch.get_num_threads(), numba.get_num_threads())
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        _forget_choices()
        try:
            yield
        finally:
            torch.set_num_threads(saved[0])
            numba.set_num_threads(saved[1])
    _forget_choices()


def _forget_choices() -> None:
    state.reset()  # also forgets the fingerprint, which records the thread counts


# ---------------------------------------------------------------------------------------------
# The sweep.


@dataclass
class Row:
    """One model of the sweep (the dense one has every rank None)."""

    ranks: Ranks
    compression: float
    model_compression: float
    parameters: int
    accuracy: float
    finetuned_accuracy: float | None = None
    seed_accuracies: tuple[float, ...] = ()  # the same ranks after each training seed (first = accuracy)
    time_us: dict[int, timing.Timing] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)  # dense median / this median
    speedup_min: dict[int, float] = field(default_factory=dict)  # dense minimum / this minimum
    pareto: dict[int, bool] = field(default_factory=dict)

    @property
    def is_dense(self) -> bool:
        return all(r is None for r in self.ranks)

    @property
    def seed_mean(self) -> float:
        """Mean accuracy over the training seeds (the accuracy itself with one seed)."""
        return float(np.mean(self.seed_accuracies)) if self.seed_accuracies else self.accuracy

    @property
    def label(self) -> str:
        if self.is_dense:
            return "dense"
        return " ".join(
            f"{name}={'-' if r is None else r}" for name, r in zip(LAYERS, self.ranks, strict=True)
        )

    @property
    def compressed_layers(self) -> str:
        """e.g. ``"fc1+fc2"`` (``"none"`` for the dense model)."""
        return "+".join(name for name, r in zip(LAYERS, self.ranks, strict=True) if r is not None) or "none"


def pareto_front(runtimes: Sequence[float], accuracies: Sequence[float]) -> list[bool]:
    """True for points no other point beats: faster-or-equal and at-least-as-accurate, one strictly."""
    points = list(zip(runtimes, accuracies, strict=True))
    return [not any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for t2, a2 in points) for t, a in points]


#: Name of the reference model in :func:`measure_runtimes`: the dense model on plain torch ops.
TORCH_REFERENCE = "dense, plain torch.nn.Linear"


def sweep(
    model: torch.nn.Sequential,
    dataset: Dataset,
    grids: Sequence[Ranks],
    *,
    finetune: TrainSettings | None,
) -> tuple[list[Row], dict[str, torch.nn.Module]]:
    """Compress, evaluate and (fine-tune) every rank combination, dense first.

    Returns the rows (no timings yet) and the models by row label.
    """
    factors = layer_factors(model)
    shapes = [LayerShape(f.shape[1], f.shape[0]) for f in factors]
    dense_parameters = count_parameters(model)
    rows: list[Row] = []
    models: dict[str, torch.nn.Module] = {}
    for ranks in tqdm(list(itertools.product(*grids)), desc="mnist: compress + evaluate", leave=False):
        compressed = model if all(r is None for r in ranks) else compress(model, factors, ranks)
        parameters = count_parameters(compressed)
        row = Row(
            ranks=ranks,
            compression=compression_ratio(shapes, ranks),
            model_compression=dense_parameters / parameters,
            parameters=parameters,
            accuracy=accuracy(compressed, dataset.x_test, dataset.y_test),
        )
        if finetune is not None and not row.is_dense:
            tuned = copy.deepcopy(compressed)
            train(tuned, dataset.x_train, dataset.y_train, finetune)
            row.finetuned_accuracy = accuracy(tuned, dataset.x_test, dataset.y_test)
        rows.append(row)
        models[row.label] = compressed
    return rows, models


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a test accuracy measured on ``n`` images.

    The test set is a sample: with n = 360 (the digits) one image is 0.28 points and the interval
    around 97.5% is about ±1.6 points, so smaller differences between models are not resolved.
    """
    if n <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def seed_accuracies(
    dataset: Dataset, settings: TrainSettings, grids: Sequence[Ranks], seeds: Sequence[int]
) -> dict[Ranks, list[float]]:
    """Test accuracy of every rank combination after training with each of ``seeds`` (no timing)."""
    out: dict[Ranks, list[float]] = {}
    for seed in tqdm(seeds, desc="mnist: other training seeds", leave=False):
        model = build_mlp(dataset.n_features, seed)
        train(model, dataset.x_train, dataset.y_train, TrainSettings(settings.epochs, seed=seed))
        factors = layer_factors(model)
        for ranks in itertools.product(*grids):
            compressed = model if all(r is None for r in ranks) else compress(model, factors, ranks)
            out.setdefault(ranks, []).append(accuracy(compressed, dataset.x_test, dataset.y_test))
    return out


def plain_torch(model: torch.nn.Sequential) -> torch.nn.Sequential:
    """The same network on ``torch.nn.Linear`` (shared parameters): the no-dispatcher reference."""
    layers = []
    for layer in model:
        if isinstance(layer, atnn.Linear):
            twin = torch.nn.Linear(layer.in_features, layer.out_features, device="meta")
            twin.weight, twin.bias = layer.weight, layer.bias
            layer = twin
        layers.append(layer)
    return torch.nn.Sequential(*layers).eval()


def measure_runtimes(
    rows: Sequence[Row], models: dict[str, torch.nn.Module], dataset: Dataset, *, rounds: int, seed: int
) -> dict[int, timing.Timing]:
    """Time every model at each batch size; fill the rows' times, speed-ups and Pareto flags.

    The dense model on plain torch ops is timed in the same rounds as a reference; returns its
    times by batch size.
    """
    contenders = {**models, TORCH_REFERENCE: plain_torch(models["dense"])}
    rng = np.random.default_rng(seed)
    reference: dict[int, timing.Timing] = {}
    for batch in BATCHES:
        # test images drawn with replacement: the digits test set has fewer than 1000
        x = torch.from_numpy(dataset.x_test[rng.integers(0, len(dataset.x_test), batch)])
        with torch.no_grad():
            for model in tqdm(contenders.values(), desc=f"mnist: warm up (tune) batch {batch}", leave=False):
                model(x)
        times = time_forward(contenders, x, rounds=rounds, seed=seed + batch)
        dense = times["dense"]
        for row in rows:
            row.time_us[batch] = times[row.label]
            row.speedup[batch] = dense.median_us / times[row.label].median_us
            row.speedup_min[batch] = dense.min_us / times[row.label].min_us
        front = pareto_front([r.time_us[batch].median_us for r in rows], [r.accuracy for r in rows])
        for row, on_front in zip(rows, front, strict=True):
            row.pareto[batch] = on_front
        reference[batch] = times[TORCH_REFERENCE]
    return reference


# ---------------------------------------------------------------------------------------------
# Output: CSV, plots, summary.

CSV_FIELDS = (
    "label",
    "rank_fc1",
    "rank_fc2",
    "rank_fc3",
    "compressed_layers",
    "compression",
    "model_compression",
    "parameters",
    "accuracy",
    "accuracy_drop_pts",
    "finetuned_accuracy",
    "seed_accuracies",
    "seed_mean_accuracy",
    *(f"{stat}_b{b}_us" for b in BATCHES for stat in ("median", "min", "iqr")),
    *(f"speedup_b{b}" for b in BATCHES),
    *(f"speedup_min_b{b}" for b in BATCHES),
    *(f"pareto_b{b}" for b in BATCHES),
)


def csv_records(rows: Sequence[Row]) -> Iterator[dict[str, object]]:
    """One ``mnist.csv`` record (columns :data:`CSV_FIELDS`, formatted) per model."""
    dense = rows[0].accuracy
    for row in rows:
        record: dict[str, object] = {
            "label": row.label,
            **{f"rank_{name}": r for name, r in zip(LAYERS, row.ranks, strict=True)},
            "compressed_layers": row.compressed_layers,
            "compression": f"{row.compression:.4f}",
            "model_compression": f"{row.model_compression:.4f}",
            "parameters": row.parameters,
            "accuracy": f"{row.accuracy:.5f}",
            "accuracy_drop_pts": f"{100 * (dense - row.accuracy):.2f}",
            "finetuned_accuracy": None if row.finetuned_accuracy is None else f"{row.finetuned_accuracy:.5f}",
            "seed_accuracies": " ".join(f"{a:.5f}" for a in row.seed_accuracies),
            "seed_mean_accuracy": f"{row.seed_mean:.5f}",
        }
        for b in BATCHES:
            t = row.time_us[b]
            record.update({f"median_b{b}_us": f"{t.median_us:.2f}", f"min_b{b}_us": f"{t.min_us:.2f}"})
            record[f"iqr_b{b}_us"] = f"{t.spread_us:.2f}"
            record[f"speedup_b{b}"] = f"{row.speedup[b]:.3f}"
            record[f"speedup_min_b{b}"] = f"{row.speedup_min[b]:.3f}"
            record[f"pareto_b{b}"] = int(row.pareto[b])
        yield record


def _groups(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Compressed models by which layers are compressed, in :data:`GROUPS` order."""
    groups: dict[str, list[Row]] = {name: [] for name in GROUPS}
    for row in rows:
        if not row.is_dense:
            groups[row.compressed_layers].append(row)
    return {name: members for name, members in groups.items() if members}


def _color(group: str) -> str:
    """One colour per compressed-layer set, the same in every plot and run."""
    return f"C{GROUPS.index(group)}"


def _finetune_label(rows: Sequence[Row], epochs: int) -> str:
    return f"fine-tuned {epochs} epoch{'s' if epochs != 1 else ''}"


def upper_envelope(
    compressions: Sequence[float], accuracies: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Best accuracy reached at this compression or more: the points on the front, by compression.

    Returns the (compression, accuracy) points not beaten by a more-compressed, at-least-as-accurate
    point, sorted by compression.
    """
    best = -np.inf
    front: list[tuple[float, float]] = []
    for c, a in sorted(zip(compressions, accuracies, strict=True), key=lambda p: (-p[0], -p[1])):
        if a > best:
            front.append((c, a))
            best = a
    front.reverse()
    return [c for c, _ in front], [a for _, a in front]


def _plain_ticks(ax, *axes: str) -> None:
    """Log axes with plain numbers (``500``, ``2000``) instead of ``5×10²``.

    Ticks at 1, 2, 5 × 10ⁿ; at every integer × 10ⁿ when the axis spans less than a factor of 4
    (batch-1 runtimes, 50–100 µs, would otherwise get a single tick). Call after plotting.
    """
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        low, high = ax.get_xlim() if name == "x" else ax.get_ylim()
        subs = tuple(range(1, 10)) if high < 4 * low else (1.0, 2.0, 5.0)
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_compression(
    rows: Sequence[Row], path: Path, title: str, finetune_epochs: int, n_test: int
) -> None:
    """Best accuracy at ≥ each compression, per compressed-layer set, in the band that matters.

    One step line per set (its upper envelope, markers only where it steps); the dense accuracy
    with its 95% interval for the test-set size as a band; the envelope models' accuracy over the
    training seeds as min–max bars; the y-range zoomed on dense − 6 … dense + 2 points (how many
    models fall below it is written on the plot).
    """
    fig = Figure(figsize=(10.5, 5.8), layout="constrained")
    ax = fig.add_subplot()
    dense = rows[0].accuracy * 100
    low, high = (100 * v for v in wilson_interval(rows[0].accuracy, n_test))
    ax.axhspan(low, high, color="0.85", zorder=0, label=f"dense {dense:.2f}%, 95% interval (n = {n_test})")
    ax.axhline(dense - 1, color="0.4", lw=1, ls="--", label="dense − 1 point")
    for group, members in _groups(rows).items():
        xs, ys = upper_envelope([r.compression for r in members], [r.accuracy * 100 for r in members])
        ax.plot(xs, ys, "o-", ms=4, color=_color(group), lw=1.2, label=group)
        on_envelope = [
            r for r in members if (r.compression, r.accuracy * 100) in set(zip(xs, ys, strict=True))
        ]
        seeds = [r for r in on_envelope if len(r.seed_accuracies) > 1]
        ax.errorbar(
            [r.compression for r in seeds],
            [r.accuracy * 100 for r in seeds],
            yerr=[
                [100 * (r.accuracy - min(r.seed_accuracies)) for r in seeds],
                [100 * (max(r.seed_accuracies) - r.accuracy) for r in seeds],
            ],
            fmt="none",
            ecolor=_color(group),
            capsize=2,
            lw=0.8,
        )
    tuned = [r for r in rows if r.finetuned_accuracy is not None]
    if tuned:
        ax.step(
            *upper_envelope(
                [1.0, *[r.compression for r in tuned]], [dense, *[r.finetuned_accuracy * 100 for r in tuned]]
            ),
            where="pre",
            color="black",
            ls=":",
            lw=1.8,
            label=f"best {_finetune_label(rows, finetune_epochs)}, any set",
        )
    bottom, top = dense - 6, min(100.5, dense + 2)
    below = sum(r.accuracy * 100 < bottom for r in rows)
    ax.set_ylim(bottom, top)
    ax.text(
        0.01, 0.02, f"{below} of {len(rows)} models lie below this range", transform=ax.transAxes, fontsize=8
    )
    ax.set_xscale("log")
    _plain_ticks(ax, "x")
    ax.set_xlabel("compression ratio of the compressed layers (dense weights / factored weights, log)")
    ax.set_ylabel("test accuracy (%)")
    seeds = len(rows[0].seed_accuracies)
    seeds_text = f"; bars: {seeds} training seeds" if seeds > 1 else ""
    ax.set_title(f"{title}\nbest accuracy at ≥ each compression{seeds_text}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(title="compressed layers", fontsize=8, loc="outside right upper")
    fig.savefig(path, dpi=130)


#: Series drawn as lines in the runtime plot: one layer alone, and several layers at one common rank.
RUNTIME_SERIES: tuple[str, ...] = ("fc1", "fc2", "fc3", "fc1+fc2", "fc1+fc2+fc3")


def _same_rank(row: Row) -> bool:
    """True when every compressed layer of ``row`` has the same rank."""
    return len({r for r in row.ranks if r is not None}) == 1


def plot_runtime_vs_compression(rows: Sequence[Row], path: Path, title: str) -> None:
    """Every model as a light dot; lines for one layer alone and for layers sharing one rank."""
    fig = Figure(figsize=(12.5, 4.8), layout="constrained")
    axes = fig.subplots(1, len(BATCHES))
    groups = _groups(rows)
    for ax, batch in zip(axes, BATCHES, strict=True):
        ax.scatter(
            [r.compression for r in rows[1:]],
            [r.time_us[batch].median_us for r in rows[1:]],
            s=8,
            color="0.8",
            label="every model (median)",
        )
        for group in RUNTIME_SERIES:
            members = sorted((r for r in groups.get(group, []) if _same_rank(r)), key=lambda r: r.compression)
            if members:
                ax.plot(
                    [r.compression for r in members],
                    [r.time_us[batch].median_us for r in members],
                    "o-",
                    ms=4,
                    lw=1.3,
                    color=_color(group),
                    label=group if "+" not in group else f"{group}, one rank",
                )
        dense = rows[0].time_us[batch].median_us
        ax.axhline(dense, color="black", lw=1, label="dense (median)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax, "x", "y")
        ax.set_xlabel("compression ratio of the compressed layers (log)")
        ax.set_ylabel("forward pass, median (µs, log)")
        ax.set_title(f"batch {batch}: dense {dense:.0f} µs")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(
        *axes[0].get_legend_handles_labels(), title="compressed layers", fontsize=8, loc="outside right upper"
    )
    fig.suptitle(
        f"{title}\nruntime of the whole forward pass vs compression (through the dispatcher)", fontsize=10
    )
    fig.savefig(path, dpi=130)


def plot_accuracy_vs_runtime(rows: Sequence[Row], path: Path, title: str, finetune_epochs: int) -> None:
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    axes = fig.subplots(1, len(BATCHES))
    tuned = [r for r in rows if r.finetuned_accuracy is not None]
    for ax, batch in zip(axes, BATCHES, strict=True):
        runtimes = [r.time_us[batch].median_us for r in rows]
        ax.scatter(
            runtimes, [r.accuracy * 100 for r in rows], s=16, color="tab:blue", alpha=0.5, label="truncated"
        )
        _front(
            ax, [r for r in rows if r.pareto[batch]], batch, lambda r: r.accuracy, "tab:blue", "Pareto front"
        )
        if tuned:
            acc = [r.finetuned_accuracy for r in tuned]
            t_tuned = [r.time_us[batch].median_us for r in tuned]
            ax.scatter(
                t_tuned, [a * 100 for a in acc], s=16, color="tab:orange", alpha=0.5, label="fine-tuned"
            )
            on_front = pareto_front(t_tuned, acc)
            members = [r for r, keep in zip(tuned, on_front, strict=True) if keep]
            _front(
                ax, members, batch, lambda r: r.finetuned_accuracy, "tab:orange", "Pareto front, fine-tuned"
            )
        dense = rows[0]
        ax.scatter(
            [dense.time_us[batch].median_us],
            [dense.accuracy * 100],
            marker="*",
            s=220,
            color="black",
            zorder=5,
            label=f"dense ({dense.accuracy * 100:.2f}%)",
        )
        ax.set_xscale("log")
        _plain_ticks(ax, "x")
        ax.set_xlabel(f"forward pass at batch {batch}, median (µs, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    suffix = f" ({_finetune_label(rows, finetune_epochs)} in orange)" if tuned else ""
    fig.suptitle(f"{title}: accuracy vs runtime, Pareto front marked{suffix}")
    fig.savefig(path, dpi=130)


def _front(ax, members: Sequence[Row], batch: int, acc, color: str, label: str) -> None:
    members = sorted(members, key=lambda r: r.time_us[batch].median_us)
    ax.step(
        [r.time_us[batch].median_us for r in members],
        [acc(r) * 100 for r in members],
        where="post",
        color=color,
        lw=1.5,
        marker="o",
        ms=5,
        label=label,
    )


def best_within(
    rows: Sequence[Row], points: float = 1.0, *, by: str = "compression", finetuned: bool = False
) -> Row:
    """The most compressed row whose accuracy is within ``points`` of dense.

    Args:
        by: ``"compression"`` (the compressed layers' ratio) or ``"model_compression"``.
        finetuned: judge the fine-tuned accuracy (rows without one are not eligible).

    Ties go to the faster row at the largest batch.
    """
    floor = rows[0].accuracy - points / 100

    def score(row: Row) -> float | None:
        return row.finetuned_accuracy if finetuned and not row.is_dense else row.accuracy

    eligible = [r for r in rows if (a := score(r)) is not None and a >= floor - 1e-12]
    return max(eligible, key=lambda r: (getattr(r, by), -r.time_us[BATCHES[-1]].median_us))


def headline(row: Row, dense: Row, *, finetuned: bool = False) -> str:
    """One sentence: which model, its compression, accuracy and speed-ups."""
    acc = row.finetuned_accuracy if finetuned and row.finetuned_accuracy is not None else row.accuracy
    big = BATCHES[-1]
    seeds = f", over seeds {_seed_text(row)}" if len(row.seed_accuracies) > 1 and not finetuned else ""
    return (
        f"**{row.label}** — {row.compression:.2f}x on the compressed layers ({row.model_compression:.2f}x "
        f"whole model), accuracy {acc * 100:.2f}% ({100 * (acc - dense.accuracy):+.2f} points"
        f"{', fine-tuned' if finetuned else ''}{seeds}); forward pass at batch {big} "
        f"{row.time_us[big].median_us:.0f} µs vs dense {dense.time_us[big].median_us:.0f} µs: "
        f"**{row.speedup[big]:.2f}x** speed-up ({row.speedup_min[big]:.2f}x by minimum times; batch 1: "
        f"{row.speedup[1]:.2f}x)."
    )


def _row_cells(row: Row, dense_acc: float, finetuned: bool) -> list[str]:
    cells = [
        row.label,
        f"{row.compression:.2f}x",
        f"{row.model_compression:.2f}x",
        f"{row.accuracy * 100:.2f}",
        f"{100 * (row.accuracy - dense_acc):+.2f}",
    ]
    cells.append(_seed_text(row).removeprefix("mean ") if len(row.seed_accuracies) > 1 else "—")
    if finetuned:
        cells.append("—" if row.finetuned_accuracy is None else f"{row.finetuned_accuracy * 100:.2f}")
    for b in BATCHES:
        cells.append(f"{row.time_us[b].median_us:.0f} ({row.speedup[b]:.2f}x)")
    big = BATCHES[-1]
    cells.append(f"{row.time_us[big].min_us:.0f} ({row.speedup_min[big]:.2f}x)")
    return cells


def markdown_table(rows: Sequence[Row], dense_acc: float, finetuned: bool) -> list[str]:
    header = ["model", "compression", "whole model", "accuracy %", "Δ points", "over seeds: mean (min–max)"]
    if finetuned:
        header.append("fine-tuned %")
    header += [f"batch {b}: median µs (speed-up)" for b in BATCHES]
    header.append(f"batch {BATCHES[-1]}: min µs (speed-up)")
    return tables.markdown(header, [_row_cells(r, dense_acc, finetuned) for r in rows]).splitlines()


def single_layer_rows(rows: Sequence[Row]) -> list[Row]:
    """The dense model and every model with exactly one compressed layer (layer order, rank down)."""
    singles = [r for r in rows if sum(x is not None for x in r.ranks) == 1]
    return [rows[0], *sorted(singles, key=lambda r: (r.compressed_layers, -max(x or 0 for x in r.ranks)))]


def kernel_choices() -> Counter[str]:
    """How many matmul problems the active database dispatches to each kernel."""
    return Counter(entry.get("choice", "?") for entry in state.database().entries().values())


def write_summary(
    rows: Sequence[Row],
    path: Path,
    *,
    dataset: Dataset,
    settings: TrainSettings,
    train_s: float,
    finetune: TrainSettings | None,
    cache_dir: Path,
    rounds: int,
    threads: int,
    load: tuple[float, float, float],
    reference: dict[int, timing.Timing],
    quick: bool,
) -> None:
    dense = rows[0]
    best = best_within(rows)
    front = [r for r in rows if r.pareto[BATCHES[-1]]]
    n_test = len(dataset.y_test)
    low, high = wilson_interval(dense.accuracy, n_test)
    seeds_text = (
        f"; over {len(dense.seed_accuracies)} training seeds {_seed_text(dense)}"
        if len(dense.seed_accuracies) > 1
        else ""
    )
    choices = ", ".join(f"{name} {count}" for name, count in kernel_choices().most_common())
    lines = [
        f"# MNIST study: SVD-compressed MLP on {'MNIST' if dataset.name == 'mnist' else 'the 8x8 digits'}"
        f"{' (quick run)' if quick else ''}",
        "",
        f"* Data: {dataset.description}.",
        f"* Model: {dataset.n_features}-{HIDDEN[0]}-{HIDDEN[1]}-{N_CLASSES} MLP (ReLU), Adam lr "
        f"{settings.lr}, batch {settings.batch_size}, {settings.epochs} epochs, seed {settings.seed}: "
        f"trained in {train_s:.1f} s, dense test accuracy **{dense.accuracy * 100:.2f}%** (95% Wilson "
        f"interval {low * 100:.1f}–{high * 100:.1f}% for n = {n_test} test images, one image = "
        f"{100 / n_test:.2f} points{seeds_text}). Differences between models smaller than that interval are "
        "not resolved by this test set.",
        f"* Compressed models: every combination of ranks {_grid_text(rows)} — {len(rows) - 1} models; "
        "SVD of the trained weights in float64, factors in float32.",
        "* Compression = dense weights / factored weights of the compressed layers (biases not counted); "
        "'whole model' = all parameters of the dense model / of the compressed one.",
        f"* Runtime: the whole forward pass through the dispatcher (`model.eval()` + `torch.no_grad()`), "
        f"median of {rounds} interleaved rounds per model after a warm-up; speed-up = dense median / model "
        f"median, measured in the same rounds; "
        f"{f'{threads} thread(s) for BLAS, torch and Numba' if threads else 'library default threads'}. "
        "Batch 1000 draws test images with replacement.",
        f"* Machine load at the end of the timings (1/5/15-min load average): "
        f"{'/'.join(f'{v:.1f}' for v in load)} on {os.cpu_count()} cores. A forward pass that is preempted "
        "by other work waits for a scheduler tick (~4 ms here), and the longer the pass, the likelier that "
        "is: medians (the statistic asked for) then flatter slow models; minimum times are the lower bound "
        "free of that noise, and both speed-ups are reported.",
        "* Reference: the dense model on plain `torch.nn.Linear` (no dispatcher) took "
        f"{_times_text(reference)}; through the dispatcher {_times_text(dense.time_us)} (same rounds).",
        f"* Tuning database: `{cache_dir}` (GEMM choices: {choices or 'none recorded'}).",
    ]
    if finetune is not None:
        lines.append(
            f"* Fine-tuning: {finetune.epochs} epochs of Adam lr {finetune.lr} on all parameters of each "
            "factored model (torch autograd), seed as above."
        )
    lines += [
        "",
        "## Headline",
        "",
        f"* Largest compression within 1 point of dense accuracy: {headline(best, dense)}",
        "* Largest whole-model compression within 1 point: "
        + headline(best_within(rows, by="model_compression"), dense),
    ]
    if finetune is not None:
        lines.append(
            "* Largest compression within 1 point after fine-tuning: "
            + headline(best_within(rows, finetuned=True), dense, finetuned=True)
        )
    lines += [
        "",
        "## One layer compressed at a time",
        "",
        *markdown_table(single_layer_rows(rows), dense.accuracy, finetune is not None),
        "",
        f"## Pareto front: accuracy vs runtime at batch {BATCHES[-1]}",
        "",
        *markdown_table(
            sorted(front, key=lambda r: r.time_us[BATCHES[-1]].median_us),
            dense.accuracy,
            finetune is not None,
        ),
        "",
        "Every model is in `mnist.csv`. Plots: `mnist_accuracy_vs_compression.png`, "
        "`mnist_runtime_vs_compression.png`, `mnist_accuracy_vs_runtime.png`.",
        "",
    ]
    path.write_text("\n".join(lines))


def _seed_text(row: Row) -> str:
    """``mean 97.31% (96.94–97.50%)`` over the training seeds."""
    accs = [a * 100 for a in row.seed_accuracies]
    return f"mean {np.mean(accs):.2f}% ({min(accs):.2f}–{max(accs):.2f}%)"


def _times_text(times: dict[int, timing.Timing]) -> str:
    """``55 µs (min 52) at batch 1, 2988 µs (min 2366) at batch 1000``."""
    return ", ".join(f"{times[b].median_us:.0f} µs (min {times[b].min_us:.0f}) at batch {b}" for b in BATCHES)


def _grid_text(rows: Sequence[Row]) -> str:
    """``fc1 {dense, 32, 16}; fc2 {…}; fc3 {dense}`` from the ranks that occur in ``rows``."""
    parts = []
    for i, name in enumerate(LAYERS):
        ranks = sorted({r.ranks[i] for r in rows}, key=lambda r: -1 if r is None else -r)
        parts.append(f"{name} {{{', '.join('dense' if r is None else str(r) for r in ranks)}}}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Entry point.


def run(
    out: Path,
    *,
    quick: bool = False,
    data: str | Path | None = None,
    finetune: int = 0,
    epochs: int | None = None,
    seed: int = 0,
    seeds: int = SEEDS,
    threads: int = 1,
) -> Path:
    """Train, compress, measure; write CSV, three plots and ``summary.md`` into ``out/mnist``.

    Args:
        out: output root; the study writes into ``out / "mnist"``.
        quick: a small rank grid and fewer timing rounds (for tests and smoke runs).
        data: MNIST IDX directory (see :func:`studies.data.load_mnist`); None: the embedded digits.
        finetune: epochs of fine-tuning per factored model (0: none).
        epochs: training epochs of the dense model (None: :func:`default_epochs`).
        seed: initialisation and shuffling seed.
        seeds: training seeds (seed, seed+1, …) whose accuracy is reported for every model.
        threads: BLAS/torch/Numba threads for the whole study (:func:`pinned_threads`; 0: defaults).
    """
    if finetune < 0 or (epochs is not None and epochs < 1) or threads < 0 or seeds < 1:
        raise ValueError(
            f"mnist: need finetune >= 0, epochs >= 1, threads >= 0, seeds >= 1; got finetune={finetune}, "
            f"epochs={epochs}, threads={threads}, seeds={seeds}"
        )
    target = Path(out) / NAME
    target.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(data)
    settings = TrainSettings(epochs=epochs or default_epochs(dataset, quick), seed=seed)
    tune_settings = TrainSettings(epochs=finetune, lr=settings.lr, seed=seed) if finetune else None
    rounds = 5 if quick else 31
    with study_cache(target / "autotune-cache") as cache_dir, pinned_threads(threads):
        model = build_mlp(dataset.n_features, seed)
        train_s = train(model, dataset.x_train, dataset.y_train, settings)
        grids = [
            rank_grid(m.in_features, m.out_features, quick) for m in model if isinstance(m, torch.nn.Linear)
        ]
        if quick:
            grids[2] = (None,)  # fc3 holds 1% of the weights; the quick run skips it
        rows, models = sweep(model, dataset, grids, finetune=tune_settings)
        others = seed_accuracies(dataset, settings, grids, range(seed + 1, seed + seeds))
        for row in rows:
            row.seed_accuracies = (row.accuracy, *others.get(row.ranks, []))
        reference = measure_runtimes(rows, models, dataset, rounds=rounds, seed=seed)
        load = os.getloadavg()
        title = (
            f"{'MNIST' if dataset.name == 'mnist' else 'scikit-learn digits (8x8, not MNIST)'} "
            f"{dataset.n_features}-512-128-10 MLP"
        )
        tables.write_csv(csv_records(rows), target / "mnist.csv", CSV_FIELDS)
        plot_accuracy_vs_compression(
            rows, target / "mnist_accuracy_vs_compression.png", title, finetune, len(dataset.y_test)
        )
        plot_runtime_vs_compression(rows, target / "mnist_runtime_vs_compression.png", title)
        plot_accuracy_vs_runtime(rows, target / "mnist_accuracy_vs_runtime.png", title, finetune)
        write_summary(
            rows,
            target / "summary.md",
            dataset=dataset,
            settings=settings,
            train_s=train_s,
            finetune=tune_settings,
            cache_dir=cache_dir,
            rounds=rounds,
            threads=threads,
            load=load,
            reference=reference,
            quick=quick,
        )
    return target
