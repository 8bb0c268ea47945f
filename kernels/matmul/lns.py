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

Quantisation (:func:`encode`) rounds to nearest in the log domain: ``E = round(n·log2|x|)`` is read
off the float's exponent and a comparison of its mantissa with the ``n`` thresholds ``2^((r+½)/n)``
(:func:`round_log2`, the same comparator the output conversion uses). The scale is chosen from the
*rounded* log of the peak, ``σ = ⌊E_peak / n⌋ + 1 − 2^(exp_bits−1)``, so a peak whose rounded log
reaches the next binade (3.96 at f = 0 rounds to 2^2) moves σ up instead of being clipped; then
``e = E − n·σ`` (exact integers), which never exceeds ``e_max``; values below ``e_min`` flush to
zero.

Product and accumulation (per output element, :func:`_lns_accumulate`)
----------------------------------------------------------------------
* product: zero if either flag is zero; else sign ``s_a·s_b`` and exponent ``e = e_a + e_b``;
* split: quotient ``q = e >> f`` (floor) and remainder ``r = e & (n − 1)``, so that
  ``2^(e/n) = 2^q · 2^(r/n)``;
* accumulate (``signed=0``, the default): ``n`` pairs of unsigned accumulators ``P[r]``, ``N[r]``
  (one per sign) whose least significant bit weighs ``2^q_min``, ``q_min = −2^exp_bits`` being the
  smallest quotient a product can have; the product adds ``1 << (q − q_min)`` to ``P[r]`` or
  ``N[r]`` — shifts and adds only;
* ``signed=1``: the patent's claim 2 — ``n`` signed (two's complement) accumulators ``S[r]``, the
  product adds or subtracts ``1 << (q − q_min)``. While nothing saturates ``S[r] = P[r] − N[r]``
  exactly; it needs one bit more than the wider of ``P[r]``, ``N[r]`` but half the accumulators;
* accumulator width: ``acc_bits`` bits each (sign included when signed). An add that would pass
  ``2^acc_bits − 1`` (signed: leave ``[−2^(acc_bits−1), 2^(acc_bits−1) − 1]``) **saturates** there
  and sets the output's overflow flag (:func:`lns_matmul_detailed` returns the flags). The model
  keeps accumulators in int64, so ``acc_bits ≤ 62``; addends must fit too, which bounds
  ``exp_bits ≤ 4`` (products span ``2^(exp_bits+1)`` binades);
* finalise: ``C = 2^(q_min + σ_a + σ_b) · Σ_r T[r]·(P[r] − N[r])`` with the table ``T[r] = 2^(r/n)``
  of ``n`` constants. ``table_bits = t > 0`` quantises them to fixed point, ``T[r] =
  round(2^(r/n)·2^t) / 2^t`` (t ≤ 30), and the sum is then computed exactly in integers (in 15-bit
  limbs of ``P − N``, each limb's sum in int64); only the final conversion of that integer to
  float64 rounds (a few ulps). ``table_bits = 0`` keeps float64 constants and a
  float64 sum (the model's reference, exact to about 1e-15).

While no accumulator saturates, ``P[r] − N[r]`` is exactly ``Σ ±2^(q − q_min)`` over the products
with remainder ``r``: the accumulation is exact, and the only errors are the operand quantisation,
the constants (``≤ 2^−(t+1)`` relative with ``table_bits = t``) and the final float64 conversion.
The accumulators needed for that are ``2^(exp_bits+1) + ⌈log2 k⌉`` bits (``+ f + 1`` with the
hybrid; ``+ 1`` signed).

Hybrid (``hybrid_bits = h``, 0 < h ≤ f): the remainder splits into ``r = r_hi·2^h + r_lo``; only
``2^(f−h)`` accumulator pairs, keyed by ``r_hi``, are kept, and the low bits are approximated
Mitchell-style, ``2^(r_lo/n) ≈ 1 + r_lo/n``: each product adds ``(n + r_lo) << (q − q_min)`` to an
accumulator whose LSB weighs ``2^q_min / n``, and ``T[r_hi] = 2^(r_hi·2^h/n)``. ``h = f`` is
Mitchell's approximation with a single accumulator pair.

Output conversion (``out_log=1``): the result is rounded back to the log format as the hardware
would — ``q = ⌊log2|C|⌋`` from the leading one, then the mantissa ``|C|/2^q ∈ [1, 2)`` is compared
with the ``n`` thresholds ``2^((r+½)/n)`` to pick ``r`` — rounding to nearest in the log domain,
the same comparator as :func:`encode` (:func:`round_log2`), so inputs and outputs of the format are
rounded alike (largest relative error ``2^(1/(2n)) − 1``). The integer part ``q`` is as wide as the
accumulator, so the output conversion adds no range limit. The returned array holds the decoded
values ``±2^(q + r/n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from kernels.matmul.logdomain import TOO_LARGE, small_enough
from kernels.registry import KernelSpec, register

#: Largest supported fraction bits (2^f accumulator pairs per output).
MAX_F = 16
#: Accumulators live in int64; 62 bits keeps ``acc + addend`` below 2^63 before the saturation test.
MAX_ACC_BITS = 62
DEFAULT_F = 4
DEFAULT_EXP_BITS = 4
DEFAULT_ACC_BITS = MAX_ACC_BITS
#: Largest fixed-point width of the table constants: keeps each 15-bit limb's sum inside int64.
MAX_TABLE_BITS = 30
#: Bits of ``P − N`` per limb in the integer finalisation (``t + 1 + LIMB_BITS + f ≤ 62``).
LIMB_BITS = 15
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


def check_params(
    f: Any, exp_bits: Any, acc_bits: Any, hybrid_bits: Any, out_log: Any, signed: Any = 0, table_bits: Any = 0
) -> None:
    """Raise ValueError/TypeError naming the parameter unless the datapath can be modelled."""
    f = _int_param("f", f, 0, MAX_F)
    exp_bits = _int_param("exp_bits", exp_bits, 1, 4)
    _int_param("acc_bits", acc_bits, 1, MAX_ACC_BITS)
    hybrid_bits = _int_param("hybrid_bits", hybrid_bits, 0, f)
    _int_param("out_log", out_log, 0, 1)
    _int_param("signed", signed, 0, 1)
    _int_param("table_bits", table_bits, 0, MAX_TABLE_BITS)
    addend_bits = (2 << exp_bits) + (f + 1 if hybrid_bits else 0)
    if addend_bits > MAX_ACC_BITS:
        raise ValueError(
            f"log_approx: with exp_bits={exp_bits}, f={f}, hybrid_bits={hybrid_bits} one addend "
            f"needs {addend_bits} bits, more than the {MAX_ACC_BITS} the int64 model holds"
        )


def log_thresholds(f: int) -> np.ndarray:
    """The ``n`` rounding thresholds ``2^((r+½)/n)``, r = 0…n−1, between the mantissa levels."""
    n = 1 << f
    return np.exp2((np.arange(n, dtype=np.float64) + 0.5) / n)


def round_log2(magnitude: np.ndarray, f: int) -> np.ndarray:
    """``round(n·log2 m)`` (int64) for positive finite m, by comparison instead of a logarithm.

    ``m = M·2^q`` with ``M ∈ [1, 2)`` from the float's exponent; ``r`` counts the thresholds
    ``2^((r+½)/n)`` that M reaches, so ``E = q·n + r`` (``r = n`` carries into the next binade).
    Rounding to nearest in the log domain, as a hardware converter from float would do it.
    """
    mantissa, exponent = np.frexp(magnitude)  # m = mantissa·2^exponent, mantissa in [0.5, 1)
    r = np.searchsorted(log_thresholds(f), 2 * mantissa, side="right")
    return (exponent.astype(np.int64) - 1) * (1 << f) + r


def _scale(rounded_peak: int, fmt: LnsFormat) -> int:
    """σ putting the rounded peak ``E_peak`` in the top binade: ``⌊E_peak / n⌋ + 1 − 2^(exp_bits−1)``.

    Taken from the *rounded* log, so ``E_peak − n·σ ≤ e_max`` always holds and the peak is never
    clipped (a scale from the unrounded peak clips whenever its log rounds up into the next binade).
    """
    return (rounded_peak >> fmt.f) + 1 - (1 << (fmt.exp_bits - 1))


def encode(x: np.ndarray, fmt: LnsFormat, *, transposed: bool = False, name: str = "x") -> LnsTensor:
    """Quantise a 2-D float array to the log format (see the module docstring).

    ``transposed=True`` stores ``x.T`` (for a right operand). Raises ValueError on inf/NaN, which
    the format cannot represent.
    """
    if not np.all(np.isfinite(x)):
        raise ValueError(f"log_approx: {name} contains inf or NaN; the log format has no encoding for them")
    source = x.T if transposed else x
    magnitude = np.abs(source).astype(np.float64)
    nonzero = magnitude > 0
    rounded = round_log2(np.where(nonzero, magnitude, 1.0), fmt.f)
    scale = _scale(int(rounded[nonzero].max()), fmt) if nonzero.any() else 0
    exponent = np.where(nonzero, rounded - fmt.n * scale, fmt.e_min)
    sign = np.sign(source).astype(np.int8)
    sign[exponent < fmt.e_min] = 0  # underflow flushes to zero
    exponent = np.maximum(exponent, fmt.e_min)
    assert exponent.size == 0 or int(exponent.max()) <= fmt.e_max  # the scale leaves no overflow
    return LnsTensor(
        np.ascontiguousarray(sign), np.ascontiguousarray(exponent, dtype=np.int32), scale, fmt, transposed
    )


# ---------------------------------------------------------------------------------------------
# The datapath.


@numba.njit(cache=True)
def _integer_dot(table_int, acc, signed, limb_bits):  # pragma: no cover - jitted
    """``Σ_slot table_int[slot]·D[slot]`` exactly, D = P − N (or S), returned as float64.

    Each D is split into ``limb_bits``-bit limbs (the top one signed); every limb's sum over the
    slots fits int64, and the limbs are combined top-down in float64 — the only rounding.
    """
    slots = table_int.shape[0]
    mask = (np.int64(1) << limb_bits) - 1
    limb_sums = np.zeros(5, dtype=np.int64)  # 62-bit accumulators: ⌈63 / 15⌉ limbs
    for slot in range(slots):
        d = acc[slot, 0] if signed else acc[slot, 0] - acc[slot, 1]
        for limb in range(4):
            limb_sums[limb] += table_int[slot] * ((d >> (limb * limb_bits)) & mask)
        limb_sums[4] += table_int[slot] * (d >> (4 * limb_bits))  # arithmetic shift keeps the sign
    value = 0.0
    for limb in range(4, -1, -1):
        value = value * np.float64(np.int64(1) << limb_bits) + np.float64(limb_sums[limb])
    return value


@numba.njit(cache=True, parallel=True)
def _lns_accumulate(
    sign_a,
    exp_a,
    sign_bt,
    exp_bt,
    f,
    hybrid_bits,
    q_min,
    limit,
    signed,
    table,
    table_int,
    out,
    overflow,
    partials,
):  # pragma: no cover - jitted
    """Integer shift-and-add accumulation; ``out`` gets ``Σ_slot T[slot]·(P − N)`` (unscaled).

    ``signed`` = 1 keeps one signed accumulator per slot in ``[slot, 0]`` (``[slot, 1]`` stays 0),
    saturating at ``±limit``; else ``[slot, 0]`` positive and ``[slot, 1]`` negative, at ``limit``.
    ``table_int`` (integer constants, used when non-empty) makes the final sum exact in integers.
    ``partials`` is (m, n, slots, 2) to keep every accumulator's final value, or (0, 0, 0, 0).
    """
    m, k = sign_a.shape
    n_cols = sign_bt.shape[0]
    slots = table.shape[0]
    keep = partials.shape[0] > 0
    integer_table = table_int.shape[0] > 0
    remainder_mask = (1 << f) - 1
    low_mask = (1 << hybrid_bits) - 1
    values_per_binade = 1 << f
    for i in numba.prange(m):
        acc = np.zeros((slots, 2), dtype=np.int64)
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
                if signed:
                    total = acc[slot, 0] + addend if sign > 0 else acc[slot, 0] - addend
                    if total > limit:
                        total = limit
                        saturated = True
                    elif total < -limit - 1:
                        total = -limit - 1
                        saturated = True
                    acc[slot, 0] = total
                else:
                    side = 0 if sign > 0 else 1
                    total = acc[slot, side] + addend
                    if total > limit:
                        total = limit
                        saturated = True
                    acc[slot, side] = total
            if integer_table:
                value = _integer_dot(table_int, acc, signed, 15)
            else:
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
    negative, or ``[…, 0]`` the signed accumulator and ``[…, 1]`` zero (only with ``keep_partials``);
    ``lsb_exponent``: the weight of one accumulator unit is ``2^lsb_exponent`` (divided by n with the
    hybrid); ``table``: the slot constants as used (fixed-point values with ``table_bits``).
    """

    c: np.ndarray
    overflow: np.ndarray
    partials: np.ndarray | None
    lsb_exponent: int
    table: np.ndarray


def slot_table(fmt: LnsFormat, hybrid_bits: int, table_bits: int = 0) -> np.ndarray:
    """``T[slot] = 2^(slot·2^h / n)`` (float64), one constant per accumulator pair.

    With ``table_bits = t > 0`` the constants are the fixed-point values ``round(T·2^t) / 2^t``.
    """
    slots = 1 << (fmt.f - hybrid_bits)
    table = np.exp2(np.arange(slots, dtype=np.float64) * (1 << hybrid_bits) / fmt.n)
    if table_bits:
        table = np.ldexp(table_integers(table, table_bits).astype(np.float64), -table_bits)
    if hybrid_bits:
        table /= fmt.n  # the hybrid's accumulator unit is 2^q_min / n
    return table


def table_integers(table: np.ndarray, table_bits: int) -> np.ndarray:
    """The constants as integers ``round(T·2^t)`` (int64; T ∈ [1, 2), so below 2^(t+1))."""
    return np.rint(np.ldexp(table, table_bits)).astype(np.int64)


def to_log_format(c: np.ndarray, f: int) -> np.ndarray:
    """Round float values to ``±2^(q + r/n)`` with :func:`round_log2` (the encoder's comparator)."""
    magnitude = np.abs(c)
    nonzero = magnitude > 0
    rounded = round_log2(np.where(nonzero, magnitude, 1.0), f)
    q, r = np.divmod(rounded, 1 << f)
    levels = np.ldexp(np.exp2(r / (1 << f)), q.astype(np.int32))
    return np.where(nonzero, np.copysign(levels, c), 0.0)


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
    signed: int = 0,
    table_bits: int = 0,
    keep_partials: bool = False,
) -> LnsResult:
    """The LNS datapath on ``a`` (m, k) @ ``b`` (k, n), with its overflow flags and accumulators.

    ``a`` is a float array or an :class:`LnsTensor`; ``b`` a float array or the transposed
    :class:`LnsTensor` from :func:`prepare_lns`. Parameters as in the module docstring.
    """
    check_params(f, exp_bits, acc_bits, hybrid_bits, out_log, signed, table_bits)
    fmt = LnsFormat(f, exp_bits)
    ea = _operand(a, fmt, False, "a")
    eb = _operand(b, fmt, True, "b")
    if ea.shape[1] != eb.shape[0]:
        raise ValueError(
            f"log_approx: a is {ea.shape} and b is {eb.shape}; expected a.shape[1] == b.shape[0]"
        )
    m, n_cols = ea.shape[0], eb.shape[1]
    table = slot_table(fmt, hybrid_bits, table_bits)
    exact = slot_table(fmt, 0, table_bits)[:: 1 << hybrid_bits]  # the same constants before the /n
    table_int = table_integers(exact, table_bits) if table_bits else np.zeros(0, dtype=np.int64)
    partials = np.zeros((m, n_cols, table.size, 2) if keep_partials else (0, 0, 0, 0), dtype=np.int64)
    c = np.empty((m, n_cols), dtype=np.float64)
    overflow = np.empty((m, n_cols), dtype=np.bool_)
    limit = (1 << (acc_bits - 1 if signed else acc_bits)) - 1
    operands = (ea.sign, ea.exponent, eb.sign, eb.exponent)
    _lns_accumulate(
        *operands, f, hybrid_bits, fmt.q_min, limit, signed, table, table_int, c, overflow, partials
    )
    lsb_exponent = fmt.q_min + ea.scale + eb.scale
    # exact power-of-two scaling (integer constants carry 2^t, the hybrid's unit is 1/n)
    c = np.ldexp(c, lsb_exponent - (table_bits + (f if hybrid_bits else 0) if table_bits else 0))
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
    signed: int = 0,
    table_bits: int = 0,
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
        signed: 1 for n signed accumulators (the patent's claim 2) instead of n unsigned pairs.
        table_bits: fixed-point fraction bits of the 2^(r/n) constants (0: float64 constants).

    Returns:
        (m, n) array of ``a``'s dtype. Saturation is silent here; see :func:`lns_matmul_detailed`.
    """
    result = lns_matmul_detailed(
        a,
        b,
        f=f,
        exp_bits=exp_bits,
        acc_bits=acc_bits,
        hybrid_bits=hybrid_bits,
        out_log=out_log,
        signed=signed,
        table_bits=table_bits,
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
        declines=TOO_LARGE,
        finite_only=True,  # the log format has no encoding for NaN/Inf
    )
)
