"""``log_approx``: the approximate addition in the log domain of US 2021/0056446 A1 (US 11,886,980).

A model of the hardware datapath in Numba integer arithmetic: operands in a logarithmic number
system (LNS), products as exponent additions, and sums as integer shift-and-add into a bank of
accumulators keyed by the fractional part of the exponent, scaled by a table of constants once at
the end. The approximation is in the number format (and optionally the hybrid and the output
conversion); the accumulation itself is exact while the accumulators do not overflow.

Number format
-------------
``x = (−1)^s · 2^(e/n) · 2^σ`` with ``n = 2^f``:

* a zero flag and a sign bit, stored together as an ``int8`` code (0 zero, +1, −1);
* ``e``: the log-magnitude as a signed fixed-point integer with ``exp_bits`` integer bits and
  ``f`` fractional bits (``exp_bits + f`` bits, two's complement): ``e ∈ [e_min, e_max] =
  [−2^(exp_bits−1)·n, 2^(exp_bits−1)·n − 1]``, i.e. magnitudes ``2^−2^(exp_bits−1) … <2^2^(exp_bits−1)``;
* ``σ``: one integer scale (exponent bias) per tensor — like per-tensor scaling of fp8 formats —
  chosen so the tensor's largest magnitude falls in the top binade. A shift of every exponent by
  an integer is exact and is folded back into the result at the end.

Quantisation (:func:`encode`) rounds to nearest in the log domain, ``e = rint(n·(log2|x| − σ))``
(in float64), saturates above ``e_max`` and flushes to zero below ``e_min``.

Product and accumulation (per output element, :func:`_lns_accumulate`)
----------------------------------------------------------------------
* product: zero if either flag is zero; else sign ``s_a·s_b`` and exponent ``e = e_a + e_b``;
* split: quotient ``q = e >> f`` (floor) and remainder ``r = e & (n − 1)``, so that
  ``2^(e/n) = 2^q · 2^(r/n)``;
* accumulate: ``n`` pairs of unsigned accumulators ``P[r]``, ``N[r]`` (one per sign) whose least
  significant bit weighs ``2^q_min``, ``q_min = −2^exp_bits`` being the smallest quotient a product
  can have; the product adds ``1 << (q − q_min)`` to ``P[r]`` or ``N[r]`` — shifts and adds only;
* accumulator width: ``acc_bits`` bits each. An add that would pass ``2^acc_bits − 1``
  **saturates** there and sets the output's overflow flag (:func:`lns_matmul_detailed` returns the
  flags). The model keeps accumulators in int64, so ``acc_bits ≤ 62``; addends must fit too, which
  bounds ``exp_bits ≤ 4`` (products span ``2^(exp_bits+1)`` binades);
* finalise: ``C = 2^(q_min + σ_a + σ_b) · Σ_r T[r]·(P[r] − N[r])`` with the table
  ``T[r] = 2^(r/n)`` of ``n`` constants, in float64.

While no accumulator saturates, ``P[r] − N[r]`` is exactly ``Σ ±2^(q − q_min)`` over the products
with remainder ``r``: the accumulation is exact, and the only errors are the operand quantisation
and the final float64 scaling. The accumulators needed for that are
``2^(exp_bits+1) + ⌈log2 k⌉`` bits (``+ f + 1`` with the hybrid).

Hybrid (``hybrid_bits = h``, 0 < h ≤ f): the remainder splits into ``r = r_hi·2^h + r_lo``; only
``2^(f−h)`` accumulator pairs, keyed by ``r_hi``, are kept, and the low bits are approximated
Mitchell-style, ``2^(r_lo/n) ≈ 1 + r_lo/n``: each product adds ``(n + r_lo) << (q − q_min)`` to an
accumulator whose LSB weighs ``2^q_min / n``, and ``T[r_hi] = 2^(r_hi·2^h/n)``. ``h = f`` is
Mitchell's approximation with a single accumulator pair.

Output conversion (``out_log=1``): the result is rounded back to the log format as the hardware
would — ``q = ⌊log2|C|⌋`` from the leading one, then the mantissa ``|C|/2^q ∈ [1, 2)`` is compared
with the ``n`` midpoints ``(2^(r/n) + 2^((r+1)/n))/2`` between neighbouring table values to pick
``r`` (rounding to nearest in the linear domain). The integer part ``q`` is as wide as the
accumulator, so the output conversion adds no range limit. The returned array holds the decoded
values ``±2^(q + r/n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from kernels.matmul.logdomain import small_enough
from kernels.registry import KernelSpec, register

#: Largest supported fraction bits (2^f accumulator pairs per output).
MAX_F = 16
#: Accumulators live in int64; 62 bits keeps ``acc + addend`` below 2^63 before the saturation test.
MAX_ACC_BITS = 62
DEFAULT_F = 4
DEFAULT_EXP_BITS = 4
DEFAULT_ACC_BITS = MAX_ACC_BITS
#: The tuner walks f upwards and keeps the first (smallest) that meets the tolerance.
TUNING_F = tuple(range(0, 9))


@dataclass(frozen=True)
class LnsFormat:
    """The log format ``±2^(e/n)·2^σ``: ``f`` fraction bits and ``exp_bits`` integer exponent bits."""

    f: int = DEFAULT_F
    exp_bits: int = DEFAULT_EXP_BITS

    @property
    def n(self) -> int:
        """Values per binade, ``2^f``."""
        return 1 << self.f

    @property
    def e_min(self) -> int:
        return -(1 << (self.exp_bits - 1)) * self.n

    @property
    def e_max(self) -> int:
        return (1 << (self.exp_bits - 1)) * self.n - 1

    @property
    def q_min(self) -> int:
        """Smallest quotient ``(e_a + e_b) >> f`` of a product: the accumulators' LSB exponent."""
        return (2 * self.e_min) >> self.f


@dataclass(frozen=True, eq=False)
class LnsTensor:
    """A 2-D tensor in the log format: ``sign`` (int8: 0 zero, ±1), ``exponent`` (int32 e), scale σ.

    ``transposed`` marks a (k, n) right operand stored as its (n, k) transpose, so the kernel's
    inner loop reads both operands contiguously.
    """

    sign: np.ndarray
    exponent: np.ndarray
    scale: int
    fmt: LnsFormat
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.sign.shape
        return (cols, rows) if self.transposed else (rows, cols)

    def decode(self) -> np.ndarray:
        """The represented values in float64 (in the logical, untransposed orientation)."""
        values = self.sign * np.exp2(self.exponent / self.fmt.n + self.scale)
        return values.T if self.transposed else values


# ---------------------------------------------------------------------------------------------
# Validation and encoding.


def _int_param(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"log_approx: {name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"log_approx: {name} must be in {low}..{high}, got {value}")
    return int(value)


def check_params(f: Any, exp_bits: Any, acc_bits: Any, hybrid_bits: Any, out_log: Any) -> None:
    """Raise ValueError/TypeError naming the parameter unless the datapath can be modelled."""
    f = _int_param("f", f, 0, MAX_F)
    exp_bits = _int_param("exp_bits", exp_bits, 1, 4)
    _int_param("acc_bits", acc_bits, 1, MAX_ACC_BITS)
    hybrid_bits = _int_param("hybrid_bits", hybrid_bits, 0, f)
    _int_param("out_log", out_log, 0, 1)
    addend_bits = (2 << exp_bits) + (f + 1 if hybrid_bits else 0)
    if addend_bits > MAX_ACC_BITS:
        raise ValueError(
            f"log_approx: with exp_bits={exp_bits}, f={f}, hybrid_bits={hybrid_bits} one addend "
            f"needs {addend_bits} bits, more than the {MAX_ACC_BITS} the int64 model holds"
        )


def _scale(x: np.ndarray, fmt: LnsFormat) -> int:
    """σ putting ``max|x|`` in the top binade: ``⌊log2 max|x|⌋ + 1 − 2^(exp_bits−1)``."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return 0
    _, exponent = np.frexp(peak)  # peak = mantissa·2^exponent, mantissa in [0.5, 1)
    return int(exponent) - (1 << (fmt.exp_bits - 1))


def encode(x: np.ndarray, fmt: LnsFormat, *, transposed: bool = False, name: str = "x") -> LnsTensor:
    """Quantise a 2-D float array to the log format (see the module docstring).

    ``transposed=True`` stores ``x.T`` (for a right operand). Raises ValueError on inf/NaN, which
    the format cannot represent.
    """
    if not np.all(np.isfinite(x)):
        raise ValueError(f"log_approx: {name} contains inf or NaN; the log format has no encoding for them")
    source = x.T if transposed else x
    scale = _scale(source, fmt)
    magnitude = np.abs(source).astype(np.float64)
    nonzero = magnitude > 0
    with np.errstate(divide="ignore"):
        exponent = np.rint(fmt.n * (np.log2(magnitude) - scale))
    exponent = np.where(nonzero, exponent, fmt.e_min)
    sign = np.sign(source).astype(np.int8)
    sign[exponent < fmt.e_min] = 0  # underflow flushes to zero
    exponent = np.clip(exponent, fmt.e_min, fmt.e_max)  # overflow saturates
    return LnsTensor(
        np.ascontiguousarray(sign), np.ascontiguousarray(exponent, dtype=np.int32), scale, fmt, transposed
    )


# ---------------------------------------------------------------------------------------------
# The datapath.


@numba.njit(cache=True, parallel=True)
def _lns_accumulate(
    sign_a, exp_a, sign_bt, exp_bt, f, hybrid_bits, q_min, limit, table, out, overflow, partials
):  # pragma: no cover - jitted
    """Integer shift-and-add accumulation; ``out`` gets ``Σ_slot T[slot]·(P − N)`` (unscaled).

    ``partials`` is (m, n, slots, 2) to keep every accumulator's final value, or (0, 0, 0, 0).
    """
    m, k = sign_a.shape
    n_cols = sign_bt.shape[0]
    slots = table.shape[0]
    keep = partials.shape[0] > 0
    remainder_mask = (1 << f) - 1
    low_mask = (1 << hybrid_bits) - 1
    values_per_binade = 1 << f
    for i in numba.prange(m):
        acc = np.zeros((slots, 2), dtype=np.int64)  # [slot, 0] positive, [slot, 1] negative
        for j in range(n_cols):
            acc[:, :] = 0
            saturated = False
            for p in range(k):
                sign = sign_a[i, p] * sign_bt[j, p]
                if sign == 0:
                    continue
                e = np.int64(exp_a[i, p]) + np.int64(exp_bt[j, p])
                shift = (e >> f) - q_min
                remainder = e & remainder_mask
                if hybrid_bits == 0:
                    slot = remainder
                    addend = np.int64(1) << shift
                else:  # Mitchell on the low bits: 2^(lo/n) ≈ 1 + lo/n, in units of 1/n
                    slot = remainder >> hybrid_bits
                    addend = (values_per_binade + (remainder & low_mask)) << shift
                side = 0 if sign > 0 else 1
                total = acc[slot, side] + addend
                if total > limit:
                    total = limit
                    saturated = True
                acc[slot, side] = total
            value = 0.0
            for slot in range(slots):
                value += table[slot] * np.float64(acc[slot, 0] - acc[slot, 1])
            out[i, j] = value
            overflow[i, j] = saturated
            if keep:
                partials[i, j, :, :] = acc
    return out


@dataclass(frozen=True)
class LnsResult:
    """Everything :func:`lns_matmul_detailed` computed.

    ``c`` (m, n) float64 result; ``overflow`` (m, n) bool, True where an accumulator saturated;
    ``partials`` (m, n, slots, 2) int64 final accumulators ``[…, 0]`` positive, ``[…, 1]``
    negative (only with ``keep_partials``); ``lsb_exponent``: the weight of one accumulator unit is
    ``2^lsb_exponent`` (divided by n with the hybrid); ``table``: the slot constants.
    """

    c: np.ndarray
    overflow: np.ndarray
    partials: np.ndarray | None
    lsb_exponent: int
    table: np.ndarray


def slot_table(fmt: LnsFormat, hybrid_bits: int) -> np.ndarray:
    """``T[slot] = 2^(slot·2^h / n)`` (float64), one constant per accumulator pair."""
    slots = 1 << (fmt.f - hybrid_bits)
    table = np.exp2(np.arange(slots, dtype=np.float64) * (1 << hybrid_bits) / fmt.n)
    if hybrid_bits:
        table /= fmt.n  # the hybrid's accumulator unit is 2^q_min / n
    return table


def to_log_format(c: np.ndarray, f: int) -> np.ndarray:
    """Round float values to ``±2^(q + r/n)`` by comparing mantissas with the linear midpoints."""
    n = 1 << f
    levels = np.exp2(np.arange(n + 1, dtype=np.float64) / n)  # 2^(r/n), r = 0..n (the last is 2)
    midpoints = (levels[:-1] + levels[1:]) / 2
    mantissa, exponent = np.frexp(np.abs(c))  # |c| = mantissa·2^exponent, mantissa in [0.5, 1)
    r = np.searchsorted(midpoints, 2 * mantissa, side="right")  # r == n rounds up to the next binade
    rounded = np.ldexp(levels[r], exponent - 1)
    return np.where(c == 0, 0.0, np.copysign(rounded, c))


def _operand(x: Any, fmt: LnsFormat, transposed: bool, name: str) -> LnsTensor:
    if isinstance(x, LnsTensor):
        if x.fmt != fmt or x.transposed != transposed:
            raise ValueError(
                f"log_approx: {name} was encoded with {x.fmt} (transposed={x.transposed}), but the "
                f"call needs {fmt} (transposed={transposed})"
            )
        return x
    return encode(x, fmt, transposed=transposed, name=name)


def lns_matmul_detailed(
    a: Any,
    b: Any,
    *,
    f: int = DEFAULT_F,
    exp_bits: int = DEFAULT_EXP_BITS,
    acc_bits: int = DEFAULT_ACC_BITS,
    hybrid_bits: int = 0,
    out_log: int = 0,
    keep_partials: bool = False,
) -> LnsResult:
    """The LNS datapath on ``a`` (m, k) @ ``b`` (k, n), with its overflow flags and accumulators.

    ``a`` is a float array or an :class:`LnsTensor`; ``b`` a float array or the transposed
    :class:`LnsTensor` from :func:`prepare_lns`. Parameters as in the module docstring.
    """
    check_params(f, exp_bits, acc_bits, hybrid_bits, out_log)
    fmt = LnsFormat(f, exp_bits)
    ea = _operand(a, fmt, False, "a")
    eb = _operand(b, fmt, True, "b")
    if ea.shape[1] != eb.shape[0]:
        raise ValueError(
            f"log_approx: a is {ea.shape} and b is {eb.shape}; expected a.shape[1] == b.shape[0]"
        )
    m, n_cols = ea.shape[0], eb.shape[1]
    table = slot_table(fmt, hybrid_bits)
    partials = np.zeros((m, n_cols, table.size, 2) if keep_partials else (0, 0, 0, 0), dtype=np.int64)
    c = np.empty((m, n_cols), dtype=np.float64)
    overflow = np.empty((m, n_cols), dtype=np.bool_)
    limit = (1 << acc_bits) - 1
    operands = (ea.sign, ea.exponent, eb.sign, eb.exponent)
    _lns_accumulate(*operands, f, hybrid_bits, fmt.q_min, limit, table, c, overflow, partials)
    lsb_exponent = fmt.q_min + ea.scale + eb.scale
    c = np.ldexp(c, lsb_exponent)  # exact power-of-two scaling
    if out_log:
        c = to_log_format(c, f)
    return LnsResult(c, overflow, partials if keep_partials else None, lsb_exponent, table)


def log_approx(
    a: Any,
    b: Any,
    f: int = DEFAULT_F,
    exp_bits: int = DEFAULT_EXP_BITS,
    acc_bits: int = DEFAULT_ACC_BITS,
    hybrid_bits: int = 0,
    out_log: int = 0,
) -> np.ndarray:
    """Approximate log-domain matmul (US 2021/0056446 A1): LNS operands, shift-and-add accumulators.

    Args:
        a: (m, k) float32/float64 array.
        b: (k, n) array of the same dtype, or its :func:`prepare_lns` encoding.
        f: fraction bits of the log format (n = 2^f values per binade, n accumulator pairs).
        exp_bits: integer exponent bits (1..4): the format spans 2^exp_bits binades below the
            tensor's largest magnitude.
        acc_bits: width of each accumulator; adds beyond 2^acc_bits − 1 saturate.
        hybrid_bits: low remainder bits approximated Mitchell-style instead of accumulated apart.
        out_log: 1 to round the result back to the log format.

    Returns:
        (m, n) array of ``a``'s dtype. Saturation is silent here; see :func:`lns_matmul_detailed`.
    """
    result = lns_matmul_detailed(
        a, b, f=f, exp_bits=exp_bits, acc_bits=acc_bits, hybrid_bits=hybrid_bits, out_log=out_log
    )
    dtype = a.dtype if isinstance(a, np.ndarray) else np.float64
    return result.c.astype(dtype, copy=False)


def prepare_lns(b: np.ndarray, f: int = DEFAULT_F, exp_bits: int = DEFAULT_EXP_BITS, **_: Any) -> LnsTensor:
    """The weight's encoding, computed once: ``b`` (k, n) stored transposed as an (n, k) LnsTensor."""
    if isinstance(b, LnsTensor):
        return b
    _int_param("f", f, 0, MAX_F)
    _int_param("exp_bits", exp_bits, 1, 4)
    return encode(b, LnsFormat(f, exp_bits), transposed=True, name="b")


def lns_param_grid(problem: Any) -> list[dict[str, Any]]:
    """f = 0, 1, …, 8 with the default format otherwise (first accurate wins)."""
    return [{"f": f} for f in TUNING_F]


register(
    KernelSpec(
        name="log_approx",
        op="matmul",
        fn=log_approx,
        exact=False,
        param_grid=lns_param_grid,
        search="first_accurate",
        prepare=prepare_lns,
        worth_tuning=small_enough,
        finite_only=True,  # the log format has no encoding for NaN/Inf
    )
)
