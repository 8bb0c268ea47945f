"""matmul kernels: exact log-domain, truncated SVD, and the LNS approximate accumulation.

Oracles are independent of the kernels: float64 numpy products, singular values from a separate
float64 ``numpy.linalg.svd``, and a pure-Python integer model of the LNS accumulators.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import autotune
from kernels.matmul import lns
from kernels.matmul.lowrank import LowRank
from kernels.matmul.svd import lowrank_matmul, rank_grid

SIZES = (2, 8, 32, 128)


def randn(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def with_spectrum(sigma: np.ndarray, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A float64 (rows, cols) matrix whose singular values are ``sigma`` (random singular vectors)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((rows, sigma.size)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, sigma.size)))
    return (u * sigma) @ v.T


def orthogonal(n: int, seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q


def product64(a, b) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# log: exact log-domain matmul.


@pytest.mark.parametrize("method", ["log", "logmatmul"])
def test_log_float32_within_mean_l1_1e5_of_float64_blas_for_every_size(method):
    for seed, (m, k, n) in enumerate(itertools.product(SIZES, SIZES, SIZES)):
        a, b = randn((m, k), np.float32, seed), randn((k, n), np.float32, seed + 1000)
        c = autotune.matmul(a, b, method=method)
        assert c.shape == (m, n) and c.dtype == np.float32
        assert np.abs(c - product64(a, b)).mean() < 1e-5, (m, k, n)


def test_log_float64_is_exact_to_rounding():
    a, b = randn((40, 70)), randn((70, 30), seed=1)
    ref = product64(a, b)
    c = autotune.matmul(a, b, method="log")
    assert c.dtype == np.float64
    assert np.abs(c - ref).max() / np.abs(ref).max() < 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_zeros_give_exact_zeros_and_no_nan(dtype):
    a, b = randn((6, 5), dtype), randn((5, 7), dtype, seed=1)
    a[2, :] = 0.0
    b[:, 4] = -0.0
    a[0, 1] = 0.0
    c = autotune.matmul(a, b, method="log")
    assert np.all(np.isfinite(c))
    assert np.all(c[2, :] == 0.0) and np.all(c[:, 4] == 0.0)
    np.testing.assert_allclose(c, product64(a, b), rtol=1e-5, atol=1e-5)
    zeros = np.zeros((3, 4), dtype)
    assert np.all(autotune.matmul(zeros, np.zeros((4, 2), dtype), method="log") == 0.0)


def test_log_torch_in_torch_out():
    a, b = randn((5, 6), np.float32), randn((6, 3), np.float32, seed=1)
    c = autotune.matmul(torch.from_numpy(a), torch.from_numpy(b), method="log")
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), product64(a, b), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# svd: truncated SVD factors, never rebuilt.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_svd_without_ranks_equals_blas_to_rounding(dtype):
    a, b = randn((33, 20), dtype), randn((20, 17), dtype, seed=1)
    np.testing.assert_array_equal(autotune.matmul(a, b, method="svd"), a @ b)
    full = LowRank.from_matrix(b, method="full")  # every triplet kept: exact up to rounding
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    ref = product64(a, b)
    assert np.abs(autotune.matmul(a, full) - ref).max() / np.abs(ref).max() < rtol


def test_svd_error_is_non_increasing_in_rank():
    sigma = 0.8 ** np.arange(48)
    b = with_spectrum(sigma, 48, 64)
    a = randn((30, 48), seed=2)
    ref = a @ b
    errors_b = [np.linalg.norm(autotune.matmul(a, b, rank_B=r) - ref) for r in range(1, 48)]
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in itertools.pairwise(errors_b))
    assert errors_b[-1] < 1e-3 * errors_b[0]
    left = with_spectrum(sigma[:30], 30, 48, seed=3)
    errors_a = [np.linalg.norm(autotune.matmul(left, b, rank_A=r) - left @ b) for r in range(1, 30)]
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in itertools.pairwise(errors_a))


def test_svd_error_non_increasing_for_a_flat_spectrum_with_exact_factors():
    # ‖A(B − B_r)‖_F² = Σ_{i>r} σ_i² ‖A u_i‖²: monotone for exact truncations of any matrix.
    a, b = randn((20, 40)), randn((40, 40), seed=1)
    factors = LowRank.from_matrix(b, method="full")
    ref = a @ b
    errors = [np.linalg.norm(autotune.matmul(a, factors, rank_B=r) - ref) for r in range(1, 40)]
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in itertools.pairwise(errors))


@pytest.mark.parametrize("rank", [1, 3, 8, 20])
def test_svd_of_one_operand_reaches_the_eckart_young_optimum(rank):
    sigma = 0.7 ** np.arange(40)
    b = with_spectrum(sigma, 40, 50)
    q = orthogonal(40)  # ‖Q E‖ = ‖E‖: the error is exactly the truncation error of B
    optimum_2, optimum_f = sigma[rank], np.sqrt(np.sum(sigma[rank:] ** 2))
    exact = autotune.matmul(q, LowRank.from_matrix(b, method="full"), rank_B=rank) - q @ b
    assert np.linalg.norm(exact, 2) == pytest.approx(optimum_2, rel=1e-8)
    assert np.linalg.norm(exact) == pytest.approx(optimum_f, rel=1e-8)
    auto = autotune.matmul(q, b, rank_B=rank) - q @ b  # the factorisation the dispatcher uses
    assert np.linalg.norm(auto) == pytest.approx(optimum_f, rel=1e-4)
    left = autotune.matmul(b.T, q[:, :30], rank_A=rank) - b.T @ q[:, :30]
    assert np.linalg.norm(left, 2) <= optimum_2 * (1 + 1e-4)


def test_randomized_and_full_svd_agree_on_a_decaying_spectrum():
    sigma = 0.9 ** np.arange(200)
    a = with_spectrum(sigma, 200, 300)
    randomized = LowRank.from_matrix(a, 20, method="randomized")
    full = LowRank.from_matrix(a, 20, method="full")
    np.testing.assert_allclose(full.s, sigma[:20], rtol=1e-10)
    # HMT with 10 oversamples and 2 power iterations: leading values to ~1e-9, the last few
    # (closest to the unsketched tail) to ~1e-4; the truncation error within 0.1% of the optimum.
    np.testing.assert_allclose(randomized.s, sigma[:20], rtol=1e-3)
    optimum = np.sqrt(np.sum(sigma[20:] ** 2))
    assert np.linalg.norm(a - full.to_dense()) == pytest.approx(optimum, rel=1e-10)
    assert optimum <= np.linalg.norm(a - randomized.to_dense()) <= optimum * (1 + 1e-3)


def random_lowrank(rows: int, cols: int, rank: int, seed: int) -> LowRank:
    rng = np.random.default_rng(seed)
    return LowRank(
        rng.standard_normal((rows, rank)), rng.uniform(0.5, 2.0, rank), rng.standard_normal((rank, cols))
    )


@given(
    m=st.integers(1, 24),
    k=st.integers(1, 24),
    n=st.integers(1, 24),
    r_a=st.integers(1, 6),
    r_b=st.integers(1, 6),
    kinds=st.sampled_from(["dense-factored", "factored-dense", "factored-factored"]),
    seed=st.integers(0, 2**16),
)
def test_factored_products_equal_the_dense_product_of_the_factors(m, k, n, r_a, r_b, kinds, seed):
    a = random_lowrank(m, k, r_a, seed) if kinds.startswith("factored") else randn((m, k), seed=seed)
    b = random_lowrank(k, n, r_b, seed + 1) if kinds.endswith("factored") else randn((k, n), seed=seed + 1)
    dense = [x.to_dense() if isinstance(x, LowRank) else x for x in (a, b)]
    c = lowrank_matmul(a, b)
    assert c.shape == (m, n) and c.flags.c_contiguous
    np.testing.assert_allclose(c, dense[0] @ dense[1], rtol=1e-10, atol=1e-10)


def test_svd_lowrank_operands_through_the_api_keep_type_and_dtype():
    x = randn((6, 30), np.float32)
    factors = LowRank.from_matrix(randn((30, 20), np.float32, seed=1), 5)
    c = autotune.matmul(torch.from_numpy(x), factors)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), x @ factors.to_dense(), rtol=1e-4, atol=1e-4)
    both = autotune.matmul(LowRank.from_matrix(x, 3), factors, rank_B=2)
    expected = LowRank.from_matrix(x, 3).to_dense() @ factors.truncate(2).to_dense()
    np.testing.assert_allclose(both, expected, rtol=1e-4, atol=1e-4)


def test_rank_grid_is_geometric_and_stops_at_the_flop_break_even():
    assert rank_grid(256, 256) == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91]
    assert all(r * (300 + 40) < 300 * 40 for r in rank_grid(300, 40))
    assert rank_grid(2, 2) == [1]


# ---------------------------------------------------------------------------------------------
# log_approx: the LNS datapath.


def integer_accumulators(a: lns.LnsTensor, bt: lns.LnsTensor, hybrid_bits: int) -> np.ndarray:
    """Pure-Python model of the accumulators (m, n, slots, 2) from the encoded operands."""
    fmt = a.fmt
    slots = 1 << (fmt.f - hybrid_bits)
    m, k = a.sign.shape
    out = np.zeros((m, bt.sign.shape[0], slots, 2), dtype=object)
    for i, j, p in itertools.product(range(m), range(bt.sign.shape[0]), range(k)):
        sign = int(a.sign[i, p]) * int(bt.sign[j, p])
        if sign == 0:
            continue
        e = int(a.exponent[i, p]) + int(bt.exponent[j, p])
        q, r = divmod(e, fmt.n)  # Python's floor division: the hardware's arithmetic shift
        units = 1 << (q - fmt.q_min)
        if hybrid_bits:
            units *= fmt.n + r % (1 << hybrid_bits)
        out[i, j, r >> hybrid_bits, 0 if sign > 0 else 1] += units
    return out


@pytest.mark.parametrize(("f", "hybrid_bits"), [(0, 0), (3, 0), (5, 0), (4, 2), (3, 3)])
def test_lns_accumulation_is_exact_with_wide_accumulators(f, hybrid_bits):
    fmt = lns.LnsFormat(f, 4)
    a = lns.encode(randn((3, 50), seed=f), fmt)
    bt = lns.encode(randn((50, 4), seed=f + 1), fmt, transposed=True)
    result = lns.lns_matmul_detailed(a, bt, f=f, hybrid_bits=hybrid_bits, keep_partials=True)
    assert not result.overflow.any()
    np.testing.assert_array_equal(result.partials, integer_accumulators(a, bt, hybrid_bits).astype(np.int64))
    if hybrid_bits == 0:  # the float sum of the same quantised products
        np.testing.assert_allclose(result.c, a.decode() @ bt.decode(), rtol=1e-13, atol=1e-13)


def test_lns_full_hybrid_is_mitchell_on_the_remainder():
    f = 3
    fmt = lns.LnsFormat(f, 4)
    a = lns.encode(randn((4, 30), seed=5), fmt)
    bt = lns.encode(randn((30, 3), seed=6), fmt, transposed=True)
    e = a.exponent[:, None, :].astype(np.int64) + bt.exponent[None, :, :]
    q, r = np.divmod(e, fmt.n)
    terms = a.sign[:, None, :] * bt.sign[None, :, :] * np.exp2(q) * (1 + r / fmt.n)
    expected = terms.sum(axis=2) * 2.0 ** (a.scale + bt.scale)
    np.testing.assert_allclose(lns.log_approx(a, bt, f=f, hybrid_bits=f), expected, rtol=1e-13)


def test_lns_error_shrinks_as_f_grows():
    a, b = randn((64, 64), seed=1), randn((64, 64), seed=2)
    ref = a @ b
    errors = [np.linalg.norm(lns.log_approx(a, b, f=f) - ref) / np.linalg.norm(ref) for f in range(7)]
    assert all(later < 0.75 * earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-2


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_lns_overflow_saturates_at_the_accumulator_width_and_is_flagged(sign):
    ones = np.full((1, 8), sign)
    # each product is 2^30 accumulator units; a 32-bit accumulator holds fewer than 4 of them
    narrow = lns.lns_matmul_detailed(ones, np.ones((8, 1)), acc_bits=32)
    assert narrow.overflow.all()
    assert narrow.c[0, 0] == sign * (2**32 - 1) * 2.0**narrow.lsb_exponent
    assert narrow.c[0, 0] == pytest.approx(sign * 4.0, rel=1e-9)
    wide = lns.lns_matmul_detailed(ones, np.ones((8, 1)), acc_bits=62)
    assert not wide.overflow.any() and wide.c[0, 0] == sign * 8.0


def test_lns_output_conversion_rounds_to_the_nearest_level_in_the_log_domain():
    f = 3
    a, b = randn((10, 20), seed=3), randn((20, 10), seed=4)
    linear = lns.log_approx(a, b, f=f)
    converted = lns.log_approx(a, b, f=f, out_log=1)
    nearest = np.exp2(np.rint(np.log2(np.abs(linear)) * 2**f) / 2**f)  # the encoder's rounding
    np.testing.assert_allclose(converted, np.sign(linear) * nearest, rtol=1e-14)


def test_lns_zeros_and_dtype():
    a, b = randn((5, 6), np.float32), randn((6, 4), np.float32, seed=1)
    a[1, :] = 0.0
    c = autotune.matmul(a, b, method="log_approx(f=5)")
    assert c.dtype == np.float32 and np.all(c[1] == 0.0)
    t = autotune.matmul(torch.from_numpy(a), torch.from_numpy(b), method="log_approx")
    assert isinstance(t, torch.Tensor)
    assert np.abs(t.numpy() - product64(a, b)).max() < 0.1 * np.abs(product64(a, b)).max()


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"f": -1}, ValueError, "f must be in 0..16"),
        ({"f": 2.5}, TypeError, "f must be an int"),
        ({"exp_bits": 5}, ValueError, "exp_bits must be in 1..4"),
        ({"acc_bits": 63}, ValueError, "acc_bits must be in 1..62"),
        ({"f": 2, "hybrid_bits": 3}, ValueError, "hybrid_bits must be in 0..2"),
        ({"out_log": 2}, ValueError, "out_log must be in 0..1"),
    ],
)
def test_lns_bad_parameters_name_the_parameter(params, error, match):
    with pytest.raises(error, match=match):
        lns.log_approx(randn((2, 3)), randn((3, 2)), **params)


def test_lns_rejects_non_finite_input():
    a = randn((2, 3))
    a[0, 0] = np.nan
    with pytest.raises(ValueError, match="a contains inf or NaN"):
        autotune.matmul(a, randn((3, 2)), method="log_approx")


# ---------------------------------------------------------------------------------------------
# Bad input to autotune.matmul for this family.


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a, b: autotune.matmul(a, b, rank_B=0), ValueError, "rank_B must be in 1..8"),
        (lambda a, b: autotune.matmul(a, b, rank_A=9), ValueError, "rank_A must be in 1..6"),
        (lambda a, b: autotune.matmul(a, b, rank_B=2.0), TypeError, "rank_B must be a positive int"),
        (lambda a, b: autotune.matmul(a, b, rank_B=True), TypeError, "rank_B must be a positive int"),
        (lambda a, b: autotune.matmul(a, b, method="blas", rank_B=2), ValueError, "rank_A/rank_B"),
        (
            lambda a, b: autotune.matmul(a, LowRank.from_matrix(b, 3), rank_B=4),
            ValueError,
            "rank_B must be in 1..3",
        ),
        (lambda a, b: autotune.matmul(a, LowRank.from_matrix(b.T.copy(), 2)), ValueError, "B is a LowRank"),
        (
            lambda a, b: autotune.matmul(a, LowRank.from_matrix(b, 2), method="blas"),
            ValueError,
            "LowRank operand",
        ),
        (lambda a, b: autotune.matmul(a, LowRank.from_matrix(b.astype(np.float32), 2)), TypeError, "dtype"),
        (lambda a, b: autotune.matmul(autotune.Weight(a), b), TypeError, "A is a Weight"),
        (lambda a, b: autotune.matmul(a, "b"), TypeError, "B must be a numpy array"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    a, b = randn((6, 8)), randn((8, 10), seed=1)
    autotune.matmul(a, b, method="blas")  # a dense call first: its bound kernel must not leak
    with pytest.raises(error, match=match):
        call(a, b)


def test_lowrank_rejects_inconsistent_factors():
    with pytest.raises(ValueError, match="inconsistent factors"):
        LowRank(np.ones((4, 2)), np.ones(3), np.ones((2, 5)))
    with pytest.raises(TypeError, match="share one dtype"):
        LowRank(np.ones((4, 2)), np.ones(2, np.float32), np.ones((2, 5)))
