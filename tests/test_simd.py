"""The vector-register block transpose (kernels/simd.py) against numpy's transpose."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.simd import LANES, sandwich8, transpose8, transpose8_plus, transpose_batch


@numba.njit(cache=True)
def _transpose(src, src_at, src_stride, dst, dst_at, dst_stride):
    transpose8(src, src_at, src_stride, dst, dst_at, dst_stride)


@numba.njit(cache=True)
def _transpose_plus(src, src_at, src_stride, dst, dst_at, dst_stride, addend, addend_at):
    transpose8_plus(src, src_at, src_stride, dst, dst_at, dst_stride, addend, addend_at)


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from([np.float32, np.float64, np.complex64, np.complex128]),
    rows=st.integers(LANES, 20),
    cols=st.integers(LANES, 20),
    data=st.data(),
)
def test_a_block_lands_transposed_and_nothing_else_changes(dtype, rows, cols, data):
    """Any 8×8 block of a (rows × cols) matrix, written transposed at any place of a (cols × rows)
    one: the block's elements move, every other element of the destination stays (complex
    elements move as integers of their width, real and imaginary parts together)."""
    i = data.draw(st.integers(0, rows - LANES), label="first row")
    j = data.draw(st.integers(0, cols - LANES), label="first column")
    rng = np.random.default_rng(rows * 100 + cols)
    src = rng.standard_normal((rows, cols)).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        src += 1j * rng.standard_normal((rows, cols))
    dst = np.full((cols, rows), np.nan, dtype)
    _transpose(src.reshape(-1), i * cols + j, cols, dst.reshape(-1), j * rows + i, rows)
    want = np.full_like(dst, np.nan)
    want[j : j + LANES, i : i + LANES] = src[i : i + LANES, j : j + LANES].T
    np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_addend_of_row_q_goes_to_every_element_of_output_row_q(dtype):
    rng = np.random.default_rng(3)
    src, addend = rng.standard_normal((10, 12)).astype(dtype), rng.standard_normal(11).astype(dtype)
    dst = np.zeros((12, 10), dtype)
    _transpose_plus(src, 1 * 12 + 3, 12, dst, 3 * 10 + 1, 10, addend, np.int32(2))  # any integer type
    want = np.zeros_like(dst)
    want[3:11, 1:9] = src[1:9, 3:11].T + addend[2:10, None]
    np.testing.assert_array_equal(dst, want)


def test_integer_arrays_mixed_dtypes_and_complex_addends_do_not_compile():
    """The vectors hold one floating-point dtype (complex only for moving): anything else is a
    typing error, not a silent cast."""
    with pytest.raises(numba.core.errors.TypingError):
        _transpose(np.zeros(64, np.int64), 0, 8, np.zeros(64, np.int64), 0, 8)
    with pytest.raises(numba.core.errors.TypingError):
        _transpose(np.zeros(64, np.float32), 0, 8, np.zeros(64, np.float64), 0, 8)
    with pytest.raises(numba.core.errors.TypingError):
        plane = np.zeros(64, np.complex64)
        _transpose_plus(plane, 0, 8, plane.copy(), 0, 8, np.zeros(8, np.complex64), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_batch_transpose_equals_numpys_for_any_strides(dtype):
    """Whole matrices: register blocks where both last axes are contiguous (partial blocks at the
    edges), element by element where a destination's last axis is strided (the FFT's GEMM layout
    and the Winograd weight's channel-last copy use it)."""
    rng = np.random.default_rng(2)
    src = rng.standard_normal((3, 19, 37)).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        src += 1j * rng.standard_normal((3, 19, 37))
    contiguous = np.empty((3, 37, 19), dtype)
    strided = np.empty((37, 19, 2, 3), dtype)[:, :, 1, :].transpose(2, 0, 1)  # last axis strided
    interleaved = np.empty((37, 3, 2, 19), dtype)[:, :, 0, :].transpose(1, 0, 2)  # as the FFT's
    for dst in (contiguous, strided, interleaved):
        transpose_batch(src, dst)
        np.testing.assert_array_equal(dst, src.transpose(0, 2, 1))


@pytest.mark.parametrize("tile", [2, 4, 6])
@pytest.mark.parametrize("which", [0, 2])
def test_apply_matrix_is_the_matrix_product_exactly(tile, which):
    """The shared-sum evaluation of each Winograd transform matrix (Aᵀ, Bᵀ), in exact rationals,
    equals the plain matrix-vector product, and takes fewer operations than term by term."""
    from fractions import Fraction

    from kernels.conv2d.winograd_matrices import winograd_matrices_exact
    from kernels.simd import Arithmetic, apply_matrix

    class Counting(Arithmetic):
        count = 0

        def add(self, a, b):
            self.count += 1
            return a + b

        def sub(self, a, b):
            self.count += 1
            return a - b

        def neg(self, a):
            self.count += 1
            return -a

        def scale(self, coef, a):
            self.count += 1
            return coef * a

    matrix = winograd_matrices_exact(tile)[which]
    rng = np.random.default_rng(tile)
    terms = [
        Fraction(int(n), int(d)) for n, d in zip(rng.integers(-99, 99, 8), rng.integers(1, 9, 8), strict=True)
    ]
    terms = terms[: len(matrix[0])]
    ops = Counting()
    assert apply_matrix(matrix, terms, ops) == [
        sum(Fraction(c) * t for c, t in zip(row, terms, strict=True)) for row in matrix
    ]
    term_by_term = sum(2 * sum(c != 0 for c in row) - 1 - sum(abs(c) == 1 for c in row) for row in matrix)
    assert ops.count <= term_by_term


@numba.njit(cache=True)
def _input_tile(src, dst, line, channels, slot):
    sandwich8(
        src,
        0,
        line,
        channels,
        dst,
        0,
        6 * slot,
        slot,
        "4,0,-5,0,1,0;0,-4,-4,1,1,0;0,4,-4,-1,1,0;0,-2,-1,2,1,0;0,2,-1,-2,1,0;0,4,0,-5,0,1",
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sandwich_is_bt_d_b_on_every_lane(dtype):
    """F(4×4)'s input transform Bᵀ d B of a 6×6 grid of eight-lane vectors (rows ``line`` apart,
    columns ``channels`` apart, as in a gathered scratch) against numpy in float64, written
    ``slot`` apart; the lanes beyond the eight and the gaps stay untouched."""
    from kernels.conv2d.winograd_matrices import winograd_matrices

    b_t = winograd_matrices(4)[2]
    channels, line, slot = 11, 80, 9
    rng = np.random.default_rng(0)
    src = rng.standard_normal(6 * line).astype(dtype)
    dst = np.full(36 * slot, 7.0, dtype=dtype)
    _input_tile(src, dst, line, channels, slot)
    grid = np.array(
        [[src[i * line + j * channels : i * line + j * channels + LANES] for j in range(6)] for i in range(6)]
    )
    want = np.einsum("ai,ijq,ej->aeq", b_t, grid.astype(np.float64), b_t).reshape(36, LANES)
    got = dst.reshape(36, slot)
    np.testing.assert_allclose(got[:, :LANES], want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
    assert (got[:, LANES:] == 7.0).all()
