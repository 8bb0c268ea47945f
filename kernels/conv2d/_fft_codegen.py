"""Writes ``_fft_codelets.py``: unrolled FFTs on 16×16 tiles, SIMD lanes across channels.

The transforms of :mod:`kernels.conv2d.fft_tiles` are 2-D real DFTs of 16×16 tiles (NNPACK's
``ft16x16``). A library FFT on thousands of 16×16 planes spends its time in per-plane overhead
(BENCHMARKS.md §26), so the transforms here are straight-line code, one expression per
intermediate value, built by running a radix-2 FFT on symbolic values:

* nodes are hash-consed (a value computed twice is one temporary), additions of zero, products
  by ±1 and differences of equal values vanish, negations fold into the neighbouring add or
  subtract, and twiddles ±i and (±1 ± i)/√2 cost no or two multiplications;
* a DFT of real input computes half its outputs and conjugates the others, recursively — the
  real FFT's halving of the work, without writing a separate algorithm;
* only what the stored outputs need is emitted (the inverse transforms keep the first m rows and
  columns of each tile: the valid outputs of an overlap-save window).

The scratch is lane-blocked — (block of 8 channels, column, row, 8 lanes) — and each codelet is
a loop over the 8 lanes that reads its inputs from one stack buffer and writes its outputs to
another (``kernels.simd.stack_array``), the operands moved in and out a vector at a time
(``kernels.simd.move8``): LLVM then vectorises the loop without a runtime alias check per stream
(with 16-32 streams it had left the loops scalar; docs/architecture.md). Constants come from a
``consts`` array of the input's dtype, as in the Winograd codelets.

Run ``python -m kernels.conv2d._fft_codegen`` after changing this file;
``tests/test_fft_tiles.py`` checks that the committed module is what this writes.
"""

from __future__ import annotations

import math
from pathlib import Path

from kernels.conv2d._winograd_codegen import formatted

TARGET = Path(__file__).with_name("_fft_codelets.py")

#: The FFT size of a tile; half of it is the largest real frequency index.
SIZE = 16
HALF = SIZE // 2
#: Outputs per tile and axis the inverse transforms are generated for (a filter of extent e uses
#: the largest m ≤ SIZE − e + 1).
OUTPUTS = (4, 6, 8, 10, 12)
#: Frequency slots: (u, v) complex for u = 1..7 and every v (112), then the real rows u = 0 and
#: u = 8 at v = 1..7 (14), then two slots pairing the four real frequencies.
SLOTS = SIZE * SIZE // 2
#: SIMD lanes: scratch rows hold blocks of 8 channels (``kernels.simd.LANES``); a column of a
#: window (its 16 rows of 8 lanes) is one vector of VECTOR values.
LANES = 8
VECTOR = SIZE * LANES

Value = int | None  # a node id; None is an exact zero
Complex = tuple[Value, Value]


class Graph:
    """Hash-consed real-valued expression nodes with the simplifications of the module docstring."""

    def __init__(self) -> None:
        self.keys: list[tuple] = []
        self.table: dict[tuple, int] = {}

    def _node(self, *key) -> int:
        found = self.table.get(key)
        if found is None:
            found = self.table[key] = len(self.keys)
            self.keys.append(key)
        return found

    def load(self, name: str) -> int:
        return self._node("load", name)

    def neg(self, a: Value) -> Value:
        if a is None:
            return None
        key = self.keys[a]
        return key[1] if key[0] == "neg" else self._node("neg", a)

    def add(self, a: Value, b: Value) -> Value:
        if a is None or b is None:
            return b if a is None else a
        if self.keys[b][0] == "neg":
            return self.sub(a, self.keys[b][1])
        if self.keys[a][0] == "neg":
            return self.sub(b, self.keys[a][1])
        return self._node("add", min(a, b), max(a, b))

    def sub(self, a: Value, b: Value) -> Value:
        if b is None:
            return a
        if a is None:
            return self.neg(b)
        if a == b:
            return None
        if self.keys[b][0] == "neg":
            return self.add(a, self.keys[b][1])
        if self.keys[a][0] == "neg":
            return self.neg(self.add(self.keys[a][1], b))
        return self._node("sub", a, b)

    def mul(self, k: float, a: Value) -> Value:
        if a is None or k == 0:
            return None
        if k < 0:
            return self.neg(self.mul(-k, a))
        if self.keys[a][0] == "neg":
            return self.neg(self.mul(k, self.keys[a][1]))
        if k == 1:
            return a
        return self._node("mul", k, a)


def _cos(a: int, n: int) -> float:
    """cos(2πa/n), with equal magnitudes computed the same way (exact 0 and ±1)."""
    a %= n
    if a > n // 2:
        a = n - a
    if 4 * a > n:
        return -_cos(n // 2 - a, n)
    if 4 * a == n:
        return 0.0
    if a == 0:
        return 1.0
    if 8 * a > n:  # beyond π/4: the sine of the complement
        return math.sin(2 * math.pi * (n // 4 - a) / n)
    return math.cos(2 * math.pi * a / n)


def _twiddle(g: Graph, z: Complex, k: int, n: int, sign: int) -> Complex:
    """z · exp(sign·2πik/n)."""
    c, s = _cos(k, n), sign * _cos(n // 4 - k, n) if n >= 4 else 0.0
    re, im = z
    if s == 0:
        return (g.mul(c, re), g.mul(c, im))
    if c == 0:
        return (g.mul(-s, im), g.mul(s, re))
    if abs(c) == abs(s):  # (±1 ± i)/√2: two multiplications
        cs, ss = math.copysign(1, c), math.copysign(1, s)
        return (
            g.mul(abs(c), g.sub(g.mul(cs, re), g.mul(ss, im))),
            g.mul(abs(c), g.add(g.mul(cs, im), g.mul(ss, re))),
        )
    return (g.sub(g.mul(c, re), g.mul(s, im)), g.add(g.mul(c, im), g.mul(s, re)))


def dft(g: Graph, xs: list[Complex], sign: int) -> list[Complex]:
    """The DFT Σ_j x_j exp(sign·2πijk/n), radix 2; real input computes half and conjugates."""
    n = len(xs)
    if n == 1:
        return list(xs)
    even, odd = dft(g, xs[0::2], sign), dft(g, xs[1::2], sign)
    real = all(im is None for _, im in xs)
    out: list[Complex] = [(None, None)] * n
    for k in range(n // 2):
        t = _twiddle(g, odd[k], k, n, sign)
        out[k] = (g.add(even[k][0], t[0]), g.add(even[k][1], t[1]))
        if not real or k == 0:
            out[k + n // 2] = (g.sub(even[k][0], t[0]), g.sub(even[k][1], t[1]))
    if real:
        for k in range(n // 2 + 1, n):
            out[k] = (out[n - k][0], g.neg(out[n - k][1]))
    return out


def hermitian(g: Graph, half: list[Complex]) -> list[Complex]:
    """The full length-SIZE sequence whose indices 0..SIZE/2 are ``half`` (conjugate symmetric)."""
    return half + [(re, g.neg(im)) for re, im in reversed(half[1:HALF])]


def emit(g: Graph, stores: list[tuple[str, Value]], indent: str, consts: dict[float, int]) -> list[str]:
    """Source lines computing the nodes the stores need (creation order is a topological order),
    then the stores ``target = value``."""
    needed: set[int] = set()
    stack = [v for _, v in stores if v is not None]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        key = g.keys[node]
        if key[0] == "mul":
            stack.append(key[2])
        elif key[0] in ("add", "sub"):
            stack.extend(key[1:])
        elif key[0] == "neg":
            stack.append(key[1])

    def name(node: int) -> str:
        key = g.keys[node]
        return key[1] if key[0] == "load" else f"t{node}"

    lines = []
    for node in sorted(needed):
        key = g.keys[node]
        if key[0] == "load":
            continue
        if key[0] == "neg":
            expr = f"-{name(key[1])}"
        elif key[0] == "mul":
            expr = f"k{consts.setdefault(key[1], len(consts))} * {name(key[2])}"
        else:
            expr = f"{name(key[1])} {'+' if key[0] == 'add' else '-'} {name(key[2])}"
        lines.append(f"{indent}t{node} = {expr}")
    for target, value in stores:
        lines.append(f"{indent}{target} = {'0.0' if value is None else name(value)}")
    return lines


HEADER = '''"""Unrolled 16×16 FFT codelets for :mod:`kernels.conv2d.fft_tiles`, SIMD lanes across channels.

GENERATED by ``python -m kernels.conv2d._fft_codegen``; do not edit. ``input_job`` turns a run of
16×16 windows of one row of windows (NCHW) into their spectra V (128 slots, 2·windows, C: the
real parts of the block's windows, then their imaginary parts); ``output_job_<m>`` turns the
products M (128, 2·windows, 2·K) into the first m×m outputs of each window, plus the bias, in
NCHW. ``fused_<m>`` runs both with the 128 slot GEMMs between them, per block of windows, in one
parallel region. ``transform_filters`` makes the filters' slot matrices (128, C, 2·K).
"""

import numba
import numpy as np

from kernels.conv2d._common import lane_blocks_channels_first, rows_lane_blocks
from kernels.simd import LANES, move8, stack_array
'''

#: Slot of complex frequency (u, v), u = 1..7 (rows of the half spectrum with both axes complex).
ROW_SLOTS = 0
#: First slot of real row u = 0 (then u = 8) at v = 1..7; then the two slots of real frequencies:
#: (u=0: v=0 | v=8) and (u=8: v=0 | v=8), real part | imaginary part.
REAL_ROW_SLOTS = (HALF - 1) * SIZE
PAIR_SLOTS = REAL_ROW_SLOTS + 2 * (HALF - 1)


class _Function:
    """One generated function: its lines, with the constant loads it needs put in front."""

    def __init__(self, head: list[str], consts: dict[float, int]) -> None:
        self.head, self.body, self.consts = head, [], consts
        self.used: set[int] = set()

    def add(self, lines: list[str]) -> None:
        for line in lines:
            self.used.update(int(k) for k in _CONST_NAMES.findall(line))
        self.body.extend(lines)

    def text(self) -> str:
        loads = [f"    k{i} = consts[{i}]" for i in sorted(self.used)]
        return "\n".join(self.head + loads + self.body) + "\n"


def _const_names():
    import re

    return re.compile(r"\bk(\d+) \*")


_CONST_NAMES = _const_names()
_JIT = "@numba.njit(cache=True, fastmath={'contract'})"


def _columns_forward(consts: dict[float, int]) -> str:
    """The real DFT down the 16 gathered rows, over every column and channel in one loop."""
    f = _Function(
        [
            _JIT,
            "def columns_forward(rows, half, consts):  # pragma: no cover",
            '    """half[cb, j, u] = Re, half[cb, j, 8 + u] = Im of the DFT down the 16 rows',
            "    ``rows[cb, j, :]`` at u = 0..8 (Im is 0 at u = 0 and 8), for every column j and block",
            '    cb of 8 channels (the lanes) at once."""',
        ],
        consts,
    )
    g = Graph()
    spectrum = dft(g, [(g.load(f"a{i}"), None) for i in range(SIZE)], -1)
    stores = [(f"dst[p + {u * LANES}]", spectrum[u][0]) for u in range(HALF + 1)]
    stores += [(f"dst[p + {(HALF + u) * LANES}]", spectrum[u][1]) for u in range(1, HALF)]
    f.add(["    src = rows.reshape(rows.size)", "    dst = half.reshape(half.size)"])
    f.add([f"    buf = stack_array(rows, {VECTOR})  # the column's inputs: no alias with dst"])
    f.add([f"    for q in range(rows.size // {VECTOR}):", f"        for i in range({VECTOR}):"])
    f.add([f"            buf[i] = src[q * {VECTOR} + i]", f"        for lane in range({LANES}):"])
    f.add([f"            p = q * {VECTOR} + lane"])
    f.add([f"            a{i} = buf[{i * LANES} + lane]" for i in range(SIZE)])
    f.add(emit(g, stores, "            ", consts))
    return f.text()


def _copy_out(slot: str, count: int) -> list[str]:
    """Lines moving the output buffer's ``count`` (re, im) vectors into their V slots: the real
    part in the window's row, the imaginary part ``imaginary`` elements on (the rows of the
    block's imaginary parts)."""
    return [
        "            if lanes == LANES:",
        f"                for vv in range({count}):",
        f"                    at = (({slot}) * tiles + tile) * row + c0",
        f"                    move8(out, vv * {LANES}, flat, at)",
        f"                    move8(out, {SIZE * LANES} + vv * {LANES}, flat, at + imaginary)",
        "            else:  # the last block of a channel count that is not a multiple of 8",
        f"                for vv in range({count}):",
        f"                    at = (({slot}) * tiles + tile) * row + c0",
        "                    for lane in range(lanes):",
        f"                        flat[at + lane] = out[vv * {LANES} + lane]",
        f"                        flat[at + imaginary + lane] = out[{SIZE * LANES} + vv * {LANES} + lane]",
    ]


def _copy_out_filter(slot: str, count: int) -> list[str]:
    """Lines moving the output buffer's vectors into the filters' slot rows (Re | −Im); a pair
    slot's two real frequencies (vv = 0 of a real row) come as Re and −Im alike."""
    return [
        f"            for vv in range({count}):",
        f"                at = (({slot}) * tiles + tile) * row + c0",
        "                if lanes == LANES:",
        f"                    move8(out, vv * {LANES}, flat, at)",
        f"                    move8(out, {2 * SIZE * LANES} + vv * {LANES}, flat, at + imaginary)",
        "                else:  # the last block of a channel count that is not a multiple of 8",
        "                    for lane in range(lanes):",
        f"                        flat[at + lane] = out[vv * {LANES} + lane]",
        f"                        flat[at + imaginary + lane] = out[{2 * SIZE * LANES} + vv * LANES + lane]",
    ]


def _rows_forward(consts: dict[float, int], filters: bool = False) -> str:
    """The DFT along each of one tile's 9 half-spectrum rows, into the tile's V slots (or, for
    ``filters``, into a filter's slot matrices)."""
    doc = (
        [
            "def rows_forward_filter(half, col, v, tile, consts):  # pragma: no cover",
            '    """:func:`rows_forward` for the filters seen from input channel ``tile``: row ``tile``',
            '    of the slot matrices v[slot] (C × 2K) of :mod:`kernels.conv2d.fft_tiles`, (Re | −Im)."""',
        ]
        if filters
        else [
            "def rows_forward(half, col, v, tile, consts):  # pragma: no cover",
            '    """v[slot, tile] = Re, v[slot, windows + tile] = Im of the window at column ``col`` of',
            "    ``half`` (from :func:`columns_forward`): its 2-D spectrum in the slots of the module",
            "    docstring. A row's 32 input vectors are moved to a stack buffer, its outputs computed",
            '    into another and moved to the slots (:func:`kernels.simd.move8`): LLVM vectorises."""',
        ]
    )
    f = _Function([_JIT, *doc], consts)
    f.add(
        [
            "    blocks, span = half.shape[0], half.shape[1]",
            "    tiles, row = v.shape[1], v.shape[2]",
            "    channels = row // 2" if filters else "    channels = row",
            # the imaginary parts: the second half of a filter's row; a block's second half of rows
            "    imaginary = channels" if filters else "    imaginary = tiles // 2 * row",
            "    src = half.reshape(half.size)",
            "    flat = v.reshape(v.size)",
            f"    ins = stack_array(half, {2 * VECTOR})",
            f"    out = stack_array(half, {3 * VECTOR})",
            "    for cb in range(blocks):",
            "        c0 = cb * LANES",
            "        lanes = min(LANES, channels - c0)",
            f"        base = (cb * span + col) * {VECTOR}",
        ]
    )
    g = Graph()
    spectrum = dft(g, [(g.load(f"a{j}"), g.load(f"b{j}")) for j in range(SIZE)], -1)
    stores = []
    for v in range(SIZE):
        stores += [
            (f"out[{v * LANES} + lane]", spectrum[v][0]),
            (f"out[{(SIZE + v) * LANES} + lane]", spectrum[v][1]),
        ]
        if filters:
            stores.append((f"out[{(2 * SIZE + v) * LANES} + lane]", g.neg(spectrum[v][1])))
    f.add([f"        for u in range(1, {HALF}):", f"            for j in range({SIZE}):"])
    f.add([f"                move8(src, base + j * {VECTOR} + u * LANES, ins, j * LANES)"])
    imaginary_row = f"base + j * {VECTOR} + {HALF * LANES} + u * LANES"  # row 8 + u of column j
    f.add([f"                move8(src, {imaginary_row}, ins, {VECTOR} + j * LANES)"])
    f.add([f"            for lane in range({LANES}):"])
    f.add([f"                a{j} = ins[{j * LANES} + lane]" for j in range(SIZE)])
    f.add([f"                b{j} = ins[{VECTOR + j * LANES} + lane]" for j in range(SIZE)])
    f.add(emit(g, stores, "                ", consts))
    copy_out = _copy_out_filter if filters else _copy_out
    f.add(copy_out(f"{ROW_SLOTS} + (u - 1) * {SIZE} + vv", SIZE))
    g = Graph()
    spectrum = dft(g, [(g.load(f"a{j}"), None) for j in range(SIZE)], -1)
    stores = []
    for v in range(1, HALF):
        stores += [
            (f"out[{v * LANES} + lane]", spectrum[v][0]),
            (f"out[{(SIZE + v) * LANES} + lane]", spectrum[v][1]),
        ]
        if filters:
            stores.append((f"out[{(2 * SIZE + v) * LANES} + lane]", g.neg(spectrum[v][1])))
    stores += [("out[lane]", spectrum[0][0]), (f"out[{SIZE * LANES} + lane]", spectrum[HALF][0])]
    if filters:
        stores.append((f"out[{2 * SIZE * LANES} + lane]", g.neg(spectrum[HALF][0])))
    f.add(["        for h in range(2):  # the real rows u = 0 and u = 8 (vv = 0: the pair slot)"])
    f.add([f"            for j in range({SIZE}):"])
    f.add([f"                move8(src, base + j * {VECTOR} + h * {HALF * LANES}, ins, j * {LANES})"])
    f.add([f"            for lane in range({LANES}):"])
    f.add([f"                a{j} = ins[{j * LANES} + lane]" for j in range(SIZE)])
    f.add(emit(g, stores, "                ", consts))
    f.add(copy_out(f"{PAIR_SLOTS} + h if vv == 0 else {REAL_ROW_SLOTS} + {HALF - 1} * h + vv - 1", HALF))
    return f.text()


def _copy_in(slot: str, count: int) -> list[str]:
    """Lines moving one row's ``count`` products into the input buffer: P = Re X · (Re W | −Im W)
    from the window's row, Q = Im X · (Re W | −Im W) from the block's second half of rows, each
    (Re part | Im part): four vectors, combined by the codelet."""
    parts = ("at", "at + k_out", "bt", "bt + k_out")
    return [
        f"            for vv in range({count}):",
        f"                at = (({slot}) * tiles + tile) * row + o0",
        "                bt = at + second",
        "                if lanes == LANES:",
        *[
            f"                    move8(flat, {src}, ins, {q * SIZE * LANES} + vv * {LANES})"
            for q, src in enumerate(parts)
        ],
        "                else:  # the last block of a channel count that is not a multiple of 8",
        "                    for lane in range(lanes):",
        *[
            f"                        ins[{q * SIZE * LANES} + vv * {LANES} + lane] = flat[{src} + lane]"
            for q, src in enumerate(parts)
        ],
    ]


def _products(v: int, pair: bool = False) -> list[str]:
    """Loads of product ``v`` of a row from the input buffer: Re Y = P_re − Q_im and
    Im Y = P_im + Q_re; a pair slot's two real frequencies are P_re and −Q_im."""
    p_re, p_im, q_re, q_im = (f"ins[{q * SIZE * LANES + v * LANES} + lane]" for q in range(4))
    if pair:
        return [f"                a{v} = {p_re}", f"                b{v} = -{q_im}"]
    return [f"                a{v} = {p_re} - {q_im}", f"                b{v} = {p_im} + {q_re}"]


def _rows_inverse(m: int, consts: dict[float, int]) -> str:
    """The inverse DFT along each half-spectrum row of one tile's products, first m columns."""
    f = _Function(
        [
            _JIT,
            f"def rows_inverse_{m}(mm, tile, half, col, consts):  # pragma: no cover",
            '    """half[kb, col + j, u] = Re, half[kb, col + j, 8 + u] = Im of the inverse DFT along',
            f"    row u of the window's products ``mm[:, tile]`` (slots of the module docstring), j < {m};",
            "    real rows u = 0 and 8 only Re. Operands pass through stack buffers, as in",
            '    :func:`rows_forward`."""',
        ],
        consts,
    )
    f.add(
        [
            "    blocks, span = half.shape[0], half.shape[1]",
            "    tiles, row = mm.shape[1], mm.shape[2]",
            "    k_out = row // 2",
            "    second = tiles // 2 * row  # the block's second half of rows: the Q products",
            "    flat = mm.reshape(mm.size)",
            "    dst = half.reshape(half.size)",
            f"    ins = stack_array(half, {4 * VECTOR})",
            f"    out = stack_array(half, {2 * VECTOR})",
            "    for kb in range(blocks):",
            "        o0 = kb * LANES",
            "        lanes = min(LANES, k_out - o0)",
            f"        base = (kb * span + col) * {VECTOR}",
        ]
    )
    g = Graph()
    z = dft(g, [(g.load(f"a{v}"), g.load(f"b{v}")) for v in range(SIZE)], 1)
    stores = []
    for j in range(m):
        stores += [(f"out[{2 * j * LANES} + lane]", z[j][0]), (f"out[{(2 * j + 1) * LANES} + lane]", z[j][1])]
    f.add([f"        for u in range(1, {HALF}):"])
    f.add(_copy_in(f"{ROW_SLOTS} + (u - 1) * {SIZE} + vv", SIZE))
    f.add([f"            for lane in range({LANES}):"])
    for v in range(SIZE):
        f.add(_products(v))
    f.add(emit(g, stores, "                ", consts))
    f.add([f"            for j in range({m}):"])
    f.add([f"                move8(out, j * {2 * LANES}, dst, base + j * {VECTOR} + u * LANES)"])
    imaginary_row = f"base + j * {VECTOR} + {HALF * LANES} + u * LANES"  # row 8 + u of column j
    f.add([f"                move8(out, j * {2 * LANES} + LANES, dst, {imaginary_row})"])
    g = Graph()
    half = [(g.load("a0"), None)]
    half += [(g.load(f"a{v}"), g.load(f"b{v}")) for v in range(1, HALF)]
    half += [(g.load("b0"), None)]
    z = dft(g, hermitian(g, half), 1)
    stores = [(f"out[{j * LANES} + lane]", z[j][0]) for j in range(m)]
    f.add(["        for h in range(2):  # the real rows u = 0 and u = 8 (vv = 0: the pair slot)"])
    f.add(_copy_in(f"{PAIR_SLOTS} + h if vv == 0 else {REAL_ROW_SLOTS} + {HALF - 1} * h + vv - 1", HALF))
    f.add([f"            for lane in range({LANES}):"])
    for v in range(HALF):
        f.add(_products(v, pair=v == 0))
    f.add(emit(g, stores, "                ", consts))
    f.add([f"            for j in range({m}):"])
    f.add([f"                move8(out, j * {LANES}, dst, base + j * {VECTOR} + h * {HALF * LANES})"])
    return f.text()


def _columns_inverse(m: int, consts: dict[float, int]) -> str:
    """The inverse real DFT down the columns (Hermitian in u), first m rows, in one loop."""
    f = _Function(
        [
            _JIT,
            f"def columns_inverse_{m}(half, out, consts):  # pragma: no cover",
            '    """out[kb, j, i] = the inverse DFT down ``half[kb, j]`` (u = 0..8 Re, 9..15 Im of u = 1..7;',
            f'    conjugate symmetric in u, so real) at i < {m}, every column and block of 8 channels."""',
        ],
        consts,
    )
    g = Graph()
    half = [(g.load("a0"), None)]
    half += [(g.load(f"a{u}"), g.load(f"a{HALF + u}")) for u in range(1, HALF)]
    half += [(g.load(f"a{HALF}"), None)]
    y = dft(g, hermitian(g, half), 1)
    stores = [(f"dst[q * {m * LANES} + {i * LANES} + lane]", y[i][0]) for i in range(m)]
    f.add(["    src = half.reshape(half.size)", "    dst = out.reshape(out.size)"])
    f.add([f"    buf = stack_array(half, {VECTOR})  # the column's inputs: no alias with dst"])
    f.add([f"    for q in range(half.size // {VECTOR}):", f"        for i in range({VECTOR}):"])
    f.add([f"            buf[i] = src[q * {VECTOR} + i]", f"        for lane in range({LANES}):"])
    f.add([f"            a{u} = buf[{u * LANES} + lane]" for u in range(SIZE)])
    f.add(emit(g, stores, "            ", consts))
    return f.text()


def _jobs(m: int) -> str:
    """The output job and fused driver for m outputs per tile and axis."""
    return f'''@numba.njit(cache=True)
def output_job_{m}(mm, consts, bias, th_count, y, row, first, count, base):  # pragma: no cover
    """y[n, :, th·{m} + i, tw·{m} + j] = the first {m}×{m} outputs of each of the ``count`` windows
    from ``first`` of row of windows ``row``, plus the bias; their products are ``mm[:, base:]``."""
    blocks = -(-(mm.shape[2] // 2) // {LANES})
    half = np.empty((blocks, count * {m}, {SIZE}, {LANES}), dtype=mm.dtype)
    for tw in range(count):
        rows_inverse_{m}(mm, base + tw, half, tw * {m}, consts)
    out = np.empty((blocks, count * {m}, {m}, {LANES}), dtype=mm.dtype)
    columns_inverse_{m}(half, out, consts)
    lane_blocks_channels_first(out, bias, y, row // th_count, (row % th_count) * {m}, first * {m})


@numba.njit(cache=True, parallel=True)
def fused_{m}(x, pad_top, pad_left, u, bias, consts, th_count, tw_count, block, y):  # pragma: no cover
    """The whole convolution in one parallel region. A job is ``block`` consecutive windows
    (across rows of windows): their spectra in the job's own scratch, the {SLOTS} slot GEMMs V·U
    (BLAS, on the calling thread), then the inverse transforms into ``y``."""
    channels, k_out = x.shape[1], u.shape[2] // 2
    total = x.shape[0] * th_count * tw_count
    for job in numba.prange(-(-total // block)):
        start = job * block
        count = min(block, total - start)
        v = np.empty(({SLOTS}, 2 * count, channels), dtype=x.dtype)  # rows: Re of each window, then Im
        mm = np.empty(({SLOTS}, 2 * count, 2 * k_out), dtype=x.dtype)
        done = 0
        while done < count:  # one row of windows at a time
            row, first = (start + done) // tw_count, (start + done) % tw_count
            part = min(count - done, tw_count - first)
            input_job(x, pad_top, pad_left, v, consts, th_count, {m}, row, first, part, done)
            done += part
        for i in range({SLOTS}):
            np.dot(v[i], u[i], mm[i])
        done = 0
        while done < count:
            row, first = (start + done) // tw_count, (start + done) % tw_count
            part = min(count - done, tw_count - first)
            output_job_{m}(mm, consts, bias, th_count, y, row, first, part, done)
            done += part
'''


INPUT_JOB = f'''@numba.njit(cache=True)
def input_job(x, pad_top, pad_left, v, consts, th_count, step, row, first, count, base):  # pragma: no cover
    """v[:, base + i] (Re) and v[:, windows + base + i] (Im) = the spectra of the ``count``
    16×16 windows from ``first`` of row of windows ``row`` (n·windows_h + th), windows ``step``
    apart; zero outside ``x``."""
    blocks = -(-x.shape[1] // {LANES})
    rows = np.empty((blocks, (count - 1) * step + {SIZE}, {SIZE}, {LANES}), dtype=x.dtype)
    top, left = (row % th_count) * step - pad_top, first * step - pad_left
    rows_lane_blocks(x, row // th_count, top, left, rows)
    half = np.empty_like(rows)
    columns_forward(rows, half, consts)
    for tw in range(count):
        rows_forward(half, tw * step, v, base + tw, consts)


@numba.njit(cache=True, parallel=True)
def transform_filters(w, u, consts):  # pragma: no cover
    """u = the slot matrices of ``w`` (C, K, kh, kw ≤ 16: the filters seen from each input
    channel, already scaled), one input channel a job (:func:`rows_forward_filter`)."""
    for c in numba.prange(w.shape[0]):
        rows = np.empty((-(-w.shape[1] // {LANES}), {SIZE}, {SIZE}, {LANES}), dtype=w.dtype)
        rows_lane_blocks(w, c, 0, 0, rows)
        half = np.empty_like(rows)
        columns_forward(rows, half, consts)
        rows_forward_filter(half, 0, u, c, consts)
'''


def render() -> str:
    """The module's source, formatted by ruff as the repository is."""
    consts: dict[float, int] = {}
    parts = [
        HEADER,
        _columns_forward(consts),
        _rows_forward(consts),
        _rows_forward(consts, filters=True),
        INPUT_JOB,
    ]
    for m in OUTPUTS:
        parts += [_rows_inverse(m, consts), _columns_inverse(m, consts), _jobs(m)]
    ordered = sorted(consts, key=consts.__getitem__)
    parts.append(
        "#: The twiddle magnitudes the codelets load as ``k0, k1, …`` (a ``consts`` array of the\n"
        "#: input's dtype).\n"
        f"CONSTANTS = {tuple(ordered)!r}\n"
        "#: Outputs per window and axis → the fused driver.\n"
        "FUSED = {" + ", ".join(f"{m}: fused_{m}" for m in OUTPUTS) + "}\n"
    )
    return formatted("\n\n".join(parts), TARGET)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
