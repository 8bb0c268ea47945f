"""An experiment kept for the record: the fused Winograd call with V and M per block of a few
tiles (small enough for L1) and the GEMMs done by a GEMM micro-kernel in LLVM vector IR, against
today's fused kernel (V and M of whole rows of tiles in L2, GEMMs by BLAS).

    python benchmarks/winograd_blocked.py [--block 6] [--layer 8x64x56 ...] [--rounds 5]

The micro-kernel (:func:`micro_kernel`) keeps ``b`` tiles × 4 vectors of output channels in
registers (16 lanes: 512-bit vectors where the machine has them, else LLVM splits them) and loops
over the input channels: per step four vector loads of U, ``b`` broadcasts of V, 4·b fused
multiply-adds. ``--micro`` times it alone against ``np.dot`` on the same (tiles × C)·(C × K)
products. Each job gathers and scatters whole rows of tiles as today's does; per block of
``--block`` tiles it runs the input transforms into V (α² × b × C), the micro-kernel per ξ and
per 64 output channels, and the output transforms from M. Output channels must be a multiple of
64 (the experiment's only micro-kernel width). Measured in BENCHMARKS.md §29: the micro-kernel
matches BLAS (296 against 286 GFLOP/s on 6-tile blocks of 64 channels), the whole call does not
gain (0.89-1.02x on 64 channels, 1.70x on 128: every block reads all of U from L2, α²·C·K/b per
tile instead of V's and M's α²·(C + K) written and read once).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F
from _at_commit import alternate
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from kernels import pool, workspace
from kernels.conv2d import winograd as W
from kernels.conv2d._common import rows_channels_first_by_blocks, rows_channels_last_by_blocks
from kernels.conv2d.winograd_matrices import winograd_matrices_exact
from kernels.simd import LANES, _data, _vector_pointer, matrix_text, sandwich8

I64 = ir.IntType(64)
WIDTH, VECTORS = 16, 4  # output channels per micro-kernel call: VECTORS vectors of WIDTH lanes


def micro_kernel(tiles: int):
    """An intrinsic ``(v, v_at, v_row, u, u_at, u_row, out, out_at, out_row, depth)``: for t <
    ``tiles`` and the 64 output channels k from ``u_at``/``out_at``, out[t, k] = Σ_c<depth
    v[v_at + t·v_row + c] · u[u_at + c·u_row + k]."""

    @intrinsic
    def kernel(typingctx, v, v_at, v_row, u, u_at, u_row, out, out_at, out_row, depth):
        def codegen(context, builder, signature, args):
            _, v_at, v_row, _, u_at, u_row, _, out_at, out_row, depth = args
            lane = context.get_data_type(signature.args[0].dtype)
            vector = ir.VectorType(lane, WIDTH)
            align = context.get_abi_alignment(lane)  # of an element: the rows have any offset
            v_data, u_data, o_data = (
                _data(context, builder, signature.args[i], args[i], lane) for i in (0, 3, 6)
            )
            zero = ir.Constant(vector, [0.0] * WIDTH)
            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(tiles)]
            with cgutils.for_range(builder, depth) as loop:
                row = builder.add(u_at, builder.mul(loop.index, u_row))
                us = [
                    builder.load(
                        _vector_pointer(
                            builder, u_data, builder.add(row, ir.Constant(I64, q * WIDTH)), vector
                        ),
                        align=align,
                    )
                    for q in range(VECTORS)
                ]
                for t in range(tiles):
                    at = builder.add(builder.add(v_at, builder.mul(ir.Constant(I64, t), v_row)), loop.index)
                    one = builder.insert_element(
                        ir.Constant(vector, None),
                        builder.load(builder.gep(v_data, [at])),
                        ir.Constant(ir.IntType(32), 0),
                    )
                    splat = builder.shuffle_vector(
                        one,
                        ir.Constant(vector, None),
                        ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH),
                    )
                    for q in range(VECTORS):
                        product = builder.fmul(splat, us[q], flags=("contract",))
                        builder.store(
                            builder.fadd(builder.load(sums[t][q]), product, flags=("contract",)), sums[t][q]
                        )
            for t in range(tiles):
                row = builder.add(out_at, builder.mul(ir.Constant(I64, t), out_row))
                for q in range(VECTORS):
                    target = _vector_pointer(
                        builder, o_data, builder.add(row, ir.Constant(I64, q * WIDTH)), vector
                    )
                    builder.store(builder.load(sums[t][q]), target, align=align)
            return context.get_dummy_value()

        integers = (types.intp,) * 2
        return types.void(v, *integers, u, *integers, out, *integers, types.intp), codegen

    return kernel


def driver(m: int, block: int):
    """Today's fused call with V and M per block of ``block`` tiles and the micro-kernel's GEMMs."""
    a_t, _, b_t = winograd_matrices_exact(m)
    alpha, at_text, bt_text = m + 2, matrix_text(a_t), matrix_text(b_t)
    kernels = {b: micro_kernel(b) for b in range(1, block + 1)}
    dispatch = "\n".join(
        f"{' ' * 24}{'if' if b == 1 else 'elif'} count == {b}:\n{' ' * 28}gemm{b}(*operands)"
        for b in range(1, block + 1)
    )
    source = f"""
def fused(x, u, bias, th_count, tw_count, rows_per_job, pieces, y):
    channels, k_out = x.shape[1], y.shape[1]
    rows, piece = x.shape[0] * th_count, -(-tw_count // pieces)
    flat_u = u.reshape(u.size)
    for job in numba.prange(-(-rows // rows_per_job) * pieces):
        row0, first = (job // pieces) * rows_per_job, (job % pieces) * piece
        row_count, part = min(rows_per_job, rows - row0), min(piece, tw_count - first)
        v = np.empty({alpha**2 * block} * channels, dtype=x.dtype)
        mm = np.empty({alpha**2 * block} * k_out, dtype=x.dtype)
        for r in range(row_count):
            row = row0 + r
            n, top, left = row // th_count, (row % th_count) * {m} - 1, first * {m} - 1
            scratch = np.empty(({alpha}, part * {m} + 2, channels), dtype=x.dtype)
            rows_channels_last_by_blocks(x, n, top, left, scratch)
            out = np.empty(({m}, part * {m}, k_out), dtype=x.dtype)
            src, line = scratch.reshape(scratch.size), scratch.shape[1] * channels
            dst, out_line = out.reshape(out.size), part * {m} * k_out
            for t0 in range(0, part, {block}):
                count = min({block}, part - t0)
                slot_v, slot_m = count * channels, count * k_out
                for t in range(count):
                    for c in range(0, channels, LANES):
                        at, to = (t0 + t) * {m} * channels + c, t * channels + c
                        sandwich8(src, at, line, channels, v, to, {alpha} * slot_v, slot_v, "{bt_text}")
                for xi in range({alpha**2}):
                    for k0 in range(0, k_out, {WIDTH * VECTORS}):
                        operands = (v, xi * slot_v, channels, flat_u, xi * channels * k_out + k0, k_out,
                                    mm, xi * slot_m + k0, k_out, channels)
{dispatch}
                for t in range(count):
                    for k in range(0, k_out, LANES):
                        at, to = t * k_out + k, (t0 + t) * {m} * k_out + k
                        sandwich8(mm, at, {alpha} * slot_m, slot_m, dst, to, out_line, k_out, "{at_text}")
            rows_channels_first_by_blocks(out, bias, y, row // th_count, (row % th_count) * {m}, first * {m})
"""
    names = {"np": np, "numba": numba, "LANES": LANES, "sandwich8": sandwich8}
    names |= {"rows_channels_last_by_blocks": rows_channels_last_by_blocks}
    names |= {"rows_channels_first_by_blocks": rows_channels_first_by_blocks}
    names |= {f"gemm{b}": kernel for b, kernel in kernels.items()}
    exec(source, names)  # this file's own template: the matrices are literals of the intrinsic
    return numba.njit(parallel=True, fastmath={"contract"})(names["fused"])


def compare(batch: int, channels: int, size: int, block: int, rounds: int, m: int = 4) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    prepared = W.prepare(w, m)
    tiles = -(-size // m)
    split = W.fused_jobs(m, channels, channels, 4, batch * tiles, tiles)
    y = workspace.line_aligned_empty(x.shape, np.float32)
    fused = driver(m, block)

    def blocked():
        pool.on_calling_thread(lambda: fused(x, prepared.u, bias, tiles, tiles, *split, y))
        return y

    def today():
        return W.winograd(x, prepared, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=m, fused=1)

    want = F.conv2d(*(torch.from_numpy(a).double() for a in (x, w, bias)), padding=1).numpy()
    error = np.abs(blocked() - want).max() / np.abs(want).max()
    before, after = alternate(today, blocked, rounds)
    print(
        f"F({m}x{m}) {batch}x{channels}x{size}x{size}: error {error:.1e}; today {before:.0f} us, "
        f"blocks of {block} tiles {after:.0f} us ({after / before:.2f}x)",
        flush=True,
    )


def micro(block: int, channels: int = 64, blocks: int = 7, reps: int = 50) -> None:
    """The micro-kernel alone against np.dot on α² = 36 products (block·blocks tiles × C)·(C × K)."""
    kernel, k_out, tiles = micro_kernel(block), channels, block * blocks

    @numba.njit(parallel=True)
    def by_blocks(v, u, out):  # pragma: no cover - jitted
        for _ in numba.prange(2 * reps):
            me = numba.get_thread_id()
            for b in range(blocks):
                for xi in range(36):
                    at = (xi * blocks + b) * block
                    kernel(
                        v[me],
                        at * channels,
                        channels,
                        u,
                        xi * channels * k_out,
                        k_out,
                        out[me],
                        at * k_out,
                        k_out,
                        channels,
                    )

    @numba.njit(parallel=True)
    def by_blas(v, u, out):  # pragma: no cover - jitted
        for _ in numba.prange(2 * reps):
            me = numba.get_thread_id()
            for xi in range(36):
                np.dot(v[me, xi], u[xi], out[me, xi])

    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, 36, tiles, channels)).astype(np.float32)
    u = rng.standard_normal((36, channels, k_out)).astype(np.float32)
    out = [np.zeros((2, 36, tiles, k_out), np.float32) for _ in range(2)]
    runs = [
        lambda: by_blocks(v.reshape(2, -1), u.reshape(-1), out[0].reshape(2, -1)),
        lambda: by_blas(v, u, out[1]),
    ]
    speeds = []
    for run in runs:
        pool.on_calling_thread(run)
        best = min(_seconds(run) for _ in range(7))
        speeds.append(2 * 36 * tiles * channels * k_out * 2 * reps / best / 1e9)
    np.testing.assert_allclose(out[0], out[1], atol=1e-3)
    print(
        f"{block} tiles × {k_out} channels, C = {channels}: micro-kernel {speeds[0]:.0f} GFLOP/s, "
        f"np.dot {speeds[1]:.0f} GFLOP/s"
    )


def _seconds(run) -> float:
    start = time.perf_counter()
    pool.on_calling_thread(run)
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--block", type=int, default=6, help="tiles per block (default 6)")
    parser.add_argument("--layer", action="append", help="NxCxH (K = C, a multiple of 64; repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--micro", action="store_true", help="time the micro-kernel alone against np.dot")
    args = parser.parse_args()
    if args.micro:
        micro(args.block)
    else:
        for text in args.layer or ["8x64x56", "1x64x56", "1x64x224", "8x128x28"]:
            compare(*(int(part) for part in text.split("x")), block=args.block, rounds=args.rounds)
