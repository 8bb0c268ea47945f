"""Numba intrinsics in LLVM's portable vector IR: a block transpose for moving data between
layouts, vector moves and stack buffers, and the Winograd tile transform.

Numba compiles a transpose written as loops (or as explicit element assignments) to scalar loads
and stores: LLVM's vectorizers do not turn a strided read and a contiguous write into shuffles.
The Winograd transforms move every input row from NCHW into channel-last scratch and every output
row back, and those moves took half of the transforms' time (BENCHMARKS.md §25).

:func:`transpose8` is a Numba intrinsic: it loads eight rows of eight elements as eight vectors,
transposes them with the three rounds of ``shufflevector`` of the classic 8×8 transpose
(interleave pairs of elements, then pairs of pairs, then halves) and stores eight vectors.
``shufflevector`` is target-independent IR: LLVM lowers it to whatever the host's ISA has
(unpack and permute instructions on AVX2 or AVX-512, others elsewhere), so nothing here assumes an
instruction set. :func:`transpose8_plus` adds one value per output row on the way (a bias per
output channel). :func:`transpose_batch` transposes whole matrices with it, in parallel.

:func:`transpose8` moves complex elements too (as integers of their width: 64-bit lanes for
complex64). The intrinsics read and write through raw pointers: the caller guarantees that every
element of the block lies inside both arrays. Offsets and strides are in elements, from the
arrays' start (:func:`element_strides`).

:func:`sandwich8` applies a small constant matrix on both sides of a grid of vectors (a Winograd
transform, ``Bᵀ d B`` or ``Aᵀ M A``, eight channels at a time): every load, every product and every
store of the tile are written as vector IR, so nothing is left to a vectorizer.
"""

from __future__ import annotations

from fractions import Fraction

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from kernels import pool  # noqa: F401  (first: transpose_batch's threads on PyTorch's pool)
from kernels.workspace import LINE_BYTES  # what one store of transpose_lines_plus writes whole

#: Shuffle masks of the 8×8 transpose (indices into the concatenation of two 8-vectors).
_PAIRS_LO = (0, 8, 1, 9, 4, 12, 5, 13)  # interleave elements 0,1 and 4,5 of two rows
_PAIRS_HI = (2, 10, 3, 11, 6, 14, 7, 15)
_QUADS_LO = (0, 1, 8, 9, 4, 5, 12, 13)  # interleave pairs
_QUADS_HI = (2, 3, 10, 11, 6, 7, 14, 15)
_HALVES_LO = (0, 1, 2, 3, 8, 9, 10, 11)  # low halves of two vectors, then high halves
_HALVES_HI = (4, 5, 6, 7, 12, 13, 14, 15)

#: Rows and columns of the block.
LANES = 8


def _shuffle(builder: ir.IRBuilder, a, b, mask: tuple[int, ...]):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(mask)), list(mask)))


def _transposed(builder: ir.IRBuilder, rows: list) -> list:
    """The eight columns of the 8×8 block whose rows are ``rows`` (eight <8 x T> values)."""
    pairs = []
    for a, b in zip(rows[0::2], rows[1::2], strict=True):
        pairs += [_shuffle(builder, a, b, _PAIRS_LO), _shuffle(builder, a, b, _PAIRS_HI)]
    quads = []
    for i in (0, 4):  # rows 0-3, then rows 4-7
        a, b, c, d = pairs[i : i + 4]
        quads += [
            _shuffle(builder, a, c, _QUADS_LO),
            _shuffle(builder, a, c, _QUADS_HI),
            _shuffle(builder, b, d, _QUADS_LO),
            _shuffle(builder, b, d, _QUADS_HI),
        ]
    low = [_shuffle(builder, quads[i], quads[i + 4], _HALVES_LO) for i in range(4)]
    high = [_shuffle(builder, quads[i], quads[i + 4], _HALVES_HI) for i in range(4)]
    return low + high


def _vector_at(builder: ir.IRBuilder, data, start, stride, row: int, vector: ir.VectorType):
    """Pointer to the ``row``-th vector of a block: element ``start + row·stride`` of ``data``."""
    return _vector_pointer(
        builder, data, builder.add(start, builder.mul(stride, ir.Constant(start.type, row))), vector
    )


def _vector_pointer(builder: ir.IRBuilder, data, offset, vector: ir.VectorType):
    """``data`` (a pointer to lanes) + ``offset`` elements, as a pointer to a vector."""
    return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())


def _lane(context, dtype) -> ir.Type:
    """What a vector lane holds: the dtype itself for real floats; for complex ones (only moved,
    never computed on) an integer as wide as the element."""
    if isinstance(dtype, types.Complex):
        return ir.IntType(dtype.bitwidth)
    return context.get_data_type(dtype)


def _data(context, builder, array_type, array, lane: ir.Type):
    """The array's data pointer, as a pointer to lanes."""
    data = cgutils.create_struct_proxy(array_type)(context, builder, value=array).data
    return builder.bitcast(data, lane.as_pointer())


def _operands(context, builder, src_type, src, dst_type, dst):
    """What every intrinsic here starts from: the vector type of eight of ``src``'s elements, its
    alignment, and both arrays' data pointers as pointers to lanes."""
    lane = _lane(context, src_type.dtype)
    align = context.get_abi_alignment(context.get_data_type(src_type.dtype))
    src_data = _data(context, builder, src_type, src, lane)
    dst_data = _data(context, builder, dst_type, dst, lane)
    return ir.VectorType(lane, LANES), align, src_data, dst_data


def _codegen(with_addend: bool):
    def codegen(context, builder, signature, args):
        src, src_at, src_stride, dst, dst_at, dst_stride = args[:6]
        vector, align, src_data, dst_data = _operands(
            context, builder, signature.args[0], src, signature.args[3], dst
        )
        pointers = [_vector_at(builder, src_data, src_at, src_stride, i, vector) for i in range(LANES)]
        columns = _transposed(builder, [builder.load(p, align=align) for p in pointers])
        if with_addend:
            add_type = signature.args[6]
            add_data = _data(context, builder, add_type, args[6], vector.element)
            start = _vector_pointer(builder, add_data, args[7], vector)
            addends = builder.load(start, align=align)
            splats = [_shuffle(builder, addends, addends, (q,) * LANES) for q in range(LANES)]
            columns = [builder.fadd(col, splat) for col, splat in zip(columns, splats, strict=True)]
        for q, column in enumerate(columns):
            builder.store(column, _vector_at(builder, dst_data, dst_at, dst_stride, q, vector), align=align)
        return context.get_dummy_value()

    return codegen


def _typed(arrays, offsets, kinds: tuple[type, ...]) -> bool:
    """Arrays of one dtype of ``kinds`` (the intrinsics' vectors hold it) and integer offsets
    (passed as ``intp``, whatever integer type the caller has)."""
    dtypes = all(isinstance(a, types.Array) and isinstance(a.dtype, kinds) for a in arrays)
    integers = all(isinstance(o, types.Integer) for o in offsets)
    return dtypes and integers and len({a.dtype for a in arrays}) == 1


@intrinsic
def transpose8(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """``dst[dst_at + q·dst_stride + p] = src[src_at + p·src_stride + q]`` for p, q < 8; real or
    complex elements.

    Element offsets from each array's first element (``arr.strides // itemsize`` for an n-d array);
    the caller keeps the block inside both arrays.
    """
    if not _typed((src, dst), (src_at, src_stride, dst_at, dst_stride), (types.Float, types.Complex)):
        return None
    return types.void(src, types.intp, types.intp, dst, types.intp, types.intp), _codegen(False)


@intrinsic
def transpose8_plus(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride, addend, addend_at):
    """:func:`transpose8`, then ``+ addend[addend_at + q]`` on every element of output row ``q``."""
    if not _typed((src, dst, addend), (src_at, src_stride, dst_at, dst_stride, addend_at), (types.Float,)):
        return None
    signature = types.void(src, types.intp, types.intp, dst, types.intp, types.intp, addend, types.intp)
    return signature, _codegen(True)


def _lines_codegen(context, builder, signature, args):
    src, src_at, src_next, src_stride, dst, dst_at, dst_stride, addend, addend_at = args
    vector, align, src_data, dst_data = _operands(
        context, builder, signature.args[0], src, signature.args[4], dst
    )
    add_data = _data(context, builder, signature.args[7], addend, vector.element)
    addends = builder.load(_vector_pointer(builder, add_data, addend_at, vector), align=align)
    splats = [_shuffle(builder, addends, addends, (q,) * LANES) for q in range(LANES)]
    blocks = LINE_BYTES // (LANES * context.get_abi_sizeof(vector.element))  # 8×8 blocks per line
    per_block = []
    for start in (src_at, src_next)[:blocks]:
        rows = [
            builder.load(_vector_at(builder, src_data, start, src_stride, i, vector), align=align)
            for i in range(LANES)
        ]
        per_block.append(
            [builder.fadd(c, s) for c, s in zip(_transposed(builder, rows), splats, strict=True)]
        )
    line = ir.VectorType(vector.element, LANES * blocks)
    streaming = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
    for q in range(LANES):
        whole = per_block[0][q]
        if blocks == 2:
            whole = _shuffle(builder, per_block[0][q], per_block[1][q], tuple(range(2 * LANES)))
        at = builder.add(dst_at, builder.mul(dst_stride, ir.Constant(dst_at.type, q)))
        store = builder.store(whole, _vector_pointer(builder, dst_data, at, line), align=LINE_BYTES)
        store.set_metadata("nontemporal", streaming)
    return context.get_dummy_value()


@intrinsic
def transpose_lines_plus(
    typingctx, src, src_at, src_next, src_stride, dst, dst_at, dst_stride, addend, addend_at
):
    """:func:`transpose8_plus` on eight rows of one cache line each, stored whole with one
    non-temporal (streaming) store per row: ``dst[dst_at + q·dst_stride + p] = src[start + (p %
    8)·src_stride + q] + addend[addend_at + q]`` for q < 8 and p below :data:`LINE_BYTES` /
    itemsize, where ``start`` is ``src_at`` for p < 8 and ``src_next`` for 8 ≤ p < 16 (float32:
    a line is two 8×8 blocks, from anywhere in ``src``; float64: one, ``src_next`` unused).

    The caller guarantees that every output row starts on a cache-line boundary, and calls
    :func:`fence` before other threads read what it wrote.
    """
    offsets = (src_at, src_next, src_stride, dst_at, dst_stride, addend_at)
    if not _typed((src, dst, addend), offsets, (types.Float,)):
        return None
    signature = types.void(src, *(types.intp,) * 3, dst, types.intp, types.intp, addend, types.intp)
    return signature, _lines_codegen


@intrinsic
def fence(typingctx):
    """A full memory fence (``mfence`` on x86): streaming stores before it are visible to every
    thread after it (they are ordered with nothing else)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@numba.njit(cache=True)
def element_strides(a):  # pragma: no cover - jitted
    """``a``'s strides in elements, and whether they are whole elements with the last axis unit
    (what the intrinsics' element offsets need)."""
    size = a.itemsize
    whole = a.strides[-1] == size
    for s in a.strides:
        whole = whole and s % size == 0
    return [s // size for s in a.strides], whole


@numba.njit(cache=True, parallel=True)
def transpose_batch(src, dst):  # pragma: no cover - jitted
    """dst[b, q, p] = src[b, p, q] (any strides), in 8×8 blocks: :func:`transpose8` where both
    arrays' last axes are contiguous, else element by element in the same blocks, so both sides
    stream cache lines. Parallel over (matrix, block of 8 rows p)."""
    n_batch, n_p, n_q = src.shape
    src_strides, src_whole = element_strides(src)
    dst_strides, dst_whole = element_strides(dst)
    src_b, src_p, dst_b, dst_q = src_strides[0], src_strides[1], dst_strides[0], dst_strides[1]
    blocks = (n_p + LANES - 1) // LANES
    for job in numba.prange(n_batch * blocks):
        b, p0 = job // blocks, (job % blocks) * LANES
        p1 = min(n_p, p0 + LANES)
        q0 = 0
        if src_whole and dst_whole and p1 - p0 == LANES:
            src_at, dst_at = b * src_b + p0 * src_p, b * dst_b + p0
            while q0 + LANES <= n_q:
                transpose8(src, src_at + q0, src_p, dst, dst_at + q0 * dst_q, dst_q)
                q0 += LANES
        for q_block in range(q0, n_q, LANES):
            for q in range(q_block, min(n_q, q_block + LANES)):
                for p in range(p0, p1):
                    dst[b, q, p] = src[b, p, q]


@intrinsic
def stack_array(typingctx, like, size):
    """A 1-D array of ``size`` (a literal) elements of ``like``'s dtype on the stack, uninitialised.

    LLVM knows that memory it allocated itself cannot alias any array passed in, so a loop that
    reads an argument and writes this buffer (or the reverse) needs no runtime alias checks;
    with those checks (one per pair of streams) LLVM leaves the FFT codelets' short loops over
    8 lanes scalar. Allocated once in the function's entry block, 64-byte aligned.
    """
    if not isinstance(size, types.IntegerLiteral) or not isinstance(like, types.Array):
        return None
    count = size.literal_value
    array_type = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(like.dtype)
        data = cgutils.alloca_once(builder, element, size=count)
        data.align = 64
        array = context.make_array(array_type)(context, builder)
        intp = context.get_value_type(types.intp)
        itemsize = ir.Constant(intp, context.get_abi_sizeof(element))
        context.populate_array(
            array,
            data=data,
            shape=[ir.Constant(intp, count)],
            strides=[itemsize],
            itemsize=itemsize,
            meminfo=None,
        )
        return array._getvalue()

    return array_type(like, size), codegen


def _move_codegen(context, builder, signature, args):
    src, src_at, dst, dst_at = args
    vector, align, src_data, dst_data = _operands(
        context, builder, signature.args[0], src, signature.args[2], dst
    )
    source = _vector_pointer(builder, src_data, src_at, vector)
    target = _vector_pointer(builder, dst_data, dst_at, vector)
    builder.store(builder.load(source, align=align), target, align=align)
    return context.get_dummy_value()


@intrinsic
def move8(typingctx, src, src_at, dst, dst_at):
    """``dst[dst_at + q] = src[src_at + q]`` for q < 8: one vector load and one vector store.

    Element offsets from each array's first element (C-contiguous arrays); the caller keeps the
    eight elements inside both. Unlike an indexed loop, no negative-index wrap-around and no
    aliasing question reach LLVM: the FFT codelets move their operands between the arrays and
    stack buffers (:func:`stack_array`) with it and compute on the buffers only.
    """
    if not _typed((src, dst), (src_at, dst_at), (types.Float,)):
        return None
    return types.void(src, types.intp, dst, types.intp), _move_codegen


def matrix_text(matrix) -> str:
    """The literal :func:`sandwich8` takes for ``matrix`` (rows of exact rationals): ``"a,b;c,d"``."""
    return ";".join(",".join(str(Fraction(c)) for c in row) for row in matrix)


class Arithmetic:
    """The four operations :func:`apply_matrix` builds its sums from (vector IR in the intrinsic,
    exact rationals in the tests)."""

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def neg(self, a):
        return -a

    def scale(self, coef: Fraction, a):
        return coef * a


def _sum(ops: Arithmetic, coefs, terms: list):
    """``Σ coef·term`` over the nonzero coefficients (None if all are zero): the positive ones
    first (``b − a``, not ``−a + b``), and a magnitude common to all of them taken out once
    (``2·(b − a)``)."""
    pairs = [(c, t) for c, t in zip(coefs, terms, strict=True) if c != 0]
    if not pairs:
        return None
    common = abs(pairs[0][0])
    if common != 1 and len(pairs) > 1 and all(abs(c) == common for c, _ in pairs):
        return ops.scale(common, _sum(ops, [c / common for c, _ in pairs], [t for _, t in pairs]))
    total = None
    for coef, term in sorted(pairs, key=lambda pair: pair[0] < 0):
        if abs(coef) != 1:
            term = ops.scale(abs(coef), term)
        if total is None:
            total = term if coef > 0 else ops.neg(term)
        else:
            total = ops.add(total, term) if coef > 0 else ops.sub(total, term)
    return total


def _paired_columns(matrix: list[list[Fraction]]) -> list[tuple[int, int]]:
    """Disjoint column pairs whose coefficients are equal or opposite in every row and used by two
    rows or more (the columns of a transform's points ±p in ``Aᵀ``)."""
    pairs, used = [], set()
    width = len(matrix[0])
    for j1 in range(width):
        for j2 in range(j1 + 1, width):
            if {j1, j2} & used:
                continue
            same = all(abs(row[j1]) == abs(row[j2]) for row in matrix)
            if same and sum(row[j1] != 0 for row in matrix) >= 2:
                pairs.append((j1, j2))
                used |= {j1, j2}
    return pairs


def _split(first: list[Fraction], second: list[Fraction]) -> tuple[list[Fraction], list[Fraction]] | None:
    """``(E, O)`` with ``first = E + O`` and ``second = E − O`` (both with terms), if the rows agree
    in magnitude everywhere (the rows of points ±p in ``Bᵀ``)."""
    even = [a if a == b else Fraction(0) for a, b in zip(first, second, strict=True)]
    odd = [a if a == -b and a != 0 else Fraction(0) for a, b in zip(first, second, strict=True)]
    if any(abs(a) != abs(b) for a, b in zip(first, second, strict=True)) or not any(even) or not any(odd):
        return None
    return even, odd


def apply_matrix(matrix, terms: list, ops: Arithmetic) -> list:
    """``matrix · terms`` (a small constant matrix of rationals), with the sums of a transform's
    symmetric points shared: column pairs equal or opposite in every row are summed and
    differenced once (``a + b``, ``a − b``), and row pairs ``E ± O`` computed from E and O once.
    F(4×4)'s input transform takes 13 operations per 6 inputs this way instead of 20.
    """
    matrix = [[Fraction(c) for c in row] for row in matrix]
    pairs = _paired_columns(matrix)
    paired = {j for pair in pairs for j in pair}
    single = [j for j in range(len(matrix[0])) if j not in paired]
    rows = []  # each row over: the single terms, then a + b and a − b of every pair
    for row in matrix:
        sums = [row[j1] if row[j2] == row[j1] else Fraction(0) for j1, j2 in pairs]
        diffs = [row[j1] if row[j2] == -row[j1] else Fraction(0) for j1, j2 in pairs]
        rows.append([row[j] for j in single] + sums + diffs)
    cache: dict[int, object] = {}

    def term(i: int):
        if i not in cache:
            if i < len(single):
                cache[i] = terms[single[i]]
            else:
                k = (i - len(single)) % len(pairs)
                j1, j2 = pairs[k]
                is_sum = i - len(single) < len(pairs)
                cache[i] = (ops.add if is_sum else ops.sub)(terms[j1], terms[j2])
        return cache[i]

    def total(coefs):
        used = [i for i, c in enumerate(coefs) if c != 0]
        return _sum(ops, [coefs[i] for i in used], [term(i) for i in used])

    out: list = [None] * len(rows)
    for r1, first in enumerate(rows):
        for r2 in range(r1 + 1, len(rows)):
            halves = None if out[r1] is not None or out[r2] is not None else _split(first, rows[r2])
            if halves is not None:
                even, odd = total(halves[0]), total(halves[1])
                out[r1], out[r2] = ops.add(even, odd), ops.sub(even, odd)
        if out[r1] is None:
            out[r1] = total(first)
    return out


class _VectorArithmetic(Arithmetic):
    """:class:`Arithmetic` as LLVM vector instructions (``contract``: a product and a sum may
    become one fused multiply-add)."""

    FLAGS = ("contract",)

    def __init__(self, builder: ir.IRBuilder, vector: ir.VectorType) -> None:
        self.builder, self.vector = builder, vector

    def add(self, a, b):
        return self.builder.fadd(a, b, flags=self.FLAGS)

    def sub(self, a, b):
        return self.builder.fsub(a, b, flags=self.FLAGS)

    def neg(self, a):
        return self.builder.fneg(a, flags=self.FLAGS)

    def scale(self, coef, a):
        splat = ir.Constant(self.vector, [float(coef)] * self.vector.count)
        return self.builder.fmul(splat, a, flags=self.FLAGS)


def _sandwich_codegen(matrix: list[list[Fraction]]):
    def codegen(context, builder, signature, args):
        src, src_at, src_row, src_col, dst, dst_at, dst_row, dst_col = args[:8]
        vector, align, src_data, dst_data = _operands(
            context, builder, signature.args[0], src, signature.args[4], dst
        )

        def at(data, start, row_stride, col_stride, i: int, j: int):
            offset = builder.add(
                builder.mul(row_stride, ir.Constant(start.type, i)),
                builder.mul(col_stride, ir.Constant(start.type, j)),
            )
            return _vector_pointer(builder, data, builder.add(start, offset), vector)

        size = len(matrix[0])
        grid = [
            [builder.load(at(src_data, src_at, src_row, src_col, i, j), align=align) for j in range(size)]
            for i in range(size)
        ]
        ops = _VectorArithmetic(builder, vector)
        columns = [apply_matrix(matrix, [grid[i][j] for i in range(size)], ops) for j in range(size)]
        for a in range(len(matrix)):
            for e, value in enumerate(apply_matrix(matrix, [column[a] for column in columns], ops)):
                builder.store(value, at(dst_data, dst_at, dst_row, dst_col, a, e), align=align)
        return context.get_dummy_value()

    return codegen


@intrinsic
def sandwich8(typingctx, src, src_at, src_row, src_col, dst, dst_at, dst_row, dst_col, matrix):
    """``dst[a, e] = (T d Tᵀ)[a, e]`` for the matrix ``T`` (r × s, given as the string literal of
    :func:`matrix_text`) and the s × s grid of vectors ``d[i, j] = src[src_at + i·src_row +
    j·src_col + q]``, q < 8; ``dst[a, e]`` is the vector at ``dst_at + a·dst_row + e·dst_col``.

    Element offsets and strides from each array's first element (C-contiguous arrays); the caller
    keeps every vector inside both. The s² loads, the products (first down the columns, then
    along the rows, each a sum over the nonzero coefficients in order, so the rounding is that of
    the same expressions written out) and the r² stores are emitted as vector IR: no loop for
    LLVM's vectorizer to decline, no aliasing question (a transform that kept its columns' sums
    in a scratch and looped over channels took 1.3-1.7x the time, BENCHMARKS.md §28).
    """
    if not isinstance(matrix, types.StringLiteral):
        return None
    if not _typed((src, dst), (src_at, src_row, src_col, dst_at, dst_row, dst_col), (types.Float,)):
        return None
    rows = [[Fraction(c) for c in row.split(",")] for row in matrix.literal_value.split(";")]
    signature = types.void(src, *(types.intp,) * 3, dst, *(types.intp,) * 3, matrix)
    return signature, _sandwich_codegen(rows)
