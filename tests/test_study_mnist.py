"""The MNIST study: its pieces on hand-checked numbers, and a --quick run end to end."""

from __future__ import annotations

import argparse
import gzip
import inspect
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import studies
from autotune import state
from studies import _tables as tables
from studies import mnist

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILES = (
    "mnist.csv",
    "summary.md",
    "mnist_accuracy_vs_compression.png",
    "mnist_runtime_vs_compression.png",
    "mnist_accuracy_vs_runtime.png",
)


def test_compression_ratio_counts_only_compressed_layers():
    shapes = [mnist.LayerShape(64, 512), mnist.LayerShape(512, 128), mnist.LayerShape(128, 10)]
    assert mnist.compression_ratio(shapes, (None, None, None)) == 1.0
    assert mnist.compression_ratio(shapes, (8, None, None)) == pytest.approx(64 * 512 / (8 * 576))
    both = (64 * 512 + 512 * 128) / (16 * 576 + 32 * 640)
    assert mnist.compression_ratio(shapes, (16, 32, None)) == pytest.approx(both)


def test_rank_grid_keeps_only_compressing_ranks():
    assert mnist.rank_grid(64, 512, quick=False) == (None, 32, 16, 8, 4, 2)  # break-even 56.9
    assert mnist.rank_grid(128, 10, quick=False) == (None, 8, 4, 2)  # break-even 9.3
    assert mnist.rank_grid(784, 512, quick=False)[1] == 256  # break-even 309.7
    assert mnist.rank_grid(512, 128, quick=True) == (None, 64, 8)


def test_pareto_front():
    runtimes = [10.0, 5.0, 5.0, 3.0, 8.0, 1.0]
    accuracies = [0.9, 0.9, 0.8, 0.7, 0.95, 0.1]
    # 10/0.9 is beaten by 5/0.9; 5/0.8 by 5/0.9; the rest trade speed for accuracy
    assert mnist.pareto_front(runtimes, accuracies) == [False, True, False, True, True, True]


def test_study_cache_is_private_unless_configured(tmp_path, monkeypatch):
    configured = os.environ["AUTOTUNE_CACHE_DIR"]  # set by conftest
    with mnist.study_cache(tmp_path / "private") as used:
        assert used == Path(configured)
    monkeypatch.delenv("AUTOTUNE_CACHE_DIR")
    with mnist.study_cache(tmp_path / "private") as used:
        assert used == tmp_path / "private" == state.database().path.parent
    assert "AUTOTUNE_CACHE_DIR" not in os.environ and state.STATE.cache_dir is None


def test_cli_options_bind_to_run():
    parser = argparse.ArgumentParser()
    studies.load("mnist").add_arguments(parser)
    options = vars(parser.parse_args(["--data", "somewhere", "--finetune", "2", "--epochs", "3"]))
    assert options == {
        "data": Path("somewhere"),
        "finetune": 2,
        "epochs": 3,
        "seed": 0,
        "seeds": 3,
        "threads": 1,
    }
    inspect.signature(mnist.run).bind(Path("out"), quick=True, **options)


@pytest.mark.parametrize(("correct", "n"), [(351, 360), (9500, 10000), (180, 360)])
def test_wilson_interval_solves_the_score_equation(correct, n):
    # oracle: the endpoints p solve (p̂ − p)² = z²·p(1 − p)/n, the definition of the score interval
    p_hat = correct / n
    low, high = mnist.wilson_interval(p_hat, n)
    z = mnist.Z95
    for p in (low, high):
        assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    assert low < p_hat < high
    if (correct, n) == (351, 360):  # the digits' dense accuracy: 95.3–98.7%
        assert round(low, 3) == 0.953 and round(high, 3) == 0.987


def test_predict_pads_without_changing_results():
    model = mnist.build_mlp(6, seed=0).eval()
    x = np.random.default_rng(0).random((7, 6), dtype=np.float32)
    h = torch.from_numpy(x).double()
    for index in (0, 2, 4):  # oracle: torch float64 on the same parameters
        layer = model[index]
        h = torch.nn.functional.linear(h, layer.weight.detach().double(), layer.bias.detach().double())
        h = torch.relu(h) if index < 4 else h
    np.testing.assert_array_equal(mnist.predict(model, x, batch=4), h.argmax(1).numpy())


def fake_mnist(root: Path, n_train: int, n_test: int) -> None:
    """Four gzipped IDX files of random 5x3 images (format: see tests/test_data.py)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 5, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, array, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
            (root / f"{prefix}-{name}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))


def test_quick_run_writes_every_file(tmp_path, fast_tuning):
    out = mnist.run(tmp_path, quick=True, finetune=1)
    assert out == tmp_path / "mnist"
    for name in FILES:
        assert (out / name).stat().st_size > 0
    for name in FILES[2:]:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    rows = tables.read_csv(out / "mnist.csv")
    grids = [mnist.rank_grid(64, 512, True), mnist.rank_grid(512, 128, True), (None,)]
    assert len(rows) == np.prod([len(g) for g in grids])
    dense = rows[0]
    assert dense["label"] == "dense" and float(dense["compression"]) == 1.0
    assert float(dense["accuracy"]) >= 0.95  # the bar for the digits default
    shapes = [mnist.LayerShape(64, 512), mnist.LayerShape(512, 128), mnist.LayerShape(128, 10)]
    for row in rows:
        ranks = tuple(int(row[f"rank_{n}"]) if row[f"rank_{n}"] else None for n in mnist.LAYERS)
        assert float(row["compression"]) == pytest.approx(mnist.compression_ratio(shapes, ranks), rel=1e-4)
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert (row["finetuned_accuracy"] == "") == (row is dense)
        for b in mnist.BATCHES:
            assert float(row[f"median_b{b}_us"]) >= float(row[f"min_b{b}_us"]) > 0
    assert any(row["pareto_b1000"] == "1" for row in rows)
    # the most truncated model loses accuracy: the sweep measured something
    assert min(float(r["accuracy"]) for r in rows) < float(dense["accuracy"]) - 0.05
    summary = (out / "summary.md").read_text()
    assert "8x8" in summary and "64-512-128-10" in summary and "Largest compression within 1 point" in summary
    assert "95% Wilson interval" in summary and "over 3 training seeds" in summary
    for row in rows:  # each model's accuracy after the 3 trainings, the first being the one reported
        seeds = [float(a) for a in row["seed_accuracies"].split()]
        assert len(seeds) == 3 and seeds[0] == pytest.approx(float(row["accuracy"]), abs=1e-5)
    assert (out / "autotune-cache").exists() is False  # conftest configured a cache dir: it was used


def test_quick_run_on_mnist_idx_files(tmp_path, fast_tuning):
    """--data wiring: tiny fake 5x3 'MNIST' files give a 15-wide input layer."""
    fake_mnist(tmp_path / "data" / "MNIST" / "raw", n_train=40, n_test=12)
    out = mnist.run(tmp_path / "out", quick=True, data=tmp_path / "data", epochs=1)
    rows = tables.read_csv(out / "mnist.csv")
    assert rows[0]["label"] == "dense" and len(rows) > 1
    assert "MNIST IDX files" in (out / "summary.md").read_text()


def test_upper_envelope_keeps_the_best_accuracy_at_each_compression():
    compressions, accuracies = mnist.upper_envelope([1, 2, 4, 8, 3], [97, 96, 90, 50, 96.5])
    # (2, 96) is beaten by (3, 96.5): more compressed and more accurate
    assert (compressions, accuracies) == ([1, 3, 4, 8], [97, 96.5, 90, 50])
