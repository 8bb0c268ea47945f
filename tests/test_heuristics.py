"""Heuristic mode: the rules pick an applicable kernel, and the result is right."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autotune
from autotune import heuristics
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
        (ConvProblem((1, 16, 64, 64), (16, 16, 11, 11), weight="fixed"), "fft"),
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
