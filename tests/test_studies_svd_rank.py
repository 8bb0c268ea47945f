"""The SVD-rank study: its helpers against brute force, and the sanity of a quick run's numbers."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
from PIL import Image

import studies
from kernels.matmul.lowrank import LowRank
from studies import _tables as tables
from studies import svd_rank


def test_rank_grid_is_increasing_from_one_to_full_rank():
    grid = svd_rank.rank_grid(300, 20)
    assert grid[0] == 1 and grid[-1] == 300
    assert all(a < b for a, b in itertools.pairwise(grid))


def test_eckart_young_matches_the_truncation_error():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 30)) @ np.diag(np.geomspace(1, 1e-3, 30)) @ rng.standard_normal((30, 30))
    full = LowRank.from_matrix(a, method="full")
    for rank in (1, 7, 29, 30):
        residual = a - full.truncate(rank).to_dense()
        frob, spectral = svd_rank.eckart_young(full.s, rank)
        assert np.linalg.norm(residual) / np.linalg.norm(a) == pytest.approx(frob, abs=1e-12)
        assert np.linalg.norm(residual, 2) / full.s[0] == pytest.approx(spectral, abs=1e-12)


def test_rank_for_is_the_smallest_rank_within_tolerance():
    s = np.array([10.0, 5.0, 2.0, 1.0, 0.5])
    for tolerance in (0.5, 0.2, 0.1, 0.05, 0.0):
        rank = svd_rank.rank_for(s, tolerance)
        assert svd_rank.eckart_young(s, rank)[0] <= tolerance
        assert rank == 0 or svd_rank.eckart_young(s, rank - 1)[0] > tolerance


def test_factored_product_equals_the_truncated_dense_product():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20, 15)), rng.standard_normal((15, 6))
    factors = LowRank.from_matrix(a, 5, method="full")
    np.testing.assert_allclose(svd_rank.factored_product(factors, b), factors.to_dense() @ b, atol=1e-12)


def test_flop_ratio_and_break_even():
    assert svd_rank.flop_ratio(1024, 1024, 512) == 1.0
    assert svd_rank.flop_ratio(2048, 512, 64) == pytest.approx(2048 * 512 / (64 * 2560))
    ranks = [16, 64, 256, 1024]
    assert svd_rank.break_even(ranks, [256 / r for r in ranks]) == pytest.approx(256.0)
    assert svd_rank.break_even(ranks, [512 / r for r in ranks]) == pytest.approx(512.0)
    assert svd_rank.break_even(ranks, [2.0, 2.0, 2.0, 2.0]) is None


def test_the_mlp_learns_the_digits():
    x, y = svd_rank.digits_matrix()
    mlp = svd_rank.train_mlp(x, y, epochs=60)
    assert mlp.test_accuracy > 0.9
    assert [w.shape for w in mlp.weights] == [(256, 64), (128, 256), (10, 128)]
    assert [h.shape for h in mlp.activations] == [(1797, 256), (1797, 128)]
    assert all(np.all(h >= 0) for h in mlp.activations)  # ReLU outputs


def test_cat_image_is_the_grey_photograph():
    cat = svd_rank.cat_image()
    assert cat.shape == (300, 451) and 0.0 <= cat.min() < cat.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# The study, quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    target = svd_rank.run(tmp_path_factory.mktemp("studies"), quick=True)
    return target, {
        name: tables.read_csv(target / f"{name}.csv")
        for name in ("svd_error", "svd_speed", "svd_factorization")
    }


def _by_subject(rows):
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["subject"], []).append(row)
    return groups


def test_quick_run_writes_csvs_plots_and_summary(quick_run):
    target, _ = quick_run
    assert target.name == "svd-rank"
    pngs = {p.name for p in target.glob("*.png")}
    assert pngs == {
        "svd_error_vs_rank.png",
        "svd_singular_values.png",
        "svd_matmul_error_vs_rank.png",
        "svd_speedup_vs_rank.png",
        "svd_factorization_time.png",
    }
    for name in pngs:
        with Image.open(target / name) as image:
            assert image.width > 600 and image.height > 300
    summary = (target / "summary.md").read_text()
    assert "break-even" in summary.lower() and "Eckart–Young" in summary


def test_errors_do_not_increase_with_rank_and_vanish_at_full_rank(quick_run):
    _, csvs = quick_run
    groups = _by_subject(csvs["svd_error"])
    assert len(groups) == 7
    for subject, rows in groups.items():
        ranks = [int(r["rank"]) for r in rows]
        assert ranks == sorted(ranks)
        for field in ("frobenius", "spectral"):
            values = [float(r[field]) for r in rows]
            assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values)), (subject, field)
            assert values[-1] < 1e-12 and 0 < values[0] <= 1.0 + 1e-12, (subject, field)
        for r in rows:  # measured = optimal (Eckart–Young)
            assert float(r["frobenius"]) == pytest.approx(float(r["frobenius_eckart_young"]), abs=1e-10)
            assert float(r["spectral"]) == pytest.approx(float(r["spectral_eckart_young"]), abs=1e-10)
        assert float(rows[-1]["matmul_rel_l2"]) < 1e-10


def test_structured_matrices_need_lower_rank_than_random_ones(quick_run):
    _, csvs = quick_run
    groups = _by_subject(csvs["svd_error"])

    def frobenius_at(subject: str, fraction: float) -> float:
        rows = groups[subject]
        return float(
            min(rows, key=lambda r: abs(int(r["rank"]) / int(r["full_rank"]) - fraction))["frobenius"]
        )

    assert frobenius_at("cat photo (grey)", 0.1) < 0.1 < 0.5 < frobenius_at("Gaussian random", 0.1)
    assert frobenius_at("MLP fc1 activations", 0.1) < frobenius_at("MLP fc2 weights", 0.1)


def test_speed_rows_are_consistent(quick_run):
    _, csvs = quick_run
    rows = csvs["svd_speed"]
    assert [int(r["rank"]) for r in rows] == list(svd_rank.QUICK_SPEED.ranks)
    for r in rows:
        m, n, rank = int(r["m"]), int(r["n"]), int(r["rank"])
        assert float(r["flop_ratio"]) == pytest.approx(m * n / (rank * (m + n)))
        # median of paired ratios vs ratio of medians: the same thing up to timing noise
        assert 0.5 < float(r["speedup"]) / (float(r["dense_us"]) / float(r["factored_us"])) < 2.0
        assert float(r["dense_us"]) > 0 and float(r["factored_us"]) > 0


def test_randomized_svd_is_close_to_optimal_and_never_better(quick_run):
    _, csvs = quick_run
    for r in csvs["svd_factorization"]:
        assert 1 - 1e-6 <= float(r["error_ratio"]) < 1.2
        assert float(r["full_s"]) > 0 and float(r["randomized_s"]) > 0


def test_options_and_registration(tmp_path):
    parser = argparse.ArgumentParser()
    svd_rank.add_arguments(parser)
    assert parser.parse_args(["--epochs", "7"]).epochs == 7
    assert studies.load("svd-rank") is svd_rank
    with pytest.raises(ValueError, match="epochs"):
        svd_rank.run(tmp_path, epochs=0)
