"""SVD-rank study: accuracy and speed of truncated-SVD (low-rank) matrices and products vs rank.

Accuracy, for matrices of different character —

* a natural image: scikit-image's cat photograph (``chelsea``), grey-scale, 300×451;
* a batch of handwritten digits: scikit-learn's digits as a 1797×64 matrix (one image per row);
* a standard-normal random matrix of the cat's shape;
* the weights (fc1 256×64, fc2 128×256) and the hidden activations (1797×256, 1797×128) of a small
  64-256-128-10 MLP trained on the digits for a few seconds —

the relative reconstruction error of the rank-r truncation ``A_r`` (:class:`LowRank`, LAPACK SVD)
in the Frobenius and the spectral norm, ``‖A − A_r‖ / ‖A‖``, measured on the rebuilt matrix and
checked against Eckart–Young (``√(Σ_{i>r} σ_i²) / ‖σ‖`` and ``σ_{r+1} / σ_1``); and the error of a
product ``A_r B`` computed from the factors as ``U (S (Vᵀ B))``, with B the matrix A really meets
(the next layer's weights, the digits batch) or a Gaussian one.

Speed, on an m×n float32 matrix times an n×p one (one BLAS thread, so the two sides of each ratio
see the same machine): the measured time of the factored product ``U (S (Vᵀ B))`` against the dense
``A @ B``, next to the FLOP ratio ``mn / r(m+n)``, with the break-even ranks of both marked; and
the factorisation time of the full LAPACK SVD against the randomized SVD (Halko–Martinsson–Tropp)
per rank, with the randomized SVD's error relative to the optimal truncation.

Writes ``svd_error.csv``, ``svd_speed.csv``, ``svd_factorization.csv``, five PNGs and
``summary.md`` into ``out/svd-rank``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from skimage import color, data
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from autotune import timing
from autotune.evaluate import rel_l2_error, rel_max_error
from kernels.matmul.lowrank import LowRank
from studies import _plots
from studies import _tables as tables

NAME = "svd-rank"
HIDDEN = (256, 128)

# ---------------------------------------------------------------------------------------------
# Inputs.


@dataclass(frozen=True)
class Subject:
    """A matrix to truncate and the matrix it is multiplied with (``a @ partner``)."""

    name: str
    kind: str  # "image", "data", "random", "weights", "activations"
    a: np.ndarray
    partner: np.ndarray
    partner_label: str

    @property
    def shape_label(self) -> str:
        return f"{self.a.shape[0]}x{self.a.shape[1]}"


@dataclass(frozen=True)
class TrainedMLP:
    """The digits MLP: weights (out × in) and hidden activations (samples × units), float64."""

    weights: tuple[np.ndarray, ...]
    activations: tuple[np.ndarray, ...]
    inputs: np.ndarray
    test_accuracy: float
    train_s: float
    epochs: int


def cat_image() -> np.ndarray:
    """scikit-image's ``chelsea`` photograph in grey levels (luminance in [0, 1]), 300×451 float64."""
    return color.rgb2gray(data.chelsea()).astype(np.float64)


def digits_matrix() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as rows of 64 pixels in [0, 1], and their labels."""
    digits = load_digits()
    return digits.data.astype(np.float64) / 16.0, digits.target


def train_mlp(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0) -> TrainedMLP:
    """A 64-256-128-10 ReLU MLP, full-batch Adam on 80% of the digits; accuracy on the other 20%."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]
    torch.manual_seed(seed)
    sizes = (x.shape[1], *HIDDEN, 10)
    layers: list[torch.nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread of a shared machine
    try:
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[train]), yt[train])
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    train_s = time.perf_counter() - started
    with torch.no_grad():
        accuracy = float((model(xt[test]).argmax(1) == yt[test]).float().mean())
        hidden, h = [], xt
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                hidden.append(h.double().numpy())
    weights = tuple(m.weight.detach().double().numpy() for m in model if isinstance(m, torch.nn.Linear))
    return TrainedMLP(weights, tuple(hidden), x, accuracy, train_s, epochs)


def subjects(mlp: TrainedMLP, seed: int = 0) -> list[Subject]:
    """The matrices of the accuracy study, each with the matrix it multiplies."""
    rng = np.random.default_rng(seed)
    cat = cat_image()
    gaussian = rng.standard_normal(cat.shape)
    w1, w2, w3 = mlp.weights
    h1, h2 = mlp.activations
    return [
        Subject("cat photo (grey)", "image", cat, rng.standard_normal((cat.shape[1], 64)), "Gaussian 451x64"),
        Subject("digits batch", "data", mlp.inputs, w1.T, "fc1 weightsᵀ (64x256)"),
        Subject(
            "Gaussian random", "random", gaussian, rng.standard_normal((cat.shape[1], 64)), "Gaussian 451x64"
        ),
        Subject("MLP fc1 weights", "weights", w1, mlp.inputs.T, "digits batchᵀ (64x1797)"),
        Subject("MLP fc2 weights", "weights", w2, h1.T, "fc1 activationsᵀ (256x1797)"),
        Subject("MLP fc1 activations", "activations", h1, w2.T, "fc2 weightsᵀ (256x128)"),
        Subject("MLP fc2 activations", "activations", h2, w3.T, "fc3 weightsᵀ (128x10)"),
    ]


# ---------------------------------------------------------------------------------------------
# Accuracy vs rank.


@dataclass
class ErrorRow:
    """Errors of one subject truncated to one rank."""

    subject: str
    kind: str
    shape: str
    rank: int
    full_rank: int
    frobenius: float
    spectral: float
    frobenius_eckart_young: float
    spectral_eckart_young: float
    matmul_rel_l2: float
    matmul_rel_max: float
    partner: str


def rank_grid(full_rank: int, points: int) -> list[int]:
    """About ``points`` ranks from 1 to ``full_rank``, geometrically spaced, always ending at full rank."""
    grid = np.unique(np.round(np.geomspace(1, full_rank, points)).astype(int))
    return [int(r) for r in grid]


def eckart_young(s: np.ndarray, rank: int) -> tuple[float, float]:
    """Best possible (Frobenius, spectral) relative error of a rank-``rank`` approximation."""
    tail = s[rank:]
    frob = float(np.sqrt(np.sum(tail**2)) / np.sqrt(np.sum(s**2)))
    spectral = float(tail[0] / s[0]) if tail.size else 0.0
    return frob, spectral


def factored_product(factors: LowRank, b: np.ndarray) -> np.ndarray:
    """``U (S (Vᵀ B))``: the product with a low-rank matrix that never rebuilds it."""
    return factors.u @ (factors.s[:, None] * (factors.vt @ b))


def errors_vs_rank(subject: Subject, points: int) -> list[ErrorRow]:
    """Truncate ``subject.a`` to every rank of the grid; measure reconstruction and product errors."""
    a = subject.a
    full = LowRank.from_matrix(a, method="full")
    norm_f, norm_2 = np.linalg.norm(a), full.s[0]
    product = a @ subject.partner
    rows = []
    for rank in rank_grid(full.rank, points):
        factors = full.truncate(rank)
        residual = a - factors.to_dense()
        frob_ey, spectral_ey = eckart_young(full.s, rank)
        approx = factored_product(factors, subject.partner)
        rows.append(
            ErrorRow(
                subject=subject.name,
                kind=subject.kind,
                shape=subject.shape_label,
                rank=rank,
                full_rank=full.rank,
                frobenius=float(np.linalg.norm(residual) / norm_f),
                spectral=float(np.linalg.norm(residual, 2) / norm_2),
                frobenius_eckart_young=frob_ey,
                spectral_eckart_young=spectral_ey,
                matmul_rel_l2=rel_l2_error(approx, product),
                matmul_rel_max=rel_max_error(approx, product),
                partner=subject.partner_label,
            )
        )
    return rows


def numerical_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """Singular values above LAPACK's rounding floor ``σ_1 · max(m, n) · ε`` (numpy's matrix_rank rule)."""
    return int(np.sum(s > s[0] * max(shape) * np.finfo(np.float64).eps))


def rank_for(s: np.ndarray, tolerance: float) -> int:
    """Smallest rank whose Frobenius relative error (Eckart–Young) is ≤ ``tolerance``."""
    energy = np.cumsum((s**2)[::-1])[::-1]  # energy[r] = Σ_{i≥r} σ_i²
    tail = np.sqrt(np.append(energy, 0.0) / energy[0])  # tail[r] = error of rank r
    return int(np.argmax(tail <= tolerance))


# ---------------------------------------------------------------------------------------------
# Speed vs rank.


@dataclass
class SpeedRow:
    """Dense vs factored product time at one rank (medians over interleaved rounds)."""

    m: int
    n: int
    p: int
    rank: int
    dense_us: float
    factored_us: float
    speedup: float
    flop_ratio: float

    @property
    def dense_gflops(self) -> float:
        """Achieved rate of the dense product: ``2mnp`` flops."""
        return 2 * self.m * self.n * self.p / (self.dense_us * 1e3)

    @property
    def factored_gflops(self) -> float:
        """Achieved rate of ``U (S (Vᵀ B))``: ``2rnp + rp + 2mrp`` flops."""
        flops = 2 * self.rank * self.n * self.p + self.rank * self.p + 2 * self.m * self.rank * self.p
        return flops / (self.factored_us * 1e3)


@dataclass
class FactorizationRow:
    """Full vs randomized SVD time and the randomized SVD's error at one rank."""

    m: int
    n: int
    rank: int
    full_s: float
    randomized_s: float
    randomized_frobenius: float
    optimal_frobenius: float

    @property
    def error_ratio(self) -> float:
        return self.randomized_frobenius / self.optimal_frobenius if self.optimal_frobenius else 1.0


@dataclass(frozen=True)
class SpeedSetup:
    m: int
    n: int
    p: int
    ranks: tuple[int, ...]
    rounds: int


FULL_SPEED = SpeedSetup(1024, 1024, 256, (8, 16, 32, 64, 128, 256, 384, 512, 640, 768, 1024), rounds=5)
QUICK_SPEED = SpeedSetup(256, 256, 64, (8, 32, 64, 128, 192, 256), rounds=3)


def flop_ratio(m: int, n: int, rank: int) -> float:
    """Dense over factored multiply-adds per column of B: ``mn / r(m + n)``."""
    return m * n / (rank * (m + n))


def _median_us(fn: Callable[[], object]) -> float:
    return timing.measure(fn, min_runs=3, min_time_s=0.02, max_time_s=0.5).median_us


def speed_vs_rank(setup: SpeedSetup, seed: int = 0) -> list[SpeedRow]:
    """Dense ``A @ B`` vs factored ``U (S (Vᵀ B))``, float32, timed side by side.

    Each round visits every rank and times dense and factored back to back (each a median of ≥ 3
    runs); the row's speed-up is the median over rounds of these paired ratios. Rounds sweep all
    ranks, so a change of machine load during the run falls on every rank rather than on a few.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((setup.m, setup.n)).astype(np.float32)
    b = rng.standard_normal((setup.n, setup.p)).astype(np.float32)
    full = LowRank.from_matrix(a, method="full")

    def dense() -> np.ndarray:
        return a @ b

    def factored(factors: LowRank) -> Callable[[], np.ndarray]:
        return lambda: factored_product(factors, b)

    products = {rank: factored(full.truncate(rank)) for rank in setup.ranks}

    for fn in (dense, *products.values()):
        fn()  # warm-up: first touch of the outputs
    samples: dict[int, list[tuple[float, float]]] = {rank: [] for rank in setup.ranks}
    with tqdm(total=setup.rounds * len(setup.ranks), desc="svd-rank speed", leave=False) as bar:
        for _ in range(setup.rounds):
            for rank, product in products.items():
                samples[rank].append((_median_us(dense), _median_us(product)))
                bar.update()
    rows = []
    for rank, pairs in samples.items():
        dense_us, factored_us = (float(np.median(v)) for v in zip(*pairs, strict=True))
        speedup = float(np.median([d / f for d, f in pairs]))
        rows.append(
            SpeedRow(
                setup.m,
                setup.n,
                setup.p,
                rank,
                dense_us,
                factored_us,
                speedup,
                flop_ratio(setup.m, setup.n, rank),
            )
        )
    return rows


#: Extra sketch columns of the randomized SVD (``LowRank.from_matrix``'s default).
RANDOMIZED_OVERSAMPLE = 10


def factorization_vs_rank(setup: SpeedSetup, seed: int = 0) -> list[FactorizationRow]:
    """LAPACK SVD vs randomized SVD per rank on the Gaussian float32 matrix, timed side by side.

    The full SVD does not depend on the rank, but it is timed again beside every randomized one so
    that each ratio compares the two under the same machine load.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((setup.m, setup.n)).astype(np.float32)
    a64 = a.astype(np.float64)
    norm = np.linalg.norm(a64)
    s = np.linalg.svd(a64, compute_uv=False)

    def full() -> LowRank:
        return LowRank.from_matrix(a, method="full")

    full()  # warm-up
    rows = []
    # a sketch of rank + 10 columns that reaches min(m, n) is no longer randomized (and at full rank
    # the optimal error is 0): those ranks are not measured
    ranks = [r for r in setup.ranks if r + RANDOMIZED_OVERSAMPLE < min(setup.m, setup.n)]
    for rank in tqdm(ranks, desc="svd-rank factorisation", unit="rank", leave=False):
        run = lambda r=rank: LowRank.from_matrix(a, r, method="randomized")  # noqa: E731
        error = np.linalg.norm(a64 - run().to_dense().astype(np.float64)) / norm
        randomized_us = timing.measure(run, min_runs=3, max_time_s=3.0).median_us
        full_us = timing.measure(full, min_runs=1, max_time_s=1.0).median_us
        rows.append(
            FactorizationRow(
                setup.m,
                setup.n,
                rank,
                full_us / 1e6,
                randomized_us / 1e6,
                float(error),
                eckart_young(s, rank)[0],
            )
        )
    return rows


def break_even(ranks: Sequence[int], speedups: Sequence[float]) -> float | None:
    """Rank where the speed-up crosses 1, log-log interpolated between grid points (None: no crossing)."""
    r = np.log(np.asarray(ranks, dtype=np.float64))
    g = np.log(np.asarray(speedups, dtype=np.float64))
    for i in range(len(g) - 1):
        if g[i] >= 0 > g[i + 1]:
            return float(np.exp(r[i] + (r[i + 1] - r[i]) * g[i] / (g[i] - g[i + 1])))
    return None


# ---------------------------------------------------------------------------------------------
# Plots.


def _by_subject(rows: Sequence[ErrorRow]) -> dict[str, list[ErrorRow]]:
    groups: dict[str, list[ErrorRow]] = {}
    for row in rows:
        groups.setdefault(row.subject, []).append(row)
    return groups


#: Errors below this are rounding noise of an exact reconstruction.
EXACT = 1e-10
STYLE = {"image": "-", "data": "-", "random": "--", "weights": "-.", "activations": ":"}


def plot_errors(
    rows: Sequence[ErrorRow], path: Path, fields: tuple[str, str], labels: tuple[str, str], title: str
) -> Path:
    """Two panels (one per error field) of error vs rank / full rank, one line per matrix, log-log.

    Ranks at which the truncation is exact up to rounding (error < :data:`EXACT`: the full rank,
    and ranks past a matrix's numerical rank) are left out: they would stretch the error axis over
    ten empty decades.
    """
    fig, axes = _plots.figure(2, width_in=6.2, height_in=4.8)
    for ax, name, ylabel in zip(axes, fields, labels, strict=True):
        for subject, members in _by_subject(rows).items():
            kept = [m for m in members if getattr(m, name) >= EXACT]
            ax.plot(
                [m.rank / m.full_rank for m in kept],
                _plots.floor_for_log([getattr(m, name) for m in kept]),
                marker="o",
                ms=3,
                ls=STYLE[members[0].kind],
                label=f"{subject} ({members[0].shape}, full rank {members[0].full_rank})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            f"rank r / full rank min(m, n)  (log scale; exact ranks, error < {EXACT:.0e}, not drawn)"
        )
        ax.set_ylabel(ylabel)
        _plots.log_grid(ax)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    return _plots.save(fig, path)


def plot_singular_values(subjects_: Sequence[Subject], path: Path) -> Path:
    """Normalised singular values σ_i/σ_1 of every matrix, log-log."""
    fig, (ax,) = _plots.figure(1, width_in=7.0, height_in=4.8)
    for subject in subjects_:
        s = np.linalg.svd(subject.a, compute_uv=False)
        ax.plot(
            np.arange(1, s.size + 1),
            _plots.floor_for_log(s / s[0]),
            ls=STYLE[subject.kind],
            label=f"{subject.name} ({subject.shape_label})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i (log scale)")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title("Singular value spectra: how fast each matrix's energy decays")
    _plots.log_grid(ax)
    ax.legend(fontsize=7, loc="lower left")
    return _plots.save(fig, path)


def plot_speed(rows: Sequence[SpeedRow], path: Path) -> Path:
    """Times (dense, factored) and speed-up vs rank beside the FLOP ratio; break-evens marked."""
    fig, (ax_t, ax_s) = _plots.figure(2, width_in=6.2, height_in=4.8)
    ranks = [r.rank for r in rows]
    m, n, p = rows[0].m, rows[0].n, rows[0].p
    ax_t.plot(ranks, [r.dense_us / 1e3 for r in rows], "s--", color="0.4", label="dense A @ B (BLAS sgemm)")
    ax_t.plot(
        ranks, [r.factored_us / 1e3 for r in rows], "o-", color="tab:blue", label="factored U (S (Vᵀ B))"
    )
    ax_t.set_ylabel("time per product (ms, median)")
    ax_t.set_title(f"Time: ({m}x{n}) @ ({n}x{p}), float32, 1 thread")
    ax_s.plot(
        ranks, [r.speedup for r in rows], "o-", color="tab:blue", label="measured speed-up (dense / factored)"
    )
    ax_s.plot(ranks, [r.flop_ratio for r in rows], "k--", label="FLOP ratio mn / r(m+n)")
    ax_s.axhline(1.0, color="tab:red", lw=1)
    flop_even = m * n / (m + n)
    ax_s.axvline(flop_even, color="black", ls=":", lw=1)
    ax_s.annotate(
        f"FLOP break-even r = {flop_even:.0f}",
        (flop_even, 0.55),
        xycoords=("data", "axes fraction"),
        xytext=(3, 0),
        textcoords="offset points",
        rotation=90,
        fontsize=8,
        ha="left",
    )
    measured = break_even(ranks, [r.speedup for r in rows])
    if measured is not None:
        ax_s.axvline(measured, color="tab:blue", ls=":", lw=1)
        ax_s.annotate(
            f"measured break-even r ≈ {measured:.0f}",
            (measured, 0.55),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=8,
            ha="right",
            color="tab:blue",
        )
    ax_s.set_ylabel("speed-up over dense (x)")
    ax_s.set_title("Speed-up vs rank")
    for ax in (ax_t, ax_s):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rank r (log scale)")
        _plots.log_grid(ax)
        ax.legend(fontsize=8)
    return _plots.save(fig, path)


def plot_factorization(rows: Sequence[FactorizationRow], path: Path) -> Path:
    """Full vs randomized SVD time, and the randomized SVD's error over the optimal one, vs rank."""
    fig, (ax_t, ax_e) = _plots.figure(2, width_in=6.2, height_in=4.8)
    ranks = [r.rank for r in rows]
    ax_t.plot(
        ranks, [r.full_s for r in rows], "s--", color="0.4", label="full SVD (LAPACK gesdd), then truncate"
    )
    ax_t.plot(
        ranks,
        [r.randomized_s for r in rows],
        "o-",
        color="tab:green",
        label="randomized SVD (10 extra columns, 2 power iterations)",
    )
    ax_t.set_yscale("log")
    ax_t.set_ylabel("factorisation time (s, median)")
    ax_t.set_title(f"Factorising a {rows[0].m}x{rows[0].n} float32 Gaussian matrix, 1 thread")
    ax_e.plot(ranks, [r.error_ratio for r in rows], "o-", color="tab:green")
    ax_e.axhline(1.0, color="0.4", ls="--", lw=1, label="optimal (Eckart–Young)")
    ax_e.set_ylabel("randomized / optimal Frobenius error")
    ax_e.set_title("Randomized SVD accuracy (Gaussian: no spectral gap)")
    for ax in (ax_t, ax_e):
        ax.set_xscale("log")
        ax.set_xlabel("rank r (log scale)")
        _plots.log_grid(ax)
        ax.legend(fontsize=8)
    return _plots.save(fig, path)


# ---------------------------------------------------------------------------------------------
# Summary.

THRESHOLDS = (0.10, 0.05, 0.01)


def _rank_table(subjects_: Sequence[Subject]) -> list[str]:
    header = [
        "matrix",
        "shape",
        "full rank",
        "numerical rank",
        *(f"rank for ≤{t:.0%} Frobenius error" for t in THRESHOLDS),
        "spectral error at the 10% rank",
    ]
    rows = []
    for subject in subjects_:
        s = np.linalg.svd(subject.a, compute_uv=False)
        ranks = [rank_for(s, t) for t in THRESHOLDS]
        cells = [f"{r} ({r / s.size:.0%})" for r in ranks]
        spectral = f"{eckart_young(s, ranks[0])[1]:.3f}"
        rows.append(
            [subject.name, subject.shape_label, s.size, numerical_rank(s, subject.a.shape), *cells, spectral]
        )
    return tables.markdown(header, rows).splitlines()


def _matmul_table(rows: Sequence[ErrorRow]) -> list[str]:
    header = ["A", "multiplied by", "rank r", "‖A−A_r‖_F/‖A‖_F", "product rel. L2", "product rel. max"]
    lines = []
    for subject, members in _by_subject(rows).items():
        for row in members:
            if row.rank in _sample_ranks(members):
                lines.append(
                    [
                        subject,
                        row.partner,
                        row.rank,
                        f"{row.frobenius:.3f}",
                        f"{row.matmul_rel_l2:.3f}",
                        f"{row.matmul_rel_max:.3f}",
                    ]
                )
    return tables.markdown(header, lines).splitlines()


def _sample_ranks(members: Sequence[ErrorRow]) -> set[int]:
    """Three ranks per subject for the table: about 5%, 20% and 50% of the full rank."""
    grid = [m.rank for m in members]
    full = members[0].full_rank
    return {min(grid, key=lambda r, f=f: abs(r - f * full)) for f in (0.05, 0.2, 0.5)}


def _speed_table(rows: Sequence[SpeedRow]) -> list[str]:
    header = [
        "rank r",
        "dense (ms)",
        "factored (ms)",
        "measured speed-up",
        "FLOP ratio mn/r(m+n)",
        "dense GFLOP/s",
        "factored GFLOP/s",
    ]
    return tables.markdown(
        header,
        (
            [
                r.rank,
                f"{r.dense_us / 1e3:.2f}",
                f"{r.factored_us / 1e3:.2f}",
                f"{r.speedup:.2f}x",
                f"{r.flop_ratio:.2f}x",
                f"{r.dense_gflops:.0f}",
                f"{r.factored_gflops:.0f}",
            ]
            for r in rows
        ),
    ).splitlines()


def _spread_ms(rows: Sequence[SpeedRow]) -> str:
    dense = [r.dense_us / 1e3 for r in rows]
    return f"{min(dense):.2f}–{max(dense):.2f} ms (median of each rank's rounds)"


def _factorization_table(rows: Sequence[FactorizationRow]) -> list[str]:
    header = [
        "rank r",
        "full SVD (s)",
        "randomized SVD (s)",
        "randomized / full time",
        "randomized / optimal error",
    ]
    return tables.markdown(
        header,
        (
            [
                r.rank,
                f"{r.full_s:.3f}",
                f"{r.randomized_s:.3f}",
                f"{r.randomized_s / r.full_s:.2f}",
                f"{r.error_ratio:.4f}",
            ]
            for r in rows
        ),
    ).splitlines()


def _agreement(rows: Sequence[ErrorRow]) -> float:
    """Largest |measured − Eckart–Young| over every row and both norms."""
    return max(
        max(abs(r.frobenius - r.frobenius_eckart_young), abs(r.spectral - r.spectral_eckart_young))
        for r in rows
    )


def _findings(
    subjects_: Sequence[Subject],
    errors: Sequence[ErrorRow],
    speed: Sequence[SpeedRow],
    factorization: Sequence[FactorizationRow],
) -> list[str]:
    """The headline numbers, read off the measurements."""
    spectra = {s.name: np.linalg.svd(s.a, compute_uv=False) for s in subjects_}
    need = {name: rank_for(sv, 0.10) for name, sv in spectra.items()}

    def share(kind: str) -> str:
        return ", ".join(
            f"{s.name} {need[s.name]}/{spectra[s.name].size}" for s in subjects_ if s.kind == kind
        )

    m, n, p = speed[0].m, speed[0].n, speed[0].p
    measured = break_even([r.rank for r in speed], [r.speedup for r in speed])
    efficiency = [r.speedup / r.flop_ratio for r in speed]
    best = max(speed, key=lambda r: r.speedup)
    crossover = next((r.rank for r in factorization if r.randomized_s >= r.full_s), None)
    at_20 = {
        subject: min(members, key=lambda r: abs(r.rank - 0.2 * r.full_rank))
        for subject, members in _by_subject(errors).items()
    }
    products = ", ".join(
        f"{name} {row.matmul_rel_l2:.3f} vs {row.frobenius:.3f}" for name, row in at_20.items()
    )
    return [
        "* **Structure decides the rank** (rank for ≤ 10% Frobenius error / full rank): "
        f"{share('image')}; {share('data')}; {share('random')}. `svd_singular_values.png` shows why: the "
        "photo's spectrum falls by decades; the Gaussian's follows the Marchenko–Pastur law (the "
        "quarter-circle law for a square matrix): no gap, and for 300x451 all singular values within "
        "a factor of about (√451 + √300)/(√451 − √300) ≈ 9.8 of each other.",
        f"* **Weights vs activations** (same measure): {share('weights')}; {share('activations')}.",
        f"* **Measured errors are the optimal ones**: rebuilt-matrix errors match Eckart–Young to "
        f"{_agreement(errors):.1e} (both norms, every rank).",
        "* **Product error vs matrix error** at ≈ 20% of the full rank (‖A_r B − AB‖_F/‖AB‖_F vs "
        f"‖A − A_r‖_F/‖A‖_F): {products}. A real partner (the data a weight meets, the weights an "
        "activation meets) is not spread evenly over A's singular directions, so the product can lose "
        "less than the matrix; a Gaussian partner loses about as much.",
        f"* **Speed-up**: ({m}x{n}) @ ({n}x{p}) float32 on one thread: factored is {best.speedup:.1f}x "
        f"faster than dense BLAS at rank {best.rank} (FLOP ratio {best.flop_ratio:.1f}x); across the grid "
        f"the measured speed-up is {min(efficiency):.0%}–{max(efficiency):.0%} of the FLOP ratio — exactly "
        "the ratio of the achieved FLOP rates, which differ: dense "
        f"{min(r.dense_gflops for r in speed):.0f}–{max(r.dense_gflops for r in speed):.0f} GFLOP/s, "
        f"factored {min(r.factored_gflops for r in speed):.0f}–{max(r.factored_gflops for r in speed):.0f} "
        "GFLOP/s (on a shared machine the achieved rates move with the other jobs' load). "
        + (
            f"Break-even: rank ≈ {measured:.0f} measured vs {m * n / (m + n):.0f} from FLOPs."
            if measured
            else "The measured speed-up does not cross 1 inside the rank grid."
        ),
        f"* **Factorisation**: the full SVD takes {np.median([r.full_s for r in factorization]):.3f} s "
        "(median; it does not depend on the rank); the "
        f"randomized SVD {factorization[0].randomized_s:.3f} s at rank {factorization[0].rank}, and "
        + (
            f"it is slower than the full SVD from rank {crossover} on"
            if crossover
            else "it stays faster at every rank measured"
        )
        + f"; its Frobenius error is at most {max(r.error_ratio for r in factorization) - 1:.1%} above the "
        "optimum on this Gaussian matrix (quarter-circle law: a slowly decaying spectrum without a gap, "
        "the randomized SVD's hard case).",
    ]


def write_summary(
    path: Path,
    *,
    command: str,
    elapsed_s: float,
    mlp: TrainedMLP,
    subjects_: Sequence[Subject],
    errors: Sequence[ErrorRow],
    speed: Sequence[SpeedRow],
    factorization: Sequence[FactorizationRow],
    figures: Sequence[Path],
    rounds: int,
) -> Path:
    """``summary.md``: what the plots show, in numbers."""
    m, n, p = speed[0].m, speed[0].n, speed[0].p
    lines = [
        "# SVD-rank study: accuracy and speed vs rank",
        "",
        f"Command: `{command}` ({elapsed_s:.0f} s). Figures: "
        + ", ".join(f"`{f.name}`" for f in figures)
        + ".",
        "",
        f"MLP: 64-{HIDDEN[0]}-{HIDDEN[1]}-10 ReLU, full-batch Adam for {mlp.epochs} epochs on 80% of the "
        f"digits ({mlp.train_s:.1f} s), test accuracy {mlp.test_accuracy:.1%} on the other 20%. Activations "
        "are the hidden layers' ReLU outputs on all 1797 digits; units dead on every digit (all-zero "
        "columns): "
        + ", ".join(
            f"fc{i + 1} {int(np.sum(h.max(axis=0) == 0))}/{h.shape[1]}" for i, h in enumerate(mlp.activations)
        )
        + ". Reconstruction errors are measured on the "
        "rebuilt matrix `U diag(s) Vᵀ` (LAPACK SVD, float64).",
        "",
        "## What the plots show",
        "",
        *_findings(subjects_, errors, speed, factorization),
        "",
        "## Rank needed per matrix",
        "",
        "From the singular values (Eckart–Young, exact for every rank); percentages of the full rank. "
        "Numerical rank: singular values above `σ_1 · max(m, n) · ε` — below the full rank where whole "
        "columns are zero (ReLU units dead on every digit; pixels blank in every digit image).",
        "",
        *_rank_table(subjects_),
        "",
        "## Product error: `A_r B` computed as `U (S (Vᵀ B))`",
        "",
        *_matmul_table(errors),
        "",
        f"## Speed: ({m}x{n}) @ ({n}x{p}), float32, one BLAS thread",
        "",
        f"{rounds} rounds; each round visits every rank and times dense and factored back to back (each a "
        "median of ≥ 3 runs). Times are medians over rounds; the speed-up is the median of the paired "
        f"ratios. Dense time over all rounds and ranks: {_spread_ms(speed)} — the load of this shared "
        "machine moves absolute times, the paired ratios much less.",
        "",
        *_speed_table(speed),
        "",
        "## Factorisation time",
        "",
        *_factorization_table(factorization),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# Entry point.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options (``--out`` and ``--quick`` belong to the CLI)."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="E",
        help="MLP training epochs (full-batch; default 300, 60 with --quick)",
    )


ERROR_FIELDS = tuple(ErrorRow.__dataclass_fields__)
SPEED_FIELDS = (*SpeedRow.__dataclass_fields__, "dense_gflops", "factored_gflops")
FACTORIZATION_FIELDS = (*FactorizationRow.__dataclass_fields__, "error_ratio")


def run(out: Path, *, quick: bool = False, epochs: int | None = None) -> Path:
    """Measure accuracy and speed vs rank; write CSVs, plots and ``summary.md`` into ``out/svd-rank``.

    Args:
        out: output root; the study writes into ``out / "svd-rank"``.
        quick: fewer ranks, a 256x256 speed test, a shorter MLP training (for tests and smoke runs).
        epochs: MLP training epochs (default 300; 60 with ``quick``).
    """
    n_epochs = epochs if epochs is not None else (60 if quick else 300)
    if n_epochs < 1:
        raise ValueError(f"svd-rank: epochs must be >= 1, got {epochs}")
    started = time.perf_counter()
    target = Path(out) / NAME
    target.mkdir(parents=True, exist_ok=True)
    # One BLAS thread throughout: both sides of every speed ratio see the same machine, and on a
    # loaded machine multi-threaded LAPACK calls (the spectral norms) are several times slower.
    with threadpool_limits(limits=1):
        x, y = digits_matrix()
        mlp = train_mlp(x, y, epochs=n_epochs)
        inputs = subjects(mlp)
        errors = [row for subject in inputs for row in errors_vs_rank(subject, 10 if quick else 28)]
        setup = QUICK_SPEED if quick else FULL_SPEED
        speed = speed_vs_rank(setup)
        factorization = factorization_vs_rank(setup)
    tables.write_csv((asdict(r) for r in errors), target / "svd_error.csv", ERROR_FIELDS)
    tables.write_csv(
        ({**asdict(r), "dense_gflops": r.dense_gflops, "factored_gflops": r.factored_gflops} for r in speed),
        target / "svd_speed.csv",
        SPEED_FIELDS,
    )
    tables.write_csv(
        ({**asdict(r), "error_ratio": r.error_ratio} for r in factorization),
        target / "svd_factorization.csv",
        FACTORIZATION_FIELDS,
    )
    figures = [
        plot_errors(
            errors,
            target / "svd_error_vs_rank.png",
            ("frobenius", "spectral"),
            ("‖A − A_r‖_F / ‖A‖_F", "‖A − A_r‖₂ / ‖A‖₂"),
            "Relative reconstruction error of the rank-r truncated SVD",
        ),
        plot_singular_values(inputs, target / "svd_singular_values.png"),
        plot_errors(
            errors,
            target / "svd_matmul_error_vs_rank.png",
            ("matmul_rel_l2", "matmul_rel_max"),
            ("‖A_r B − AB‖_F / ‖AB‖_F", "max|A_r B − AB| / max|AB|"),
            "Error of the product A_r B = U (S (Vᵀ B)) vs the exact A B",
        ),
        plot_speed(speed, target / "svd_speedup_vs_rank.png"),
        plot_factorization(factorization, target / "svd_factorization_time.png"),
    ]
    command = (
        "autotune study svd-rank" + (" --quick" if quick else "") + (f" --epochs {epochs}" if epochs else "")
    )
    write_summary(
        target / "summary.md",
        command=command,
        elapsed_s=time.perf_counter() - started,
        mlp=mlp,
        subjects_=inputs,
        errors=errors,
        speed=speed,
        factorization=factorization,
        figures=figures,
        rounds=setup.rounds,
    )
    return target
