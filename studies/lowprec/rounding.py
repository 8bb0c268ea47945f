"""Round-to-nearest-even to a binary floating-point format given by its exponent and mantissa bits.

A format with ``e`` exponent bits and ``m`` stored mantissa bits (IEEE 754 layout, implicit
leading 1, gradual underflow) has

* bias ``2^(e−1) − 1``, smallest normal exponent ``emin = 1 − bias``, largest ``emax = bias``;
* largest finite value ``(2 − 2^−m) · 2^emax`` (65504 for float16);
* spacing ``2^(max(E, emin) − m)`` around a value with exponent ``E`` — constant below ``2^emin``,
  which is what makes subnormals gradual.

:func:`round_scalar` rounds a float64 to such a format by integer operations on its bit pattern:
take the 53-bit significand, drop as many low bits as the format (and, for subnormal results, the
distance below ``emin``) does not keep, and round the dropped part half-to-even. Values at or past
``max + spacing/2`` become ±inf, tiny values ±0, inf/nan pass through — all as IEEE 754 does.

Formats here: float16 (5, 10), bfloat16 (8, 7), float32 (8, 23) and float64 (11, 52, the identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

#: What the jitted kernels receive for a format: (mantissa bits, emin, largest finite value).
FormatSpec = tuple[int, int, float]

_SIGN = np.uint64(1 << 63)
_ABS_INF = np.uint64(0x7FF0000000000000)
_FRACTION = np.uint64((1 << 52) - 1)
_HIDDEN = np.uint64(1 << 52)
_ONE = np.uint64(1)
_EXP_SHIFT = np.uint64(52)


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: ``exp_bits`` exponent bits, ``man_bits`` stored mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 2 - 2 ** (self.exp_bits - 1)

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def max_finite(self) -> float:
        return math.ldexp(2.0 - 2.0**-self.man_bits, self.emax)

    @property
    def unit_roundoff(self) -> float:
        """``u = 2^−(m+1)``: the largest relative error of one rounding (normal range)."""
        return 2.0 ** -(self.man_bits + 1)

    @property
    def spec(self) -> FormatSpec:
        """The tuple the jitted kernels take."""
        return (self.man_bits, self.emin, self.max_finite)


FLOAT16 = FloatFormat("float16", 5, 10)
BFLOAT16 = FloatFormat("bfloat16", 8, 7)
FLOAT32 = FloatFormat("float32", 8, 23)
FLOAT64 = FloatFormat("float64", 11, 52)
FORMATS: dict[str, FloatFormat] = {f.name: f for f in (FLOAT16, BFLOAT16, FLOAT32, FLOAT64)}


@numba.njit(cache=True)
def round_scalar(value, man_bits, emin, max_finite):  # pragma: no cover - jitted
    """``value`` (float64) rounded to nearest-even in the format (man_bits, emin, max_finite)."""
    if man_bits >= 52:  # float64 itself: nothing to round
        return value
    bits = np.float64(value).view(np.uint64)
    magnitude = bits & ~_SIGN
    if magnitude >= _ABS_INF:  # inf and nan pass through
        return value
    exp_field = np.int64(magnitude >> _EXP_SHIFT)
    if exp_field == 0:  # float64 subnormal: far below the smallest subnormal of any format here
        return 0.0 * value  # ±0 with the sign of value
    exponent = exp_field - 1023
    # Bits of the 53-bit significand the format cannot keep; more when the result is subnormal.
    drop = 52 - man_bits + max(0, emin - exponent)
    if drop > 53:  # below half the smallest subnormal: rounds to zero
        return 0.0 * value
    significand = (magnitude & _FRACTION) | _HIDDEN
    shift = np.uint64(drop)
    half = _ONE << (shift - _ONE)
    lsb = (significand >> shift) & _ONE
    quanta = (significand + half - _ONE + lsb) >> shift  # round half to even, in units of spacing
    result = math.ldexp(float(quanta), exponent - 52 + drop)
    if result > max_finite:
        result = math.inf
    return math.copysign(result, value)


@numba.njit(cache=True)
def rnd(value, fmt):  # pragma: no cover - jitted
    """:func:`round_scalar` with the format as its ``FormatSpec`` tuple."""
    return round_scalar(value, fmt[0], fmt[1], fmt[2])


@numba.njit(cache=True)
def _round_flat(flat, out, fmt):  # pragma: no cover - jitted
    for i in range(flat.size):
        out[i] = rnd(flat[i], fmt)


def round_array(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Every element of ``a`` rounded to ``fmt``; returns a new float64 array of the same shape."""
    flat = np.ascontiguousarray(a, dtype=np.float64).ravel()
    out = np.empty_like(flat)
    _round_flat(flat, out, fmt.spec)
    return out.reshape(np.shape(a))
