"""Integer conv2d and matmul: symmetric quantisation, integer arithmetic, exact integer Winograd.

The integer-inference path (gemmlowp/TFLite style, per-tensor scales):

1. quantise: ``s = max|a| / (2^(b−1) − 1)``, ``q = rint(a / s)`` stored as int8/int16;
   a bias is quantised to the accumulator with scale ``s_x · s_w``;
2. compute on the integers with an int32 (int8 operands) or int64 (int16 operands) accumulator;
3. dequantise: ``y = float32(s_x · s_w) · float32(acc)``.

Direct and im2col are the very kernels of :mod:`kernels.conv2d` instantiated for integer arrays
of the accumulator dtype — Numba and numpy integer arithmetic wraps modulo 2^32 / 2^64 exactly as
an int32/int64 ALU does. Integer sums are exact in any order, so the two agree bit for bit.

Winograd needs ``G`` (and for F(6,3) also ``Bᵀ``, ``Aᵀ``) with fractions. Scaling each matrix by
the lcm of its denominators makes all three integral, and then

    (λ_A λ_G λ_B)² · y = (λ_A Aᵀ) [ (λ_G G) g (λ_G G)ᵀ ⊙ (λ_B Bᵀ) d (λ_B Bᵀ)ᵀ ] (λ_A Aᵀ)ᵀ

holds exactly in integers: F(2,3) uses ``2G`` and divides by 4, F(4,3) ``24G`` and divides by
576. The computation runs in wrapping unsigned arithmetic (the ring of integers mod 2^bits), so
the result is exact whenever the *final* scaled value ``D·y`` fits the signed accumulator, however
large the intermediates get. That is checked before the run by a bound from the data,
``|D·y| ≤ D·Σ|w_q||x_q|`` (:func:`realised_bound`); a check of the final division by D would not do:
a wrap changes ``D·y`` by a multiple of 2^32 (2^64), which D = 4 of F(2) always divides and
D = 576 of F(4) divides whenever the wrap count is a multiple of 9. The proof of exactness is the
comparison with integer direct, which the precision study makes on every run.

The transformed operands are wider than the inputs: ``U = (λ_G G) g (λ_G G)ᵀ`` and
``V = (λ_B Bᵀ) d (λ_B Bᵀ)ᵀ`` of int8 data need 12/10 bits at F(2), 18/15 at F(4) and 22/20 at F(6)
(:func:`transformed_operand_bits`), so the element-wise products are not int8×int8. The usual
int8 Winograd instead requantises U and V to int8 with one scale per transformed position
(:func:`winograd_requantised`); that is an approximation, with a bound on its error
(:func:`requantised_error_bound`). The naive alternative — integer tensors with the fractional
matrices, ``U = rint(G g Gᵀ)`` at unit scale — is :func:`winograd_int_naive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kernels.conv2d.direct import direct
from kernels.conv2d.im2col import im2col
from kernels.conv2d.winograd import winograd_matrices, winograd_matrices_exact

Padding = tuple[int, int, int, int]


@dataclass(frozen=True)
class IntFormat:
    """Signed ``bits``-bit integers with a ``acc_bits``-bit accumulator."""

    name: str
    bits: int
    acc_bits: int

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def storage_dtype(self) -> np.dtype:
        return np.dtype(f"int{self.bits}")

    @property
    def acc_dtype(self) -> np.dtype:
        return np.dtype(f"int{self.acc_bits}")


INT8 = IntFormat("int8", 8, 32)
INT16 = IntFormat("int16", 16, 64)
INT_FORMATS: dict[str, IntFormat] = {f.name: f for f in (INT8, INT16)}


@dataclass(frozen=True)
class Quantized:
    """``values · scale`` approximates the original array; ``values`` in the storage dtype."""

    values: np.ndarray
    scale: float


def quantize(a: np.ndarray, fmt: IntFormat) -> Quantized:
    """Symmetric per-tensor quantisation: ``scale = max|a| / qmax``, ``q = rint(a / scale)``."""
    peak = float(np.max(np.abs(a)))
    scale = peak / fmt.qmax if peak > 0 else 1.0
    q = np.clip(np.rint(a / scale), -fmt.qmax, fmt.qmax)
    return Quantized(q.astype(fmt.storage_dtype), scale)


def quantize_bias(b: np.ndarray | None, k_out: int, scale: float, fmt: IntFormat) -> np.ndarray:
    """The bias in accumulator units: ``rint(b / (s_x·s_w))`` in the accumulator dtype."""
    if b is None:
        return np.zeros(k_out, dtype=fmt.acc_dtype)
    return np.rint(np.asarray(b, dtype=np.float64) / scale).astype(fmt.acc_dtype)


def dequantize(acc: np.ndarray, scale: float) -> np.ndarray:
    """``float32(scale) · float32(acc)``, returned as float32."""
    return np.float32(scale) * acc.astype(np.float32)


def worst_case_sum(terms: int, fmt: IntFormat) -> int:
    """Largest |Σ| of ``terms`` products of two quantised values: ``terms · qmax²``."""
    return terms * fmt.qmax**2


def bits_needed(bound: int) -> int:
    """Signed accumulator width that holds every integer of magnitude ≤ ``bound``."""
    return max(bound, 1).bit_length() + 1


# ---------------------------------------------------------------------------------------------
# Direct, im2col, matmul: exact integer sums in the accumulator dtype


def conv2d_int(
    xq: np.ndarray, wq: np.ndarray, bq: np.ndarray, padding: Padding, fmt: IntFormat, algorithm: str
) -> np.ndarray:
    """Integer conv (stride 1, dilation 1, groups 1) by ``algorithm`` ∈ {"direct", "im2col"}.

    xq (N, C, H, W) and wq (K, C, kh, kw) hold quantised values; bq (K,) the bias in accumulator
    units. Operands are widened to the accumulator dtype on load; the result is that dtype.
    Raises OverflowError if the worst case could overflow the accumulator.
    """
    terms = wq.shape[1] * wq.shape[2] * wq.shape[3]
    bound = worst_case_sum(terms, fmt) + int(np.max(np.abs(bq), initial=0))
    if bits_needed(bound) > fmt.acc_bits:
        raise OverflowError(f"conv2d_int: {terms} terms of {fmt.name} may overflow int{fmt.acc_bits}")
    kernel = {"direct": direct, "im2col": im2col}[algorithm]
    acc = fmt.acc_dtype
    return kernel(xq.astype(acc), wq.astype(acc), bq.astype(acc), (1, 1), padding, (1, 1), 1)


def matmul_int(aq: np.ndarray, bq: np.ndarray, fmt: IntFormat) -> np.ndarray:
    """``aq @ bq`` in the accumulator dtype (numpy's integer GEMM loops: exact, wrapping)."""
    if bits_needed(worst_case_sum(aq.shape[1], fmt)) > fmt.acc_bits:
        raise OverflowError(f"matmul_int: K={aq.shape[1]} {fmt.name} products may overflow int{fmt.acc_bits}")
    acc = fmt.acc_dtype
    return np.matmul(aq.astype(acc), bq.astype(acc))


# ---------------------------------------------------------------------------------------------
# Winograd in integers


@dataclass(frozen=True)
class IntegerWinograd:
    """Integral transforms of F(m, 3): ``a_t = λ_A Aᵀ``, ``g = λ_G G``, ``b_t = λ_B Bᵀ``.

    ``D = (λ_A λ_G λ_B)²`` is the factor the integer result carries and is divided by at the end.
    """

    m: int
    a_t: np.ndarray
    g: np.ndarray
    b_t: np.ndarray
    scale_a: int
    scale_g: int
    scale_b: int

    @property
    def divisor(self) -> int:
        return (self.scale_a * self.scale_g * self.scale_b) ** 2

    def worst_case_scaled(self, channels: int, fmt: IntFormat) -> int:
        """Bound on ``|D · y|`` (bias excluded): D · C · 9 · qmax² — what the accumulator must hold."""
        return self.divisor * worst_case_sum(channels * 9, fmt)


def _lcm_scaled(matrix: list[list[Fraction]]) -> tuple[np.ndarray, int]:
    scale = math.lcm(*(v.denominator for row in matrix for v in row))
    ints = [[int(v * scale) for v in row] for row in matrix]
    return np.array(ints, dtype=np.int64), scale


@cache
def integer_winograd(m: int) -> IntegerWinograd:
    """The lcm-scaled integral transforms of F(m, 3) from the exact rational ones."""
    a_t, g, b_t = winograd_matrices_exact(m)
    (a_int, sa), (g_int, sg), (b_int, sb) = (_lcm_scaled(a_t), _lcm_scaled(g), _lcm_scaled(b_t))
    return IntegerWinograd(m, a_int, g_int, b_int, sa, sg, sb)


def _tiles(xq: np.ndarray, padding: Padding, m: int, ho: int, wo: int) -> np.ndarray:
    """Overlapping α×α input tiles (N, C, tiles_h, tiles_w, α, α), zero-padded to whole tiles."""
    tiles_h, tiles_w = -(-ho // m), -(-wo // m)
    alpha = m + 2
    pt, pb, pl, pr = padding
    extra_h = max(tiles_h * m + 2 - (xq.shape[2] + pt + pb), 0)
    extra_w = max(tiles_w * m + 2 - (xq.shape[3] + pl + pr), 0)
    xp = np.pad(xq, ((0, 0), (0, 0), (pt, pb + extra_h), (pl, pr + extra_w)))
    return sliding_window_view(xp, (alpha, alpha), axis=(2, 3))[:, :, ::m, ::m][:, :, :tiles_h, :tiles_w]


def _untile(y_tiles: np.ndarray, ho: int, wo: int) -> np.ndarray:
    """(N, K, tiles_h, m, tiles_w, m) → (N, K, Ho, Wo), cropping the partial edge tiles."""
    n, k, th, m, tw, _ = y_tiles.shape
    return y_tiles.reshape(n, k, th * m, tw * m)[:, :, :ho, :wo]


def _conv_out_hw(xq: np.ndarray, padding: Padding) -> tuple[int, int]:
    return xq.shape[2] + padding[0] + padding[1] - 2, xq.shape[3] + padding[2] + padding[3] - 2


def winograd_int(
    xq: np.ndarray, wq: np.ndarray, bq: np.ndarray, padding: Padding, m: int, acc_bits: int
) -> np.ndarray:
    """Exact integer Winograd F(m×m, 3×3) with the lcm-scaled transforms of :func:`integer_winograd`.

    All arithmetic wraps modulo 2^acc_bits (uint32/uint64 numpy arithmetic, like an int ALU):
    ``U = g_s w g_sᵀ``, ``V = b_s d b_sᵀ``, ``M = Σ_c U ⊙ V``, ``Y = a_s M a_sᵀ = D·y``; then the
    signed ``D·y`` is divided by D and the bias added. Correct whenever |D·y| < 2^(acc_bits−1):
    OverflowError unless :func:`realised_bound` guarantees that for this data.
    Returns int64 (N, K, Ho, Wo).
    """
    wt = integer_winograd(m)
    if bits_needed(wt.divisor * realised_bound(xq, wq, padding)) > acc_bits:
        raise OverflowError(f"winograd_int: F({m},3) on this data may overflow int{acc_bits}")
    unsigned, signed = np.dtype(f"uint{acc_bits}"), np.dtype(f"int{acc_bits}")
    ho, wo = _conv_out_hw(xq, padding)

    def ring(a: np.ndarray) -> np.ndarray:  # two's complement image mod 2^acc_bits
        return a.astype(np.int64).astype(unsigned)

    g_s, b_s, a_s = ring(wt.g), ring(wt.b_t), ring(wt.a_t)
    u = np.einsum("xi,kcij,yj->xykc", g_s, ring(wq), g_s)
    v = np.einsum("xi,ncpqij,yj->xyncpq", b_s, ring(_tiles(xq, padding, m, ho, wo)), b_s)
    mm = np.einsum("xykc,xyncpq->xynkpq", u, v)
    scaled = np.einsum("ax,xynkpq,ey->nkpaqe", a_s, mm, a_s).view(signed).astype(np.int64)
    y, remainder = np.divmod(scaled, wt.divisor)
    assert not np.any(remainder)  # a consistency check only: it cannot see wraps (module docstring)
    return _untile(y, ho, wo) + bq.astype(np.int64).reshape(1, -1, 1, 1)


def winograd_int_naive(
    xq: np.ndarray, wq: np.ndarray, bq: np.ndarray, padding: Padding, m: int
) -> np.ndarray:
    """Integer tensors with the fractional transforms: every transformed tensor rounded to integers.

    ``U = rint(G g Gᵀ)``, ``V = rint(Bᵀ d B)`` (exact for m ≤ 4, whose Bᵀ is integral),
    ``M = Σ_c U ⊙ V`` in int64, ``y = rint(Aᵀ M A) + b``. The rounding of ``U`` is the error a
    fractional ``G`` brings into an integer pipeline. Returns int64 (N, K, Ho, Wo).
    """
    a_t, g, b_t = winograd_matrices(m)
    ho, wo = _conv_out_hw(xq, padding)
    u = np.rint(np.einsum("xi,kcij,yj->xykc", g, wq.astype(np.float64), g)).astype(np.int64)
    tiles = _tiles(xq, padding, m, ho, wo).astype(np.float64)
    v = np.rint(np.einsum("xi,ncpqij,yj->xyncpq", b_t, tiles, b_t)).astype(np.int64)
    mm = np.einsum("xykc,xyncpq->xynkpq", u, v)
    y = np.rint(np.einsum("ax,xynkpq,ey->nkpaqe", a_t, mm.astype(np.float64), a_t)).astype(np.int64)
    return _untile(y, ho, wo) + bq.astype(np.int64).reshape(1, -1, 1, 1)


def realised_bound(xq: np.ndarray, wq: np.ndarray, padding: Padding) -> int:
    """``max over outputs of Σ|w_q|·|x_q|``: a bound on ``|y|`` (bias excluded) for this data.

    One direct conv of the magnitudes in int64 (exact: C·9·qmax² < 2^63 for any realistic C).
    """
    magnitude = direct(
        np.abs(xq.astype(np.int64)), np.abs(wq.astype(np.int64)), None, (1, 1), padding, (1, 1), 1
    )
    return int(magnitude.max(initial=0))


def transformed_operand_bits(m: int, fmt: IntFormat) -> tuple[int, int]:
    """Signed widths of the integral transforms ``U = g_s w g_sᵀ`` and ``V = b_s d b_sᵀ`` (worst case).

    ``|U| ≤ qmax·(max row sum of |g_s|)²`` and likewise V with ``b_s``; reached by inputs of ±qmax
    with the signs of the heaviest row.
    """
    wt = integer_winograd(m)
    row_g, row_b = (int(np.abs(t).sum(axis=1).max()) for t in (wt.g, wt.b_t))
    return bits_needed(fmt.qmax * row_g**2), bits_needed(fmt.qmax * row_b**2)


@dataclass(frozen=True)
class Requantised:
    """Int8/int16 Winograd with U and V requantised per transformed position.

    ``y`` (float64) the result; ``u_scale``/``v_scale`` (α, α) the per-position scales;
    ``exact`` the same pipeline without the requantisation (float64 U, V from the quantised x).
    """

    y: np.ndarray
    u_scale: np.ndarray
    v_scale: np.ndarray
    exact: np.ndarray
    m_bits: int  # widest |M| = |Σ_c U_q·V_q| of this data, signed bits
    x_scale: float  # per-tensor scale of the integer input (V is in its units)


def _per_position(t: np.ndarray, fmt: IntFormat) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantisation with one scale per leading (α, α) position: (values, scales)."""
    peak = np.abs(t).reshape(t.shape[0], t.shape[1], -1).max(axis=2)
    scale = np.where(peak > 0, peak / fmt.qmax, 1.0)
    shape = (*scale.shape,) + (1,) * (t.ndim - 2)
    return np.rint(t / scale.reshape(shape)).astype(np.int64), scale


def winograd_requantised(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, padding: Padding, m: int, fmt: IntFormat
) -> Requantised:
    """Winograd F(m×m, 3×3) with int8×int8 (int16×int16) element-wise products.

    The x is quantised per tensor (``x_q``, the integer activations); ``U = G w Gᵀ`` is computed
    offline from the float weights, ``V = Bᵀ x_q B`` from the integer input, and both are
    requantised to ``fmt`` with one scale per transformed position (ξ, ν) — over all filters and
    channels for U, over all tiles and channels for V. ``M = Σ_c U_q ⊙ V_q`` is an exact integer
    sum (int64 here; it fits int32 for int8 up to 2^17 channels), dequantised per position, and
    the output transform ``Aᵀ M A`` and the bias are applied in float64.
    """
    a_t, g, b_t = winograd_matrices(m)
    qx = quantize(x, fmt)
    ho, wo = _conv_out_hw(x, padding)
    u = np.einsum("xi,kcij,yj->xykc", g, np.asarray(w, dtype=np.float64), g)
    tiles = _tiles(qx.values.astype(np.float64), padding, m, ho, wo)
    v = np.einsum("xi,ncpqij,yj->xyncpq", b_t, tiles, b_t)
    u_q, u_scale = _per_position(u, fmt)
    v_q, v_scale = _per_position(v, fmt)
    mm = np.einsum("xykc,xyncpq->xynkpq", u_q, v_q)  # exact: int64
    scale = (u_scale * v_scale * qx.scale).reshape(*u_scale.shape, 1, 1, 1, 1)
    bias = (np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)).reshape(1, -1, 1, 1)

    def output(transformed: np.ndarray) -> np.ndarray:
        y = np.einsum("ax,xynkpq,ey->nkpaqe", a_t, transformed, a_t)
        return _untile(y, ho, wo) + bias

    exact = output(np.einsum("xykc,xyncpq->xynkpq", u, v) * qx.scale)
    m_bits = bits_needed(int(np.abs(mm).max()))
    return Requantised(output(mm * scale), u_scale, v_scale, exact, m_bits, qx.scale)


def requantised_error_bound(r: Requantised, a_t: np.ndarray, channels: int, fmt: IntFormat) -> float:
    """Bound on ``max|y − exact|`` of :func:`winograd_requantised` from its scales.

    Per position, ``|U_q s_U − U| ≤ s_U/2`` and ``|U| ≤ qmax·s_U`` (likewise V), so
    ``|ΔM| ≤ C·s_U·s_V·s_x·(qmax + ¼)`` (V is in units of the input scale ``s_x``); the output
    transform turns that into at most ``Σ |A_ξi||A_νj|·|ΔM_ξν|`` per output.
    """
    delta_m = channels * r.u_scale * r.v_scale * r.x_scale * (fmt.qmax + 0.25)
    weights = np.abs(a_t)
    return float(np.einsum("ax,xy,ey->ae", weights, delta_m, weights).max())
