"""Every conv2d kernel against the float64 reference and against torch in float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from autotune.evaluate import rel_max_error
from autotune.problem import ConvProblem
from autotune.state import DEFAULT_TOL
from kernels import registry
from kernels.conv2d.reference import conv2d_reference
from kernels.conv2d.winograd import TILE_SIZES

GENERAL_KERNELS = ["naive", "direct", "im2col", "fft", "torch"]


def torch_f64(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """Independent oracle: torch's conv2d in float64 (asymmetric padding applied explicitly)."""
    pt, pb, pl, pr = padding
    xt = F.pad(torch.from_numpy(x.astype(np.float64)), (pl, pr, pt, pb))
    bt = None if b is None else torch.from_numpy(b.astype(np.float64))
    return F.conv2d(xt, torch.from_numpy(w.astype(np.float64)), bt, stride, 0, dilation, groups).numpy()


@st.composite
def conv_problems(draw, winograd_geometry: bool = False, pointwise: bool = False) -> ConvProblem:
    """Random small problems: batch, channels, groups, kernel size, stride, padding, dilation."""
    groups = draw(st.integers(1, 3))
    if winograd_geometry:
        kh = kw = 3
        stride = dilation = (1, 1)
    elif pointwise:
        kh = kw = 1
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    else:
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h, w = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    assume(h + padding[0] + padding[1] >= dilation[0] * (kh - 1) + 1)
    assume(w + padding[2] + padding[3] >= dilation[1] * (kw - 1) + 1)
    c_per_group = draw(st.integers(1, 3))
    return ConvProblem(
        x_shape=(draw(st.integers(1, 2)), groups * c_per_group, h, w),
        w_shape=(groups * draw(st.integers(1, 3)), c_per_group, kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )


def operands(problem: ConvProblem, dtype: str, seed: int, with_bias: bool):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(problem.x_shape).astype(dtype)
    w = rng.standard_normal(problem.w_shape).astype(dtype)
    b = rng.standard_normal(problem.w_shape[0]).astype(dtype) if with_bias else None
    return x, w, b


def run_kernel(name: str, params: dict, problem: ConvProblem, x, w, b) -> np.ndarray:
    spec = registry.get("conv2d", name)
    return spec.fn(x, w, b, problem.stride, problem.padding, problem.dilation, problem.groups, **params)


def check_against_oracles(
    name: str, params: dict, problem, dtype, seed, with_bias, drawn: bool = True
) -> None:
    x, w, b = operands(problem, dtype, seed, with_bias)
    args = (problem.stride, problem.padding, problem.dilation, problem.groups)
    ref = conv2d_reference(x, w, b, *args)
    if drawn:  # an output made only of padding is exactly zero: any rounding is infinitely wrong
        assume(np.abs(ref).max() > 0)
    oracle = torch_f64(x, w, b, *args)
    assert rel_max_error(ref, oracle) < 1e-12, "reference disagrees with torch float64"
    y = run_kernel(name, params, problem, x, w, b)
    assert y.shape == problem.out_shape and y.dtype == np.dtype(dtype)
    tol = DEFAULT_TOL[dtype]
    assert rel_max_error(y, ref) <= tol, f"{name}{params} vs reference"
    assert rel_max_error(y, oracle) <= tol, f"{name}{params} vs torch float64"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", GENERAL_KERNELS)
@given(problem=conv_problems(), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_general_kernels_match_oracles(name, dtype, problem, seed, with_bias):
    check_against_oracles(name, {}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, dilation",
    [
        ((1, 1, 100, 61), (1, 1, 5, 4), (0, 0, 0, 0), (1, 1)),  # one plane, its flat run in 3 chunks
        ((2, 3, 150, 160), (4, 3, 3, 3), (1, 2, 0, 1), (1, 2)),  # the large-input path, padded
    ],
)
def test_direct_across_flat_chunks_and_the_large_input_path(x_shape, w_shape, padding, dilation):
    """Hypothesis draws images up to 14x14: these cross the flat scheme's chunk boundaries."""
    problem = ConvProblem(x_shape, w_shape, padding=padding, dilation=dilation)
    for dtype in ("float32", "float64"):
        check_against_oracles("direct", {}, problem, dtype, seed=3, with_bias=True, drawn=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tile", TILE_SIZES)
@given(problem=conv_problems(winograd_geometry=True), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_winograd_matches_oracles(tile, dtype, problem, seed, with_bias):
    check_against_oracles("winograd", {"tile": tile}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tile", TILE_SIZES)
@given(problem=conv_problems(winograd_geometry=True), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_winograd_fused_matches_oracles(tile, dtype, problem, seed, with_bias):
    """Fused jobs: blocks of tiles that cross rows of tiles and images of a batch, BLAS in the jobs."""
    check_against_oracles("winograd", {"tile": tile, "fused": 1}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(problem=conv_problems(pointwise=True), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_pointwise_matches_oracles(dtype, problem, seed, with_bias):
    check_against_oracles("pointwise", {}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tile", [10, 16])  # >= the largest extent drawn (9); several tiles per axis
@given(problem=conv_problems(), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_tiled_fft_matches_oracles(tile, dtype, problem, seed, with_bias):
    """Overlap-save FFT (tiles overlapping by the filter's extent) on any geometry."""
    check_against_oracles("fft", {"tile": tile}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@given(problem=conv_problems(), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_fft_at_sizes_of_factors_2_and_3_matches_oracles(dtype, problem, seed, with_bias):
    """The whole-image transform at the next size of factors 2 and 3 (larger, other shifts)."""
    check_against_oracles("fft", {"smooth": 3}, problem, dtype, seed, with_bias)


@pytest.mark.parametrize("lanes_max", [-1, 10**12])  # the complex GEMMs; the Numba loop
@pytest.mark.parametrize("tile", [0, 12])
@given(problem=conv_problems(), seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_both_fft_contractions_match_oracles(lanes_max, tile, problem, seed, with_bias):
    """The per-frequency channel sum, forced either way (the size rule picks one)."""
    from kernels.conv2d import fft

    assume(tile == 0 or tile >= 2 * max(fft.extent(problem.dilation, problem.w_shape[2:])))
    saved, fft.LANES_MAX = fft.LANES_MAX, lanes_max
    try:
        check_against_oracles("fft", {"tile": tile}, problem, "float32", seed, with_bias)
    finally:
        fft.LANES_MAX = saved


@pytest.mark.parametrize("lanes_max", [-1, 10**12])
@pytest.mark.parametrize("tile", [0, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fft_on_many_channels_in_groups(dtype, tile, lanes_max):
    """Channel counts past the Numba loop's four-channel steps (6 and 8 per group), two groups,
    asymmetric padding larger than the filter's reach on one side, a dilated axis, a batch."""
    from kernels.conv2d import fft

    problem = ConvProblem((2, 12, 17, 15), (10, 6, 5, 3), padding=(4, 1, 0, 2), dilation=(1, 2), groups=2)
    wide = ConvProblem((3, 8, 9, 20), (5, 8, 7, 4), padding=(3, 3, 5, 1))
    saved, fft.LANES_MAX = fft.LANES_MAX, lanes_max
    try:
        for case in (problem, wide):
            check_against_oracles("fft", {"tile": tile}, case, dtype, 7, True, drawn=False)
    finally:
        fft.LANES_MAX = saved


@given(problem=conv_problems(), seed=st.integers(0, 2**16))
def test_tiled_fft_with_a_prepared_weight_equals_the_raw_call(problem, seed):
    """A fixed weight's spectra are kept per tile size: same result as the raw weight."""
    from kernels.conv2d import fft

    x, w, b = operands(problem, "float64", seed, True)
    args = (b, problem.stride, problem.padding, problem.dilation, problem.groups)
    prepared = fft.prepare(w)
    for tile in (0, 10, 16, 0, 10):  # repeated sizes reuse the kept spectrum
        np.testing.assert_allclose(
            fft.fft(x, prepared, *args, tile=tile), fft.fft(x, w, *args, tile=tile), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize(
    ("method", "taps", "message"),
    [
        ("fft(tile=4)", 7, "at least the \\(dilated\\) filter's extent 7"),
        ("fft(tile=-8)", 3, "tile must be 0"),
        ("fft(tile=9.5)", 3, "tile must be 0"),
        ("fft(smooth=11)", 7, "smooth \\(the FFT size's largest prime factor\\) must be 3, 5 or 7"),
        ("fft(tile=16,smooth=3)", 7, "smooth applies to the whole-image transform"),
        ("winograd(fused=2)", 3, "fused must be 0 \\(in stages\\) or 1"),
        ("winograd(tile=4,fused=0.5)", 3, "fused must be 0"),
    ],
)
def test_bad_tile_and_fused_parameters_are_named(method, taps, message):
    """A tile smaller than the filter or an unknown mode would give garbage: a clear error."""
    import autotune

    x = np.ones((1, 2, 12, 12), np.float32)
    with pytest.raises(ValueError, match=message):
        autotune.conv2d(x, np.ones((2, 2, taps, taps), np.float32), padding=taps // 2, method=method)


def test_fft_offers_tiles_only_where_they_are_smaller_than_the_image_and_twice_the_filter():
    from kernels.conv2d.fft import tile_grid

    large = ConvProblem((1, 16, 112, 112), (16, 16, 15, 15), padding=(7, 7, 7, 7))
    assert tile_grid(large) == [{}, {"smooth": 3}, {"tile": 32}, {"tile": 64}]  # 120 and 128
    small = ConvProblem((1, 16, 24, 24), (16, 16, 3, 3), padding=(1, 1, 1, 1))
    assert tile_grid(small) == [{}, {"smooth": 3}, {"tile": 20}]  # 28 and 32
    same = ConvProblem((1, 16, 61, 61), (16, 16, 7, 7), padding=(3, 3, 3, 3))
    assert tile_grid(same) == [{}, {"tile": 20}, {"tile": 32}, {"tile": 64}]  # 64 either way


def test_winograd_offers_fused_only_with_one_group_and_a_u_that_fits_the_cap():
    """Every fused job reads all of U: 64 channels fuse every tile size, 512 (38 MB for F(4×4))
    none, 256 only F(2×2)/F(4×4) (4.2/9.4 MB); grouped convolutions never."""
    from kernels.conv2d.winograd import tile_grid

    def fused_tiles(c, size, groups=1):
        problem = ConvProblem((1, c, size, size), (c, c // groups, 3, 3), padding=(1, 1, 1, 1), groups=groups)
        return [p["tile"] for p in tile_grid(problem) if p.get("fused")]

    assert fused_tiles(64, 56) == [2, 4, 6]
    assert fused_tiles(256, 14) == [2, 4]
    assert fused_tiles(512, 7) == []
    assert fused_tiles(64, 56, groups=2) == []


@pytest.mark.parametrize(
    ("channels", "rows", "tiles_w"),
    [
        (64, 14, 14),
        (64, 112, 14),
        (128, 7, 7),
        (256, 4, 4),
        (256, 112, 14),
        (64, 1, 10),
        (256, 2, 15),
        (8, 1, 1),
    ],
)
def test_fused_jobs_cover_every_tile_once_within_the_budget(channels, rows, tiles_w):
    """The fused call's jobs (whole rows, or equal pieces of each row): every tile in exactly one
    non-empty job, a job's V and M within FUSED_BYTES where one row's fit, and at least as many
    jobs as threads where there are tiles enough."""
    import numba

    from kernels.conv2d.winograd import FUSED_BYTES, fused_jobs

    per_job, pieces = fused_jobs(4, channels, channels, 4, rows, tiles_w)
    assert per_job == 1 or pieces == 1
    piece = -(-tiles_w // pieces)
    jobs = []
    for job in range(-(-rows // per_job) * pieces):  # as the generated fused driver splits them
        row0, first = (job // pieces) * per_job, (job % pieces) * piece
        jobs.append(
            [
                (r, t)
                for r in range(row0, min(rows, row0 + per_job))
                for t in range(first, min(tiles_w, first + piece))
            ]
        )
    assert all(jobs)
    assert sorted(tile for job in jobs for tile in job) == [
        (r, t) for r in range(rows) for t in range(tiles_w)
    ]
    tile_bytes = 36 * 2 * channels * 4
    if tiles_w * tile_bytes <= FUSED_BYTES:
        assert max(len(job) for job in jobs) * tile_bytes <= FUSED_BYTES
    assert len(jobs) >= min(numba.get_num_threads(), rows * tiles_w)


@pytest.mark.parametrize(("channels", "k_out", "height", "width"), [(8, 16, 4, 40), (160, 160, 6, 100)])
def test_fused_winograd_with_rows_cut_into_pieces(channels, k_out, height, width):
    """The fused call where rows of tiles are cut into pieces: one row of ten F(4×4) tiles (fewer
    rows than threads), and rows of 25 tiles whose V and M (1.15 MB) exceed FUSED_BYTES."""
    import numba

    from kernels.conv2d import winograd

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k_out).astype(np.float32)
    pieces = winograd.fused_jobs(4, channels, k_out, 4, -(-height // 4), -(-width // 4))[1]
    assert pieces > 1 or numba.get_num_threads() == 1  # one row cannot keep two threads busy
    want = torch_f64(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    got = winograd.winograd(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=4, fused=1)
    assert rel_max_error(got, want) < DEFAULT_TOL["float32"]


def test_every_registered_conv_kernel_is_covered():
    """Each kernel has its oracle tests: here, and fft_tiles in tests/test_fft_tiles.py."""
    assert set(registry.names("conv2d")) == {*GENERAL_KERNELS, "winograd", "pointwise", "fft_tiles"}


def test_pointwise_declares_its_geometry():
    spec = registry.get("conv2d", "pointwise")
    assert spec.applies(ConvProblem((1, 4, 8, 8), (2, 2, 1, 1), stride=(2, 2), groups=2))
    assert not spec.applies(ConvProblem((1, 2, 8, 8), (2, 2, 3, 3)))


def test_winograd_declares_its_geometry():
    spec = registry.get("conv2d", "winograd")
    ok = ConvProblem((1, 2, 8, 8), (2, 2, 3, 3), padding=(1, 1, 1, 1))
    assert spec.applies(ok)
    assert not spec.applies(ConvProblem((1, 2, 8, 8), (2, 2, 5, 5)))
    assert not spec.applies(ConvProblem((1, 2, 8, 8), (2, 2, 3, 3), stride=(2, 2)))
    assert not spec.applies(ConvProblem((1, 2, 8, 8), (2, 2, 3, 3), dilation=(2, 1)))


@pytest.mark.parametrize("tile", TILE_SIZES)
def test_winograd_matrices_are_exact_in_rationals(tile):
    """Aᵀ[(G g) ⊙ (Bᵀ d)] equals the 1-D correlation exactly, in Fractions."""
    from fractions import Fraction

    from kernels.conv2d.winograd import winograd_matrices_exact

    a_t, g_mat, b_t = winograd_matrices_exact(tile)
    rng = np.random.default_rng(tile)
    d = [Fraction(int(v)) for v in rng.integers(-9, 10, tile + 2)]
    g = [Fraction(int(v)) for v in rng.integers(-9, 10, 3)]
    u = [sum(row[j] * g[j] for j in range(3)) for row in g_mat]
    v = [sum(row[j] * d[j] for j in range(tile + 2)) for row in b_t]
    y = [sum(a_t[i][j] * u[j] * v[j] for j in range(tile + 2)) for i in range(tile)]
    assert y == [sum(d[i + k] * g[k] for k in range(3)) for i in range(tile)]


@pytest.mark.parametrize("tile", TILE_SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("k_out", "c_in"), [(3, 5), (8, 8), (20, 13), (17, 64), (64, 9)])
def test_winograd_filter_transform_is_g_w_gt_in_float64_rounded_once(tile, dtype, k_out, c_in):
    """U = G w Gᵀ per (filter, channel), computed in float64 by numpy and rounded once: channel
    blocks of eight and their edges, output channels not a multiple of eight, a strided weight."""
    from kernels.conv2d.winograd import transform_filter, winograd_matrices

    _, g, _ = winograd_matrices(tile)
    rng = np.random.default_rng(k_out * c_in + tile)
    w = rng.standard_normal((k_out, 2 * c_in, 3, 3)).astype(dtype)[:, ::2]  # not contiguous
    expected = np.einsum("xi,kcij,yj->xyck", g, w.astype(np.float64), g).reshape(-1, c_in, k_out)
    u = transform_filter(w, tile)
    assert u.shape == ((tile + 2) ** 2, c_in, k_out) and u.dtype == dtype
    scale = np.abs(expected).max()  # sums in another order: cancellations differ by float64 ulps
    np.testing.assert_allclose(
        u, expected, rtol=np.finfo(dtype).eps, atol=4 * np.finfo(np.float64).eps * scale
    )


def test_the_generated_winograd_transforms_are_current():
    """The committed codelets are what the generator writes from today's matrices."""
    from kernels.conv2d import _winograd_codegen

    assert _winograd_codegen.TARGET.read_text(encoding="utf-8") == _winograd_codegen.render()


@pytest.mark.parametrize(("block_bytes", "width"), [(None, 23), (1, 23), (3000, 23), (None, 70)])
def test_winograd_pads_asymmetrically_and_crops_partial_tiles(block_bytes, width, monkeypatch):
    """Top/left padding read before the image, bottom/right beyond it, odd sizes cut mid-tile;
    with rows of tiles split into blocks of one tile, or a few, as on wide images; 70 columns
    take the four-channel gather and scatter."""
    from kernels.conv2d import winograd

    if block_bytes is not None:
        monkeypatch.setattr(winograd, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 13, width))
    w = rng.standard_normal((4, 5, 3, 3))
    b = rng.standard_normal(4)
    want = F.conv2d(
        F.pad(torch.from_numpy(x), (0, 2, 2, 1)), torch.from_numpy(w), torch.from_numpy(b)
    ).numpy()
    for tile, fused in itertools.product(TILE_SIZES, (0, 1)):
        got = winograd.winograd(x, w, b, (1, 1), (2, 1, 0, 2), (1, 1), 1, tile=tile, fused=fused)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("col0", [-2, 0, 5])
def test_block_gather_and_scatter_equal_the_one_channel_ones(col0, dtype):
    """The 8×8-block paths for long rows against the one-channel loops: 19 channels (two blocks
    and a remainder of 3), rows and columns beyond the image (zeros when gathering, cropped when
    scattering), and arrays whose last axis is strided (the one-channel loop takes those)."""
    from kernels.conv2d import _common

    rng = np.random.default_rng(5)
    x, bias = rng.standard_normal((2, 19, 6, 90)).astype(dtype), rng.standard_normal(19).astype(dtype)
    for cut in (np.s_[:45], np.s_[::2]):
        source = x[..., cut]
        for cols in (_common.BLOCK_MIN_COLUMNS, 43, 50):
            plain, blocks = np.full((4, cols, 19), np.nan, dtype), np.full((4, cols, 19), np.nan, dtype)
            _common.rows_channels_last(source, 1, 4, col0, plain)  # rows 4-7 of a 6-row image
            _common.rows_channels_last_by_blocks(source, 1, 4, col0, blocks)
            np.testing.assert_array_equal(blocks, plain)
            assert not np.isnan(plain).any() and (plain[2:] == 0).all()
            y_plain, y_blocks = np.zeros_like(x)[..., cut], np.zeros_like(x)[..., cut]
            _common.rows_channels_first(plain, bias, y_plain, 1, 3, col0 + 2)  # rows 3-6, cropped
            _common.rows_channels_first_by_blocks(plain, bias, y_blocks, 1, 3, col0 + 2)
            np.testing.assert_array_equal(y_blocks, y_plain)
            assert (y_plain[1, :, 3:, col0 + 2 : col0 + 2 + cols] != 0).all()  # written: values + bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("skip", [0, 1, 3])
def test_streamed_scatter_equals_the_one_channel_one(skip, dtype):
    """An output large and wide enough for streaming stores (``STREAM_MIN_BYTES``), ``skip``
    elements past a cache line: whole rows of 1000 columns (rows straddle lines: the joined path),
    a piece of a row, and a piece cropped at the right edge; 19 channels (a remainder of 3).
    Every element written exactly as the one-channel loop writes it, nothing else touched."""
    from kernels import workspace
    from kernels.conv2d import _common

    rng = np.random.default_rng(6)
    shape = (2, 19, 4, 1000)
    size, line = int(np.prod(shape)), _common.LINE_BYTES // np.dtype(dtype).itemsize
    assert size * np.dtype(dtype).itemsize >= _common.STREAM_MIN_BYTES and shape[3] >= 4 * line
    bias = rng.standard_normal(19).astype(dtype)
    for col0, cols in ((0, 1000), (40, 333), (600, 420)):
        rows = rng.standard_normal((4, cols, 19)).astype(dtype)
        y_plain, y_streamed = (workspace.line_aligned_empty((size + skip,), dtype) for _ in range(2))
        y_plain[:], y_streamed[:] = np.nan, np.nan
        y_plain, y_streamed = y_plain[skip:].reshape(shape), y_streamed[skip:].reshape(shape)
        _common.rows_channels_first(rows, bias, y_plain, 1, 0, col0)
        _common.rows_channels_first_by_blocks(rows, bias, y_streamed, 1, 0, col0)
        np.testing.assert_array_equal(y_streamed, y_plain)
        assert not np.isnan(y_plain[1, :, :, col0 : col0 + cols]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", [0, 1])
def test_winograd_with_a_streamed_output_matches_float64(fused, dtype):
    """Outputs that take the streaming stores (72-column rows: 4.5 float32 lines, so rows
    straddle them; 27 channels), every tile size, against PyTorch in float64."""
    from kernels.conv2d import _common, winograd

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 112, 72)).astype(dtype)
    w, b = rng.standard_normal((27, 16, 3, 3)).astype(dtype), rng.standard_normal(27).astype(dtype)
    assert 27 * 112 * 72 * np.dtype(dtype).itemsize >= _common.STREAM_MIN_BYTES
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(), padding=1
    ).numpy()
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    for tile in TILE_SIZES:
        got = winograd.winograd(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=tile, fused=fused)
        assert got.dtype == dtype and np.abs(got - want).max() <= tolerance * np.abs(want).max()


def test_f2x2_3x3_is_lavins_up_to_signs_that_cancel():
    """Row j of G, row j of Bᵀ and column j of Aᵀ may flip sign, as long as the flips cancel."""
    from kernels.conv2d.winograd import winograd_matrices

    a_t, g, b_t = winograd_matrices(2)
    lavin_at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
    lavin_g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    lavin_bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    for j in range(4):
        flips = []
        for ours, theirs in ((g[j], lavin_g[j]), (b_t[j], lavin_bt[j]), (a_t[:, j], lavin_at[:, j])):
            sign = 1.0 if np.array_equal(ours, theirs) else -1.0
            np.testing.assert_array_equal(ours * sign, theirs)
            flips.append(sign)
        assert np.prod(flips) == 1.0
