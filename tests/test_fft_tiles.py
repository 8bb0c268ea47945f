"""FFT on 16×16 tiles with generated codelets: against the float64 oracles, and its contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from autotune.problem import ConvProblem
from kernels import registry
from kernels.conv2d import _fft_codegen, fft_tiles
from tests.test_conv_kernels import check_against_oracles, operands


@st.composite
def tile_problems(draw, extents: tuple[int, int] = (4, 13)) -> ConvProblem:
    """Stride 1, one group; (dilated) filter extents in ``extents`` (4 to 13: every generated m),
    uneven and asymmetric padding, channel counts that are and are not multiples of 8 (the lane
    blocks), images from part of one window to several rows of them."""
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kh, kw = draw(st.integers(1, extents[1])), draw(st.integers(1, extents[1]))
    footprint = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    assume(extents[0] <= max(footprint) <= extents[1])
    padding = tuple(draw(st.integers(0, 4)) for _ in range(4))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    assume(h + padding[0] + padding[1] >= footprint[0] and w + padding[2] + padding[3] >= footprint[1])
    channels = draw(st.integers(1, 19))
    return ConvProblem(
        x_shape=(draw(st.integers(1, 2)), channels, h, w),
        w_shape=(draw(st.integers(1, 19)), channels, kh, kw),
        padding=padding,
        dilation=dilation,
    )


@settings(max_examples=60, deadline=None)
@given(problem=tile_problems(), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_fft_tiles_matches_oracles(problem, seed, with_bias):
    check_against_oracles("fft_tiles", {}, problem, "float32", seed, with_bias)


@settings(max_examples=30, deadline=None)
@given(problem=tile_problems(extents=(6, 7)), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_fft_tiles_matches_oracles_in_float64(problem, seed, with_bias):
    """The codelets are the same code for both dtypes: float64 on one output size (m = 10) keeps
    the suite from compiling every size twice."""
    check_against_oracles("fft_tiles", {}, problem, "float64", seed, with_bias)


@settings(max_examples=15, deadline=None)
@given(problem=tile_problems(), seed=st.integers(0, 2**16), block=st.integers(1, 7))
def test_fft_tiles_blocks_across_rows_and_images_match_oracles(problem, seed, block):
    """Fused jobs of a few windows: blocks that start and end inside rows of windows and images."""
    check_against_oracles("fft_tiles", {"block": block}, problem, "float32", seed, True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fixed_weight_gives_the_one_off_result_bit_for_bit(dtype):
    """The kept slot matrices are the ones a one-off weight makes (same codelets, same order)."""
    problem = ConvProblem((2, 12, 30, 27), (10, 12, 7, 5), padding=(3, 2, 1, 3))
    x, w, b = operands(problem, dtype, seed=5, with_bias=True)
    args = (problem.stride, problem.padding, problem.dilation, problem.groups)
    prepared = fft_tiles.prepare(w)
    assert np.array_equal(fft_tiles.fft_tiles(x, prepared, b, *args), fft_tiles.fft_tiles(x, w, b, *args))


def test_slot_matrices_hold_the_filter_spectrum_over_256():
    """Row c of slot (u, v)'s matrix is (Re | −Im) of the 16×16 DFT of w[:, c] / 256; the pair
    slots hold the four real frequencies; checked against numpy's FFT in float64."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((9, 5, 6, 7))
    u = fft_tiles.transform_filter(w, (1, 1))
    spectrum = np.fft.fft(np.fft.rfft(w, n=16, axis=2), n=16, axis=3) / 256  # (K, C, u 0..8, v 0..15)
    k_out = w.shape[0]

    def slot_of(fu: int, fv: int) -> np.ndarray:
        return spectrum[:, :, fu, fv].T  # (C, K)

    for fu in range(1, 8):
        for fv in range(16):
            s = (fu - 1) * 16 + fv
            np.testing.assert_allclose(u[s, :, :k_out], slot_of(fu, fv).real, atol=1e-12)
            np.testing.assert_allclose(u[s, :, k_out:], -slot_of(fu, fv).imag, atol=1e-12)
    for h, fu in enumerate((0, 8)):
        for fv in range(1, 8):
            s = 112 + 7 * h + fv - 1
            np.testing.assert_allclose(u[s, :, :k_out], slot_of(fu, fv).real, atol=1e-12)
            np.testing.assert_allclose(u[s, :, k_out:], -slot_of(fu, fv).imag, atol=1e-12)
        np.testing.assert_allclose(u[126 + h, :, :k_out], slot_of(fu, 0).real, atol=1e-12)
        np.testing.assert_allclose(u[126 + h, :, k_out:], -slot_of(fu, 8).real, atol=1e-12)


def test_committed_codelets_are_what_the_generator_writes():
    assert _fft_codegen.TARGET.read_text(encoding="utf-8") == _fft_codegen.render()


def test_generated_ffts_are_the_dft():
    """The symbolic FFT, evaluated on numbers: forward real, forward complex and the inverse
    of a conjugate-symmetric sequence against numpy."""
    rng = np.random.default_rng(2)
    values = rng.standard_normal(16) + 1j * rng.standard_normal(16)

    def evaluate(graph: _fft_codegen.Graph, node, env: dict[str, float]) -> float:
        if node is None:
            return 0.0
        key = graph.keys[node]
        if key[0] == "load":
            return env[key[1]]
        if key[0] == "neg":
            return -evaluate(graph, key[1], env)
        if key[0] == "mul":
            return key[1] * evaluate(graph, key[2], env)
        a, b = evaluate(graph, key[1], env), evaluate(graph, key[2], env)
        return a + b if key[0] == "add" else a - b

    for real in (True, False):
        g = _fft_codegen.Graph()
        inputs = [(g.load(f"a{j}"), None if real else g.load(f"b{j}")) for j in range(16)]
        out = _fft_codegen.dft(g, inputs, -1)
        x = values.real if real else values
        env = {f"a{j}": values[j].real for j in range(16)} | {f"b{j}": values[j].imag for j in range(16)}
        got = np.array([evaluate(g, re, env) + 1j * evaluate(g, im, env) for re, im in out])
        np.testing.assert_allclose(got, np.fft.fft(x), atol=1e-12)
    g = _fft_codegen.Graph()
    half = (
        [(g.load("a0"), None)]
        + [(g.load(f"a{v}"), g.load(f"b{v}")) for v in range(1, 8)]
        + [(g.load("a8"), None)]
    )
    out = _fft_codegen.dft(g, _fft_codegen.hermitian(g, half), 1)
    spectrum = np.fft.rfft(values.real)
    env = {f"a{v}": spectrum[v].real for v in range(9)} | {f"b{v}": spectrum[v].imag for v in range(1, 8)}
    got = np.array([evaluate(g, re, env) for re, _ in out])
    np.testing.assert_allclose(got, 16 * values.real, atol=1e-12)
    assert all(im is None or abs(evaluate(g, im, env)) < 1e-12 for _, im in out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stride": (2, 2)}, "stride"),
        ({"groups": 2}, "groups"),
        ({"w_shape": (4, 4, 15, 15)}, "extent"),
        ({"block": -1}, "block"),
        ({"block": 2.5}, "block"),
    ],
)
def test_bad_settings_raise_value_errors_naming_them(kwargs, match):
    x = np.zeros((1, 4, 20, 20), dtype=np.float32)
    w = np.zeros(kwargs.pop("w_shape", (4, 4 // kwargs.get("groups", 1), 5, 5)), dtype=np.float32)
    call = {"stride": (1, 1), "groups": 1, "block": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        fft_tiles.fft_tiles(
            x, w, None, call["stride"], (0, 0, 0, 0), (1, 1), call["groups"], block=call["block"]
        )


def test_registry_offers_it_where_it_applies_and_says_why_not():
    spec = registry.get("conv2d", "fft_tiles")
    assert spec.applies(ConvProblem((1, 32, 56, 56), (32, 32, 7, 7), padding=(3, 3, 3, 3)))
    assert spec.worth_tuning(ConvProblem((1, 32, 56, 56), (32, 32, 7, 7)))
    assert not spec.applies(ConvProblem((1, 8, 56, 56), (8, 8, 3, 3)))  # Winograd's
    assert not spec.applies(ConvProblem((1, 8, 56, 56), (8, 8, 15, 15)))  # the whole-image FFT's
    assert not spec.applies(ConvProblem((1, 8, 56, 56), (8, 8, 7, 7), stride=(2, 2)))
    assert not spec.worth_tuning(ConvProblem((1, 4, 56, 56), (16, 4, 7, 7)))  # 4 input channels
    assert not spec.worth_tuning(ConvProblem((1, 64, 56, 56), (64, 64, 5, 5)))
    assert spec.worth_tuning(ConvProblem((1, 64, 56, 56), (64, 64, 3, 3), dilation=(3, 3)))  # extent 7
    assert "extent" in spec.needs and "channels" in spec.declines


def test_the_tuner_times_it_and_the_dispatcher_calls_it_with_a_fixed_weight(fast_tuning):
    """Through the library: a 16-channel 7×7 problem has it among the timed, checked candidates
    (a fixed and a one-off weight alike), and ``autotune.conv2d`` with a module parameter calls
    it on torch tensors, matching PyTorch in float64."""
    import torch

    import autotune
    from autotune import tuner

    for weight in (None, "fixed"):
        problem = ConvProblem((1, 16, 20, 20), (16, 16, 7, 7), padding=(3, 3, 3, 3), weight=weight)
        verdicts = {v.label: v for v in tuner.tune_problem(problem).candidates}
        assert verdicts["fft_tiles"].ok and verdicts["fft_tiles"].runs >= 1
        assert verdicts["fft_tiles"].rel_err <= 1e-6
    x = torch.randn(2, 16, 20, 19)
    w = torch.nn.Parameter(torch.randn(16, 16, 7, 7), requires_grad=False)
    b = torch.randn(16)
    with torch.no_grad():
        y = autotune.conv2d(x, w, b, padding=3, method="fft_tiles")
        ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=3)
    assert isinstance(y, torch.Tensor) and y.shape == ref.shape
    assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
