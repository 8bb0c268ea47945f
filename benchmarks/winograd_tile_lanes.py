"""An experiment kept for the record: Winograd with the SIMD lanes across eight tiles instead of
eight channels, reading NCHW and writing NCHW directly (no channel-last scratch, no gather, no
scatter), against today's fused kernel.

    python benchmarks/winograd_tile_lanes.py [--tile 2|4|6] [--layer 8x64x56 ...] [--rounds 5]

Each input-transform call takes one channel of eight consecutive tiles of a row: the α input rows
are read with masked vector loads (the zero padding and the image's edges are the masks), the
α columns of the eight tiles are picked out of them with shuffles (column j of tile l is element
m·l + j), and the α² results are stored, masked to the tiles that exist, as V[ξ][c][tile] (a
C × tiles matrix per ξ). The GEMMs are M[ξ] = Uᵀ[ξ] (K × C) · V[ξ] (C × tiles), and each output
call takes one channel of eight tiles: α² loads, Aᵀ M A, then the m entries of each output row
interleaved into m vectors of consecutive columns, plus the bias, stored masked into y. Jobs
are today's (:func:`kernels.conv2d.winograd.fused_jobs`).

It prints, per layer: the error against PyTorch in float64 (as a check), the fused kernel and
this one alternating in one process, and this one's split (the whole call with the input
transforms, the GEMMs or the output transforms left out, against the call with all three left
out). Measured in BENCHMARKS.md §29: slower than the channel lanes (1.05-1.52x on 64-128
channels), mostly because BLAS runs (K × C)·(C × tiles) with as few as 28 tiles at 0.6x the
speed of (tiles × C)·(C × K); the transforms themselves were not cheaper either.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import numba
import numpy as np
import torch
import torch.nn.functional as F
from _at_commit import alternate
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from winograd_stages import alternating_ms

from kernels import pool, workspace
from kernels.conv2d import winograd as W
from kernels.conv2d.winograd_matrices import winograd_matrices_exact
from kernels.simd import (
    LANES,
    _data,
    _operands,
    _shuffle,
    _vector_pointer,
    _VectorArithmetic,
    apply_matrix,
    element_strides,
    matrix_text,
)

I32, I64 = ir.IntType(32), ir.IntType(64)


def _masked(builder: ir.IRBuilder, kind: str, vector: ir.VectorType, args: list):
    """A call of LLVM's ``llvm.masked.load`` or ``llvm.masked.store`` for ``vector``."""
    suffix = f"v{vector.count}{'f32' if vector.element == ir.FloatType() else 'f64'}.p0"
    pointer, mask = (args[0], args[2]) if kind == "load" else (args[1], args[3])
    params = [pointer.type, I32, mask.type, vector]
    if kind == "store":
        params = [vector, pointer.type, I32, mask.type]
    result = vector if kind == "load" else ir.VoidType()
    name = f"llvm.masked.{kind}.{suffix}"
    function = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(result, params), name
    )
    return builder.call(function, args)


def _splat(builder: ir.IRBuilder, value, count: int = LANES):
    vector = ir.VectorType(value.type, count)
    one = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(I32, 0))
    return _shuffle(builder, one, ir.Constant(vector, None), (0,) * count)


def _lanes_within(builder: ir.IRBuilder, start, lo, hi):
    """The mask of lanes l with lo ≤ start + l < hi (64-bit integers)."""
    at = builder.add(_splat(builder, start), ir.Constant(ir.VectorType(I64, LANES), list(range(LANES))))
    above = builder.icmp_signed(">=", at, _splat(builder, lo))
    return builder.and_(above, builder.icmp_signed("<", at, _splat(builder, hi)))


def _concat(builder: ir.IRBuilder, vectors: list):
    """All lanes of ``vectors`` as one vector (undefined lanes up to a power of two)."""
    while len(vectors) & (len(vectors) - 1):
        vectors = [*vectors, ir.Constant(vectors[0].type, None)]
    while len(vectors) > 1:
        width = vectors[0].type.count
        vectors = [
            _shuffle(builder, a, b, tuple(range(2 * width)))
            for a, b in zip(vectors[::2], vectors[1::2], strict=True)
        ]
    return vectors[0]


def _pick(builder: ir.IRBuilder, whole, lanes: list[int]):
    return _shuffle(builder, whole, ir.Constant(whole.type, None), tuple(lanes))


def _matrix(matrix) -> list[list[Fraction]] | None:
    if not isinstance(matrix, types.StringLiteral):
        return None
    return [[Fraction(c) for c in row.split(",")] for row in matrix.literal_value.split(";")]


@intrinsic
def tiles8_input(typingctx, x, at, row_stride, x0, width, i_lo, i_hi, v, v_at, v_slot, valid, matrix):
    """V[ξ·α + ν] at ``v_at`` (+ its slot), lanes = tiles l < ``valid``: (Bᵀ d_l B)[ξ, ν], where d_l
    is rows ``i_lo ≤ i < i_hi`` of the α rows from element ``at`` of ``x`` (row stride
    ``row_stride``), columns x0 + m·l + j in [0, width); zero elsewhere."""
    b_t = _matrix(matrix)
    if b_t is None:
        return None
    alpha, m = len(b_t[0]), len(b_t[0]) - 2

    def codegen(context, builder, signature, args):
        x, at, row_stride, x0, width, i_lo, i_hi, v, v_at, v_slot, valid = args[:11]
        vector, _, x_data, v_data = _operands(context, builder, signature.args[0], x, signature.args[7], v)
        zero = ir.Constant(I64, 0)
        grid = []
        for i in range(alpha):
            inside = builder.and_(
                builder.icmp_signed("<=", i_lo, ir.Constant(I64, i)),
                builder.icmp_signed(">", i_hi, ir.Constant(I64, i)),
            )
            hi = builder.select(inside, width, zero)  # a row outside the image loads nothing
            base = builder.add(at, builder.mul(row_stride, ir.Constant(I64, i)))
            loads = []
            for q in range(m + 1):
                start = builder.add(x0, ir.Constant(I64, LANES * q))
                pointer = _vector_pointer(builder, x_data, builder.add(base, start), vector)
                mask = _lanes_within(builder, start, zero, hi)
                loads.append(
                    _masked(
                        builder,
                        "load",
                        vector,
                        [pointer, ir.Constant(I32, 4), mask, ir.Constant(vector, None)],
                    )
                )
            whole = _concat(builder, loads)
            grid.append(
                [_pick(builder, whole, [m * lane + j for lane in range(LANES)]) for j in range(alpha)]
            )
        ops = _VectorArithmetic(builder, vector)
        columns = [apply_matrix(b_t, [grid[i][j] for i in range(alpha)], ops) for j in range(alpha)]
        mask = _lanes_within(builder, zero, zero, valid)
        for a in range(alpha):
            for e, value in enumerate(apply_matrix(b_t, [column[a] for column in columns], ops)):
                offset = builder.add(v_at, builder.mul(v_slot, ir.Constant(I64, a * alpha + e)))
                pointer = _vector_pointer(builder, v_data, offset, vector)
                _masked(builder, "store", vector, [value, pointer, ir.Constant(I32, 4), mask])
        return context.get_dummy_value()

    return types.void(x, *(types.intp,) * 6, v, *(types.intp,) * 3, matrix), codegen


@intrinsic
def tiles8_output(typingctx, mm, at, slot, y, y_at, row_stride, cols, rows, bias, k, matrix):
    """y rows a < ``rows`` from element ``y_at`` (row stride ``row_stride``), columns < ``cols`` of
    the 8·m of eight tiles: (Aᵀ M_l A)[a, e] + bias[k] at column m·l + e, M_l the α² lanes l at
    ``at`` (+ slots of ``slot``) of ``mm``."""
    a_t = _matrix(matrix)
    if a_t is None:
        return None
    m, alpha = len(a_t), len(a_t[0])

    def codegen(context, builder, signature, args):
        mm, at, slot, y, y_at, row_stride, cols, rows, bias, k = args[:10]
        vector, align, m_data, y_data = _operands(
            context, builder, signature.args[0], mm, signature.args[3], y
        )
        b = _splat(
            builder,
            builder.load(builder.gep(_data(context, builder, signature.args[8], bias, vector.element), [k])),
        )
        grid = [
            [
                builder.load(
                    _vector_pointer(
                        builder,
                        m_data,
                        builder.add(at, builder.mul(slot, ir.Constant(I64, i * alpha + j))),
                        vector,
                    ),
                    align=align,
                )
                for j in range(alpha)
            ]
            for i in range(alpha)
        ]
        ops = _VectorArithmetic(builder, vector)
        columns = [apply_matrix(a_t, [grid[i][j] for i in range(alpha)], ops) for j in range(alpha)]
        zero = ir.Constant(I64, 0)
        for a in range(m):
            whole = _concat(builder, apply_matrix(a_t, [column[a] for column in columns], ops))
            hi = builder.select(builder.icmp_signed(">", rows, ir.Constant(I64, a)), cols, zero)
            base = builder.add(y_at, builder.mul(row_stride, ir.Constant(I64, a)))
            for q in range(m):  # column 8q + p is entry (8q + p) % m of tile (8q + p) // m
                lanes = [((LANES * q + p) % m) * LANES + (LANES * q + p) // m for p in range(LANES)]
                value = builder.fadd(_pick(builder, whole, lanes), b)
                start = ir.Constant(I64, LANES * q)
                pointer = _vector_pointer(builder, y_data, builder.add(base, start), vector)
                _masked(
                    builder,
                    "store",
                    vector,
                    [value, pointer, ir.Constant(I32, 4), _lanes_within(builder, start, zero, hi)],
                )
        return context.get_dummy_value()

    signature = types.void(mm, types.intp, types.intp, y, *(types.intp,) * 4, bias, types.intp, matrix)
    return signature, codegen


def driver(m: int):
    """The fused call with tile lanes; ``flags`` bits 1, 2, 4 run the input transforms, the GEMMs
    and the output transforms (the buffers a left-out phase would fill are filled with ones)."""
    a_t, _, b_t = winograd_matrices_exact(m)
    alpha2 = (m + 2) ** 2
    source = f"""
def fused(x, pad_top, pad_left, ut, bias, th_count, tw_count, rows_per_job, pieces, y, flags):
    channels, k_out, height, width = x.shape[1], ut.shape[1], x.shape[2], x.shape[3]
    rows, piece = x.shape[0] * th_count, -(-tw_count // pieces)
    xs, _ = element_strides(x)
    ys, _ = element_strides(y)
    for job in numba.prange(-(-rows // rows_per_job) * pieces):
        row0, first = (job // pieces) * rows_per_job, (job % pieces) * piece
        row_count, part = min(rows_per_job, rows - row0), min(piece, tw_count - first)
        count, groups = row_count * part, -(-part // 8)
        v = np.ones(({alpha2}, channels, count), dtype=x.dtype)
        flat_m = np.ones({alpha2} * k_out * count + 8, dtype=x.dtype)  # the last group reads past
        mm = flat_m[: {alpha2} * k_out * count].reshape(({alpha2}, k_out, count))
        flat_v = v.reshape(v.size)
        for c in range(channels if flags & 1 else 0):
            for r in range(row_count):
                n, th = (row0 + r) // th_count, (row0 + r) % th_count
                top = th * {m} - pad_top
                base = n * xs[0] + c * xs[1] + top * xs[2]
                for g in range(groups):
                    x0 = (first + 8 * g) * {m} - pad_left
                    at, valid = c * count + r * part + 8 * g, min(8, part - 8 * g)
                    tiles8_input(x, base, xs[2], x0, width, max(0, -top), min({m + 2}, height - top), flat_v,
                                 at, channels * count, valid, "{matrix_text(b_t)}")
        for i in range({alpha2} if flags & 2 else 0):
            np.dot(ut[i], v[i], mm[i])
        for k in range(k_out if flags & 4 else 0):
            for r in range(row_count):
                n, th = (row0 + r) // th_count, (row0 + r) % th_count
                for g in range(groups):
                    t0 = first + 8 * g
                    y_at = n * ys[0] + k * ys[1] + th * {m} * ys[2] + t0 * {m}
                    cols = min(8 * {m}, y.shape[3] - t0 * {m}, (part - 8 * g) * {m})
                    tiles8_output(flat_m, k * count + r * part + 8 * g, k_out * count, y, y_at, ys[2], cols,
                                  min({m}, y.shape[2] - th * {m}), bias, k, "{matrix_text(a_t)}")
"""
    names = {"np": np, "numba": numba, "element_strides": element_strides}
    names |= {"tiles8_input": tiles8_input, "tiles8_output": tiles8_output}
    exec(source, names)  # this file's own template: the matrices are literals of the intrinsics
    return numba.njit(parallel=True, fastmath={"contract"})(names["fused"])


def compare(batch: int, channels: int, size: int, m: int, rounds: int) -> None:
    """Check, A/B and split on one layer (K = C)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    prepared = W.prepare(w, m)
    ut = np.ascontiguousarray(prepared.u.transpose(0, 2, 1))
    tiles = -(-size // m)
    split = W.fused_jobs(m, channels, channels, 4, batch * tiles, tiles)
    y = workspace.line_aligned_empty(x.shape, np.float32)
    fused = driver(m)

    def lanes(flags: int = 7):
        return lambda: pool.on_calling_thread(
            lambda: fused(x, 1, 1, ut, bias, tiles, tiles, *split, y, flags)
        )

    def channel_lanes():
        return W.winograd(x, prepared, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=m, fused=1)

    lanes()()
    want = F.conv2d(*(torch.from_numpy(a).double() for a in (x, w, bias)), padding=1).numpy()
    error = np.abs(y - want).max() / np.abs(want).max()
    before, after = alternate(channel_lanes, lanes(), rounds)
    whole, no_in, no_gemm, no_out, none = np.median(
        alternating_ms([lanes(7), lanes(6), lanes(5), lanes(3), lanes(0)], 10, rounds), axis=0
    )
    print(
        f"F({m}x{m}) {batch}x{channels}x{size}x{size}: error {error:.1e}; channel lanes {before:.0f} us, "
        f"tile lanes {after:.0f} us ({after / before:.2f}x); tile lanes {whole:.3f} ms: input transforms "
        f"{whole - no_in:.3f}, GEMMs {whole - no_gemm:.3f}, output transforms {whole - no_out:.3f}, "
        f"the rest {none:.3f}",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tile", type=int, choices=W.TILE_SIZES, default=4, help="m of F(m×m) (default 4)")
    parser.add_argument("--layer", action="append", help="NxCxH (K = C; repeatable; default: four layers)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    for text in args.layer or ["8x64x56", "1x64x224", "8x128x28", "1x128x112"]:
        compare(*(int(part) for part in text.split("x")), m=args.tile, rounds=args.rounds)
