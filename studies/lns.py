"""LNS study: the error of the approximate log-domain accumulation (``log_approx``) and where it comes from.

``log_approx`` (:mod:`kernels.matmul.lns`, US 2021/0056446 A1 / US 11,886,980) multiplies in a
logarithmic number system — operands ``±2^(e/n)·2^σ`` with ``n = 2^f`` values per binade — and sums
the products exactly in ``n`` pairs of integer accumulators. Its error has three possible sources,
measured here one at a time against the float64 reference ``ref = A @ B`` (float64 loops):

1. **input quantisation** — the float64 product of the quantised operands, ``decode(A_q) @ decode(B_q)``;
2. **+ accumulation** — the LNS datapath itself (``out_log=0``), which equals (1) up to float64
   rounding while no accumulator saturates; an accumulator-width sweep shows where saturation
   starts, with the overflow flags it raises;
3. **+ output conversion** — the result rounded back to the log format (``out_log=1``);

and, beside (2), the hybrid of the patent: ``h`` low remainder bits approximated Mitchell-style
(``2^x ≈ 1 + x``), which keeps ``2^(f−h)`` accumulator pairs per output instead of ``2^f``.

Every stage's own contribution is also measured against the stage before it (``own_rel_max``),
and two analytic oracles sit beside the measurements: for independent zero-mean operands, the
relative L2 error of (1) is ``√E[ε²]`` with ``ε = 2^((δ_a+δ_b)/n) − 1`` and ``δ ~ U(−½, ½)`` the
rounding of ``n·log2|x|`` (:func:`quantisation_l2_model`); the output conversion's own relative
error is at most ``(2^(1/n) − 1)/(2^(1/n) + 1)`` (:func:`output_conversion_bound`).

Inputs: standard-normal matmuls of several sizes (the inner size k is what accumulators see), and
the three layers of a 64-512-128-10 ReLU MLP trained on scikit-learn's digits (the MNIST study's
network on the embedded 8x8 digits) — each layer's product with the activations it really meets,
and the test accuracy when every layer runs through ``log_approx`` (float32 and float64 alongside).

Format throughout: ``exp_bits = 4`` (the log magnitude spans 16 binades below each tensor's
largest value), per-tensor scale σ; f = 0…6. The hardware cost proxy per output is the number of
accumulators (``2·2^(f−h)``: a positive and a negative one per pair) times their width; the
width a product of inner size k can need is ``2^(exp_bits+1) + ⌈log2 k⌉`` bits (``+ f + 1`` with
the hybrid), and the width the data really used is read off the accumulators.

Datapath variants (``lns_variants.csv``): the encoder's scale (values the former frexp-based scale
clipped), the patent's n signed accumulators against the 2n unsigned ones, the 2^(r/n) constants
in fixed point (an integer-only path), and a comparison with float accumulation at equal
accumulator bits (16 and 32 per output).

Writes ``lns_errors.csv``, ``lns_mlp.csv``, ``lns_variants.csv``, five PNGs and ``summary.md``
into ``out/lns``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from autotune.evaluate import rel_l2_error, rel_max_error
from kernels.matmul import lns
from kernels.matmul.logdomain import log_matmul
from kernels.matmul.reference import matmul_reference
from studies import _plots
from studies import _tables as tables
from studies.data import Dataset, load_digits
from studies.lowprec.float_matmul import matmul_lowprec
from studies.lowprec.rounding import FLOAT16, FLOAT32

NAME = "lns"
EXP_BITS = lns.DEFAULT_EXP_BITS
WIDE_ACC_BITS = lns.MAX_ACC_BITS
F_VALUES: tuple[int, ...] = tuple(range(7))
HIDDEN: tuple[int, int] = (512, 128)
#: Kept accumulators are computed in row blocks of about this many bytes.
PARTIALS_BYTES = 1 << 24

# Variant names, as they appear in the CSVs.
QUANTISED = "quantised"  # stage 1: float64 product of the quantised operands
LNS = "lns"  # stage 2: the LNS accumulators, output in float64
OUT_LOG = "lns+out_log"  # stage 3: output rounded back to the log format
HYBRID = "hybrid"  # stage 2 with h Mitchell bits
BLAS32 = "float32 BLAS"
LOG32 = "exact log float32"
FLOAT64 = "float64"

# ---------------------------------------------------------------------------------------------
# What is measured.


@dataclass(frozen=True)
class MatmulShape:
    """(m × k) @ (k × n)."""

    m: int
    k: int
    n: int

    @property
    def label(self) -> str:
        return f"{self.m}x{self.k} @ {self.k}x{self.n}"


@dataclass(frozen=True)
class Setup:
    """How much a run measures."""

    shapes: tuple[MatmulShape, ...]
    seeds: tuple[int, ...]
    all_hybrids: bool  # h = 1…f for every f; else only h = f (Mitchell) and h = 1
    width_f: tuple[int, ...]  # f values of the accumulator-width sweep
    widths: tuple[int, ...]  # accumulator widths swept (bits)
    epochs: int  # MLP training epochs


FULL = Setup(
    shapes=(
        MatmulShape(64, 64, 64),
        MatmulShape(128, 256, 128),
        MatmulShape(128, 1024, 128),
        MatmulShape(64, 4096, 64),
    ),
    seeds=(0, 1, 2),
    all_hybrids=True,
    width_f=(0, 2, 4, 6),
    widths=(*range(26, 47), WIDE_ACC_BITS),
    epochs=30,
)
QUICK = Setup(
    shapes=(MatmulShape(32, 64, 32), MatmulShape(32, 512, 32)),
    seeds=(0,),
    all_hybrids=False,
    width_f=(4,),
    widths=(28, 30, 31, 32, 33, 34, 36, 40, WIDE_ACC_BITS),
    epochs=10,
)


@dataclass(frozen=True)
class Subject:
    """One product ``a @ b`` and its float64 reference."""

    name: str
    source: str  # "gaussian" or "mlp"
    seed: int
    a: np.ndarray
    b: np.ndarray
    ref: np.ndarray

    @property
    def k(self) -> int:
        return self.a.shape[1]


def subject(name: str, source: str, seed: int, a: np.ndarray, b: np.ndarray) -> Subject:
    """A subject with its reference computed by the float64 loops (no BLAS, no LNS code)."""
    a, b = np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)
    return Subject(name, source, seed, a, b, matmul_reference(a, b))


def gaussian_subjects(shapes: Sequence[MatmulShape], seeds: Sequence[int]) -> list[Subject]:
    """Standard-normal operands per shape and seed."""
    subjects = []
    for shape in shapes:
        for seed in seeds:
            rng = np.random.default_rng([seed, shape.m, shape.k, shape.n])
            a, b = rng.standard_normal((shape.m, shape.k)), rng.standard_normal((shape.k, shape.n))
            subjects.append(subject(f"Gaussian {shape.label}", "gaussian", seed, a, b))
    return subjects


# ---------------------------------------------------------------------------------------------
# Analytic oracles and cost.


def quantisation_l2_model(f: int) -> float:
    """Predicted relative L2 error of the quantised product for independent zero-mean operands.

    Each operand is ``x·2^(δ/n)`` with ``δ ~ U(−½, ½)`` independent of x, so each product carries
    ``ε = 2^((δ_a+δ_b)/n) − 1`` and ``E‖C_q − C‖² / E‖C‖² = E[ε²] = E[4^(δ/n)]² − 2·E[2^(δ/n)]² + 1``,
    with ``E[2^(cδ)] = (2^(c/2) − 2^(−c/2)) / (c·ln 2)``.
    """
    n = 1 << f

    def mean_exp2(c: float) -> float:
        return (2 ** (c / 2) - 2 ** (-c / 2)) / (c * math.log(2))

    return math.sqrt(mean_exp2(2 / n) ** 2 - 2 * mean_exp2(1 / n) ** 2 + 1)


def output_conversion_bound(f: int) -> float:
    """Largest relative error of rounding to ``±2^(q + r/n)`` in the log domain: ``2^(1/(2n)) − 1``.

    Reached just above a threshold ``2^((r+½)/n)``, which rounds up to ``2^((r+1)/n)``.
    """
    return 2 ** (1 / (2 << f)) - 1


def accumulator_pairs(f: int, hybrid_bits: int = 0) -> int:
    """Accumulator pairs (positive, negative) per output: ``2^(f−h)``."""
    return 1 << (f - hybrid_bits)


#: Inner size at which the summary states accumulator storage (bits per output).
COST_K = 1024


def accumulator_bits(k: int, f: int, hybrid_bits: int = 0) -> int:
    """Storage per output: ``2·2^(f−h)`` accumulators of the worst-case width for inner size k."""
    return 2 * accumulator_pairs(f, hybrid_bits) * worst_case_acc_bits(k, f, hybrid_bits)


def signed_accumulator_bits(k: int, f: int, hybrid_bits: int = 0) -> int:
    """Storage per output with the patent's n signed accumulators: ``2^(f−h)`` of one bit more."""
    return accumulator_pairs(f, hybrid_bits) * (worst_case_acc_bits(k, f, hybrid_bits) + 1)


def worst_case_acc_bits(k: int, f: int, hybrid_bits: int = 0, exp_bits: int = EXP_BITS) -> int:
    """Width that no inner size k can overflow: ``2^(exp_bits+1) + ⌈log2 k⌉`` (``+ f + 1`` hybrid)."""
    return (2 << exp_bits) + math.ceil(math.log2(max(k, 1))) + (f + 1 if hybrid_bits else 0)


# ---------------------------------------------------------------------------------------------
# Running the datapath.


@dataclass(frozen=True)
class LnsRun:
    """One pass of the LNS datapath (``out_log=0``).

    ``c`` (m, n) float64; ``overflow`` (m, n) bool, True where an accumulator saturated;
    ``bits_used`` (m, n) int, bit length of each output's largest final accumulator.
    """

    c: np.ndarray
    overflow: np.ndarray
    bits_used: np.ndarray

    @property
    def max_bits_used(self) -> int:
        return int(self.bits_used.max()) if self.bits_used.size else 0


def run_lns(
    ea: lns.LnsTensor, ebt: lns.LnsTensor, *, hybrid_bits: int = 0, acc_bits: int = WIDE_ACC_BITS
) -> LnsRun:
    """``lns_matmul_detailed`` on encoded operands, in row blocks so the kept accumulators stay small."""
    f = ea.fmt.f
    m, n_cols = ea.shape[0], ebt.shape[1]
    per_row = n_cols * accumulator_pairs(f, hybrid_bits) * 2 * 8
    block = max(1, PARTIALS_BYTES // per_row)
    c, overflow, bits = [], [], []
    for start in range(0, m, block):
        rows = slice(start, start + block)
        part = lns.LnsTensor(ea.sign[rows], ea.exponent[rows], ea.scale, ea.fmt)
        result = lns.lns_matmul_detailed(
            part,
            ebt,
            f=f,
            exp_bits=ea.fmt.exp_bits,
            acc_bits=acc_bits,
            hybrid_bits=hybrid_bits,
            keep_partials=True,
        )
        assert result.partials is not None
        largest = result.partials.max(axis=(2, 3)).astype(np.float64)  # < 2^62: exact in float64
        c.append(result.c)
        overflow.append(result.overflow)
        bits.append(np.where(largest > 0, np.frexp(largest)[1], 0))  # frexp exponent = bit length
    return LnsRun(np.concatenate(c), np.concatenate(overflow), np.concatenate(bits))


def encode_pair(a: np.ndarray, b: np.ndarray, f: int) -> tuple[lns.LnsTensor, lns.LnsTensor]:
    """Both operands in the log format with f fraction bits (b stored transposed)."""
    fmt = lns.LnsFormat(f, EXP_BITS)
    return lns.encode(a, fmt, name="a"), lns.encode(b, fmt, transposed=True, name="b")


def hybrid_grid(f: int, all_hybrids: bool) -> list[int]:
    """Hybrid bits measured at f: 1…f, or just 1 and f (Mitchell)."""
    if f == 0:
        return []
    return list(range(1, f + 1)) if all_hybrids else sorted({1, f})


# ---------------------------------------------------------------------------------------------
# Error rows.


@dataclass
class ErrorRow:
    """The error of one variant on one subject.

    ``rel_max``/``rel_l2`` are against the float64 reference; ``own_rel_max``/``own_rel_l2`` against
    ``own_of``, the stage before (so they are this stage's own contribution).
    """

    experiment: str  # "stages", "width" or "baseline"
    source: str
    subject: str
    k: int
    outputs: int  # m·n
    seed: int
    variant: str
    rel_max: float
    rel_l2: float
    f: int | None = None
    hybrid_bits: int | None = None
    acc_bits: int | None = None
    acc_pairs: int | None = None
    own_of: str = ""
    own_rel_max: float | None = None
    own_rel_l2: float | None = None
    overflow_outputs: int | None = None  # outputs with the overflow flag set
    overflow_fraction: float | None = None  # … as a share of all m·n outputs
    acc_bits_used: int | None = None
    acc_bits_worst_case: int | None = None
    # Width sweep only: max|c − c₆₂| over the outputs without the flag, over max|c₆₂| (0: they are exact);
    # and whether the flag is set exactly where the 62-bit run's accumulators need more than acc_bits.
    unflagged_deviation: float | None = None
    flags_match_bits_needed: bool | None = None


def _row(s: Subject, experiment: str, variant: str, y: np.ndarray, **fields: object) -> ErrorRow:
    return ErrorRow(
        experiment,
        s.source,
        s.name,
        s.k,
        s.ref.size,
        s.seed,
        variant,
        rel_max_error(y, s.ref),
        rel_l2_error(y, s.ref),
        **fields,  # type: ignore[arg-type]
    )


def _own(y: np.ndarray, previous: np.ndarray, of: str) -> dict[str, object]:
    return {"own_of": of, "own_rel_max": rel_max_error(y, previous), "own_rel_l2": rel_l2_error(y, previous)}


def _flags(run: LnsRun) -> dict[str, object]:
    return {"overflow_outputs": int(run.overflow.sum()), "overflow_fraction": float(run.overflow.mean())}


def stage_rows(s: Subject, f: int, hybrids: Sequence[int]) -> list[ErrorRow]:
    """Stages (1)–(3) and the hybrids at one f, each with its own contribution."""
    ea, ebt = encode_pair(s.a, s.b, f)
    quantised = ea.decode() @ ebt.decode()  # float64: its rounding (~1e-16) is far below any stage
    wide = run_lns(ea, ebt)
    converted = lns.to_log_format(wide.c, f)  # exactly what out_log=1 does to the same sums
    common = {"f": f, "acc_bits": WIDE_ACC_BITS}
    worst = worst_case_acc_bits(s.k, f)
    rows = [
        _row(s, "stages", QUANTISED, quantised, f=f, **_own(quantised, s.ref, "reference")),
        _row(
            s,
            "stages",
            LNS,
            wide.c,
            **common,
            hybrid_bits=0,
            acc_pairs=accumulator_pairs(f),
            **_own(wide.c, quantised, QUANTISED),
            **_flags(wide),
            acc_bits_used=wide.max_bits_used,
            acc_bits_worst_case=worst,
        ),
        _row(
            s,
            "stages",
            OUT_LOG,
            converted,
            **common,
            hybrid_bits=0,
            acc_pairs=accumulator_pairs(f),
            **_own(converted, wide.c, LNS),
            acc_bits_worst_case=worst,
        ),
    ]
    for h in hybrids:
        hybrid = run_lns(ea, ebt, hybrid_bits=h)
        rows.append(
            _row(
                s,
                "stages",
                HYBRID,
                hybrid.c,
                **common,
                hybrid_bits=h,
                acc_pairs=accumulator_pairs(f, h),
                **_own(hybrid.c, quantised, QUANTISED),
                **_flags(hybrid),
                acc_bits_used=hybrid.max_bits_used,
                acc_bits_worst_case=worst_case_acc_bits(s.k, f, h),
            )
        )
    return rows


def width_rows(s: Subject, f: int, widths: Sequence[int]) -> list[ErrorRow]:
    """The LNS datapath at f with every accumulator width: error, own error and overflow flags.

    Each width is checked against the 62-bit run: outputs without the flag must equal it, and the
    flag must be set exactly where that run's largest accumulator needs more than ``acc_bits`` bits.
    """
    ea, ebt = encode_pair(s.a, s.b, f)
    quantised = ea.decode() @ ebt.decode()
    wide = run_lns(ea, ebt)
    scale = max(float(np.abs(wide.c).max()), np.finfo(np.float64).tiny)
    rows = []
    for width in widths:
        result = run_lns(ea, ebt, acc_bits=width)
        clean = ~result.overflow
        deviation = float(np.abs(result.c - wide.c)[clean].max()) / scale if clean.any() else 0.0
        rows.append(
            _row(
                s,
                "width",
                LNS,
                result.c,
                f=f,
                hybrid_bits=0,
                acc_bits=width,
                acc_pairs=accumulator_pairs(f),
                **_own(result.c, quantised, QUANTISED),
                **_flags(result),
                acc_bits_used=result.max_bits_used,
                acc_bits_worst_case=worst_case_acc_bits(s.k, f),
                unflagged_deviation=deviation,
                flags_match_bits_needed=bool(np.array_equal(result.overflow, wide.bits_used > width)),
            )
        )
    return rows


def baseline_rows(s: Subject) -> list[ErrorRow]:
    """float32 BLAS and the exact log-domain matmul in float32 (products via log2/exp2)."""
    a32, b32 = s.a.astype(np.float32), s.b.astype(np.float32)
    return [
        _row(s, "baseline", BLAS32, a32 @ b32),
        _row(s, "baseline", LOG32, log_matmul(a32, b32)),
    ]


# ---------------------------------------------------------------------------------------------
# Datapath variants: the encoder's scale, signed accumulators, fixed-point constants, equal bits.

#: Fixed-point fraction bits of the 2^(r/n) constants in the integer-only datapath variant.
TABLE_BITS = 24
#: Accumulator budgets (bits per output) of the equal-bits comparison: one fp16, one fp32 accumulator.
BUDGETS: tuple[int, ...] = (16, 32)
#: LNS designs tried within a budget: exp_bits, f and hybrid bits (h = 0: pure LNS, h = f: Mitchell).
BUDGET_EXP_BITS: tuple[int, ...] = (2, 3, 4)
BUDGET_F: tuple[int, ...] = (0, 2, 4, 6)


@dataclass
class VariantRow:
    """One measurement of a datapath variant on one subject (``lns_variants.csv``)."""

    experiment: str  # "encoder", "signed", "table", "budget"
    subject: str
    seed: int
    k: int
    f: int
    variant: str
    value: float  # encoder: clipped values; signed: 1 if equal to the unsigned run; else rel_max
    exp_bits: int = EXP_BITS
    hybrid_bits: int = 0
    acc_bits: int | None = None
    acc_slots: int | None = None  # accumulators per output
    acc_bits_used: int | None = None  # largest width an accumulator of this variant needed
    overflow_outputs: int | None = None


def frexp_scale_clipped(x: np.ndarray, fmt: lns.LnsFormat) -> int:
    """Values the former encoder clipped: σ from ``frexp(max|x|)``, then ``rint(n·(log2|x| − σ)) > e_max``.

    That scale puts the unrounded peak in the top binade; a log that rounds up to the next binade
    then exceeds ``e_max`` and was saturated (3.96 at f = 0 became 2.0). Kept to report the defect.
    """
    magnitude = np.abs(x[x != 0]).astype(np.float64)
    if magnitude.size == 0:
        return 0
    scale = int(np.frexp(magnitude.max())[1]) - (1 << (fmt.exp_bits - 1))
    return int((np.rint(fmt.n * (np.log2(magnitude) - scale)) > fmt.e_max).sum())


def misencoded(x: np.ndarray, t: lns.LnsTensor) -> int:
    """Values the encoder did not round to the nearest log level (underflow to zero excepted).

    Independent of the encoder's comparator: ``|log2|decode| − log2|x|| ≤ 1/(2n)`` in float64,
    with a 1e-9 margin for values on a threshold.
    """
    decoded = t.decode()
    kept = decoded != 0
    gap = np.abs(np.log2(np.abs(decoded[kept])) - np.log2(np.abs(x[kept])))
    return int((gap > 0.5 / t.fmt.n + 1e-9).sum())


def encoder_rows(s: Subject, f: int) -> list[VariantRow]:
    """Clipped values of the former (frexp) scale and mis-rounded values of the encoder, both operands."""
    fmt = lns.LnsFormat(f, EXP_BITS)
    ea, ebt = encode_pair(s.a, s.b, f)
    before = frexp_scale_clipped(s.a, fmt) + frexp_scale_clipped(s.b, fmt)
    after = misencoded(s.a, ea) + misencoded(s.b, ebt)
    return [
        VariantRow("encoder", s.name, s.seed, s.k, f, "frexp scale (before)", before),
        VariantRow("encoder", s.name, s.seed, s.k, f, "rounded-peak scale", after),
    ]


def signed_row(s: Subject, f: int) -> VariantRow:
    """n signed accumulators against n unsigned pairs (62 bits): equal results, bits each needs.

    ``value`` is 1 when outputs are bit-identical and every signed accumulator equals ``P − N``.
    """
    ea, ebt = encode_pair(s.a, s.b, f)
    kw = {"f": f, "exp_bits": EXP_BITS, "keep_partials": True}
    unsigned = lns.lns_matmul_detailed(ea, ebt, **kw)
    signed = lns.lns_matmul_detailed(ea, ebt, signed=1, **kw)
    assert unsigned.partials is not None and signed.partials is not None
    difference = unsigned.partials[..., 0] - unsigned.partials[..., 1]
    equal = np.array_equal(signed.partials[..., 0], difference) and np.array_equal(signed.c, unsigned.c)
    largest = np.abs(signed.partials[..., 0]).max()
    return VariantRow(
        "signed",
        s.name,
        s.seed,
        s.k,
        f,
        "signed",
        float(equal),
        acc_slots=accumulator_pairs(f),
        acc_bits_used=int(largest).bit_length() + 1,  # + the sign bit
        overflow_outputs=int(signed.overflow.sum()),
    )


def table_row(s: Subject, f: int) -> VariantRow:
    """The integer-only path (``table_bits = TABLE_BITS``) against float64 constants: its own error."""
    ea, ebt = encode_pair(s.a, s.b, f)
    reference = lns.lns_matmul_detailed(ea, ebt, f=f).c
    integer = lns.lns_matmul_detailed(ea, ebt, f=f, table_bits=TABLE_BITS).c
    return VariantRow(
        "table", s.name, s.seed, s.k, f, f"{TABLE_BITS}-bit constants", rel_max_error(integer, reference)
    )


def budget_designs(budget: int) -> list[tuple[int, int, int, int]]:
    """(exp_bits, f, h, acc_bits) of the signed LNS designs whose accumulators fit ``budget`` bits."""
    designs = []
    for exp_bits in BUDGET_EXP_BITS:
        for f in BUDGET_F:
            for h in sorted({0, f}):
                width = budget >> (f - h)  # 2^(f−h) signed accumulators share the budget
                if width >= 8 and (2 << exp_bits) + (f + 1 if h else 0) < width:
                    designs.append((exp_bits, f, h, width))
    return designs


def budget_rows(s: Subject) -> list[VariantRow]:
    """Equal accumulator bits: every LNS design within each budget, and float with that accumulator.

    The float side is fp16 storage with one float16 (16 bits) or float32 (32 bits) accumulator,
    the naive sequential sum (:func:`studies.lowprec.float_matmul.matmul_lowprec`).
    """
    rows = []
    for budget, comp in zip(BUDGETS, (FLOAT16, FLOAT32), strict=True):
        y = matmul_lowprec(s.a, s.b, FLOAT16, comp, k_block=s.k)
        rows.append(
            VariantRow(
                "budget",
                s.name,
                s.seed,
                s.k,
                10,
                f"fp16 acc {comp.name}",
                rel_max_error(y, s.ref),
                exp_bits=5,
                acc_bits=budget,
                acc_slots=1,
            )
        )
        for exp_bits, f, h, width in budget_designs(budget):
            fmt = lns.LnsFormat(f, exp_bits)
            ea, ebt = lns.encode(s.a, fmt), lns.encode(s.b, fmt, transposed=True)
            result = lns.lns_matmul_detailed(
                ea, ebt, f=f, exp_bits=exp_bits, acc_bits=width, hybrid_bits=h, signed=1
            )
            rows.append(
                VariantRow(
                    "budget",
                    s.name,
                    s.seed,
                    s.k,
                    f,
                    f"LNS {budget}-bit budget",
                    rel_max_error(result.c, s.ref),
                    exp_bits=exp_bits,
                    hybrid_bits=h,
                    acc_bits=width,
                    acc_slots=accumulator_pairs(f, h),
                    overflow_outputs=int(result.overflow.sum()),
                )
            )
    return rows


def variant_rows(gaussian: Sequence[Subject]) -> list[VariantRow]:
    """Every variant measurement on the standard-normal subjects."""
    rows: list[VariantRow] = []
    for s in gaussian:
        for f in F_VALUES:
            rows += encoder_rows(s, f)
            rows.append(signed_row(s, f))
            rows.append(table_row(s, f))
        rows += budget_rows(s)
    return rows


# ---------------------------------------------------------------------------------------------
# The digits MLP.


@dataclass(frozen=True)
class TrainedMLP:
    """A ReLU MLP's layers as ``x @ weights_t[i] + biases[i]`` (float64) and its test data."""

    weights_t: tuple[np.ndarray, ...]  # (in, out) each
    biases: tuple[np.ndarray, ...]
    x_test: np.ndarray  # float64 (n, 64)
    y_test: np.ndarray
    torch_accuracy: float  # the trained float32 torch model on the test set
    train_s: float
    epochs: int
    description: str


def train_mlp(dataset: Dataset, *, epochs: int, seed: int = 0) -> TrainedMLP:
    """64-512-128-10 ReLU MLP, Adam (lr 1e-3, batches of 64) on the digits' train split, one thread."""
    torch.manual_seed(seed)
    sizes = (dataset.n_features, *HIDDEN, 10)
    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread of a shared machine
    started = time.perf_counter()
    try:
        for _ in range(epochs):
            for batch in torch.randperm(len(y), generator=generator).split(64):
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    train_s = time.perf_counter() - started
    with torch.no_grad():
        predicted = model(torch.from_numpy(dataset.x_test)).argmax(1).numpy()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    return TrainedMLP(
        weights_t=tuple(np.ascontiguousarray(m.weight.detach().double().numpy().T) for m in linears),
        biases=tuple(m.bias.detach().double().numpy() for m in linears),
        x_test=dataset.x_test.astype(np.float64),
        y_test=dataset.y_test,
        torch_accuracy=float(np.mean(predicted == dataset.y_test)),
        train_s=train_s,
        epochs=epochs,
        description=dataset.description,
    )


#: ``matmul(x, layer_index) -> x @ weights_t[layer_index]``
LayerMatmul = Callable[[np.ndarray, int], np.ndarray]


def forward(mlp: TrainedMLP, matmul: LayerMatmul) -> list[np.ndarray]:
    """Inputs of every layer and the logits: ``[x, h1, h2, logits]``; bias and ReLU in float64."""
    values = [mlp.x_test]
    for i, bias in enumerate(mlp.biases):
        z = np.asarray(matmul(values[-1], i), dtype=np.float64) + bias
        values.append(np.maximum(z, 0.0) if i < len(mlp.biases) - 1 else z)
    return values


def float_matmul(mlp: TrainedMLP, dtype: type[np.floating]) -> LayerMatmul:
    """BLAS in ``dtype``."""
    weights = [w.astype(dtype) for w in mlp.weights_t]
    return lambda x, i: x.astype(dtype) @ weights[i]


def log32_matmul(mlp: TrainedMLP) -> LayerMatmul:
    """The exact log-domain matmul in float32."""
    weights = [w.astype(np.float32) for w in mlp.weights_t]
    return lambda x, i: log_matmul(np.ascontiguousarray(x, dtype=np.float32), weights[i])


def quantised_matmul(mlp: TrainedMLP, f: int) -> LayerMatmul:
    """Stage (1): the float64 product of the quantised operands."""
    fmt = lns.LnsFormat(f, EXP_BITS)
    weights = [lns.encode(w, fmt).decode() for w in mlp.weights_t]
    return lambda x, i: lns.encode(x, fmt).decode() @ weights[i]


def lns_layer_matmul(mlp: TrainedMLP, f: int, hybrid_bits: int = 0, out_log: int = 0) -> LayerMatmul:
    """``log_approx`` with the weights encoded once; activations encoded per batch (one σ per batch)."""
    weights = [lns.prepare_lns(w, f=f, exp_bits=EXP_BITS) for w in mlp.weights_t]
    return lambda x, i: lns.log_approx(x, weights[i], f=f, hybrid_bits=hybrid_bits, out_log=out_log)


def mlp_subjects(mlp: TrainedMLP) -> list[Subject]:
    """Each layer's product with the activations it meets in the float64 network (test set)."""
    inputs = forward(mlp, float_matmul(mlp, np.float64))[:-1]
    return [
        subject(f"MLP fc{i + 1} ({x.shape[0]}x{w.shape[0]} @ {w.shape[0]}x{w.shape[1]})", "mlp", 0, x, w)
        for i, (x, w) in enumerate(zip(inputs, mlp.weights_t, strict=True))
    ]


@dataclass
class AccuracyRow:
    """Test accuracy of the MLP with every layer's product computed one way."""

    variant: str
    accuracy: float
    agreement: float  # share of test predictions equal to the float64 network's
    f: int | None = None
    hybrid_bits: int | None = None
    acc_pairs: int | None = None


def mlp_accuracy(mlp: TrainedMLP, all_hybrids: bool) -> list[AccuracyRow]:
    """Accuracy per variant and f; float64, float32 BLAS and the exact log-domain matmul beside it."""
    reference = forward(mlp, float_matmul(mlp, np.float64))[-1].argmax(1)

    def row(variant: str, matmul: LayerMatmul, **fields: int | None) -> AccuracyRow:
        predicted = forward(mlp, matmul)[-1].argmax(1)
        return AccuracyRow(
            variant, float(np.mean(predicted == mlp.y_test)), float(np.mean(predicted == reference)), **fields
        )

    rows = [
        row(FLOAT64, float_matmul(mlp, np.float64)),
        row(BLAS32, float_matmul(mlp, np.float32)),
        row(LOG32, log32_matmul(mlp)),
    ]
    for f in F_VALUES:
        rows.append(row(QUANTISED, quantised_matmul(mlp, f), f=f))
        rows.append(row(LNS, lns_layer_matmul(mlp, f), f=f, hybrid_bits=0, acc_pairs=accumulator_pairs(f)))
        rows.append(
            row(
                OUT_LOG,
                lns_layer_matmul(mlp, f, out_log=1),
                f=f,
                hybrid_bits=0,
                acc_pairs=accumulator_pairs(f),
            )
        )
        for h in hybrid_grid(f, all_hybrids):
            rows.append(
                row(
                    HYBRID, lns_layer_matmul(mlp, f, h), f=f, hybrid_bits=h, acc_pairs=accumulator_pairs(f, h)
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Aggregation.

Stats = tuple[float, float, float]  # median, min, max


def select(
    rows: Iterable[ErrorRow], *, hybrid_bits_equals_f: bool = False, **match: object
) -> list[ErrorRow]:
    """Rows whose fields equal every ``match`` value (and, if asked, with ``hybrid_bits == f``)."""
    return [
        r
        for r in rows
        if all(getattr(r, k) == v for k, v in match.items())
        and (not hybrid_bits_equals_f or r.hybrid_bits == r.f)
    ]


def stats(values: Sequence[float]) -> Stats:
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)), float(v.min()), float(v.max())


def by_f(
    rows: Sequence[ErrorRow], field: str, *, hybrid_bits_equals_f: bool = False, **match: object
) -> dict[int, Stats]:
    """``field`` of the matching rows, aggregated per f."""
    groups: dict[int, list[float]] = {}
    for r in select(rows, hybrid_bits_equals_f=hybrid_bits_equals_f, **match):
        assert r.f is not None
        groups.setdefault(r.f, []).append(getattr(r, field))
    return {f: stats(v) for f, v in sorted(groups.items())}


def baseline(rows: Sequence[ErrorRow], variant: str, source: str, field: str = "rel_max") -> Stats:
    return stats(
        [getattr(r, field) for r in select(rows, experiment="baseline", variant=variant, source=source)]
    )


# ---------------------------------------------------------------------------------------------
# Plots.

COLORS = {
    QUANTISED: "tab:blue",
    LNS: "tab:orange",
    OUT_LOG: "tab:green",
    HYBRID: "tab:red",
    BLAS32: "0.3",
    LOG32: "tab:purple",
    FLOAT64: "black",
}
STAGE_LABELS = {
    QUANTISED: "(1) quantised operands, float64 product",
    LNS: "(2) = (1) + LNS accumulation (62-bit accumulators)",
    OUT_LOG: "(3) = (2) + output conversion (out_log=1)",
}


def mitchell_by_f(rows: Sequence[ErrorRow], field: str, source: str) -> dict[int, Stats]:
    """``field`` of the full-Mitchell hybrid (h = f) per f ≥ 1."""
    return by_f(rows, field, experiment="stages", source=source, variant=HYBRID, hybrid_bits_equals_f=True)


def _f_colors() -> list[tuple[float, float, float, float]]:
    """One viridis colour per f."""
    return [colormaps["viridis"](i / (len(F_VALUES) - 1)) for i in range(len(F_VALUES))]


def _errorbars(ax, series: dict[int, Stats], offset: float = 0.0, **style: object) -> None:
    fs = np.array(list(series), dtype=np.float64) + offset
    med, lo, hi = (_plots.floor_for_log([s[i] for s in series.values()]) for i in range(3))
    ax.errorbar(fs, med, yerr=[med - lo, hi - med], capsize=2, ms=4, **style)


def _f_axis(ax, ylabel: str) -> None:
    ax.set_xticks(list(F_VALUES))
    ax.set_xlabel("fraction bits f of the log format (n = 2^f values per binade)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    _plots.log_grid(ax)


def plot_error_vs_f(rows: Sequence[ErrorRow], path: Path) -> Path:
    """Gaussian matmuls: rel. max and rel. L2 error per stage vs f, baselines and the model."""
    fig, axes = _plots.figure(2, width_in=6.6, height_in=5.0)
    for ax, field, ylabel in zip(
        axes,
        ("rel_max", "rel_l2"),
        ("max|y − ref| / max|ref|", "‖y − ref‖₂ / ‖ref‖₂"),
        strict=True,
    ):
        for offset, variant in zip((-0.1, 0.0, 0.1), (QUANTISED, LNS, OUT_LOG), strict=True):
            series = by_f(rows, field, experiment="stages", source="gaussian", variant=variant)
            _errorbars(
                ax,
                series,
                offset,
                fmt="o-" if variant != LNS else "s",
                color=COLORS[variant],
                label=STAGE_LABELS[variant],
            )
        _errorbars(
            ax,
            mitchell_by_f(rows, field, "gaussian"),
            0.2,
            fmt="^--",
            color=COLORS[HYBRID],
            label="(2) with Mitchell on all f bits (h = f, 1 pair)",
        )
        for variant in (BLAS32, LOG32):
            ax.axhline(
                baseline(rows, variant, "gaussian", field)[0],
                color=COLORS[variant],
                ls=":",
                label=f"{variant} (median)",
            )
        _f_axis(ax, ylabel)
    axes[1].plot(
        F_VALUES,
        [quantisation_l2_model(f) for f in F_VALUES],
        "k--",
        lw=1,
        label="model √E[ε²] for stage (1)",
    )
    axes[0].set_title("Relative max error (median over shapes and seeds, min–max bars)")
    axes[1].set_title("Relative L2 error")
    for ax in axes:
        ax.legend(fontsize=7, loc="lower left")
    shapes = sorted({(r.k, r.subject) for r in select(rows, experiment="stages", source="gaussian")})
    fig.suptitle(
        "log_approx on standard-normal matmuls: "
        + ", ".join(s for _, s in dict.fromkeys(shapes)).replace("Gaussian ", "")
    )
    return _plots.save(fig, path)


def plot_error_sources(rows: Sequence[ErrorRow], path: Path) -> Path:
    """Each stage's own contribution vs f, on Gaussian matmuls and on the MLP layers."""
    fig, axes = _plots.figure(2, width_in=6.6, height_in=5.0)
    for ax, source, title in zip(
        axes, ("gaussian", "mlp"), ("standard-normal matmuls", "digits MLP layers"), strict=True
    ):
        sources = (
            (QUANTISED, "input quantisation: (1) vs reference"),
            (LNS, "accumulation: (2) vs (1)  (exact 0 drawn at 1e-17)"),
            (OUT_LOG, "output conversion: (3) vs (2)"),
        )
        for variant, label in sources:
            series = by_f(rows, "own_rel_max", experiment="stages", source=source, variant=variant)
            _errorbars(ax, series, fmt="o-", color=COLORS[variant], label=label)
        _errorbars(
            ax,
            mitchell_by_f(rows, "own_rel_max", source),
            fmt="^--",
            color=COLORS[HYBRID],
            label="Mitchell on all f bits: hybrid h = f vs (1)",
        )
        ax.plot(
            F_VALUES,
            [output_conversion_bound(f) for f in F_VALUES],
            "k:",
            lw=1,
            label="bound (2^(1/n)−1)/(2^(1/n)+1)",
        )
        ax.axhline(np.finfo(np.float64).eps, color="0.6", lw=0.8, ls="-.", label="float64 ε")
        _f_axis(ax, "own relative max error (vs the stage before)")
        ax.set_title(f"Error sources, {title}")
    axes[0].legend(fontsize=7, loc="center right")
    return _plots.save(fig, path)


def plot_accumulator_width(rows: Sequence[ErrorRow], path: Path, f: int) -> Path:
    """Error and overflow-flag share vs accumulator width at f, one line per Gaussian shape (seed 0)."""
    fig, (ax_e, ax_o) = _plots.figure(2, width_in=6.6, height_in=5.0)
    width_rows_f = select(rows, experiment="width", f=f, seed=0, source="gaussian")
    subjects = list(dict.fromkeys(r.subject for r in width_rows_f))
    for name in subjects:
        members = [r for r in select(width_rows_f, subject=name) if r.acc_bits != WIDE_ACC_BITS]
        wide = select(rows, experiment="stages", variant=LNS, f=f, seed=0, subject=name)[0]
        label = (
            f"{name.replace('Gaussian ', '')}: uses {wide.acc_bits_used} bits, "
            f"worst case {wide.acc_bits_worst_case}"
        )
        (line,) = ax_e.plot(
            [r.acc_bits for r in members], [r.rel_max for r in members], "o-", ms=3, label=label
        )
        ax_e.axhline(wide.rel_max, color=line.get_color(), ls=":", lw=0.8)
        flagged = [r for r in members if r.overflow_fraction]
        ax_o.plot(
            [r.acc_bits for r in flagged],
            [r.overflow_fraction for r in flagged],
            "o-",
            ms=3,
            color=line.get_color(),
            label=label,
        )
    ax_e.set_ylabel("max|y − ref| / max|ref|  (dotted: 62-bit accumulators)")
    ax_e.set_title(f"Error vs accumulator width, f = {f} ({accumulator_pairs(f)} pairs per output)")
    ax_o.set_ylabel("share of outputs with the overflow flag set (0 not drawn)")
    ax_o.set_title("Saturated outputs vs accumulator width")
    for ax in (ax_e, ax_o):
        ax.set_yscale("log")
        ax.set_xlabel("accumulator width acc_bits (bits, each of the 2n accumulators)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _plots.log_grid(ax)
    ax_e.legend(fontsize=7, loc="upper right")
    ax_o.legend(fontsize=7, loc="lower left")
    return _plots.save(fig, path)


def plot_hybrid(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow], path: Path) -> Path:
    """Error (Gaussian median) and MLP accuracy vs accumulator pairs per output, one line per f over h."""
    fig, (ax_e, ax_a) = _plots.figure(2, width_in=6.6, height_in=5.0)
    cmap = _f_colors()
    for f in F_VALUES:
        points = [
            (accumulator_pairs(f), select(rows, experiment="stages", source="gaussian", variant=LNS, f=f))
        ]
        points += [
            (
                accumulator_pairs(f, h),
                select(rows, experiment="stages", source="gaussian", variant=HYBRID, f=f, hybrid_bits=h),
            )
            for h in range(1, f + 1)
        ]
        points = [(p, members) for p, members in points if members]
        ax_e.plot(
            [p for p, _ in points],
            [np.median([r.rel_max for r in members]) for _, members in points],
            "o-",
            ms=4,
            color=cmap[f],
            label=f"f = {f}: h = 0 (right) … {f} (left)" if f else "f = 0",
        )
        acc = [a for a in accuracy if a.f == f and a.variant in (LNS, HYBRID)]
        acc.sort(key=lambda a: -(a.acc_pairs or 0))
        ax_a.plot(
            [a.acc_pairs for a in acc],
            [100 * a.accuracy for a in acc],
            "o-",
            ms=4,
            color=cmap[f],
            label=f"f = {f}",
        )
    pure = by_f(rows, "rel_max", experiment="stages", source="gaussian", variant=LNS)
    ax_e.plot(
        [accumulator_pairs(f) for f in pure],
        [s[0] for s in pure.values()],
        "k-",
        lw=2.5,
        alpha=0.35,
        label="pure LNS (h = 0), f = 0…6",
    )
    ax_e.set_yscale("log")
    ax_e.set_ylabel("max|y − ref| / max|ref|  (median, standard-normal matmuls)")
    ax_e.set_title("Hybrid: error vs accumulators kept")
    float32 = next(a.accuracy for a in accuracy if a.variant == BLAS32)
    ax_a.axhline(100 * float32, color=COLORS[BLAS32], ls=":", label="float32 BLAS")
    ax_a.set_ylabel("MLP test accuracy (%)")
    ax_a.set_title("Hybrid: digits-MLP accuracy vs accumulators kept")
    for ax in (ax_e, ax_a):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("accumulator pairs per output, 2^(f−h)  (log2 scale)")
        _plots.log_grid(ax)
        ax.legend(fontsize=7)
    return _plots.save(fig, path)


def plot_mlp(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow], mlp: TrainedMLP, path: Path) -> Path:
    """Per-layer error vs f, and test accuracy vs f per variant with the float baselines."""
    fig, (ax_e, ax_a) = _plots.figure(2, width_in=6.6, height_in=5.0)
    layers = list(dict.fromkeys(r.subject for r in select(rows, experiment="stages", source="mlp")))
    for name, color in zip(layers, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        for variant, style in ((LNS, "o-"), (OUT_LOG, "s--")):
            members = select(rows, experiment="stages", subject=name, variant=variant)
            ax_e.plot(
                [r.f for r in members],
                [r.rel_max for r in members],
                style,
                ms=3,
                color=color,
                label=f"{name}, {'(2)' if variant == LNS else '(3) out_log'}",
            )
        ax_e.axhline(
            select(rows, experiment="baseline", subject=name, variant=BLAS32)[0].rel_max,
            color=color,
            ls=":",
            lw=0.8,
        )
    _f_axis(ax_e, "max|y − ref| / max|ref| of the layer's product (dotted: float32 BLAS)")
    ax_e.set_title("Each layer on its float64 inputs")
    ax_e.legend(fontsize=6.5, loc="lower left")
    for variant, style in ((QUANTISED, "o-"), (LNS, "s:"), (OUT_LOG, "v-"), (HYBRID, "^--")):
        members = [
            a for a in accuracy if a.variant == variant and (variant != HYBRID or a.hybrid_bits == a.f)
        ]
        label = STAGE_LABELS.get(variant, "(2) with Mitchell on all f bits (h = f)")
        ax_a.plot(
            [a.f for a in members],
            [100 * a.accuracy for a in members],
            style,
            ms=5,
            color=COLORS[variant],
            label=label,
        )
    for variant in (FLOAT64, BLAS32, LOG32):
        value = next(a.accuracy for a in accuracy if a.variant == variant)
        ax_a.axhline(100 * value, color=COLORS[variant], ls=":", lw=1, label=f"{variant}: {value:.1%}")
    ax_a.set_xticks(list(F_VALUES))
    ax_a.set_xlabel("fraction bits f of the log format (n = 2^f values per binade)")
    ax_a.set_ylabel(f"test accuracy on {len(mlp.y_test)} digits (%)")
    ax_a.set_title("64-512-128-10 MLP, every layer through log_approx")
    _plots.log_grid(ax_a)
    ax_a.legend(fontsize=7, loc="lower right")
    return _plots.save(fig, path)


# ---------------------------------------------------------------------------------------------
# Summary.


def _median_at(rows: Sequence[ErrorRow], field: str, **match: object) -> float:
    values = [getattr(r, field) for r in select(rows, **match)]
    return float(np.median(values)) if values else math.nan


def _accuracy(
    accuracy: Sequence[AccuracyRow], variant: str, f: int | None = None, h: int | None = None
) -> float:
    for a in accuracy:
        if a.variant == variant and a.f == f and (h is None or a.hybrid_bits == h):
            return a.accuracy
    return math.nan


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


def stage_table(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow]) -> list[str]:
    """Per f: cost, the three stages, the stages' own errors, the oracles and the MLP accuracy."""
    header = [
        "f",
        "acc. pairs / output",
        f"acc. bits / output, 2n unsigned (k = {COST_K})",
        f"… n signed (k = {COST_K})",
        "(1) quantised",
        "(2) LNS",
        "(2) vs (1)",
        "(3) out_log",
        "(3) vs (2) [bound]",
        "Mitchell h=f",
        "L2 of (1) [model]",
        "MLP acc. (2)",
        "MLP acc. (3)",
    ]
    g = {"experiment": "stages", "source": "gaussian"}
    table = []
    for f in F_VALUES:
        table.append(
            [
                f,
                accumulator_pairs(f),
                accumulator_bits(COST_K, f),
                signed_accumulator_bits(COST_K, f),
                tables.sci(_median_at(rows, "rel_max", **g, variant=QUANTISED, f=f), 2),
                tables.sci(_median_at(rows, "rel_max", **g, variant=LNS, f=f), 2),
                tables.sci(max(r.own_rel_max or 0.0 for r in select(rows, **g, variant=LNS, f=f))),
                tables.sci(_median_at(rows, "rel_max", **g, variant=OUT_LOG, f=f), 2),
                f"{tables.sci(_median_at(rows, 'own_rel_max', **g, variant=OUT_LOG, f=f), 2)} "
                f"[{tables.sci(output_conversion_bound(f), 2)}]",
                tables.sci(_median_at(rows, "rel_max", **g, variant=HYBRID, f=f, hybrid_bits=f), 2)
                if f
                else "—",
                f"{tables.sci(_median_at(rows, 'rel_l2', **g, variant=QUANTISED, f=f), 2)} "
                f"[{tables.sci(quantisation_l2_model(f), 2)}]",
                _pct(_accuracy(accuracy, LNS, f)),
                _pct(_accuracy(accuracy, OUT_LOG, f)),
            ]
        )
    return tables.markdown(header, table).splitlines()


def _flag_count(r: ErrorRow) -> str:
    """``"12 / 4096"``: flagged outputs of all outputs."""
    return f"{r.overflow_outputs} / {r.outputs}"


def width_table(rows: Sequence[ErrorRow], setup: Setup) -> list[str]:
    """Per shape (seed 0) and swept f: bits the data used, the worst case, what one bit less costs."""
    header = [
        "product",
        "f",
        "bits used (62-bit run)",
        "worst case 2^(exp_bits+1) + ⌈log2 k⌉",
        "flags at used − 1 bits",
        "error at used − 1 bits",
        "flags at used − 4 bits",
        "error at used − 4 bits",
    ]
    table = []
    for name in dict.fromkeys(r.subject for r in select(rows, experiment="width", seed=0)):
        for f in setup.width_f:
            members = {r.acc_bits: r for r in select(rows, experiment="width", subject=name, f=f, seed=0)}
            used = select(rows, experiment="stages", variant=LNS, subject=name, f=f, seed=0)[0]
            assert used.acc_bits_used is not None
            cells = [name.replace("Gaussian ", ""), f, used.acc_bits_used, used.acc_bits_worst_case]
            for below in (1, 4):
                r = members.get(used.acc_bits_used - below)
                cells += [_flag_count(r), tables.sci(r.rel_max, 2)] if r is not None else ["—", "—"]
            table.append(cells)
    return tables.markdown(header, table).splitlines()


def hybrid_table(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow]) -> list[str]:
    """Per accumulator count: pure LNS against the best hybrid with the same count."""
    header = [
        "acc. pairs / output",
        f"pure LNS f: error, MLP acc., acc. bits (k = {COST_K})",
        "best hybrid (f, h) at this count",
        "its error",
        "its MLP acc.",
        f"its acc. bits (k = {COST_K})",
    ]
    g = {"experiment": "stages", "source": "gaussian"}
    table = []
    for f in F_VALUES:
        pairs = accumulator_pairs(f)
        pure = _median_at(rows, "rel_max", **g, variant=LNS, f=f)
        candidates = {
            (r.f, r.hybrid_bits): _median_at(
                rows, "rel_max", **g, variant=HYBRID, f=r.f, hybrid_bits=r.hybrid_bits
            )
            for r in select(rows, **g, variant=HYBRID)
            if r.acc_pairs == pairs
        }
        best = min(candidates, key=lambda key: candidates[key]) if candidates else None
        table.append(
            [
                pairs,
                f"f={f}: {tables.sci(pure, 2)}, {_pct(_accuracy(accuracy, LNS, f))}, "
                f"{accumulator_bits(COST_K, f)}",
                f"f={best[0]}, h={best[1]}" if best else "—",
                tables.sci(candidates[best], 2) if best else "—",
                _pct(_accuracy(accuracy, HYBRID, best[0], best[1])) if best else "—",
                accumulator_bits(COST_K, *best) if best else "—",
            ]
        )
    return tables.markdown(header, table).splitlines()


def mlp_table(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow]) -> list[str]:
    """Per f: accuracy per variant and agreement with float64, and each layer's product error."""
    layers = list(dict.fromkeys(r.subject for r in select(rows, experiment="stages", source="mlp")))
    header = [
        "f",
        "(1) quantised",
        "(2) LNS",
        "(3) out_log",
        "Mitchell h=f",
        "(2) agrees with float64",
        *(f"{name.split(' (')[0]} error (2)" for name in layers),
    ]
    table = []
    for f in F_VALUES:
        lns_row = next(a for a in accuracy if a.variant == LNS and a.f == f)
        table.append(
            [
                f,
                _pct(_accuracy(accuracy, QUANTISED, f)),
                _pct(lns_row.accuracy),
                _pct(_accuracy(accuracy, OUT_LOG, f)),
                _pct(_accuracy(accuracy, HYBRID, f, f)) if f else "—",
                f"{lns_row.agreement:.1%}",
                *(
                    tables.sci(
                        select(rows, experiment="stages", subject=name, variant=LNS, f=f)[0].rel_max, 2
                    )
                    for name in layers
                ),
            ]
        )
    return tables.markdown(header, table).splitlines()


def _hybrid_gain(rows: Sequence[ErrorRow], pairs: int) -> str:
    """'at 16 pairs f = 6, h = 2 reaches 5e-3 against 2e-2 for pure f = 4' (empty if not measured)."""
    g = {"experiment": "stages", "source": "gaussian"}
    f_pure = pairs.bit_length() - 1
    errors = {
        (r.f, r.hybrid_bits): _median_at(
            rows, "rel_max", **g, variant=HYBRID, f=r.f, hybrid_bits=r.hybrid_bits
        )
        for r in select(rows, **g, variant=HYBRID)
        if r.acc_pairs == pairs
    }
    if not errors:
        return ""
    (f, h), best = min(errors.items(), key=lambda item: item[1])
    pure = _median_at(rows, "rel_max", **g, variant=LNS, f=f_pure)
    extra_bits = worst_case_acc_bits(COST_K, f, h) - worst_case_acc_bits(COST_K, f_pure)
    return (
        f"with {pairs} pairs, f = {f}, h = {h} reaches {tables.sci(best, 2)} against "
        f"{tables.sci(pure, 2)} for pure f = {f_pure} ({pure / best:.1f}× less, for {extra_bits} more bits "
        "per accumulator)"
    )


def findings(rows: Sequence[ErrorRow], accuracy: Sequence[AccuracyRow]) -> list[str]:
    """The headline numbers, read off the measurements."""
    g = {"experiment": "stages", "source": "gaussian"}
    q = {f: _median_at(rows, "rel_max", **g, variant=QUANTISED, f=f) for f in F_VALUES}
    halving = np.exp(np.mean(np.diff(np.log([q[f] for f in F_VALUES[1:]]))))
    ratio_l2 = [
        r.rel_l2 / quantisation_l2_model(r.f) for r in select(rows, **g, variant=QUANTISED) if r.f is not None
    ]
    wide_own = [r.own_rel_max or 0.0 for r in select(rows, experiment="stages", variant=LNS)]
    conversion = [
        (r.own_rel_max or 0.0) / output_conversion_bound(r.f)
        for r in select(rows, **g, variant=OUT_LOG)
        if r.f is not None
    ]
    used = [r.acc_bits_used for r in select(rows, experiment="stages", variant=LNS) if r.acc_bits_used]
    worst = [
        r.acc_bits_worst_case for r in select(rows, experiment="stages", variant=LNS) if r.acc_bits_worst_case
    ]
    width = select(rows, experiment="width")
    all_match = all(r.flags_match_bits_needed for r in width)
    max_unflagged = max(r.unflagged_deviation or 0.0 for r in width)
    flagged_own = [r.own_rel_max or 0.0 for r in width if r.overflow_fraction]
    fewest_flags = min((r for r in width if r.overflow_outputs), key=lambda r: r.overflow_fraction or 0.0)
    raise_ = [
        _median_at(rows, "rel_max", **g, variant=OUT_LOG, f=f)
        / _median_at(rows, "rel_max", **g, variant=LNS, f=f)
        for f in F_VALUES
    ]
    hybrid_text = "; ".join(_hybrid_gain(rows, pairs) for pairs in (4, 16) if _hybrid_gain(rows, pairs))
    same_accuracy = all(_accuracy(accuracy, QUANTISED, f) == _accuracy(accuracy, LNS, f) for f in F_VALUES)
    mitchell = [_median_at(rows, "rel_max", **g, variant=HYBRID, f=f, hybrid_bits=f) for f in F_VALUES[3:]]
    float32 = _accuracy(accuracy, BLAS32)
    f_max = F_VALUES[-1]
    bits_f0, bits_fmax = (_median_at(rows, "acc_bits_used", **g, variant=LNS, f=f) for f in (0, f_max))
    blas = baseline(rows, BLAS32, "gaussian")[0]
    log32 = baseline(rows, LOG32, "gaussian")[0]
    return [
        "* **Input quantisation is the error** of `log_approx` with wide accumulators: on standard-normal "
        f"matmuls the median relative max error is {tables.sci(q[0], 2)} at f = 0 and "
        f"{tables.sci(q[f_max], 2)} at f = {f_max}, a factor {1 / halving:.2f} less per extra fraction bit "
        "(each bit halves the log step). The relative L2 error of stage (1) is "
        f"{min(ratio_l2):.2f}–{max(ratio_l2):.2f}× the model √E[ε²] (rounding of n·log2|x| uniform in ±½). "
        f"float32 BLAS: {tables.sci(blas)}, the exact log-domain matmul in float32: {tables.sci(log32)} — "
        f"f = {f_max} is still {q[f_max] / blas:.0e}× coarser than float32.",
        "* **The accumulation adds nothing** while no accumulator saturates: stage (2) differs from the "
        f"float64 product of the quantised operands by at most {tables.sci(max(wide_own))} (relative max, "
        "every subject and f, 62-bit accumulators) — the float64 rounding of the final "
        "`Σ T[r]·(P[r] − N[r])`.",
        f"* **Accumulator width**: the data used {min(used)}–{max(used)} bits per accumulator, against a "
        f"worst-case bound of {min(worst)}–{max(worst)} bits for these k; fewer with more fraction bits, "
        f"which spread the sum over more pairs (standard-normal median: {bits_f0:.0f} bits at f = 0, "
        f"{bits_fmax:.0f} at f = {f_max}). Over the {len(width)} runs of the "
        "sweep, the overflow flag was set exactly where the 62-bit run's largest accumulator needs more "
        f"than acc_bits bits: {'every run' if all_match else 'NOT in every run'}; outputs without the flag "
        f"equal the 62-bit result (largest deviation {tables.sci(max_unflagged)}), and flagged runs lost "
        f"{tables.sci(min(flagged_own), 2)}–{tables.sci(max(flagged_own), 2)} (own relative max error), "
        f"already with {_flag_count(fewest_flags)} outputs flagged — a saturated accumulator drops all "
        "it would have held beyond 2^acc_bits − 1.",
        "* **Output conversion** (`out_log=1`) rounds each output once more: its own error is "
        f"{min(conversion):.0%}–{max(conversion):.0%} of the bound 2^(1/(2n)) − 1 (log-domain rounding, the "
        f"encoder's comparator), and it raises "
        f"the median error of stage (2) by a factor {min(raise_):.2f}–{max(raise_):.2f} over f = 0…{f_max}.",
        "* **Mitchell on all f bits** (h = f, one accumulator pair) levels off at a few percent: median "
        f"relative max error {', '.join(tables.sci(v, 2) for v in mitchell)} for f = 3…{f_max} — "
        "2^x ≈ 1 + x overestimates each product by up to 6.1%. The hybrid pays when it keeps the high "
        f"remainder bits in separate pairs: {hybrid_text}.",
        f"* **MLP**: float32 test accuracy {_pct(float32)}; every layer through `log_approx`: "
        f"{_pct(_accuracy(accuracy, LNS, 0))} at f = 0 (powers of two), "
        f"{_pct(_accuracy(accuracy, LNS, 2))} at f = 2, {_pct(_accuracy(accuracy, LNS, f_max))} at "
        f"f = {f_max} (with output conversion {_pct(_accuracy(accuracy, OUT_LOG, 0))} at f = 0, "
        f"{_pct(_accuracy(accuracy, OUT_LOG, f_max))} at "
        f"f = {f_max}). Stage (1) and (2) give the same test accuracy at "
        f"every f: {'yes' if same_accuracy else 'no'}.",
    ]


def variant_tables(rows: Sequence[VariantRow]) -> list[str]:
    """Encoder clipping, signed accumulators, fixed-point constants and the equal-bits comparison."""
    cases = len({(r.subject, r.seed) for r in rows if r.experiment == "encoder"})

    def total(variant: str, f: int) -> int:
        return int(
            sum(r.value for r in rows if r.experiment == "encoder" and r.variant == variant and r.f == f)
        )

    encoder = [[f, total("frexp scale (before)", f), total("rounded-peak scale", f)] for f in F_VALUES]
    signed = [r for r in rows if r.experiment == "signed"]
    table = [r.value for r in rows if r.experiment == "table"]
    lines = [
        f"**Encoder scale** ({cases} standard-normal products, both operands): values whose rounded log "
        "the former scale (σ from `frexp` of the unrounded peak) clipped to the top level, and values the "
        "fixed encoder (σ from the rounded peak) does not round to the nearest log level:",
        "",
        *tables.markdown(["f", "clipped before", "mis-rounded now"], encoder).splitlines(),
        "",
        f"**Signed accumulators** (the patent's n, 62 bits): equal to the unsigned pairs' `P − N` and "
        f"bit-identical outputs in {sum(r.value == 1.0 for r in signed)} of {len(signed)} runs "
        f"(f = {F_VALUES[0]}…{F_VALUES[-1]}); the widest signed accumulator needed "
        f"{min(r.acc_bits_used or 0 for r in signed)}–{max(r.acc_bits_used or 0 for r in signed)} bits "
        "(sign included). Storage for k = 1024: the stage table's two cost columns.",
        "",
        f"**Integer-only path** (`table_bits = {TABLE_BITS}`: the 2^(r/n) constants in fixed point, the "
        "final sum in integers): its own relative max error against float64 constants is "
        f"{tables.sci(min(table))}–{tables.sci(max(table))} (bound 2^−{TABLE_BITS + 1} = "
        f"{tables.sci(2.0 ** -(TABLE_BITS + 1))}).",
        "",
        *budget_table(rows),
    ]
    return lines


def budget_table(rows: Sequence[VariantRow]) -> list[str]:
    """Per budget: the float accumulator and the best LNS design that fits the same bits."""
    budget = [r for r in rows if r.experiment == "budget"]
    out = []
    for bits in BUDGETS:
        floats = [r for r in budget if r.acc_bits == bits and r.variant.startswith("fp16")]
        designs: dict[tuple[int, int, int, int], list[VariantRow]] = {}
        for r in budget:
            if r.variant == f"LNS {bits}-bit budget":
                assert r.acc_bits is not None
                designs.setdefault((r.exp_bits, r.f, r.hybrid_bits, r.acc_bits), []).append(r)
        if not floats or not designs:
            continue
        best, best_rows = min(designs.items(), key=lambda kv: float(np.median([r.value for r in kv[1]])))
        exp_bits, f, h, width = best
        out.append(
            [
                bits,
                f"{floats[0].variant}: {tables.sci(float(np.median([r.value for r in floats])), 2)}",
                f"exp_bits {exp_bits}, f = {f}, h = {h}, {accumulator_pairs(f, h)} × {width} bits: "
                f"{tables.sci(float(np.median([r.value for r in best_rows])), 2)}",
                len(designs),
                sum(r.overflow_outputs or 0 for r in best_rows),
            ]
        )
    return [
        "**Equal accumulator bits** (standard-normal matmuls; fp16 storage with one float accumulator "
        "against signed LNS designs whose accumulators fit the same bits; median relative max error):",
        "",
        *tables.markdown(
            [
                "bits / output",
                "float (one accumulator)",
                "best LNS design in the budget",
                "designs tried",
                "flagged outputs",
            ],
            out,
        ).splitlines(),
    ]


def write_summary(
    path: Path,
    *,
    command: str,
    elapsed_s: float,
    setup: Setup,
    mlp: TrainedMLP,
    rows: Sequence[ErrorRow],
    accuracy: Sequence[AccuracyRow],
    variants: Sequence[VariantRow],
    figures: Sequence[Path],
) -> Path:
    """``summary.md``: what the plots show, in numbers."""
    shapes = ", ".join(s.label for s in setup.shapes)
    narrow = [w for w in setup.widths if w < WIDE_ACC_BITS]
    lines = [
        "# LNS study: the approximate log-domain accumulation (US 2021/0056446 A1)",
        "",
        f"Command: `{command}` ({elapsed_s:.0f} s). Figures: "
        + ", ".join(f"`{f.name}`" for f in figures)
        + ".",
        "",
        f"`log_approx` with exp_bits = {EXP_BITS} (16 binades below each tensor's largest value, per-tensor "
        f"scale), f = {F_VALUES[0]}…{F_VALUES[-1]}, against the float64 reference (float64 loops). "
        f"Standard-normal matmuls {shapes}, seeds {', '.join(map(str, setup.seeds))}; the digits MLP "
        f"64-{HIDDEN[0]}-{HIDDEN[1]}-10 "
        f"({mlp.description}; Adam, {mlp.epochs} epochs, {mlp.train_s:.1f} s; torch float32 test accuracy "
        f"{mlp.torch_accuracy:.1%}). Stages: (1) float64 product of the quantised operands; (2) the LNS "
        "accumulators (62-bit, output in float64); (3) (2) rounded back to the log format (`out_log=1`). "
        "Errors are relative max errors `max|y − ref| / max|ref|`, medians over shapes and seeds; 'vs' "
        "columns are a stage's own error against the stage before.",
        "",
        "## What the plots show",
        "",
        *findings(rows, accuracy),
        "",
        "## Error per stage and f (standard-normal matmuls)",
        "",
        *stage_table(rows, accuracy),
        "",
        f"## Accumulator width (seed 0; swept {min(setup.widths)}–{max(narrow)} bits and {WIDE_ACC_BITS})",
        "",
        *width_table(rows, setup),
        "",
        "## Datapath variants: encoder scale, signed accumulators, integer constants, equal bits",
        "",
        *variant_tables(variants),
        "",
        "## Hybrid: the same accumulator count, spent two ways",
        "",
        *hybrid_table(rows, accuracy),
        "",
        "## Digits MLP: test accuracy per f",
        "",
        *mlp_table(rows, accuracy),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# Entry point.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options (``--out`` and ``--quick`` belong to the CLI)."""
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="E",
        help="MLP training epochs (default 30, 10 with --quick)",
    )


ERROR_FIELDS = tuple(ErrorRow.__dataclass_fields__)
ACCURACY_FIELDS = tuple(AccuracyRow.__dataclass_fields__)
VARIANT_FIELDS = tuple(VariantRow.__dataclass_fields__)


def measure(setup: Setup, mlp: TrainedMLP) -> list[ErrorRow]:
    """Every error row of the run: stages and hybrids, the width sweep, the float baselines."""
    gaussian = gaussian_subjects(setup.shapes, setup.seeds)
    layers = mlp_subjects(mlp)
    rows: list[ErrorRow] = []
    for s in [*gaussian, *layers]:
        rows += baseline_rows(s)
        for f in F_VALUES:
            rows += stage_rows(s, f, hybrid_grid(f, setup.all_hybrids))
    for s in gaussian:
        if s.seed == setup.seeds[0]:
            for f in setup.width_f:
                rows += width_rows(s, f, setup.widths)
    return rows


def run(out: Path, *, quick: bool = False, epochs: int | None = None) -> Path:
    """Measure the LNS error sources; write CSVs, plots and ``summary.md`` into ``out/lns``.

    Args:
        out: output root; the study writes into ``out / "lns"``.
        quick: two small shapes, one seed, fewer hybrids and widths, shorter MLP training.
        epochs: MLP training epochs (default 30; 10 with ``quick``).
    """
    setup = QUICK if quick else FULL
    n_epochs = epochs if epochs is not None else setup.epochs
    if n_epochs < 1:
        raise ValueError(f"lns: epochs must be >= 1, got {epochs}")
    started = time.perf_counter()
    target = Path(out) / NAME
    target.mkdir(parents=True, exist_ok=True)
    mlp = train_mlp(load_digits(), epochs=n_epochs)
    rows = measure(setup, mlp)
    accuracy = mlp_accuracy(mlp, setup.all_hybrids)
    tables.write_csv((asdict(r) for r in rows), target / "lns_errors.csv", ERROR_FIELDS)
    tables.write_csv((asdict(a) for a in accuracy), target / "lns_mlp.csv", ACCURACY_FIELDS)
    variants = variant_rows(gaussian_subjects(setup.shapes, setup.seeds))
    tables.write_csv((asdict(v) for v in variants), target / "lns_variants.csv", VARIANT_FIELDS)
    width_f = 4 if 4 in setup.width_f else setup.width_f[0]
    figures = [
        plot_error_vs_f(rows, target / "lns_error_vs_f.png"),
        plot_error_sources(rows, target / "lns_error_sources.png"),
        plot_accumulator_width(rows, target / "lns_accumulator_width.png", width_f),
        plot_hybrid(rows, accuracy, target / "lns_hybrid.png"),
        plot_mlp(rows, accuracy, mlp, target / "lns_mlp.png"),
    ]
    command = "autotune study lns" + (" --quick" if quick else "") + (f" --epochs {epochs}" if epochs else "")
    write_summary(
        target / "summary.md",
        command=command,
        elapsed_s=time.perf_counter() - started,
        setup=setup,
        mlp=mlp,
        rows=rows,
        accuracy=accuracy,
        variants=variants,
        figures=figures,
    )
    return target
