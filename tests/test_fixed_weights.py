"""Fixed conv weights (module parameters, Weight handles): transformed once, tuned as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import autotune
import autotune.nn
from autotune import state, tuner
from autotune.problem import ConvProblem, parse_problem


def operands(seed=0, c=8, k=8, hw=12):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    return x, w


def torch_conv(x, w, padding=1):
    return F.conv2d(torch.from_numpy(x), torch.from_numpy(np.asarray(w)), padding=padding).numpy()


@pytest.mark.parametrize("method", ["winograd(tile=4)", "fft"])
def test_weight_handle_is_transformed_once(counts, method):
    x, w = operands()
    handle = autotune.Weight(w)
    before = counts["prepared"]
    for _ in range(3):
        y = autotune.conv2d(x, handle, padding=1, method=method)
    assert counts["prepared"] == before + 1
    np.testing.assert_allclose(y, torch_conv(x, w), rtol=1e-4, atol=1e-4)


def test_every_candidate_setting_of_a_fixed_weight_runs(fast_tuning):
    """Each kernel's ``prepare`` takes its settings' parameters: FFT's overlap-save tiles once
    failed with a TypeError on every fixed weight, so the tuner never timed them."""
    problem = ConvProblem((1, 4, 40, 40), (4, 4, 7, 7), padding=(3, 3, 3, 3), weight="fixed")
    result = tuner.tune_problem(problem)
    labels = {v.label for v in result.candidates}
    assert {"fft(tile=20)", "fft(tile=32)"} <= labels
    failed = [f"{v.label}: {v.reason}" for v in result.candidates if (v.reason or "").startswith("failed")]
    assert failed == []


def test_plain_arrays_are_never_prepared(counts):
    x, w = operands()
    before = counts["prepared"]
    for _ in range(3):
        autotune.conv2d(x, w, padding=1, method="winograd")
    assert counts["prepared"] == before


def test_parameter_is_reprepared_after_an_in_place_update(counts):
    x, w = operands(1)
    param = torch.nn.Parameter(torch.from_numpy(w.copy()))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        before = counts["prepared"]
        first = autotune.conv2d(xt, param, padding=1, method="fft")
        again = autotune.conv2d(xt, param, padding=1, method="fft")
        assert counts["prepared"] == before + 1
        param.mul_(2.0)  # bumps torch's version counter
        doubled = autotune.conv2d(xt, param, padding=1, method="fft")
    assert counts["prepared"] == before + 2
    np.testing.assert_allclose(again.numpy(), first.numpy())
    np.testing.assert_allclose(doubled.numpy(), 2 * first.numpy(), rtol=1e-4, atol=1e-4)


def test_fixed_weight_is_its_own_problem_and_times_the_prepared_call(fast_tuning):
    # FFT declines 3x3 filters; Winograd fewer than 8x8 channels
    for kernel, channels, filter_hw in (("winograd", 8, 3), ("fft", 4, 5)):
        w_shape = (channels, channels, filter_hw, filter_hw)
        fixed = tuner.tune_problem(ConvProblem((1, channels, 10, 10), w_shape, weight="fixed"))
        one_off = tuner.tune_problem(ConvProblem((1, channels, 10, 10), w_shape))
        assert kernel in {v.kernel for v in fixed.candidates if v.prepare_us is not None}
        assert all(v.prepare_us is None for v in one_off.candidates)


def test_dispatch_keys_fixed_weights_apart(isolated_cache, fast_tuning):
    x, w = operands(2, c=4, k=4, hw=10)
    autotune.conv2d(x, w, padding=1)
    autotune.conv2d(x, autotune.Weight(w), padding=1)

    keys = set(state.database().entries())
    assert keys == {
        "conv2d x=1x4x10x10 w=4x4x3x3 stride=1 pad=1 dilation=1 groups=1 float32",
        "conv2d x=1x4x10x10 w=4x4x3x3 stride=1 pad=1 dilation=1 groups=1 float32 weight=fixed",
    }
    assert parse_problem(max(keys, key=len)).weight == "fixed"


def test_module_conv_uses_prepared_weights():
    layer = autotune.nn.Conv2d(4, 6, 3, padding=1).eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = F.conv2d(x, layer.weight, layer.bias, padding=1)
        autotune.set_mode("heuristic")
        np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
