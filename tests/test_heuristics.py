"""Heuristic mode: the rules pick an applicable kernel, and the result is right."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autotune
from autotune import heuristics, state
from autotune.problem import ConvProblem
from kernels import registry


@given(
    c=st.integers(1, 64),
    k=st.integers(1, 64),
    hw=st.integers(8, 64),
    kernel=st.sampled_from([1, 3, 5, 7, 11]),
    stride=st.integers(1, 2),
    dtype=st.sampled_from(["float32", "float64"]),
    fixed=st.booleans(),
)
def test_rules_pick_an_applicable_kernel(c, k, hw, kernel, stride, dtype, fixed):
    problem = ConvProblem(
        (1, c, hw + kernel, hw + kernel),
        (k, c, kernel, kernel),
        stride=(stride, stride),
        dtype=dtype,
        weight="fixed" if fixed else None,
    )
    name, _ = heuristics.choose_conv(problem)
    spec = registry.get("conv2d", name)
    assert spec.applies(problem) and spec.exact and dtype in spec.dtypes


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (ConvProblem((1, 1, 49, 49), (1, 1, 3, 3)), "direct"),
        (ConvProblem((1, 64, 56, 56), (64, 64, 3, 3), padding=(1, 1, 1, 1)), "torch"),
        (ConvProblem((1, 64, 56, 56), (64, 64, 3, 3), padding=(1, 1, 1, 1), dtype="float64"), "im2col"),
        (ConvProblem((1, 3, 224, 224), (64, 3, 7, 7), stride=(2, 2), padding=(3, 3, 3, 3)), "torch"),
        (ConvProblem((1, 16, 64, 64), (16, 16, 11, 11), weight="fixed"), "fft_tiles"),
        (ConvProblem((1, 16, 28, 28), (16, 16, 11, 11)), "fft"),  # one-off, few outputs: the whole image
        (ConvProblem((1, 64, 14, 14), (64, 64, 7, 7), padding=(3, 3, 3, 3)), "torch"),
        (ConvProblem((1, 1, 256, 256), (1, 1, 31, 31)), "fft"),
    ],
)
def test_rules_follow_the_measurements(problem, expected):
    assert heuristics.choose_conv(problem)[0] == expected


@pytest.mark.parametrize("shape", [((1, 2, 9, 9), (3, 2, 3, 3)), ((1, 4, 40, 40), (8, 4, 7, 7))])
def test_heuristic_dispatch_matches_the_reference(shape):
    autotune.set_mode("heuristic")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape[0]).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    y = autotune.conv2d(x, w, padding=1)
    np.testing.assert_allclose(y, autotune.conv2d(x, w, padding=1, method="naive"), rtol=1e-4, atol=1e-4)


def _entry(choice: str, params: dict | None = None, torch_us: float = 200.0) -> dict:
    """A tuned entry in which ``choice`` ran in 100 us and PyTorch in ``torch_us``."""
    chosen = {"kernel": choice, "params": params or {}, "score_us": 100.0, "ok": True}
    timed = {"torch": {"kernel": "torch", "score_us": torch_us, "ok": True}, choice: chosen}
    return {"choice": choice, "params": params or {}, "candidates": timed}


def test_learned_pick_follows_the_nearest_tuned_problems():
    tuned = {
        "conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 dilation=1 groups=1 float32": _entry(
            "winograd", {"tile": 4}
        ),
        "conv2d x=1x128x28x28 w=128x128x3x3 stride=1 pad=1 dilation=1 groups=1 float32": _entry(
            "winograd", {"tile": 4}
        ),
        "conv2d x=1x1x49x49 w=1x1x3x3 stride=1 pad=0 dilation=1 groups=1 float32": _entry("direct"),
    }
    near = ConvProblem((1, 96, 40, 40), (96, 96, 3, 3), padding=(1, 1, 1, 1))
    prediction = heuristics.learned_conv(near, tuned)
    assert prediction is not None and (prediction.name, prediction.params) == ("winograd", {"tile": 4})
    assert prediction.neighbours[0][0].startswith("conv2d x=1x64x56x56") or prediction.neighbours[0][
        0
    ].startswith("conv2d x=1x128x28x28")
    far = ConvProblem((8, 3, 512, 512), (32, 3, 9, 9), stride=(2, 2))
    assert heuristics.learned_conv(far, tuned) is None
    assert heuristics.choose(far, tuned)[2].startswith("by rule")


def test_learned_pick_never_takes_a_choice_that_does_not_apply():
    tuned = {
        "conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 dilation=1 groups=1 float32": _entry(
            "winograd", {"tile": 2}
        )
    }
    strided = ConvProblem((1, 64, 56, 56), (64, 64, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    assert heuristics.learned_conv(strided, tuned) is None  # winograd needs stride 1


def test_learned_pick_weighs_measured_times_and_keeps_pytorch_on_near_ties():
    """Times relative to PyTorch's, not votes: one neighbour's large win outweighs another's
    narrow loss, and a predicted win inside the tuner's vendor margin keeps PyTorch."""
    key = "conv2d x=1x{c}x28x28 w={c}x{c}x3x3 stride=1 pad=1 dilation=1 groups=1 float32"
    winograd = {"tile": 4}
    tuned = {
        key.format(c=64): _entry("winograd", winograd, torch_us=300.0),  # 3x faster there
        key.format(c=128): {
            **_entry("torch"),
            "candidates": {
                "torch": {"kernel": "torch", "score_us": 100.0, "ok": True},
                "winograd(tile=4)": {"kernel": "winograd", "params": winograd, "score_us": 110.0, "ok": True},
            },
        },  # 1.1x slower there
    }
    between = ConvProblem((1, 96, 28, 28), (96, 96, 3, 3), padding=(1, 1, 1, 1))
    prediction = heuristics.learned_conv(between, tuned)
    assert prediction is not None and (prediction.name, prediction.params) == ("winograd", winograd)
    narrow = {key.format(c=64): _entry("winograd", winograd, torch_us=120.0)}  # 1.2x: inside the margin
    assert heuristics.learned_conv(between, narrow).name == "torch"
    untimed = {key.format(c=64): {"choice": "winograd", "params": winograd}}
    assert heuristics.learned_conv(between, untimed) is None  # nothing measured to predict from


def test_heuristic_mode_dispatches_the_learned_pick(isolated_cache, fast_tuning, monkeypatch):
    autotune.tune(["conv2d x=1x8x20x20 w=8x8x3x3 pad=1"])
    tuned_choice = next(iter(state.database().entries().values()))["choice"]
    autotune.set_mode("heuristic")
    problem = ConvProblem((1, 8, 24, 24), (8, 8, 3, 3), padding=(1, 1, 1, 1))
    name, _, source = heuristics.choose(problem, state.database().entries())
    assert name == tuned_choice and source.startswith("from the nearest tuned problems")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(problem.x_shape).astype(np.float32)
    w = rng.standard_normal(problem.w_shape).astype(np.float32)
    np.testing.assert_allclose(
        autotune.conv2d(x, w, padding=1),
        autotune.conv2d(x, w, padding=1, method="naive"),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize(
    ("problem", "pick"),
    [
        # a first layer whose 103 MB output PyTorch page-faults in every call: direct
        (ConvProblem((8, 3, 224, 224), (64, 3, 3, 3), padding=(1, 1, 1, 1)), ("direct", {})),
        (ConvProblem((1, 3, 224, 224), (64, 3, 3, 3), padding=(1, 1, 1, 1)), ("torch", {})),  # 13 MB
        (ConvProblem((8, 64, 224, 224), (64, 64, 3, 3), padding=(1, 1, 1, 1)), ("torch", {})),  # real work
        # large filters: whole-image FFT when the spectrum is cheap, tiled when only the taps are many
        (ConvProblem((1, 8, 64, 64), (8, 8, 21, 21), padding=(10, 10, 10, 10)), ("fft", {})),
        (ConvProblem((1, 16, 112, 112), (16, 16, 15, 15), padding=(7, 7, 7, 7)), ("fft", {"tile": 32})),
        (ConvProblem((1, 32, 56, 56), (32, 32, 7, 7), padding=(3, 3, 3, 3)), ("fft_tiles", {})),
        (ConvProblem((1, 3, 224, 224), (64, 3, 7, 7), padding=(3, 3, 3, 3)), ("torch", {})),  # 3 channels
        (ConvProblem((1, 64, 28, 28), (64, 64, 5, 5), padding=(2, 2, 2, 2)), ("torch", {})),  # 5×5
    ],
)
def test_rules(problem, pick):
    assert heuristics.choose_conv(problem) == pick
