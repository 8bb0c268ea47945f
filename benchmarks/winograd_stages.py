"""Where Winograd's time goes, and how accurate each tile size is, on ResNet-18/VGG-16 3×3 layers.

    python benchmarks/winograd_stages.py [--errors | --phases | --stores] [--tile 2|4|6]
        [--layer 1x64x224->64 ...]

Stages (fixed weight, F(4×4) or ``--tile``'s, float32): in stages, the whole call, then the input
transform, the α² GEMMs and the output transform each timed alone (the tuner's score: 20th percentile of the
clean runs, ms), and the transforms' share of the three; fused (where the tuner offers it), the
whole call and its GEMMs alone (the same jobs' α² BLAS calls on V blocks already in place), the
transforms' share being what the GEMMs leave. All of a layer's calls alternate over 7 rounds
(medians; a share is taken per round, then its median), because calls timed one after the other
drifted apart by up to 1.4x on a shared machine (BENCHMARKS.md §23). ``--errors`` prints instead
max|y − ref| / max|ref| of F(2×2), F(4×4) and F(6×6) against PyTorch in float64 on one
random-normal input per layer (batch 1). BENCHMARKS.md §18, §22 and §23 have both tables.
``--phases`` splits the fused call's transforms instead: the gather (NCHW rows to channel-last
scratch), the input transforms, the output transforms and the scatter (back to NCHW, with the
bias), each run alone over the fused call's jobs on V and M buffers of random values (BENCHMARKS.md
§28). ``--stores`` times the input transforms of rows of 28 tiles of 64 channels twice: V the
size of a fused job's (in L2) and V of two tiles reused (in L1), the same loads and arithmetic
(§29).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numba
import numpy as np
import torch
import torch.nn.functional as F

from autotune import timing
from autotune.problem import ConvProblem
from kernels import pool
from kernels.conv2d import winograd as W
from kernels.conv2d._common import rows_channels_first_by_blocks, rows_channels_last_by_blocks
from kernels.conv2d.winograd_matrices import winograd_matrices_exact
from kernels.simd import LANES, matrix_text, sandwich8

STAGE_LAYERS = [(1, 64, 56, 64), (1, 128, 28, 128), (1, 256, 14, 256), (8, 64, 56, 64), (8, 128, 28, 128)]
STAGE_LAYERS += [(8, 256, 56, 256), (8, 512, 28, 512), (1, 64, 224, 64)]
ERROR_LAYERS = {
    "ResNet layer1": (64, 56, 64),
    "ResNet layer2": (128, 28, 128),
    "ResNet layer3": (256, 14, 256),
    "ResNet layer4": (512, 7, 512),
    "VGG conv1_2": (64, 224, 64),
    "VGG conv2_2": (128, 112, 128),
    "VGG conv3_2": (256, 56, 256),
    "VGG conv4_2": (512, 28, 512),
    "VGG conv5_1": (512, 14, 512),
}
PADDING = (1, 1, 1, 1)


def alternating_ms(calls: list[Callable[[], object]], runs: int, rounds: int) -> np.ndarray:
    """The tuner's score (20th percentile of the clean runs, at least ``runs``; ms) of each call in
    each of ``rounds`` rounds (rounds × calls), the calls alternating and their order flipping
    every round: the shares below are ratios of calls measured side by side, so that the drift of
    a shared machine between one call's runs and the next call's does not enter them. Each call
    runs once first, so that a kernel compiled on first use is not timed compiling."""
    for call in calls:
        call()
    found = np.empty((rounds, len(calls)))
    for r in range(rounds):
        order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            measured = timing.measure(calls[i], min_runs=runs, min_time_s=0.0, max_time_s=10.0)
            found[r, i] = measured.score_us / 1e3
    return found


def staged(x: np.ndarray, prepared: W.WinogradFilter) -> list[Callable[[], object]]:
    """In stages: the whole call, then each stage alone: total, input, GEMMs, output."""
    batch, _, size, _ = x.shape
    m, k_out = prepared.tile, prepared.u.shape[2]
    tiles = (-(-size // m), -(-size // m))
    count = batch * tiles[0] * tiles[1]
    v = np.empty(((m + 2) ** 2, count, x.shape[1]), np.float32)
    mm = np.empty(((m + 2) ** 2, count, k_out), np.float32)
    y, bias = np.empty((batch, k_out, size, size), np.float32), np.zeros(k_out, np.float32)
    return [
        lambda: W.winograd(x, prepared, None, (1, 1), PADDING, (1, 1), 1, tile=m),
        lambda: W.input_transform(x, PADDING, m, tiles, v),
        lambda: pool.matmul(v, prepared.u, out=mm),
        lambda: W.output_transform(mm, bias, tiles, m, y),
    ]


@numba.njit(parallel=True)
def _job_gemms(u, counts, vs, mms):  # pragma: no cover - jitted
    """The fused call's GEMMs alone: each job's α² products of a (count × C) V by U, on its thread's
    own V and M (``vs``, ``mms``: threads × α² × largest count·C or ·K), which stay in that core's
    cache from one job to the next as a fused job's V and M do (its input transform has just
    written V)."""
    alpha2, channels, k_out = u.shape[0], u.shape[1], u.shape[2]
    for job in numba.prange(counts.size):
        rows = counts[job]
        thread = numba.get_thread_id()
        for i in range(alpha2):
            v = vs[thread, i, : rows * channels].reshape(rows, channels)
            mm = mms[thread, i, : rows * k_out].reshape(rows, k_out)
            np.dot(v, u[i], mm)


def job_sizes(m: int, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Tiles in each of the fused call's jobs (:func:`kernels.conv2d.winograd.fused_jobs`)."""
    batch, channels, size, _ = x.shape
    tiles = -(-size // m)
    per_job, pieces = W.fused_jobs(m, channels, u.shape[2], x.dtype.itemsize, batch * tiles, tiles)
    piece = -(-tiles // pieces)
    rows = [min(per_job, batch * tiles - r) for r in range(0, batch * tiles, per_job)]
    parts = [min(piece, tiles - first) for first in range(0, tiles, piece)]
    return np.array([r * p for r in rows for p in parts], dtype=np.int64)


def fused(x: np.ndarray, prepared: W.WinogradFilter) -> list[Callable[[], object]]:
    """Fused: the whole call and its GEMMs alone."""
    m, u = prepared.tile, prepared.u
    counts = job_sizes(m, x, u)
    threads, alpha2, largest = numba.get_num_threads(), (m + 2) ** 2, int(counts.max())
    vs = np.random.default_rng(1).standard_normal((threads, alpha2, largest * u.shape[1])).astype(x.dtype)
    mms = np.empty((threads, alpha2, largest * u.shape[2]), x.dtype)
    return [
        lambda: W.winograd(x, prepared, None, (1, 1), PADDING, (1, 1), 1, tile=m, fused=1),
        lambda: pool.on_calling_thread(lambda: _job_gemms(u, counts, vs, mms)),
    ]


def stages(batch: int, channels: int, size: int, k_out: int, m: int = 4, rounds: int = 7) -> str:
    """The stage split of F(m×m) on one layer in stages, and fused if the tuner offers it: medians
    over alternating rounds of the times and of each round's transforms' share."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    prepared = W.prepare(rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32), m)
    runs = 10 if x.size < 4_000_000 else 3
    problem = ConvProblem(x.shape, (k_out, channels, 3, 3), padding=PADDING)
    offers_fused = {"tile": m, "fused": 1} in W.tile_grid(problem)
    calls = staged(x, prepared) + (fused(x, prepared) if offers_fused else [])
    found = alternating_ms(calls, runs, rounds)
    total, t_in, t_gemm, t_out = np.median(found[:, :4], axis=0)
    share = np.median((found[:, 1] + found[:, 3]) / found[:, 1:4].sum(axis=1))
    name = f"{batch}x{channels}x{size}->{k_out} F({m}x{m})"
    lines = [
        f"{name} in stages: total {total:.3f} ms = input {t_in:.3f} + GEMMs {t_gemm:.3f} + output "
        f"{t_out:.3f}; transforms {share:.0%}"
    ]
    if offers_fused:
        total, t_gemm = np.median(found[:, 4:], axis=0)
        share = np.median(1 - found[:, 5] / found[:, 4])
        lines.append(f"{name} fused: total {total:.3f} ms, GEMMs {t_gemm:.3f}; transforms {share:.0%}")
    return "\n".join(lines)


#: The phases of ``--phases``, as the flags of :func:`phase_driver`'s jobs.
PHASES = {"gather": 1, "gather + input transforms": 3, "output transforms": 4, "scatter": 8}


@functools.cache
def phase_driver(m: int) -> Callable[..., None]:
    """A copy of the fused driver of F(m×m) whose jobs run only the phases in ``flags`` (bits of
    :data:`PHASES`), on per-thread V and M (``vs``, ``ms``) that hold random values, so that no
    phase reads uninitialised memory (denormal garbage slows the arithmetic). Channel counts must
    be multiples of eight (no scalar tail)."""
    a_t, _, b_t = winograd_matrices_exact(m)
    alpha, at_, bt = m + 2, matrix_text(a_t), matrix_text(b_t)
    source = f"""
def drive(x, bias, th_count, tw_count, rows_per_job, pieces, y, vs, ms, flags):
    channels, k_out = x.shape[1], y.shape[1]
    rows, piece = x.shape[0] * th_count, -(-tw_count // pieces)
    for job in numba.prange(-(-rows // rows_per_job) * pieces):
        row0, first = (job // pieces) * rows_per_job, (job % pieces) * piece
        row_count, part = min(rows_per_job, rows - row0), min(piece, tw_count - first)
        thread = numba.get_thread_id()
        v, mm = vs[thread], ms[thread]
        slot_v, slot_m = v.shape[1] * channels, mm.shape[1] * k_out
        for r in range(row_count):
            row, base = row0 + r, r * part
            top, left = (row % th_count) * {m} - 1, first * {m} - 1
            scratch = np.empty(({alpha}, part * {m} + 2, channels), dtype=x.dtype)
            if flags & 1:
                rows_channels_last_by_blocks(x, row // th_count, top, left, scratch)
            if flags & 2:
                src, dst, line = scratch.reshape(scratch.size), v.reshape(v.size), scratch.shape[1] * channels
                for tw in range(part):
                    for c in range(0, channels, LANES):
                        at, to = tw * {m} * channels + c, (base + tw) * channels + c
                        sandwich8(src, at, line, channels, dst, to, {alpha} * slot_v, slot_v, "{bt}")
            out = np.empty(({m}, part * {m}, k_out), dtype=x.dtype)
            if flags & 4:
                src, dst, line = mm.reshape(mm.size), out.reshape(out.size), part * {m} * k_out
                for tw in range(part):
                    for k in range(0, k_out, LANES):
                        at, to = (base + tw) * k_out + k, tw * {m} * k_out + k
                        sandwich8(src, at, {alpha} * slot_m, slot_m, dst, to, line, k_out, "{at_}")
            if flags & 8:
                top = (row % th_count) * {m}
                rows_channels_first_by_blocks(out, bias, y, row // th_count, top, first * {m})
"""
    names = {"np": np, "numba": numba, "LANES": LANES, "sandwich8": sandwich8}
    names |= {"rows_channels_last_by_blocks": rows_channels_last_by_blocks}
    names |= {"rows_channels_first_by_blocks": rows_channels_first_by_blocks}
    exec(source, names)  # this file's own template: the matrices are literals of the intrinsic
    return numba.njit(parallel=True, fastmath={"contract"})(names["drive"])


def phases(batch: int, channels: int, size: int, k_out: int, m: int = 4, rounds: int = 7) -> str:
    """The fused call, its GEMMs alone and each phase of its transforms alone, alternating (ms)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    prepared = W.prepare(rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32), m)
    tiles = -(-size // m)
    split = W.fused_jobs(m, channels, k_out, x.dtype.itemsize, batch * tiles, tiles)
    largest, threads = int(job_sizes(m, x, prepared.u).max()), numba.get_num_threads()
    vs = rng.standard_normal((threads, (m + 2) ** 2, largest, channels)).astype(np.float32)
    ms = rng.standard_normal((threads, (m + 2) ** 2, largest, k_out)).astype(np.float32)
    y, bias, drive = (
        np.empty((batch, k_out, size, size), np.float32),
        np.zeros(k_out, np.float32),
        phase_driver(m),
    )

    def phase(flags: int) -> Callable[[], object]:
        return lambda: pool.on_calling_thread(lambda: drive(x, bias, tiles, tiles, *split, y, vs, ms, flags))

    calls = fused(x, prepared) + [phase(flags) for flags in PHASES.values()]
    total, gemms, gather, gather_input, output, scatter = np.median(alternating_ms(calls, 10, rounds), axis=0)
    parts = {"gather": gather, "input": gather_input - gather, "output": output, "scatter": scatter}
    text = ", ".join(f"{name} {ms_:.3f}" for name, ms_ in parts.items())
    return (
        f"{batch}x{channels}x{size}->{k_out} F({m}x{m}) fused: total {total:.3f} ms = GEMMs {gemms:.3f} + "
        f"the rest {total - gemms:.3f}; alone: {text} (sum {sum(parts.values()):.3f})"
    )


@functools.cache
def store_driver(m: int) -> Callable[..., None]:
    """Input transforms only: every thread transforms ``reps`` rows of ``tiles`` tiles from its own
    gathered scratch into its own V, whose slots hold ``block`` tiles (tile t lands on block slot t
    mod ``block``): a whole job's V (in L2, as in the fused call) or a block of two tiles reused
    (in L1). The same loads and arithmetic either way; only where the stores land differs."""
    _, _, b_t = winograd_matrices_exact(m)
    alpha, bt = m + 2, matrix_text(b_t)
    source = f"""
def drive(scratch, v, tiles, block, reps):
    channels = scratch.shape[3]
    for job in numba.prange(numba.get_num_threads() * reps):
        me = numba.get_thread_id()  # each thread its own buffers: no line moves between cores
        src, dst = scratch[me].reshape(scratch[me].size), v[me].reshape(v[me].size)
        line, slot = scratch.shape[2] * channels, block * channels
        for tw in range(tiles):
            at, to = tw * {m} * channels, (tw % block) * channels
            for c in range(0, channels, LANES):
                sandwich8(src, at + c, line, channels, dst, to + c, {alpha} * slot, slot, "{bt}")
"""
    names = {"np": np, "numba": numba, "LANES": LANES, "sandwich8": sandwich8}
    exec(source, names)  # this file's own template, as phase_driver's
    return numba.njit(parallel=True, fastmath={"contract"})(names["drive"])


def stores(channels: int = 64, tiles: int = 28, m: int = 4, rounds: int = 7) -> str:
    """What the input transforms lose by writing V to L2 (``--stores``): ns per tile transform
    (eight channels), V of the fused job's size against V of two tiles."""
    rng = np.random.default_rng(0)
    threads, alpha, reps = numba.get_num_threads(), m + 2, 28
    scratch = rng.standard_normal((threads, alpha, tiles * m + 2, channels)).astype(np.float32)
    drive = store_driver(m)
    blocks = (tiles, 2)
    vs = {b: rng.standard_normal((threads, alpha * alpha * b * channels)).astype(np.float32) for b in blocks}
    calls = [
        (lambda b=b: pool.on_calling_thread(lambda: drive(scratch, vs[b], tiles, b, reps))) for b in blocks
    ]
    found = np.median(alternating_ms(calls, 10, rounds), axis=0)
    per = [ms * 1e6 / (reps * tiles * channels // LANES) for ms in found]  # each thread's share
    kib = [alpha * alpha * b * channels * 4 / 1024 for b in blocks]
    return (
        f"F({m}x{m}) input transforms, {channels} channels, rows of {tiles} tiles: V of {kib[0]:.0f} KiB "
        f"{per[0]:.1f} ns per tile and 8 channels, V of {kib[1]:.0f} KiB {per[1]:.1f} ns "
        f"({per[0] / per[1]:.2f}x)"
    )


def parse_layer(text: str) -> tuple[int, int, int, int]:
    """``"8x64x56->64"`` → (batch, channels, size, output channels)."""
    try:
        shape, k_out = text.split("->")
        batch, channels, size = (int(part) for part in shape.split("x"))
        return batch, channels, size, int(k_out)
    except ValueError:
        raise SystemExit(f"--layer: expected NxCxH->K (e.g. 8x64x56->64), got {text!r}") from None


def errors() -> None:
    rng = np.random.default_rng(0)
    print("| layer (batch 1, float32, random normal) | F(2×2) | F(4×4) | F(6×6) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (channels, size, k_out) in ERROR_LAYERS.items():
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        w = rng.standard_normal((k_out, channels, 3, 3)).astype(np.float32)
        ref = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1).numpy()
        found = []
        for m in W.TILE_SIZES:
            y = W.winograd(x, w, None, (1, 1), PADDING, (1, 1), 1, tile=m)
            found.append(f"{np.abs(y - ref).max() / np.abs(ref).max():.1e}")
        print(f"| {name} {channels}×{size}×{size} → {k_out} | " + " | ".join(found) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--errors", action="store_true", help="print each tile size's error instead of the stages"
    )
    parser.add_argument("--tile", type=int, choices=W.TILE_SIZES, default=4, help="m of F(m×m) (default 4)")
    parser.add_argument("--layer", action="append", help="only this layer, as NxCxH->K (repeatable)")
    parser.add_argument("--phases", action="store_true", help="split the fused call's transforms instead")
    parser.add_argument(
        "--stores", action="store_true", help="the input transforms with V in L2 against V in L1 instead"
    )
    args = parser.parse_args()
    if args.errors:
        errors()
    elif args.stores:
        print(stores(m=args.tile), flush=True)
    else:
        split = phases if args.phases else stages
        for layer in STAGE_LAYERS if args.layer is None else [parse_layer(text) for text in args.layer]:
            print(split(*layer, m=args.tile), flush=True)
