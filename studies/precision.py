"""Precision study: error of every conv2d and matmul algorithm against float64, per numerical precision.

For each algorithm — conv2d: direct, im2col, Winograd F(2x2,3x3), F(4x4,3x3), F(6x6,3x3), FFT;
matmul: naive loops and blocked BLAS-style GEMM — and each precision, the relative max error
``max|y − ref| / max|ref|`` (and the relative L2 error) against the float64 reference on the
original float64 data, over several shapes and seeds; next to it the baseline algorithm (direct
for conv2d, naive for matmul) at the same precision, which separates the precision's own error from
what the transform adds.

How each precision is computed (storage / arithmetic / accumulator):

* float64, float32: the real kernels of :mod:`kernels.conv2d` (and numpy's BLAS) on arrays of that
  dtype. The naive matmul at these precisions is the sequential loop of
  :func:`studies.lowprec.float_matmul.matmul_lowprec` in that format (bit-exact float32 arithmetic).
* float16, bfloat16: :mod:`studies.lowprec` — operands rounded to the format (round to nearest
  even), every transform step and product rounded to the arithmetic format and every sum to the
  accumulator: either the low format itself ("acc float16") or float32 ("acc float32": products of
  two float16/bfloat16 values are exact in float32 and are summed in float32, the tensor-core /
  AMX model). Transformed operands (Winograd ``U``, ``V``, FFT spectra) and outputs are stored in
  the low format. See :mod:`studies.lowprec.float_conv` and :mod:`studies.lowprec.float_fft`.
* int16, int8: symmetric per-tensor quantisation, integer arithmetic with an int64 / int32
  accumulator, dequantisation in float32 (:mod:`studies.lowprec.integer`). Winograd uses
  lcm-scaled integral transforms (exact; checked against integer direct), and the naive variant
  with fractional ``G`` rounds the transformed tensors to integers. FFT has no integer form and is
  left out.

Writes ``precision.csv`` (one row per measurement), ``precision_<op>_<algorithm>.png`` (one per
algorithm: error vs precision with the baseline), ``precision_all.png`` (everything on one log
chart) and ``summary.md`` into ``out/precision``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import ml_dtypes
import numpy as np
import torch
from tqdm import tqdm

from autotune.evaluate import rel_l2_error, rel_max_error
from kernels import registry
from kernels.conv2d.reference import conv2d_reference
from kernels.matmul.reference import matmul_reference
from kernels.registry import label as kernel_label
from studies import _plots, literature, sensitivity
from studies import _tables as tables
from studies.lowprec import integer
from studies.lowprec.float_conv import direct_lowprec, im2col_lowprec, winograd_lowprec
from studies.lowprec.float_fft import fft_lowprec
from studies.lowprec.float_matmul import K_BLOCK, gemm_rounded, log_matmul_lowprec, matmul_lowprec
from studies.lowprec.rounding import BFLOAT16, FLOAT16, FLOAT32, FORMATS, round_array

NAME = "precision"
Op = Literal["conv2d", "matmul"]
Padding = tuple[int, int, int, int]

# ---------------------------------------------------------------------------------------------
# What is measured.


@dataclass(frozen=True)
class Precision:
    """Storage format and accumulator of one precision setting."""

    key: str
    storage: str
    accumulator: str
    label: str  # short label for plot axes

    @property
    def kind(self) -> Literal["native", "emulated", "integer"]:
        if self.storage.startswith("int"):
            return "integer"
        return "native" if self.storage in ("float64", "float32") else "emulated"


#: Ordered by significand bits (53, 24, 16, 11, 8, 8), so errors grow left to right.
PRECISIONS: tuple[Precision, ...] = (
    Precision("float64", "float64", "float64", "fp64"),
    Precision("float32", "float32", "float32", "fp32"),
    Precision("int16", "int16", "int64", "int16\nacc int64"),
    Precision("float16/acc=float32", "float16", "float32", "fp16\nacc fp32"),
    Precision("float16", "float16", "float16", "fp16\nacc fp16"),
    Precision("bfloat16/acc=float32", "bfloat16", "float32", "bf16\nacc fp32"),
    Precision("bfloat16", "bfloat16", "bfloat16", "bf16\nacc bf16"),
    Precision("int8", "int8", "int32", "int8\nacc int32/64"),
)
PRECISION_BY_KEY = {p.key: p for p in PRECISIONS}


@dataclass(frozen=True)
class Algorithm:
    """One algorithm of one op; ``kernel`` and ``params`` name it as the registry does."""

    op: Op
    kernel: str
    title: str
    params: tuple[tuple[str, int], ...] = ()

    @property
    def name(self) -> str:
        """``winograd(tile=4)``: the tuner's label."""
        return kernel_label(self.kernel, dict(self.params))

    @property
    def slug(self) -> str:
        return f"{self.op}_{self.kernel}" + "".join(f"_f{v}" for _, v in self.params)


CONV_ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("conv2d", "direct", "direct"),
    Algorithm("conv2d", "im2col", "im2col + GEMM"),
    Algorithm("conv2d", "winograd", "Winograd F(2x2,3x3)", (("tile", 2),)),
    Algorithm("conv2d", "winograd", "Winograd F(4x4,3x3)", (("tile", 4),)),
    Algorithm("conv2d", "winograd", "Winograd F(6x6,3x3)", (("tile", 6),)),
    Algorithm("conv2d", "fft", "FFT"),
)
MATMUL_ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("matmul", "naive", "naive loops (sequential sum)"),
    Algorithm("matmul", "blas", "BLAS-style GEMM (K blocks of 256)"),
    Algorithm("matmul", "log", "exact log-domain (products via log2, exp2)"),
    Algorithm("matmul", "log_approx", "approximate log-domain (LNS, US 2021/0056446)"),
)
#: The algorithm each op is compared with at the same precision.
BASELINE: dict[Op, str] = {"conv2d": "direct", "matmul": "naive"}
NAIVE_G = "naive rint(G g Gᵀ)"
#: Exact arithmetic (float64) on the stored x, w, b with y stored: no algorithm can do better.
FLOOR = "storage floor"
#: Winograd with U and V stored in float32 (x, w, b, y in the column's format).
TRANSFORMS_FP32 = "U, V stored in fp32"
#: Integer Winograd with U and V requantised to the operand width, one scale per position.
REQUANT = "requantised U, V"
#: log_approx runs in its own number format (LNS: sign, 4 integer and f fraction bits of log2|x|,
#: exact integer accumulators). Per column, the LNS operand format of the same storage budget:
#: f = the significand bits of float16/bfloat16, and 8-/16-bit LNS codes (1 + 4 + f bits) in the
#: int8/int16 columns. float32/float64 would need f ≥ 23: 2^23 accumulator pairs per output.
LNS_FRACTION_BITS: dict[str, int] = {
    "int16": 11,
    "float16/acc=float32": 10,
    "float16": 10,
    "bfloat16/acc=float32": 7,
    "bfloat16": 7,
    "int8": 3,
}


@dataclass(frozen=True)
class ConvShape:
    """x (N, C, H, W) ⊛ w (K, C, 3, 3), "same" padding."""

    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int]
    padding: Padding = (1, 1, 1, 1)

    @property
    def label(self) -> str:
        return "x".join(map(str, self.x)) + " * " + "x".join(map(str, self.w))


@dataclass(frozen=True)
class MatmulShape:
    """(m × k) @ (k × n)."""

    m: int
    k: int
    n: int

    @property
    def label(self) -> str:
        return f"{self.m}x{self.k} @ {self.k}x{self.n}"


CONV_SHAPES = (
    ConvShape((1, 8, 16, 16), (8, 8, 3, 3)),
    ConvShape((1, 16, 32, 32), (16, 16, 3, 3)),
    ConvShape((2, 32, 16, 16), (32, 32, 3, 3)),
)
MATMUL_SHAPES = (MatmulShape(64, 256, 64), MatmulShape(128, 512, 128))
QUICK_CONV_SHAPES = CONV_SHAPES[:1]
QUICK_MATMUL_SHAPES = (MatmulShape(32, 128, 32),)


@dataclass
class Measurement:
    """One algorithm at one precision on one (shape, seed)."""

    op: Op
    algorithm: str
    precision: str
    shape: str
    seed: int
    rel_max: float
    rel_l2: float
    variant: str = ""
    storage: str = ""
    accumulator: str = ""
    acc_bits: int | None = None  # integer paths: accumulator width used
    bits_needed: int | None = None  # integer paths: width the worst case needs
    exact_vs_direct: bool | None = None  # integer Winograd: bit-identical to integer direct
    params: str = ""  # kernel parameters where they define the precision (log_approx's LNS format)


CSV_FIELDS = tuple(f.name for f in Measurement.__dataclass_fields__.values())


# ---------------------------------------------------------------------------------------------
# Running the algorithms at one precision.

Output = tuple[np.ndarray, dict[str, Any]]  # (y, extra measurement fields)


def _native_conv(alg: Algorithm, p: Precision, x, w, b, padding: Padding) -> Output:
    dtype = np.dtype(p.storage)
    fn = registry.get("conv2d", alg.kernel).fn
    args = (x.astype(dtype), w.astype(dtype), b.astype(dtype), (1, 1), padding, (1, 1), 1)
    return fn(*args, **dict(alg.params)), {}


EMULATED_CONV: dict[str, Callable[..., np.ndarray]] = {
    "direct": direct_lowprec,
    "im2col": im2col_lowprec,
    "winograd": winograd_lowprec,
    "fft": fft_lowprec,
}


def _emulated_conv(alg: Algorithm, p: Precision, x, w, b, padding: Padding) -> Output:
    store, comp = FORMATS[p.storage], FORMATS[p.accumulator]
    return EMULATED_CONV[alg.kernel](x, w, b, padding, store, comp, **dict(alg.params)), {}


def _store(a: np.ndarray, p: Precision) -> np.ndarray:
    """``a`` rounded to the column's storage format (float64 carrier)."""
    if p.kind == "native":
        return a.astype(p.storage).astype(np.float64)
    return round_array(a, FORMATS[p.storage])


def conv_floor(p: Precision, x, w, b, padding: Padding) -> np.ndarray:
    """Storage floor: the exact conv (float64 loops) of the stored x, w, b, with y stored.

    Every algorithm that stores its operands and output in ``p`` carries this error, whatever its
    arithmetic; the gap above it is what the arithmetic (and any transform storage) adds.
    """
    stored = (_store(a, p) for a in (x, w, b))
    return _store(conv2d_reference(*stored, (1, 1), padding, (1, 1), 1), p)


def matmul_floor(p: Precision, a, b) -> np.ndarray:
    """Storage floor of matmul: the float64 product of the stored operands, stored."""
    return _store(matmul_reference(_store(a, p), _store(b, p)), p)


@dataclass
class QuantizedConv:
    """Integer operands of one conv and the scale that dequantises its accumulator."""

    fmt: integer.IntFormat
    xq: np.ndarray
    wq: np.ndarray
    bq: np.ndarray
    scale: float
    padding: Padding
    direct: np.ndarray = field(init=False)

    @classmethod
    def of(cls, fmt: integer.IntFormat, x, w, b, padding: Padding) -> QuantizedConv:
        qx, qw = integer.quantize(x, fmt), integer.quantize(w, fmt)
        scale = qx.scale * qw.scale
        made = cls(
            fmt, qx.values, qw.values, integer.quantize_bias(b, w.shape[0], scale, fmt), scale, padding
        )
        made.direct = integer.conv2d_int(made.xq, made.wq, made.bq, padding, fmt, "direct")
        return made


def winograd_accumulator(tile: int, channels: int, fmt: integer.IntFormat) -> tuple[int, int]:
    """(accumulator bits used, bits the worst case needs) for integer Winograd F(tile, 3).

    The narrowest of int32/int64 that holds the worst-case ``|D·y|``; int64 when even that is
    short (exactness then rests on this data, and is checked against integer direct).
    """
    needed = integer.bits_needed(integer.integer_winograd(tile).worst_case_scaled(channels, fmt))
    return (32 if needed <= 32 else 64), needed


def _integer_conv(alg: Algorithm, q: QuantizedConv, naive_g: bool = False) -> Output | None:
    """Integer conv by ``alg``; None for FFT (no integer form)."""
    c_in = q.wq.shape[1]
    if alg.kernel in ("direct", "im2col"):
        acc = (
            q.direct
            if alg.kernel == "direct"
            else integer.conv2d_int(q.xq, q.wq, q.bq, q.padding, q.fmt, "im2col")
        )
        bound = integer.worst_case_sum(c_in * 9, q.fmt) + int(np.abs(q.bq).max())
        extra = {"acc_bits": q.fmt.acc_bits, "bits_needed": integer.bits_needed(bound)}
        return integer.dequantize(acc, q.scale), extra
    if alg.kernel != "winograd":
        return None
    tile = dict(alg.params)["tile"]
    if naive_g:
        acc = integer.winograd_int_naive(q.xq, q.wq, q.bq, q.padding, tile)
        extra = {"variant": NAIVE_G, "acc_bits": 64, "exact_vs_direct": bool(np.array_equal(acc, q.direct))}
        return integer.dequantize(acc, q.scale), extra
    acc_bits, needed = winograd_accumulator(tile, c_in, q.fmt)
    acc = integer.winograd_int(q.xq, q.wq, q.bq, q.padding, tile, acc_bits)
    extra = {
        "acc_bits": acc_bits,
        "bits_needed": needed,
        "exact_vs_direct": bool(np.array_equal(acc, q.direct)),
    }
    return integer.dequantize(acc, q.scale), extra


def _requantised_conv(alg: Algorithm, p: Precision, x, w, b, padding: Padding) -> Output:
    """Integer Winograd with U, V requantised per position (:func:`integer.winograd_requantised`)."""
    fmt = integer.INT_FORMATS[p.storage]
    r = integer.winograd_requantised(x, w, b, padding, dict(alg.params)["tile"], fmt)
    return r.y, {"variant": REQUANT, "acc_bits": 32 if r.m_bits <= 32 else 64, "bits_needed": r.m_bits}


def conv_outputs(p: Precision, x, w, b, padding: Padding) -> Iterable[tuple[Algorithm, Output]]:
    """Every conv algorithm's output at precision ``p``, with the variants.

    Integer Winograd three times (scaled integral transforms, naive G, requantised U and V); float
    Winograd also with U, V stored in float32; and the storage floor (recorded under direct).
    """
    if p.kind == "integer":
        q = QuantizedConv.of(integer.INT_FORMATS[p.storage], x, w, b, padding)
        for alg in CONV_ALGORITHMS:
            result = _integer_conv(alg, q)
            if result is not None:
                yield alg, result
            if alg.kernel == "winograd":
                yield alg, _integer_conv(alg, q, naive_g=True)
                yield alg, _requantised_conv(alg, p, x, w, b, padding)
        return
    run = _native_conv if p.kind == "native" else _emulated_conv
    for alg in CONV_ALGORITHMS:
        yield alg, run(alg, p, x, w, b, padding)
        if alg.kernel == "winograd" and p.kind == "emulated":
            store, comp = FORMATS[p.storage], FORMATS[p.accumulator]
            y = winograd_lowprec(x, w, b, padding, store, comp, transform_store=FLOAT32, **dict(alg.params))
            yield alg, (y, {"variant": TRANSFORMS_FP32})
    if p.key != "float64":
        yield CONV_ALGORITHMS[0], (conv_floor(p, x, w, b, padding), {"variant": FLOOR})


def matmul_outputs(p: Precision, a, b) -> Iterable[tuple[Algorithm, Output]]:
    """Every matmul algorithm's output at precision ``p`` (none for ``log`` at integer precisions)."""
    naive, blas, log, log_approx = MATMUL_ALGORITHMS
    k_dim = a.shape[1]
    if p.kind == "integer":
        fmt = integer.INT_FORMATS[p.storage]
        qa, qb = integer.quantize(a, fmt), integer.quantize(b, fmt)
        y = integer.dequantize(integer.matmul_int(qa.values, qb.values, fmt), qa.scale * qb.scale)
        extra = {
            "acc_bits": fmt.acc_bits,
            "bits_needed": integer.bits_needed(integer.worst_case_sum(k_dim, fmt)),
        }
        yield naive, (y, extra)  # integer sums are exact: loop order cannot matter
        yield blas, (y, extra)
    else:
        store, comp = FORMATS[p.storage], FORMATS[p.accumulator]
        yield naive, (matmul_lowprec(a, b, store, comp, k_block=k_dim), {})
        if p.kind == "native":
            yield blas, (np.matmul(a.astype(p.storage), b.astype(p.storage)), {})
            yield log, (registry.get("matmul", "log").fn(a.astype(p.storage), b.astype(p.storage)), {})
        else:
            yield blas, (matmul_lowprec(a, b, store, comp, k_block=K_BLOCK), {})
            yield log, (log_matmul_lowprec(a, b, store, comp), {})
    if p.kind != "integer" and p.key != "float64":
        yield naive, (matmul_floor(p, a, b), {"variant": FLOOR})
    if p.key in LNS_FRACTION_BITS:
        f = LNS_FRACTION_BITS[p.key]
        # out_log=1: the result is rounded back to the LNS format, as every column stores its output.
        y = registry.get("matmul", "log_approx").fn(a, b, f=f, out_log=1)
        yield log_approx, (y, {"acc_bits": 62, "params": f"f={f}, exp_bits=4, out_log=1"})


# ---------------------------------------------------------------------------------------------
# Measuring.


def conv_operands(shape: ConvShape, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded standard-normal x, w, b in float64."""
    rng = np.random.default_rng((seed, index))
    return rng.standard_normal(shape.x), rng.standard_normal(shape.w), rng.standard_normal(shape.w[0])


def matmul_operands(shape: MatmulShape, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng((seed, 1000 + index))
    return rng.standard_normal((shape.m, shape.k)), rng.standard_normal((shape.k, shape.n))


def _record(op: Op, alg: Algorithm, p: Precision, label: str, seed: int, out: Output, ref) -> Measurement:
    y, extra = out
    return Measurement(
        op=op,
        algorithm=alg.name,
        precision=p.key,
        shape=label,
        seed=seed,
        rel_max=rel_max_error(y, ref),
        rel_l2=rel_l2_error(y, ref),
        storage=p.storage,
        accumulator=p.accumulator,
        **extra,
    )


def measure_conv(shape: ConvShape, seed: int, index: int) -> list[Measurement]:
    x, w, b = conv_operands(shape, seed, index)
    ref = conv2d_reference(x, w, b, (1, 1), shape.padding, (1, 1), 1)
    return [
        _record("conv2d", alg, p, shape.label, seed, out, ref)
        for p in PRECISIONS
        for alg, out in conv_outputs(p, x, w, b, shape.padding)
    ]


def measure_matmul(shape: MatmulShape, seed: int, index: int) -> list[Measurement]:
    a, b = matmul_operands(shape, seed, index)
    ref = matmul_reference(a, b)
    return [
        _record("matmul", alg, p, shape.label, seed, out, ref)
        for p in PRECISIONS
        for alg, out in matmul_outputs(p, a, b)
    ]


# ---------------------------------------------------------------------------------------------
# Checks of the emulation itself.


@dataclass
class EmulationChecks:
    """Numbers that show the emulation is what it claims (all mismatch counts should be 0)."""

    float16_values: int
    float16_mismatches: int
    bfloat16_values: int
    bfloat16_mismatches: int
    float32_values: int
    float32_mismatches: int
    float16_op_mismatches: int  # sums, products and a 256-term dot product vs numpy float16
    float16_ops: int
    ml_dtypes_float64_double_rounding: int  # float64 → bfloat16 values where ml_dtypes differs
    float32_direct_native: float
    float32_direct_emulated: float
    torch: dict[str, float]  # torch CPU conv2d in float16/bfloat16 and our emulation: rel max error


def _float16_grid() -> np.ndarray:
    """Every finite float16, every midpoint between neighbours, and the float64 values beside them."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    values = np.unique(halves[np.isfinite(halves)].astype(np.float64))
    mids = (values[:-1] + values[1:]) / 2
    return np.concatenate([values, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])


def _float16_ops_mismatches(rng: np.random.Generator, count: int) -> int:
    """Emulated float16 +, × and a sequential dot product against numpy's float16 arithmetic."""
    a = rng.standard_normal(count).astype(np.float16)
    b = (rng.standard_normal(count) * np.exp2(rng.integers(-12, 12, count))).astype(np.float16)
    af, bf = a.astype(np.float64), b.astype(np.float64)
    bad = int(np.sum(round_array(af + bf, FLOAT16) != (a + b).astype(np.float64)))
    bad += int(np.sum(round_array(af * bf, FLOAT16) != (a * b).astype(np.float64)))
    acc = np.float16(0)
    for u, v in zip(a[:256], b[:256], strict=True):  # numpy float16 scalar loop: the oracle
        acc = np.float16(acc + np.float16(u * v))
    emulated = gemm_rounded(af[None, :256], bf[:256, None], FLOAT16.spec, 256)[0, 0]
    return bad + int(emulated != float(acc))


def emulation_checks(shape: ConvShape, seeds: Sequence[int]) -> EmulationChecks:
    """Rounding and arithmetic against numpy/ml_dtypes; emulated vs native float32; torch fp16/bf16."""
    rng = np.random.default_rng(12345)
    grid = _float16_grid()
    f16_bad = int(np.sum(round_array(grid, FLOAT16) != grid.astype(np.float16).astype(np.float64)))
    # float64 values from float32-subnormal to past float32's overflow threshold.
    wide = rng.standard_normal(100_000) * np.exp2(rng.uniform(-150, 128, 100_000))
    with np.errstate(over="ignore"):  # overflow to inf is part of what is compared
        f32_bad = int(np.sum(round_array(wide, FLOAT32) != wide.astype(np.float32).astype(np.float64)))
        as_f32 = wide.astype(np.float32)  # ml_dtypes converts float64 via float32: compare on float32
        from_f32 = as_f32.astype(ml_dtypes.bfloat16).astype(np.float64)
        from_f64 = wide.astype(ml_dtypes.bfloat16).astype(np.float64)
    bf16_bad = int(np.sum(round_array(as_f32, BFLOAT16) != from_f32))
    ml_double = int(np.sum(round_array(wide, BFLOAT16) != from_f64))
    ops = 2000
    errors: dict[str, list[float]] = {}
    for seed in seeds:
        x, w, b = conv_operands(shape, seed, 0)
        ref = conv2d_reference(x, w, b, (1, 1), shape.padding, (1, 1), 1)
        native = _native_conv(CONV_ALGORITHMS[0], PRECISION_BY_KEY["float32"], x, w, b, shape.padding)[0]
        errors.setdefault("native", []).append(rel_max_error(native, ref))
        emulated = direct_lowprec(x, w, b, shape.padding, FLOAT32, FLOAT32)
        errors.setdefault("emulated", []).append(rel_max_error(emulated, ref))
        for fmt, dtype in ((FLOAT16, torch.float16), (BFLOAT16, torch.bfloat16)):
            args = [torch.from_numpy(a).to(dtype) for a in (x, w, b)]
            y = torch.nn.functional.conv2d(*args, padding=shape.padding[0]).double().numpy()
            errors.setdefault(f"torch {fmt.name}", []).append(rel_max_error(y, ref))
            ours = direct_lowprec(x, w, b, shape.padding, fmt, FLOAT32)
            errors.setdefault(f"emulated direct {fmt.name} acc fp32", []).append(rel_max_error(ours, ref))
            floor = conv_floor(PRECISION_BY_KEY[f"{fmt.name}/acc=float32"], x, w, b, shape.padding)
            errors.setdefault(f"storage floor {fmt.name}", []).append(rel_max_error(floor, ref))
    medians = {k: float(np.median(v)) for k, v in errors.items()}
    return EmulationChecks(
        float16_values=grid.size,
        float16_mismatches=f16_bad,
        bfloat16_values=as_f32.size,
        bfloat16_mismatches=bf16_bad,
        float32_values=wide.size,
        float32_mismatches=f32_bad,
        float16_op_mismatches=_float16_ops_mismatches(rng, ops),
        float16_ops=2 * ops + 1,
        ml_dtypes_float64_double_rounding=ml_double,
        float32_direct_native=medians.pop("native"),
        float32_direct_emulated=medians.pop("emulated"),
        torch=medians,
    )


# ---------------------------------------------------------------------------------------------
# Aggregation.


@dataclass(frozen=True)
class Stats:
    """Median and min–max over shapes and seeds."""

    median: float
    low: float
    high: float
    count: int


Key = tuple[str, str, str, str]  # (op, algorithm, variant, precision)


def aggregate(rows: Sequence[Measurement], metric: str = "rel_max") -> dict[Key, Stats]:
    groups: dict[Key, list[float]] = {}
    for r in rows:
        groups.setdefault((r.op, r.algorithm, r.variant, r.precision), []).append(getattr(r, metric))
    return {
        key: Stats(float(np.median(v)), float(np.min(v)), float(np.max(v)), len(v))
        for key, v in groups.items()
    }


def overhead_ratios(rows: Sequence[Measurement]) -> dict[tuple[str, str], float]:
    """Median over (shape, seed) of error(algorithm) / error(baseline) at the same precision."""
    base = {
        (r.op, r.precision, r.shape, r.seed): r.rel_max
        for r in rows
        if r.algorithm == BASELINE[r.op] and not r.variant
    }
    ratios: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        b = base[(r.op, r.precision, r.shape, r.seed)]
        if not r.variant and b > 0:
            ratios.setdefault((r.algorithm, r.precision), []).append(r.rel_max / b)
    return {k: float(np.median(v)) for k, v in ratios.items()}


# ---------------------------------------------------------------------------------------------
# Plots.

COLORS = {
    "direct": "tab:blue",
    "im2col": "tab:cyan",
    "winograd(tile=2)": "tab:green",
    "winograd(tile=4)": "tab:olive",
    "winograd(tile=6)": "tab:orange",
    "fft": "tab:purple",
    "naive": "tab:blue",
    "blas": "tab:red",
    "log": "tab:green",
    "log_approx": "tab:orange",
    NAIVE_G: "tab:red",
    REQUANT: "tab:brown",
    TRANSFORMS_FP32: "tab:pink",
    FLOOR: "black",
}
METRICS = {
    "rel_max": "relative max error  max|y − ref| / max|ref|",
    "rel_l2": "relative L2 error  ‖y − ref‖₂ / ‖ref‖₂",
}


def _series(stats: dict[Key, Stats], op: str, name: str, variant: str = "") -> list[Stats | None]:
    return [stats.get((op, name, variant, p.key)) for p in PRECISIONS]


def _draw(ax, series: list[Stats | None], offset: float, **style: Any) -> None:
    """Medians joined by a line, min–max as error bars; missing precisions leave a gap."""
    xs = np.arange(len(series)) + offset
    med = np.array([s.median if s else np.nan for s in series])
    low = np.array([s.low if s else np.nan for s in series])
    high = np.array([s.high if s else np.nan for s in series])
    med_f, low_f, high_f = (_plots.floor_for_log(v) for v in (med, low, high))  # nan stays a gap
    ax.errorbar(xs, med_f, yerr=[med_f - low_f, high_f - med_f], capsize=3, **style)
    for x, m in zip(xs, med, strict=True):
        if m == 0:
            ax.annotate(
                "exact 0", (x, _plots.LOG_FLOOR), xytext=(5, 2), textcoords="offset points", fontsize=7
            )


def _format_precision_axis(ax, ylabel: str) -> None:
    ax.set_yscale("log")
    ax.set_xticks(range(len(PRECISIONS)), [p.label for p in PRECISIONS], fontsize=8)
    ax.set_xlabel("precision: storage and accumulator (ordered by significand bits)")
    ax.set_ylabel(ylabel)
    _plots.log_grid(ax)


def _draw_floor(ax, stats: dict[Key, Stats], op: str) -> None:
    """The storage floor (exact arithmetic on stored operands, y stored) as short black bars."""
    for i, st in enumerate(_series(stats, op, BASELINE[op], FLOOR)):
        if st is not None and st.median > 0:
            ax.hlines(st.median, i - 0.3, i + 0.3, colors=COLORS[FLOOR], lw=1.2, ls="-", zorder=5)
    ax.plot(
        [],
        [],
        color=COLORS[FLOOR],
        lw=1.2,
        label="storage floor: exact arithmetic on stored x, w (, b); y stored",
    )


def bit_exact(rows: Sequence[Measurement]) -> set[tuple[str, str]]:
    """(algorithm, precision) pairs whose every integer result equals integer direct bit for bit."""
    seen: dict[tuple[str, str], bool] = {}
    for r in rows:
        if r.exact_vs_direct is not None and not r.variant:
            key = (r.algorithm, r.precision)
            seen[key] = seen.get(key, True) and r.exact_vs_direct
    return {key for key, exact in seen.items() if exact}


def plot_algorithm(
    alg: Algorithm, stats: dict[str, dict[Key, Stats]], exact: set[tuple[str, str]], path: Path
) -> Path:
    """Error vs precision for one algorithm, beside the baseline at the same precision."""
    fig, axes = _plots.figure(2, width_in=6.2, height_in=4.6)
    baseline = BASELINE[alg.op]
    for ax, (metric, ylabel) in zip(axes, METRICS.items(), strict=True):
        s = stats[metric]
        if alg.kernel != baseline:
            base_title = next(a.title for a in (*CONV_ALGORITHMS, *MATMUL_ALGORITHMS) if a.kernel == baseline)
            _draw(
                ax,
                _series(s, alg.op, baseline),
                -0.08,
                color="0.45",
                ls="--",
                marker="s",
                label=f"{base_title} (baseline, same precision)",
            )
        _draw(
            ax, _series(s, alg.op, alg.name), 0.0, color=COLORS[alg.name], marker="o", lw=2, label=alg.title
        )
        _draw_floor(ax, s, alg.op)
        if alg.kernel == "winograd":
            for variant, offset, marker, label in (
                (NAIVE_G, 0.08, "x", f"integer, {NAIVE_G} (unit scale)"),
                (REQUANT, 0.12, "D", "integer, U and V requantised per position"),
                (TRANSFORMS_FP32, 0.04, "^", "fp16/bf16 with U and V stored in fp32"),
            ):
                _draw(
                    ax,
                    _series(s, alg.op, alg.name, variant),
                    offset,
                    color=COLORS[variant],
                    marker=marker,
                    ms=4,
                    ls=":",
                    label=label,
                )
        for i, p in enumerate(PRECISIONS):
            if (alg.name, p.key) in exact:
                ax.annotate(
                    "= int direct\nbit for bit",
                    (i, 0.08),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    fontsize=7,
                )
        missing = {
            "fft": ("no integer\nform", lambda p: p.kind == "integer"),
            "log": ("integer logs:\nsee log_approx", lambda p: p.kind == "integer"),
            "log_approx": ("not run:\nf ≥ 23 bits", lambda p: p.key not in LNS_FRACTION_BITS),
        }
        if alg.kernel in missing:
            text, absent = missing[alg.kernel]
            for i, p in enumerate(PRECISIONS):
                if absent(p):
                    ax.annotate(
                        text,
                        (i, 0.5),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        fontsize=8,
                        color=COLORS[alg.name],
                    )
        _format_precision_axis(ax, ylabel)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{alg.op} {alg.title}: error vs float64 reference (median, min–max over shapes × seeds)")
    return _plots.save(fig, path)


def plot_combined(stats: dict[Key, Stats], path: Path) -> Path:
    """All algorithms of both ops on one log-scale chart per op (relative max error)."""
    fig, axes = _plots.figure(2, width_in=6.6, height_in=5.0)
    for ax, (op, algorithms) in zip(
        axes, (("conv2d", CONV_ALGORITHMS), ("matmul", MATMUL_ALGORITHMS)), strict=True
    ):
        step = 0.5 / max(len(algorithms), 1)
        for i, alg in enumerate(algorithms):
            offset = (i - (len(algorithms) - 1) / 2) * step / 2
            _draw(
                ax,
                _series(stats, op, alg.name),
                offset,
                color=COLORS[alg.name],
                marker="o",
                ms=4,
                lw=1.5,
                label=alg.title,
            )
        if op == "conv2d":
            for tile, offset in ((2, 0.16), (4, 0.2), (6, 0.24)):
                name = f"winograd(tile={tile})"
                _draw(
                    ax,
                    _series(stats, op, name, NAIVE_G),
                    offset,
                    color=COLORS[name],
                    marker="x",
                    ls="none",
                    label=f"F({tile}) int, {NAIVE_G}",
                )
        _draw_floor(ax, stats, op)
        _format_precision_axis(ax, METRICS["rel_max"])
        ax.set_title(op)
        ax.legend(fontsize=7, loc="upper left", ncol=2 if op == "conv2d" else 1)
    fig.suptitle("Error vs float64 reference by precision (median, min–max over shapes × seeds)")
    return _plots.save(fig, path)


# ---------------------------------------------------------------------------------------------
# Summary.

EMULATION_TEXT = """\
How each precision is computed — storage / arithmetic / accumulator:

| precision | storage | arithmetic (transforms, products) | accumulator | implementation |
| --- | --- | --- | --- | --- |
| fp64 | float64 | float64 | float64 | the real kernels of `kernels/conv2d`, numpy BLAS (dgemm) |
| fp32 | float32 | float32 (FMA where fused) | float32 | the same kernels on float32 arrays, BLAS sgemm |
| fp16 acc fp16 | float16 | float16 | float16 | emulated, every op rounded |
| fp16 acc fp32 | float16 | float32 (fp16×fp16 products exact) | float32 | emulated, every op rounded |
| bf16 acc bf16 | bfloat16 | bfloat16 | bfloat16 | emulated, every op rounded |
| bf16 acc fp32 | bfloat16 | float32 (bf16×bf16 products exact) | float32 | emulated, every op rounded |
| int16 | int16, per-tensor scale | integer | int64 | quantise → integer kernels → dequantise (float32) |
| int8 | int8, per-tensor scale | integer | int32 | quantise → integer kernels → dequantise (float32) |

* **Rounding.** `studies/lowprec/rounding.py` rounds a float64 to a format given by (exponent bits,
  mantissa bits) on its bit pattern: drop the significand bits the format cannot keep (more for
  subnormal results), round half to even, overflow to ±inf at `max + ulp/2`, underflow gradually to
  ±0. float16 = (5, 10), bfloat16 = (8, 7). Values are carried in float64; one float64 operation
  followed by one rounding is the correctly rounded low-precision operation (float64's 53 bits
  exceed 2p + 2 for p = 11 and p = 8, so the double rounding is innocuous), i.e. bit-identical to
  hardware without fused multiply-add. Checked below against numpy's float16, ml_dtypes' bfloat16
  and numpy's float32.
* **Low-precision kernels** (`studies/lowprec/float_conv.py`, `float_fft.py`, `float_matmul.py`):
  x, w, b are rounded to the storage format once. *direct*: each output starts at the bias and adds
  `rnd(x·w)` tap by tap in (c, i, j) order, each sum rounded to the accumulator. *im2col*: the
  gather is an exact copy; the GEMM forms `rnd(a·b)` and sums along K in blocks of 256 (each block
  from zero in the accumulator, then added to C — the GotoBLAS/OpenBLAS structure), then adds the
  bias. *Winograd*: `U = G g Gᵀ` from the stored weights in float64, rounded once to the storage
  format (weights are transformed offline); `V = Bᵀ d B` with every multiply-add rounded to the
  arithmetic format, stored in the storage format; the α² channel GEMMs as above; the output
  transform `Aᵀ M A` in the arithmetic format from the accumulators; y stored. *FFT*: our own
  radix-2 decimation-in-time FFT (size: next power of two ≥ padded input), every real multiply and
  add of every butterfly rounded (twiddles rounded once), the input spectrum stored in the storage
  format, the filter spectrum computed in float64 and rounded once, the channel sum of complex
  products in the accumulator, the inverse FFT in the arithmetic format with an exact halving per
  stage (spreads 1/P over the stages so float16 cannot overflow), y stored. *matmul*: the same GEMM
  (naive: one K block, i.e. the sequential sum). With acc fp32, products of two float16/bfloat16
  values are exact in float32 and are summed in float32 — the tensor-core / AMX-BF16 / ARM FMLAL
  model; transforms run in float32 and their results are stored in the low format. *log* (exact
  log-domain matmul): at fp64/fp32 the real kernel `kernels/matmul/logdomain.py` (log2, exp2 and
  sums in the input dtype); at float16/bfloat16 `log2|x|` of the stored operands is computed in the
  arithmetic format and stored in the storage format (a transform, like Winograd's), each product
  is `rnd(2^rnd(log a + log b))` and the sum runs along K in the accumulator. Integer logs are
  what `log_approx` is, so `log` has no integer column.
* **log_approx** (`kernels/matmul/lns.py`, the LNS datapath of US 2021/0056446 A1) has its own
  number format — sign, 4 integer and f fraction bits of `log2|x|` with a per-tensor scale — and
  exact integer shift-and-add accumulators (62 bits), and its output is rounded back to the LNS
  format (`out_log=1`), so only its format depends on the column: f = 10 in the float16 columns and
  f = 7 in the bfloat16 columns (the formats' significand bits; the two accumulator columns
  coincide), 16- and 8-bit LNS codes (1 + 4 + f bits: f = 11 and f = 3) in the int16 and int8
  columns. It is not run at fp32/fp64: matching them needs f ≥ 23,
  i.e. 2^23 accumulator pairs per output. Its error against f is the subject of `autotune study lns`.
* **Integers** (`studies/lowprec/integer.py`): symmetric per-tensor quantisation
  `s = max|a| / (2^(b−1) − 1)`, `q = rint(a / s)` stored as int8/int16; bias `rint(b / (s_x s_w))`
  in the accumulator; direct and im2col are the real kernels of `kernels/conv2d` run on integer
  arrays of the accumulator dtype (int32 for int8, int64 for int16); matmul is numpy's integer GEMM
  in the accumulator dtype; the result is dequantised as `float32(s_x s_w) · float32(acc)`.
  Winograd scales each transform by the lcm of its denominators (F(2x2,3x3): `2G`, divide by 4;
  F(4x4,3x3): `24G`, divide by 576; F(6x6,3x3): `90G`, `4Bᵀ`, `32Aᵀ`, divide by 11520²), runs in
  wrapping integer arithmetic of the accumulator width (exact whenever the final `D·y` fits, however
  large the intermediates) and divides exactly. The *naive* variant keeps the fractional matrices
  and rounds each transformed tensor to integers: `U = rint(G g Gᵀ)`, `V = rint(Bᵀ d B)`,
  `y = rint(Aᵀ M A)`. **FFT has no integer form** (its twiddles are irrational and its spectra
  complex): it is left out at int8/int16 rather than faked.
"""


def _median_table(stats: dict[Key, Stats], op: str, algorithms: Sequence[Algorithm]) -> list[str]:
    header = ["algorithm", *(p.label.replace("\n", " ") for p in PRECISIONS)]
    rows = []
    for alg in algorithms:
        rows.append([alg.title, *(tables.sci(s.median) if s else "—" for s in _series(stats, op, alg.name))])
        if op == "conv2d" and alg.kernel == "winograd":
            for variant, title in (
                (TRANSFORMS_FP32, TRANSFORMS_FP32),
                (NAIVE_G, f"int {NAIVE_G}"),
                (REQUANT, f"int {REQUANT}"),
            ):
                cells = [tables.sci(s.median) if s else "" for s in _series(stats, op, alg.name, variant)]
                rows.append([f"… {title}", *cells])
    floor = [tables.sci(s.median) if s else "" for s in _series(stats, op, BASELINE[op], FLOOR)]
    rows.append([f"{FLOOR} (exact arithmetic on stored operands, y stored)", *floor])
    return tables.markdown(header, rows).splitlines()


def _ratio_table(ratios: dict[tuple[str, str], float], algorithms: Sequence[Algorithm]) -> list[str]:
    header = ["algorithm", *(p.label.replace("\n", " ") for p in PRECISIONS)]
    rows = [
        [
            alg.title,
            *(f"{ratios[(alg.name, p.key)]:.2f}" if (alg.name, p.key) in ratios else "—" for p in PRECISIONS),
        ]
        for alg in algorithms
        if alg.kernel not in BASELINE.values()
    ]
    return tables.markdown(header, rows).splitlines()


def _integer_winograd_table(rows: Sequence[Measurement], stats: dict[Key, Stats]) -> list[str]:
    lines = []
    for tile in (2, 4, 6):
        wt = integer.integer_winograd(tile)
        name = f"winograd(tile={tile})"
        for p in (q for q in PRECISIONS if q.kind == "integer"):
            scaled = [r for r in rows if r.algorithm == name and r.precision == p.key and not r.variant]
            naive = [r for r in rows if r.algorithm == name and r.precision == p.key and r.variant == NAIVE_G]
            if not scaled:
                continue
            lines.append(
                [
                    f"F({tile}x{tile},3x3)",
                    p.storage,
                    f"{wt.scale_g}G, {wt.scale_b}Bᵀ, {wt.scale_a}Aᵀ",
                    f"{wt.divisor}",
                    ", ".join(sorted({str(r.bits_needed) for r in scaled}, key=int)),
                    ", ".join(sorted({f"int{r.acc_bits}" for r in scaled})),
                    f"{sum(r.exact_vs_direct for r in scaled)}/{len(scaled)}",
                    tables.sci(stats[("conv2d", name, "", p.key)].median),
                    tables.sci(stats[("conv2d", name, NAIVE_G, p.key)].median) if naive else "—",
                    "{} / {}".format(*integer.transformed_operand_bits(tile, integer.INT_FORMATS[p.storage])),
                    tables.sci(stats[("conv2d", name, REQUANT, p.key)].median),
                    tables.sci(stats[("conv2d", "direct", "", p.key)].median),
                ]
            )
    header = [
        "tile",
        "operands",
        "integral transforms",
        "divisor D",
        "worst-case bits of D·y",
        "accumulator",
        "bit-identical to int direct",
        "error (scaled)",
        f"error ({NAIVE_G})",
        "U / V bits (scaled, worst case)",
        f"error ({REQUANT}: operand-width products)",
        "int direct error",
    ]
    return tables.markdown(header, lines).splitlines()


def _stat(stats: dict[Key, Stats], op: str, name: str, key: str) -> float:
    return stats[(op, name, "", key)].median


def _label(p: Precision) -> str:
    return p.label.replace("\n", " ")


def _findings(stats: dict[Key, Stats], ratios: dict[tuple[str, str], float]) -> list[str]:
    """The headline numbers, read off the medians."""
    own = {p.key: tables.sci(_stat(stats, "conv2d", "direct", p.key)) for p in PRECISIONS}
    direct = {p.key: _stat(stats, "conv2d", "direct", p.key) for p in PRECISIONS}
    lines = [
        "* **The precision's own error** (direct conv, median relative max error): "
        + ", ".join(f"{_label(p)} {own[p.key]}" for p in PRECISIONS)
        + ".",
        "* **Accumulating in the low format** costs "
        f"{direct['float16'] / direct['float16/acc=float32']:.1f}x (fp16) and "
        f"{direct['bfloat16'] / direct['bfloat16/acc=float32']:.1f}x (bf16) over accumulating the "
        "same products in float32.",
    ]
    for name, title in [(f"winograd(tile={t})", f"Winograd F({t}x{t},3x3)") for t in (2, 4, 6)] + [
        ("fft", "FFT")
    ]:
        cells = ", ".join(
            f"{_label(p)} {ratios[(name, p.key)]:.1f}x"
            for p in PRECISIONS
            if (name, p.key) in ratios and p.kind != "integer"
        )
        lines.append(f"* **What {title} adds** (its error / direct's, same precision): {cells}.")
    f2 = {key: ratios.get(("winograd(tile=2)", key)) for key in ("float16", "float32", "float16/acc=float32")}
    if all(v is not None for v in f2.values()):
        lines.append(
            f"* **Ratios below 1 come from shorter sums.** F(2x2,3x3) is {f2['float16']:.2f}x direct with "
            f"fp16 accumulation and {f2['float32']:.2f}x in fp32, but {f2['float16/acc=float32']:.2f}x with "
            "fp16 storage and fp32 accumulation. Each of Winograd's α² GEMMs (and each FFT frequency) sums C "
            "products where direct sums 9·C in one accumulator, so fewer roundings pile up; when the "
            "accumulator is much wider than the storage, the transforms' rounding to the storage format "
            "dominates instead."
        )
    for name, title in (("log", "the exact log domain"), ("log_approx", "the LNS approximation")):
        cells = ", ".join(
            f"{_label(p)} {ratios[(name, p.key)]:.1f}x" for p in PRECISIONS if (name, p.key) in ratios
        )
        lines.append(f"* **What {title} adds** to matmul (its error / naive's, same column): {cells}.")
    lns_low = [ratios.get(("log_approx", key)) for key in ("float16", "bfloat16")]
    if all(v is not None for v in lns_low):
        lines.append(
            "* The LNS datapath accumulates exactly in integers, so against float arithmetic that "
            f"accumulates in the low format its error is lower ({lns_low[0]:.2f}x at fp16, "
            f"{lns_low[1]:.2f}x at bf16) — "
            f"but with 2^f accumulator pairs per output (f = {LNS_FRACTION_BITS['float16']}: "
            f"{1 << LNS_FRACTION_BITS['float16']} pairs of 42+ bits) against one 16-bit accumulator. "
            "At equal accumulator bits it loses; the LNS study compares the two at 16 and 32 bits per output."
        )
    lines += _floor_findings(stats)
    im2col = [ratios[("im2col", p.key)] for p in PRECISIONS if ("im2col", p.key) in ratios]
    lines.append(
        "* **im2col** is the same sum in another memory order (plus a blocked GEMM): its error / direct's "
        f"is between {min(im2col):.2f} and {max(im2col):.2f} at every precision."
    )
    return lines


def _floor_findings(stats: dict[Key, Stats]) -> list[str]:
    """The storage floor, the Winograd transform-storage split and the requantised integer Winograd."""
    floor = {
        k: stats.get(("conv2d", "direct", FLOOR, k)) for k in ("float16/acc=float32", "bfloat16/acc=float32")
    }
    if not all(floor.values()):
        return []
    f16, b16 = (floor[k].median for k in floor)  # type: ignore[union-attr]
    d16, db16 = (_stat(stats, "conv2d", "direct", k) for k in floor)
    split = []
    for tile in (2, 4, 6):
        name = f"winograd(tile={tile})"
        stored = _stat(stats, "conv2d", name, "float16/acc=float32")
        kept = stats[("conv2d", name, TRANSFORMS_FP32, "float16/acc=float32")].median
        split.append(f"F({tile}) {tables.sci(stored)} → {tables.sci(kept)}")
    requant = [
        f"F({t}) {tables.sci(stats[('conv2d', f'winograd(tile={t})', REQUANT, 'int8')].median)}"
        for t in (2, 4, 6)
    ]
    return [
        "* **The storage floor** — exact arithmetic on the stored x, w, b, with y rounded to the format — is "
        f"{tables.sci(f16)} (fp16) and {tables.sci(b16)} (bf16). Direct with an fp32 accumulator measures "
        f"{tables.sci(d16)} and {tables.sci(db16)}: the fp16/bf16-with-fp32-accumulation columns measure "
        "storage rounding, not arithmetic.",
        "* **Winograd: transform storage, not arithmetic.** With fp16 storage and fp32 accumulation, storing "
        f"U and V in fp32 instead of fp16 takes the error from {', '.join(split)} (direct "
        f"{tables.sci(d16)}, floor {tables.sci(f16)}): the transforms' rounding to storage is the error.",
        "* **Realistic int8 Winograd** (U and V requantised to int8 with one scale per transformed position, "
        f"int8×int8 products, int32 sums): {', '.join(requant)}, against "
        f"{tables.sci(_stat(stats, 'conv2d', 'direct', 'int8'))} for int8 direct. The exact integer "
        "Winograd keeps direct's error only because its U and V are 12–22 bits wide (operand-width table).",
    ]


def _check_lines(checks: EmulationChecks) -> list[str]:
    torch_cells = ", ".join(f"{k} {tables.sci(v)}" for k, v in checks.torch.items())
    return [
        f"* Rounding to float16 vs numpy `astype(float16)`: {checks.float16_mismatches} mismatches in "
        f"{checks.float16_values} values (every finite float16, every midpoint between neighbours, and the "
        "float64 values next to every midpoint).",
        f"* Rounding to bfloat16 vs ml_dtypes `astype(bfloat16)`: {checks.bfloat16_mismatches} mismatches in "
        f"{checks.bfloat16_values} float32 values over the whole exponent range. (From float64, ml_dtypes "
        "converts via float32 and so double-rounds: it differs from one round-to-nearest-even on "
        f"{checks.ml_dtypes_float64_double_rounding} of them; the study rounds once.)",
        f"* Rounding to float32 vs numpy `astype(float32)`: {checks.float32_mismatches} mismatches in "
        f"{checks.float32_values} float64 values, subnormals and overflow included.",
        "* float16 arithmetic (sums, products, a 256-term dot product with a float16 accumulator) vs numpy's "
        f"float16 scalars: {checks.float16_op_mismatches} mismatches in {checks.float16_ops} results.",
        f"* The emulator at float32 (format (8, 23)), first conv shape: direct error "
        f"{tables.sci(checks.float32_direct_emulated)} vs "
        f"{tables.sci(checks.float32_direct_native)} "
        "for the real float32 direct kernel (same order; the real kernel fuses multiply-adds).",
        "* Real low-precision kernels beside the emulation (first conv shape, median over seeds): "
        f"{torch_cells}. "
        "PyTorch's internal arithmetic is its own (not controlled here): a sanity bracket, not an oracle. "
        "All of them sit at the storage floor, so this agreement shows that the stored operands and output "
        "are rounded alike — it cannot tell accumulation orders or accumulator formats apart.",
    ]


def _integer_notes() -> str:
    return (
        "`worst-case bits of D·y` = bits of `D · C · 9 · qmax²` plus sign, per shape (C = input channels). "
        "Where it exceeds 64 the result is still exact for these inputs: before each run the data bound "
        "`D · max Σ|w_q||x_q|` is checked to fit the accumulator, and the comparison with integer direct "
        "proves it. (A check that D divides the final `D·y` would prove nothing: a wrap adds a multiple of "
        "2^32 or 2^64, which D = 4 of F(2) always divides, and D = 576 of F(4) whenever the wrap count is a "
        "multiple of 9.) `U / V bits`: signed widths of the transformed operands for inputs of ±qmax — the "
        "element-wise products of exact integer Winograd are that wide, not int8×int8. The requantised "
        "variant brings them back to the operand width with one scale per transformed position (over all "
        "filters and channels for U, over all tiles and channels for V), then sums exactly and dequantises."
    )


def write_summary(
    path: Path,
    rows: Sequence[Measurement],
    checks: EmulationChecks,
    *,
    command: str,
    elapsed_s: float,
    conv_shapes: Sequence[ConvShape],
    matmul_shapes: Sequence[MatmulShape],
    seeds: Sequence[int],
    figures: Sequence[Path],
    literature_rows: Sequence[literature.LiteratureRow] = (),
    sensitivity_rows: Sequence[sensitivity.SensitivityRow] = (),
) -> Path:
    """``summary.md``: findings in numbers, the tables, how each precision is computed, the checks."""
    stats = aggregate(rows)
    ratios = overhead_ratios(rows)
    lines = [
        "# Precision study: error vs numerical precision",
        "",
        f"Command: `{command}` ({elapsed_s:.0f} s). Inputs: standard-normal x, w, b (float64), seeds "
        f"{', '.join(map(str, seeds))}; conv2d {'; '.join(s.label for s in conv_shapes)} (padding 1, "
        f"stride 1, with bias); matmul {'; '.join(s.label for s in matmul_shapes)}. Error: relative max "
        "error `max|y − ref| / max|ref|` against the float64 reference on the original float64 data (so "
        "the storage rounding of the inputs is part of every error); relative L2 in `precision.csv`. "
        "Medians over shapes × seeds; the plots show min–max as error bars.",
        "",
        "Figures: " + ", ".join(f"`{p.name}`" for p in figures) + ".",
        "",
        "## What the plots show",
        "",
        *_findings(stats, ratios),
        "",
        "## Median relative max error",
        "",
        "conv2d:",
        "",
        *_median_table(stats, "conv2d", CONV_ALGORITHMS),
        "",
        "matmul (naive: sequential sum; BLAS-style: K in blocks of 256 at emulated precisions, the real BLAS "
        "at fp32/fp64; at int8/int16 both are the same exact integer sum; log_approx: the LNS format of "
        "each column, see below):",
        "",
        *_median_table(stats, "matmul", MATMUL_ALGORITHMS),
        "",
        "Error divided by the baseline's (direct / naive) at the same precision, median over shapes × seeds "
        "— what the transform adds on top of the precision's own error:",
        "",
        *_ratio_table(ratios, (*CONV_ALGORITHMS, *MATMUL_ALGORITHMS)),
        "",
        "## Integer Winograd",
        "",
        "Scaled integral transforms reproduce integer direct bit for bit; the naive fractional `G` does not.",
        "",
        *_integer_winograd_table(rows, stats),
        "",
        _integer_notes(),
        "",
        "## Beyond standard-normal data: scale, offset, channels, FFT size (`precision_sensitivity.png`)",
        "",
        *sensitivity.findings(list(sensitivity_rows)),
        "",
        "## Beside the literature",
        "",
        *literature.tables(list(literature_rows)),
        "",
        "## How low precision is done",
        "",
        EMULATION_TEXT,
        "## Checks of the emulation",
        "",
        *_check_lines(checks),
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# Entry point.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options (``--out`` and ``--quick`` belong to the CLI)."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="random inputs per shape (default 5; 2 with --quick)",
    )


def measure_all(
    conv_shapes: Sequence[ConvShape], matmul_shapes: Sequence[MatmulShape], seeds: Sequence[int]
) -> list[Measurement]:
    """Every algorithm × precision on every shape × seed."""
    jobs: list[tuple[Callable[..., list[Measurement]], Any, int]] = [
        (measure_conv, s, i) for i, s in enumerate(conv_shapes)
    ] + [(measure_matmul, s, i) for i, s in enumerate(matmul_shapes)]
    rows: list[Measurement] = []
    with tqdm(total=len(jobs) * len(seeds), desc="precision", unit="case", leave=False) as bar:
        for fn, shape, index in jobs:
            for seed in seeds:
                rows.extend(fn(shape, seed, index))
                bar.update()
    return rows


def run(out: Path, *, quick: bool = False, seeds: int | None = None) -> Path:
    """Measure, then write ``precision.csv``, the plots and ``summary.md`` into ``out/precision``.

    Args:
        out: output root; the study writes into ``out / "precision"``.
        quick: one conv and one matmul shape, two seeds (for tests and smoke runs).
        seeds: random inputs per shape (default 5, quick 2).
    """
    n_seeds = seeds if seeds is not None else (2 if quick else 5)
    if n_seeds < 1:
        raise ValueError(f"precision: seeds must be >= 1, got {seeds}")
    started = time.perf_counter()
    target = Path(out) / NAME
    target.mkdir(parents=True, exist_ok=True)
    conv_shapes = QUICK_CONV_SHAPES if quick else CONV_SHAPES
    matmul_shapes = QUICK_MATMUL_SHAPES if quick else MATMUL_SHAPES
    seed_list = list(range(n_seeds))
    rows = measure_all(conv_shapes, matmul_shapes, seed_list)
    checks = emulation_checks(conv_shapes[0], seed_list)
    tables.write_csv((asdict(r) for r in rows), target / "precision.csv", CSV_FIELDS)
    stats = {metric: aggregate(rows, metric) for metric in METRICS}
    figures = [
        plot_algorithm(alg, stats, bit_exact(rows), target / f"precision_{alg.slug}.png")
        for alg in (*CONV_ALGORITHMS, *MATMUL_ALGORITHMS)
    ]
    figures.append(plot_combined(stats["rel_max"], target / "precision_all.png"))
    sensitivity_rows = sensitivity.measure(quick)
    tables.write_csv(
        (asdict(r) for r in sensitivity_rows),
        target / "sensitivity.csv",
        tuple(sensitivity.SensitivityRow.__dataclass_fields__),
    )
    figures.append(sensitivity.plot(sensitivity_rows, target / "precision_sensitivity.png"))
    literature_rows = literature.measure(quick)
    tables.write_csv(
        (asdict(r) for r in literature_rows),
        target / "literature.csv",
        tuple(literature.LiteratureRow.__dataclass_fields__),
    )
    command = (
        "autotune study precision" + (" --quick" if quick else "") + (f" --seeds {seeds}" if seeds else "")
    )
    write_summary(
        target / "summary.md",
        rows,
        checks,
        command=command,
        elapsed_s=time.perf_counter() - started,
        conv_shapes=conv_shapes,
        matmul_shapes=matmul_shapes,
        seeds=seed_list,
        figures=figures,
        literature_rows=literature_rows,
        sensitivity_rows=sensitivity_rows,
    )
    return target
