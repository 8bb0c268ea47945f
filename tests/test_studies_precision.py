"""The precision study: the emulated formats, the low-precision and integer kernels, the quick run."""

from __future__ import annotations

import argparse
import math

import ml_dtypes
import numpy as np
import pytest
from PIL import Image

import studies
from autotune.evaluate import rel_max_error
from kernels.conv2d.reference import conv2d_reference
from studies import _tables as tables
from studies import literature, precision, sensitivity
from studies.lowprec import integer
from studies.lowprec.float_conv import direct_lowprec, im2col_lowprec, winograd_lowprec
from studies.lowprec.float_fft import fft2_rounded, fft_lowprec, twiddles
from studies.lowprec.float_matmul import gemm_rounded, log_matmul_lowprec, matmul_lowprec
from studies.lowprec.rounding import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, round_array, round_scalar

SAME = (1, 1, 1, 1)

# ---------------------------------------------------------------------------------------------
# Rounding to a format


def test_float16_rounding_matches_numpy_on_every_value_and_midpoint():
    grid = precision._float16_grid()
    np.testing.assert_array_equal(round_array(grid, FLOAT16), grid.astype(np.float16).astype(np.float64))


def test_float16_rounding_matches_numpy_on_random_float64():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200_000) * np.exp2(rng.uniform(-30, 17, 200_000))
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(round_array(values, FLOAT16), expected)


def test_bfloat16_rounding_matches_ml_dtypes_on_float32_values():
    rng = np.random.default_rng(1)
    values = (rng.standard_normal(200_000) * np.exp2(rng.uniform(-140, 126, 200_000))).astype(np.float32)
    expected = values.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(round_array(values, BFLOAT16), expected)


def test_float32_rounding_matches_numpy_including_subnormals_and_overflow():
    rng = np.random.default_rng(2)
    values = rng.standard_normal(200_000) * np.exp2(rng.uniform(-155, 130, 200_000))
    with np.errstate(over="ignore"):
        expected = values.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(round_array(values, FLOAT32), expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (65504.0, 65504.0),  # largest finite float16
        (65519.99, 65504.0),  # just under max + ulp/2
        (65520.0, math.inf),  # max + ulp/2 rounds (to even) to infinity
        (-1e6, -math.inf),
        (2.0**-24, 2.0**-24),  # smallest subnormal
        (2.0**-25, 0.0),  # half of it: tie to even (zero)
        (1.5 * 2.0**-25, 2.0**-24),
        (3 * 2.0**-25, 2.0**-23),  # tie between subnormals 1 and 2 ulps: to even (2)
        (1.0 + 2.0**-11, 1.0),  # tie at 1: to even
        (1.0 + 3 * 2.0**-11, 1.0 + 2.0**-9),  # tie: to even (up)
        (1.0 + 2.0**-11 + 2.0**-40, 1.0 + 2.0**-10),  # just above the tie
    ],
)
def test_float16_rounding_edge_cases(value, expected):
    assert round_scalar(value, *FLOAT16.spec) == expected


def test_rounding_keeps_sign_of_zero_and_passes_nan_inf():
    assert math.copysign(1.0, round_scalar(-1e-30, *FLOAT16.spec)) == -1.0
    assert math.isnan(round_scalar(math.nan, *FLOAT16.spec))
    assert round_scalar(-math.inf, *BFLOAT16.spec) == -math.inf
    assert round_scalar(0.1, *FLOAT64.spec) == 0.1


def test_format_constants():
    assert FLOAT16.max_finite == 65504.0
    assert BFLOAT16.max_finite == float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    assert (FLOAT16.emin, BFLOAT16.emin) == (-14, -126)
    assert FLOAT16.unit_roundoff == 2.0**-11


# ---------------------------------------------------------------------------------------------
# Emulated arithmetic


def test_emulated_float16_arithmetic_matches_numpy_float16():
    assert precision._float16_ops_mismatches(np.random.default_rng(3), 3000) == 0


def test_float16_products_are_exact_in_a_float32_accumulator():
    rng = np.random.default_rng(4)
    a = round_array(rng.standard_normal((1, 1)) * 300, FLOAT16)
    b = round_array(rng.standard_normal((1, 1)) / 300, FLOAT16)
    assert gemm_rounded(a, b, FLOAT32.spec, 1)[0, 0] == a[0, 0] * b[0, 0]


def test_blocked_gemm_equals_sequential_when_k_fits_one_block():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((4, 100)), rng.standard_normal((100, 3))
    one_block = matmul_lowprec(a, b, FLOAT16, FLOAT16, k_block=100)
    assert np.array_equal(matmul_lowprec(a, b, FLOAT16, FLOAT16, k_block=256), one_block)
    assert not np.array_equal(matmul_lowprec(a, b, FLOAT16, FLOAT16, k_block=10), one_block)


def test_low_precision_accumulation_is_worse_than_float32_accumulation():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((32, 512)), rng.standard_normal((512, 32))
    ref = a @ b
    low = rel_max_error(matmul_lowprec(a, b, FLOAT16, FLOAT16), ref)
    mixed = rel_max_error(matmul_lowprec(a, b, FLOAT16, FLOAT32), ref)
    assert mixed < FLOAT16.unit_roundoff * 4 < low


def test_log_domain_matmul_emulation():
    rng = np.random.default_rng(24)
    a, b = rng.standard_normal((8, 50)), rng.standard_normal((50, 6))
    a[0, :5] = 0.0  # zeros never enter the log domain
    ref = a @ b
    assert rel_max_error(log_matmul_lowprec(a, b, FLOAT64, FLOAT64), ref) < 1e-14
    mixed = rel_max_error(log_matmul_lowprec(a, b, FLOAT16, FLOAT32), ref)
    assert FLOAT16.unit_roundoff / 10 < mixed < 10 * FLOAT16.unit_roundoff


# ---------------------------------------------------------------------------------------------
# The low-precision conv kernels compute the right thing (identity format = float64)

LOWPREC_CONV = [
    ("direct", direct_lowprec, {}),
    ("im2col", im2col_lowprec, {}),
    ("winograd2", winograd_lowprec, {"tile": 2}),
    ("winograd4", winograd_lowprec, {"tile": 4}),
    ("winograd6", winograd_lowprec, {"tile": 6}),
    ("fft", fft_lowprec, {}),
]


@pytest.mark.parametrize(("name", "kernel", "params"), LOWPREC_CONV, ids=[c[0] for c in LOWPREC_CONV])
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)])
def test_lowprec_conv_kernels_in_float64_match_the_reference(name, kernel, params, padding):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 3, 9, 11)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    ref = conv2d_reference(x, w, b, (1, 1), padding, (1, 1), 1)
    assert rel_max_error(kernel(x, w, b, padding, FLOAT64, FLOAT64, **params), ref) < 1e-12


@pytest.mark.parametrize("kernel", [direct_lowprec, im2col_lowprec])
def test_direct_and_im2col_handle_stride_and_dilation(kernel):
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((1, 2, 12, 10)), rng.standard_normal((3, 2, 3, 2))
    ref = conv2d_reference(x, w, None, (2, 1), SAME, (1, 2), 1)
    assert rel_max_error(kernel(x, w, None, SAME, FLOAT64, FLOAT64, (2, 1), (1, 2)), ref) < 1e-13


def test_radix2_fft_in_float64_matches_numpy():
    rng = np.random.default_rng(9)
    re, im = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    expected = np.fft.fft2(re + 1j * im)
    cos_t, sin_t = twiddles(16, FLOAT64)
    fft2_rounded(re, im, cos_t, sin_t, False, FLOAT64.spec)
    np.testing.assert_allclose(re + 1j * im, expected, atol=1e-12)
    fft2_rounded(re, im, cos_t, sin_t, True, FLOAT64.spec)  # the scaled inverse undoes it
    np.testing.assert_allclose(re + 1j * im, np.fft.ifft2(expected), atol=1e-14)


@pytest.mark.parametrize(("name", "kernel", "params"), LOWPREC_CONV, ids=[c[0] for c in LOWPREC_CONV])
def test_lowprec_conv_error_scales_with_the_format(name, kernel, params):
    rng = np.random.default_rng(10)
    x, w, b = rng.standard_normal((1, 4, 10, 10)), rng.standard_normal((4, 4, 3, 3)), rng.standard_normal(4)
    ref = conv2d_reference(x, w, b, (1, 1), SAME, (1, 1), 1)
    errors = [rel_max_error(kernel(x, w, b, SAME, f, f, **params), ref) for f in (FLOAT32, FLOAT16, BFLOAT16)]
    assert errors[0] < 1e-5 < errors[1] < errors[2] < 0.5


def test_lowprec_outputs_are_values_of_the_storage_format():
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((2, 2, 3, 3))
    y = winograd_lowprec(x, w, None, SAME, BFLOAT16, FLOAT32, tile=4)
    assert np.array_equal(round_array(y, BFLOAT16), y)


# ---------------------------------------------------------------------------------------------
# Integers


def test_symmetric_quantisation():
    a = np.array([-2.0, -0.5, 0.0, 0.26, 1.0])
    q = integer.quantize(a, integer.INT8)
    assert q.values.dtype == np.int8
    assert q.scale == pytest.approx(2.0 / 127)
    assert q.values.tolist() == [-127, -32, 0, 17, 64]


def _quantized_conv(fmt: integer.IntFormat, seed: int, channels: int = 5):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((2, channels, 9, 7)), rng.standard_normal((3, channels, 3, 3))
    qx, qw = integer.quantize(x, fmt), integer.quantize(w, fmt)
    bq = integer.quantize_bias(rng.standard_normal(3), 3, qx.scale * qw.scale, fmt)
    return qx.values, qw.values, bq


@pytest.mark.parametrize("fmt", [integer.INT8, integer.INT16], ids=lambda f: f.name)
def test_integer_direct_and_im2col_are_the_exact_integer_convolution(fmt):
    xq, wq, bq = _quantized_conv(fmt, 12)
    exact = conv2d_reference(xq.astype(float), wq.astype(float), bq.astype(float), (1, 1), SAME, (1, 1), 1)
    direct = integer.conv2d_int(xq, wq, bq, SAME, fmt, "direct")
    assert direct.dtype == fmt.acc_dtype
    assert np.array_equal(direct, exact.astype(np.int64))
    assert np.array_equal(integer.conv2d_int(xq, wq, bq, SAME, fmt, "im2col"), direct)


@pytest.mark.parametrize("fmt", [integer.INT8, integer.INT16], ids=lambda f: f.name)
@pytest.mark.parametrize("tile", [2, 4, 6])
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 2, 1, 0)])
def test_integer_winograd_with_scaled_transforms_equals_integer_direct_bit_for_bit(fmt, tile, padding):
    xq, wq, bq = _quantized_conv(fmt, 13 + tile)
    acc_bits, _ = precision.winograd_accumulator(tile, xq.shape[1], fmt)
    direct = integer.conv2d_int(xq, wq, bq, padding, fmt, "direct")
    assert np.array_equal(integer.winograd_int(xq, wq, bq, padding, tile, acc_bits), direct)


def test_integer_winograd_scales_are_the_lcm_of_the_denominators():
    f2, f4, f6 = (integer.integer_winograd(m) for m in (2, 4, 6))
    assert (f2.scale_g, f2.scale_b, f2.scale_a, f2.divisor) == (2, 1, 1, 4)  # 2G, divide by 4
    assert (f4.scale_g, f4.divisor) == (24, 576)
    assert (f6.scale_g, f6.scale_b, f6.scale_a) == (90, 4, 32)
    for wt in (f2, f4, f6):
        assert all(arr.dtype == np.int64 for arr in (wt.a_t, wt.g, wt.b_t))


def test_integer_winograd_refuses_an_accumulator_the_data_could_overflow():
    xq, wq, bq = _quantized_conv(integer.INT8, 20, channels=16)
    assert precision.winograd_accumulator(6, 16, integer.INT8) == (64, 50)
    with pytest.raises(OverflowError, match="may overflow int32"):
        integer.winograd_int(xq, wq, bq, SAME, 6, 32)


def test_a_divisibility_check_cannot_see_an_f2_wrap_but_the_bound_check_does():
    # F(2): D = 4 divides 2^32, so D·y wrapped mod 2^32 is still divisible by 4 — the bound check
    # must refuse int32 before the run for data whose D·Σ|w||x| passes 2^31
    rng = np.random.default_rng(3)
    xq = np.full((1, 4096, 4, 4), 127, dtype=np.int8)
    wq = np.full((1, 4096, 3, 3), 127, dtype=np.int8) * rng.choice([-1, 1], (1, 4096, 3, 3)).astype(np.int8)
    bq = np.zeros(1, dtype=np.int32)
    bound = integer.realised_bound(xq, wq, SAME)
    assert bound == 4096 * 9 * 127**2  # the centre outputs see every tap at full scale
    assert integer.bits_needed(4 * bound) > 32 and (2**32) % 4 == 0
    with pytest.raises(OverflowError):
        integer.winograd_int(xq, wq, bq, SAME, 2, 32)
    direct = integer.conv2d_int(xq, wq, bq, SAME, integer.IntFormat("int8", 8, 64), "direct")
    assert np.array_equal(integer.winograd_int(xq, wq, bq, SAME, 2, 64), direct)


@pytest.mark.parametrize(("tile", "bits"), [(2, (12, 10)), (4, (18, 15)), (6, (22, 20))])
def test_transformed_operand_widths_are_reached_by_full_scale_inputs(tile, bits):
    assert integer.transformed_operand_bits(tile, integer.INT8) == bits
    # the heaviest rows of the integral transforms, with inputs of ±127 matching their signs
    wt = integer.integer_winograd(tile)
    for matrix, width in ((wt.g, bits[0]), (wt.b_t, bits[1])):
        row = matrix[np.abs(matrix).sum(axis=1).argmax()]
        tile_in = 127 * np.outer(np.sign(row), np.sign(row))
        value = int(row @ tile_in @ row)
        assert value == 127 * int(np.abs(row).sum()) ** 2
        assert integer.bits_needed(value) == width


@pytest.mark.parametrize("tile", [2, 4, 6])
def test_requantised_winograd_error_is_bounded_and_reported(tile):
    rng = np.random.default_rng(40 + tile)
    x, w, b = rng.standard_normal((1, 6, 10, 10)), rng.standard_normal((4, 6, 3, 3)), rng.standard_normal(4)
    r = integer.winograd_requantised(x, w, b, SAME, tile, integer.INT8)
    # the unrequantised pipeline is the conv of the quantised x with the float weights
    qx = integer.quantize(x, integer.INT8)
    oracle = conv2d_reference(qx.values * qx.scale, w, b, (1, 1), SAME, (1, 1), 1)
    np.testing.assert_allclose(r.exact, oracle, rtol=1e-9, atol=1e-9)
    a_t = integer.winograd_matrices(tile)[0]
    deviation = float(np.abs(r.y - r.exact).max())
    bound = integer.requantised_error_bound(r, a_t, 6, integer.INT8)
    assert 0 < deviation <= bound
    # int8×int8 products summed over 6 channels: M fits far inside int32
    assert r.m_bits <= integer.bits_needed(6 * 127**2)
    ref = conv2d_reference(x, w, b, (1, 1), SAME, (1, 1), 1)
    direct_error = rel_max_error(
        integer.dequantize(
            integer.conv2d_int(
                qx.values,
                integer.quantize(w, integer.INT8).values,
                np.zeros(4, np.int32),
                SAME,
                integer.INT8,
                "direct",
            ),
            qx.scale * integer.quantize(w, integer.INT8).scale,
        )
        + b.reshape(1, -1, 1, 1),
        ref,
    )
    error = rel_max_error(r.y, ref)
    assert error > direct_error  # requantising U and V costs accuracy at every tile ...
    assert error < {2: 0.05, 4: 0.5, 6: 1.0}[tile]  # ... far less than the unit-scale naive G


def test_growth_factors_of_the_winograd_matrices():
    # F(2,3) by hand: ‖G_j‖₁ = 1, 3/2, 3/2, 1 and ‖Bᵀ_j‖₁ = 2 give 2, 3, 3, 2; Aᵀ rows sum 2+3+3 = 3+3+2 = 8
    assert literature.growth_factor(2) == 8.0
    assert literature.growth_factor(2) < literature.growth_factor(4) < literature.growth_factor(6)


def test_one_d_fp32_errors_agree_with_the_reviewers_rerun():
    errors = literature.one_d_errors(20_000)
    for m, (wino, direct) in errors.items():
        assert wino == pytest.approx(literature.REVIEWER_RERUN[m], rel=0.25)
        assert direct < wino  # every tile size adds error over the 3-term dot products


def test_storage_floor_is_the_rounded_exact_product():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((8, 40)), rng.standard_normal((40, 5))
    p = precision.PRECISION_BY_KEY["float16/acc=float32"]
    # oracle: numpy's own float16 casts around a float64 product
    expected = (a.astype(np.float16).astype(np.float64) @ b.astype(np.float16).astype(np.float64)).astype(
        np.float16
    )
    np.testing.assert_array_equal(precision.matmul_floor(p, a, b), expected.astype(np.float64))


def test_integer_conv_refuses_an_accumulator_that_could_overflow():
    narrow = integer.IntFormat("int16", 16, 32)
    xq, wq, bq = _quantized_conv(narrow, 21)
    with pytest.raises(OverflowError, match="int32"):
        integer.conv2d_int(xq, wq, bq, SAME, narrow, "direct")


@pytest.mark.parametrize("tile", [2, 4, 6])
def test_naive_fractional_g_in_integers_loses_accuracy(tile):
    xq, wq, bq = _quantized_conv(integer.INT8, 22)
    direct = integer.conv2d_int(xq, wq, bq, SAME, integer.INT8, "direct").astype(np.float64)
    naive = integer.winograd_int_naive(xq, wq, bq, SAME, tile)
    error = rel_max_error(naive, direct)
    assert error > {2: 1e-4, 4: 1e-2, 6: 1e-1}[tile]


def test_integer_matmul_is_exact_in_its_accumulator():
    rng = np.random.default_rng(23)
    a = integer.quantize(rng.standard_normal((5, 300)), integer.INT8).values
    b = integer.quantize(rng.standard_normal((300, 4)), integer.INT8).values
    c = integer.matmul_int(a, b, integer.INT8)
    assert c.dtype == np.int32
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# The study, quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("studies")
    target = precision.run(out, quick=True)
    return target, tables.read_csv(target / "precision.csv")


def _median(rows, algorithm, precision_key, variant=""):
    values = [
        float(r["rel_max"])
        for r in rows
        if r["algorithm"] == algorithm and r["precision"] == precision_key and r["variant"] == variant
    ]
    assert values, (algorithm, precision_key, variant)
    return float(np.median(values))


def test_quick_run_writes_csv_plots_and_summary(quick_run):
    target, rows = quick_run
    assert target.name == "precision"
    expected = {f"precision_{a.slug}.png" for a in (*precision.CONV_ALGORITHMS, *precision.MATMUL_ALGORITHMS)}
    assert expected | {"precision_all.png"} <= {p.name for p in target.glob("*.png")}
    for png in target.glob("*.png"):
        with Image.open(png) as image:
            assert image.width > 800 and image.height > 300
    summary = (target / "summary.md").read_text()
    assert "0 mismatches" in summary and "no integer form" in summary.lower()
    assert "log_approx" in summary  # listed as pending until the log-domain kernels exist
    assert len(rows) == len(
        {(r["op"], r["algorithm"], r["variant"], r["precision"], r["seed"]) for r in rows}
    )


def test_direct_error_grows_as_precision_drops(quick_run):
    _, rows = quick_run
    e = {p.key: _median(rows, "direct", p.key) for p in precision.PRECISIONS}
    assert e["float64"] < 1e-14 < e["float32"] < 1e-6
    assert e["float32"] < e["int16"] < e["float16/acc=float32"] < e["float16"]
    assert e["float16/acc=float32"] < e["bfloat16/acc=float32"] < e["bfloat16"]
    # fp16 storage with fp32 accumulation: about one float16 rounding of the output
    assert FLOAT16.unit_roundoff / 4 < e["float16/acc=float32"] < 4 * FLOAT16.unit_roundoff
    assert 1e-3 < e["int8"] < 5e-2


def test_winograd_error_grows_with_tile_size_in_floating_point(quick_run):
    _, rows = quick_run
    for key in ("float32", "float16/acc=float32", "bfloat16/acc=float32"):
        f2, f4, f6 = (_median(rows, f"winograd(tile={t})", key) for t in (2, 4, 6))
        assert f2 < f4 < f6, key


def test_integer_winograd_rows_are_exact_and_fft_has_none(quick_run):
    _, rows = quick_run
    scaled = [r for r in rows if r["algorithm"].startswith("winograd") and r["accumulator"].startswith("int")]
    exact = [r["exact_vs_direct"] for r in scaled if not r["variant"]]
    assert exact and all(v == "True" for v in exact)
    assert not [r for r in rows if r["algorithm"] == "fft" and r["storage"].startswith("int")]
    for tile in (4, 6):
        name = f"winograd(tile={tile})"
        assert _median(rows, name, "int8", precision.NAIVE_G) > 10 * _median(rows, name, "int8")


def test_matmul_rows(quick_run):
    _, rows = quick_run
    assert _median(rows, "naive", "float64") == 0.0  # the same sequential float64 sum as the reference
    assert _median(rows, "blas", "float32") < 1e-5 < _median(rows, "blas", "float16")
    assert _median(rows, "log", "float64") < 1e-14
    assert _median(rows, "log", "float16/acc=float32") < 3 * _median(rows, "naive", "float16/acc=float32")
    # LNS: an 8-bit code (f = 3) is far coarser than a 16-bit one (f = 11)
    assert _median(rows, "log_approx", "int16") < 1e-3 < _median(rows, "log_approx", "int8") < 0.2
    present = {(r["algorithm"], r["precision"]) for r in rows}
    assert not {("log_approx", "float32"), ("log_approx", "float64"), ("log", "int8")} & present


def test_options_and_registration(tmp_path):
    parser = argparse.ArgumentParser()
    precision.add_arguments(parser)
    assert parser.parse_args(["--seeds", "3"]).seeds == 3
    assert studies.load("precision") is precision
    with pytest.raises(ValueError, match="seeds"):
        precision.run(tmp_path, seeds=0)


def test_sensitivity_scale_sweep_marks_fp16_transform_overflow():
    # at s = 2^12 the outputs (|y| < 2^15) still fit fp16, F(6)'s transformed inputs do not
    rows = {r.algorithm: r.rel_max for r in sensitivity.scale_sweep([2.0**12]) if r.inputs == "zero-mean"}
    assert np.isfinite(rows["direct"]) and rows["direct"] < 1e-3
    assert rows["F(6x6,3x3)"] == float("inf")
    small = {r.algorithm: r.rel_max for r in sensitivity.scale_sweep([1.0]) if r.inputs == "zero-mean"}
    assert all(np.isfinite(v) and v < 0.05 for v in small.values())
