"""Problem keys: canonical, hashable, and their text form round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autotune.problem import ConvProblem, MatmulProblem, ProblemSyntaxError, parse_problem, problem_from_dict


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    return _consistent(draw, groups, kh, kw)


def _consistent(draw, groups, kh, kw):
    c_per_group = draw(st.integers(1, 8))
    return ConvProblem(
        x_shape=(draw(st.integers(1, 8)), groups * c_per_group, 16 + kh * 2, 16 + kw * 2),
        w_shape=(groups * draw(st.integers(1, 8)), c_per_group, kh, kw),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=tuple(draw(st.integers(0, 3)) for _ in range(4)),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        groups=groups,
        dtype=draw(st.sampled_from(["float32", "float64"])),
        tol=draw(st.sampled_from([None, 1e-3, 0.05])),
    )


@given(conv_problems())
def test_conv_text_form_round_trips(problem):
    assert parse_problem(problem.key) == problem
    assert problem_from_dict(problem.to_dict()) == problem
    assert hash(parse_problem(problem.key)) == hash(problem)


@given(
    st.integers(1, 512),
    st.integers(1, 512),
    st.integers(1, 512),
    st.sampled_from([None, 1, 4]),
    st.sampled_from([None, 1e-2]),
    st.sampled_from([None, "ab12cd34ef567890"]),
)
def test_matmul_text_form_round_trips(m, k, n, rank, tol, weight):
    problem = MatmulProblem((m, k), (k, n), "float32", rank_b=rank, tol=tol, weight=weight)
    assert parse_problem(problem.key) == problem
    assert problem_from_dict(problem.to_dict()) == problem


def test_short_specs_take_defaults():
    problem = parse_problem("conv2d x=1x64x56x56 w=64x64x3x3 pad=1")
    assert problem.key == "conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 dilation=1 groups=1 float32"
    assert problem.out_shape == (1, 64, 56, 56)
    assert problem.flops == 2 * 64 * 56 * 56 * 64 * 9


def test_padding_forms():
    assert parse_problem("conv2d x=1x1x8x8 w=1x1x3x3 pad=1,2").padding == (1, 1, 2, 2)
    assert parse_problem("conv2d x=1x1x8x8 w=1x1x4x4 pad=1,2,1,2").key.endswith(
        "pad=1,2,1,2 dilation=1 groups=1 float32"
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        ("conv3d x=1x1x8x8 w=1x1x3x3", "unknown op"),
        ("conv2d w=1x1x3x3", "needs x="),
        ("conv2d x=1x1x8 w=1x1x3x3", "4 dimensions"),
        ("conv2d x=1x1x8x8 w=1x1x3x3 stride=a", "integers"),
        ("conv2d x=1x1x8x8 w=1x1x3x3 float16", "unexpected token 'float16'"),
        ("conv2d x=1x1x8x8 w=1x1x3x3 colour=red", "unexpected token"),
        ("conv2d x=1x2x8x8 w=1x1x3x3", "expected w.shape"),
        ("conv2d x=1x1x2x2 w=1x1x3x3", "does not fit"),
        ("matmul a=2x3 b=4x5", "a.shape\\[1\\] == b.shape\\[0\\]"),
        ("matmul a=2x3 b=3x5 rank_b=9", "rank_B must be in 1..3"),
        ("matmul a=2x3 b=3x5 tol=abc", "tol="),
    ],
)
def test_syntax_errors_name_the_problem(spec, match):
    with pytest.raises(ProblemSyntaxError, match=match):
        parse_problem(spec)
