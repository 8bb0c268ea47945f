"""tune_model: a model's conv2d/linear problems found, tuned, and hit by the converted model."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

import autotune
from autotune import cli, models

RESNET = Path(__file__).resolve().parent.parent / "examples" / "resnet.py"


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.load_factory(f"{RESNET}:resnet_tiny")().eval()


def test_collect_finds_every_layer_once_and_merges_identical_problems():
    model = tiny_model()
    items = models.collect(model, torch.randn(1, 3, 32, 32))
    layers = [name for item in items for name in item.layers]
    expected = [n for n, m in model.named_modules() if type(m) in (torch.nn.Conv2d, torch.nn.Linear)]
    assert sorted(layers) == sorted(expected)
    assert len(items) < len(expected)  # the repeated 3x3 layers of a stage share one problem
    keys = [item.problem.key for item in items]
    assert all(key.endswith("weight=fixed") for key in keys if key.startswith("conv2d"))
    assert any(key.startswith("matmul a=1x64 b=64x10") for key in keys)


def test_the_converted_model_hits_what_tune_model_tuned(counts, fast_tuning):
    model = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    result = autotune.tune_model(model, x, budget_s=0.2, compare=False)
    assert all(row.choice != "not tuned" for row in result.rows)
    before = counts["tune-started"]
    converted = autotune.nn.convert(copy.deepcopy(model))
    with torch.no_grad():
        y, ref = converted(x), model(x)
    assert counts["tune-started"] == before  # every layer's problem was already in the database
    assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_tune_model_command_prints_layers_and_the_whole_model(capsys, fast_tuning):
    code = cli.main(["tune", "--model", f"{RESNET}:resnet_tiny", "--input", "1x3x32x32", "--budget", "0.2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "layer1.0.conv1" in out and "fc" in out and "whole model" in out and "vs torch" in out
