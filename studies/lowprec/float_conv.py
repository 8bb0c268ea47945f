"""conv2d (NCHW cross-correlation, groups = 1) in emulated low-precision floating point.

Every kernel takes float64 operands, stores them in ``store`` (x, w, b rounded once, as a cast to
a float16/bfloat16 tensor would) and runs its arithmetic in ``comp``: each product, each sum and
each step of a transform is rounded to ``comp`` as soon as it is computed. Two settings matter:

* ``comp == store`` — everything in the low precision (float16 arithmetic, float16 accumulator);
* ``comp == FLOAT32`` — low-precision storage, float32 arithmetic and accumulation (mixed
  precision: tensor cores, AMX-BF16, ARM FMLAL).

Tensors handed from one stage to the next as multiplication operands — the Winograd transforms
``U = G g Gᵀ`` and ``V = Bᵀ d B`` — are stored in ``store``; the GEMM's accumulators stay in
``comp`` through the output transform (a fused kernel keeps them in registers); the output ``y``
is stored in ``store``. Weight transforms (``U``) are computed once per weight in float64 from the
stored weights and rounded once, as real libraries pre-transform weights offline.

The arithmetic orders follow the real kernels in :mod:`kernels.conv2d`: direct starts each output
at the bias and adds taps in (c, i, j) order; im2col is a gather plus the blocked GEMM of
:mod:`.float_matmul` with the bias added last; Winograd skips zero coefficients of Bᵀ and Aᵀ.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.conv2d.winograd import POINTS, winograd_matrices
from studies.lowprec.float_matmul import K_BLOCK, gemm_rounded
from studies.lowprec.rounding import FloatFormat, rnd, round_array

Padding = tuple[int, int, int, int]


def _stored_operands(x, w, b, store: FloatFormat):
    bias = np.zeros(w.shape[0]) if b is None else b
    return round_array(x, store), round_array(w, store), round_array(bias, store)


def _pad(x: np.ndarray, padding: Padding, extra_h: int = 0, extra_w: int = 0) -> np.ndarray:
    pt, pb, pl, pr = padding
    return np.pad(x, ((0, 0), (0, 0), (pt, pb + extra_h), (pl, pr + extra_w)))


def _output_hw(hw, khw, stride, padding: Padding, dilation) -> tuple[int, int]:
    ho = (hw[0] + padding[0] + padding[1] - dilation[0] * (khw[0] - 1) - 1) // stride[0] + 1
    wo = (hw[1] + padding[2] + padding[3] - dilation[1] * (khw[1] - 1) - 1) // stride[1] + 1
    return ho, wo


# ---------------------------------------------------------------------------------------------
# Direct


@numba.njit(cache=True)
def _direct_rounded(xp, w, bias, sh, sw, dh, dw, ho, wo, store, comp):  # pragma: no cover - jitted
    n_batch = xp.shape[0]
    k_out, c_in, kh, kw = w.shape
    y = np.empty((n_batch, k_out, ho, wo))
    for n in range(n_batch):
        for k in range(k_out):
            for oh in range(ho):
                for ow in range(wo):
                    acc = bias[k]
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                tap = xp[n, c, oh * sh + i * dh, ow * sw + j * dw]
                                acc = rnd(acc + rnd(tap * w[k, c, i, j], comp), comp)
                    y[n, k, oh, ow] = rnd(acc, store)
    return y


def direct_lowprec(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: Padding,
    store: FloatFormat,
    comp: FloatFormat,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Direct conv: ``y = rnd_s(b + Σ_{c,i,j} rnd_c(x·w))`` with every addition rounded to ``comp``.

    x (N, C, H, W), w (K, C, kh, kw), b (K,) or None, all float64; returns float64 (N, K, Ho, Wo)
    holding ``store``-format values.
    """
    x_st, w_st, b_st = _stored_operands(x, w, b, store)
    ho, wo = _output_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    return _direct_rounded(_pad(x_st, padding), w_st, b_st, *stride, *dilation, ho, wo, store.spec, comp.spec)


# ---------------------------------------------------------------------------------------------
# im2col + GEMM


def _columns(xp: np.ndarray, kh: int, kw: int, stride, dilation, ho: int, wo: int) -> np.ndarray:
    """``col[n, (c·kh + i)·kw + j, oh·Wo + ow] = xp[n, c, oh·sh + i·dh, ow·sw + j·dw]`` (a copy)."""
    n_batch, c_in = xp.shape[:2]
    col = np.empty((n_batch, c_in, kh, kw, ho, wo))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation[0], i * dilation[0] + (ho - 1) * stride[0] + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + (wo - 1) * stride[1] + 1, stride[1])
            col[:, :, i, j] = xp[:, :, rows, cols]
    return col.reshape(n_batch, c_in * kh * kw, ho * wo)


def im2col_lowprec(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: Padding,
    store: FloatFormat,
    comp: FloatFormat,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    k_block: int = K_BLOCK,
) -> np.ndarray:
    """im2col gather (exact copy) + blocked GEMM in ``comp`` + bias; output stored in ``store``."""
    x_st, w_st, b_st = _stored_operands(x, w, b, store)
    k_out, _, kh, kw = w.shape
    ho, wo = _output_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    col = _columns(_pad(x_st, padding), kh, kw, stride, dilation, ho, wo)
    w_mat = w_st.reshape(k_out, -1)
    y = np.empty((x.shape[0], k_out, ho * wo))
    for n in range(x.shape[0]):
        gemm = gemm_rounded(w_mat, np.ascontiguousarray(col[n]), comp.spec, k_block)
        y[n] = _add_bias_rounded(gemm, b_st, comp.spec)
    return round_array(y, store).reshape(x.shape[0], k_out, ho, wo)


@numba.njit(cache=True)
def _add_bias_rounded(y, bias, comp):  # pragma: no cover - jitted
    out = np.empty_like(y)
    for k in range(y.shape[0]):
        for t in range(y.shape[1]):
            out[k, t] = rnd(y[k, t] + bias[k], comp)
    return out


# ---------------------------------------------------------------------------------------------
# Winograd F(m×m, 3×3)


@numba.njit(cache=True)
def _transform_rows(src, coef, comp):  # pragma: no cover - jitted
    """``out[r, :] = Σ_i coef[r, i] · src[i, :]`` in ``comp``, skipping zero coefficients."""
    out = np.zeros((coef.shape[0], src.shape[1]))
    for r in range(coef.shape[0]):
        for i in range(coef.shape[1]):
            c = coef[r, i]
            if c != 0.0:
                for j in range(src.shape[1]):
                    out[r, j] = rnd(out[r, j] + rnd(c * src[i, j], comp), comp)
    return out


@numba.njit(cache=True)
def _input_transform_rounded(xp, b_t, m, tiles_h, tiles_w, store, comp):  # pragma: no cover
    """V[ξ·α + ν, c, (n·tiles_h + th)·tiles_w + tw] = rnd_s((Bᵀ d B)[ξ, ν]), transform in ``comp``."""
    n_batch, channels = xp.shape[:2]
    alpha = b_t.shape[0]
    v = np.empty((alpha * alpha, channels, n_batch * tiles_h * tiles_w))
    for n in range(n_batch):
        for c in range(channels):
            for th in range(tiles_h):
                for tw in range(tiles_w):
                    tile = xp[n, c, th * m : th * m + alpha, tw * m : tw * m + alpha]
                    left = _transform_rows(np.ascontiguousarray(tile), b_t, comp)  # Bᵀ d
                    full = _transform_rows(np.ascontiguousarray(left.T), b_t, comp)  # (Bᵀ d B)ᵀ
                    t = (n * tiles_h + th) * tiles_w + tw
                    for xi in range(alpha):
                        for nu in range(alpha):
                            v[xi * alpha + nu, c, t] = rnd(full[nu, xi], store)
    return v


@numba.njit(cache=True)
def _output_transform_rounded(
    mm, a_t, bias, n_batch, tiles_h, tiles_w, ho, wo, store, comp
):  # pragma: no cover
    """y[n, k, th·m + a, tw·m + e] = rnd_s((Aᵀ M A)[a, e] + bias[k]), transform in ``comp``."""
    m, alpha = a_t.shape
    k_out = mm.shape[1]
    y = np.empty((n_batch, k_out, ho, wo))
    tile = np.empty((alpha, alpha))
    for n in range(n_batch):
        for k in range(k_out):
            for th in range(tiles_h):
                for tw in range(tiles_w):
                    t = (n * tiles_h + th) * tiles_w + tw
                    for xi in range(alpha):
                        for nu in range(alpha):
                            tile[xi, nu] = mm[xi * alpha + nu, k, t]
                    left = _transform_rows(tile, a_t, comp)  # Aᵀ M  (m × α)
                    full = _transform_rows(np.ascontiguousarray(left.T), a_t, comp)  # (Aᵀ M A)ᵀ
                    for a in range(m):
                        for e in range(m):
                            oh, ow = th * m + a, tw * m + e
                            if oh < ho and ow < wo:
                                y[n, k, oh, ow] = rnd(rnd(full[e, a] + bias[k], comp), store)
    return y


def winograd_lowprec(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    padding: Padding,
    store: FloatFormat,
    comp: FloatFormat,
    tile: int = 2,
    transform_store: FloatFormat | None = None,
) -> np.ndarray:
    """Winograd F(m×m, 3×3), ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` summed over channels, in low precision.

    ``U = G g Gᵀ`` from the stored weights in float64, rounded once to ``store``; ``V = Bᵀ d B``
    with every operation in ``comp``, stored in ``store``; the α² channel GEMMs ``M = U V`` and the
    output transform in ``comp``; ``y`` stored in ``store``. Stride 1, dilation 1, 3×3 filters.
    ``transform_store`` stores U and V in another format (float32: what the transforms' storage
    rounding costs, by difference); x, w, b and y stay in ``store``.
    """
    t_store = store if transform_store is None else transform_store
    if tile not in POINTS:
        raise ValueError(f"winograd_lowprec: tile must be one of {tuple(POINTS)}, got {tile!r}")
    a_t, g, b_t = winograd_matrices(tile)
    for matrix in (a_t, b_t):  # the run-time transforms must be exact in the compute format
        if not np.array_equal(round_array(matrix, comp), matrix):
            raise ValueError(f"winograd_lowprec: F({tile},3) transform not exact in {comp.name}")
    x_st, w_st, b_st = _stored_operands(x, w, b, store)
    alpha = tile + 2
    n_batch, _, h, wd = x.shape
    k_out, c_in = w.shape[:2]
    ho, wo = _output_hw((h, wd), (3, 3), (1, 1), padding, (1, 1))
    tiles_h, tiles_w = -(-ho // tile), -(-wo // tile)
    extra_h = max(tiles_h * tile + 2 - (h + padding[0] + padding[1]), 0)
    extra_w = max(tiles_w * tile + 2 - (wd + padding[2] + padding[3]), 0)
    xp = _pad(x_st, padding, extra_h, extra_w)
    u = np.einsum("xi,kcij,yj->xykc", g, w_st, g).reshape(alpha * alpha, k_out, c_in)
    u = round_array(u, t_store)
    v = _input_transform_rounded(xp, b_t, tile, tiles_h, tiles_w, t_store.spec, comp.spec)
    mm = np.stack([gemm_rounded(u[s], v[s], comp.spec, K_BLOCK) for s in range(alpha * alpha)])
    return _output_transform_rounded(
        mm, np.ascontiguousarray(a_t), b_st, n_batch, tiles_h, tiles_w, ho, wo, store.spec, comp.spec
    )
