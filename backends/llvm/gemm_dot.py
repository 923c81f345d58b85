"""The GEMM's path for skinny products, where packing would cost as much as the product:
C[i, j] = A[i, :] . B[:, j] as dot products along K, read where A and B lie.

A Linear layer's forward `x @ W.T` at a small batch, and matrix @ vector, have A's rows and
B's columns contiguous along K. The packed path transposes all of B into panels to use each
element min(M, N) times; at batch 16 that copy cost as much as the arithmetic. Here a block of
MB rows of A and NB columns of B is read one vector of K at a time into MB x NB vector
accumulators (every load feeds MB or NB FMAs); at the end the NB accumulators of a row are
summed across their lanes together (shared shuffles, see _lane_sums) into one short vector,
stored with one masked store. The rows left after whole blocks go one at a time (a
matrix-vector product wastes no FMA); an edge block of columns repeats the last column and
stores only what belongs to C.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.gemm_emitter import I32, I64, Emitter, define_function
from graphc.backends.llvm.gemm_plan import GemmPlan

# A product whose smaller side of C (rows or columns) is at most this, or that makes at most
# SMALL_PRODUCT multiply-adds, reads its operands unpacked (see is_small). From
# benchmarks/gemm_kernel.py --skinny: at K 784, N 256 the dot path won below M 24, tied at 24
# to 32 and lost from 48.
DOT_MAX_SIDE = 24
SMALL_PRODUCT = 1 << 15


def is_small(b: ir.IRBuilder, m: ir.Value, n: ir.Value, k: ir.Value) -> ir.Value:
    """Return whether a product of the whole (unsplit) sizes is small enough that packing
    would not pay: a side of C of at most DOT_MAX_SIDE, or few multiply-adds in all."""
    side = b.select(b.icmp_signed("<", m, n), m, n, name="short_side")
    skinny = b.icmp_signed("<=", side, ir.Constant(I64, DOT_MAX_SIDE), name="skinny_side")
    work = b.mul(b.mul(m, n), k, name="multiply_adds")
    tiny = b.icmp_signed("<=", work, ir.Constant(I64, SMALL_PRODUCT), name="tiny")
    return b.or_(skinny, tiny, name="small_product")


def dot_blocks(plan: GemmPlan) -> tuple[int, int]:
    """Return (MB, NB): the largest square block whose MB x NB accumulators and MB + NB loaded
    vectors fit the target's vector registers (4 x 4 with 32 registers, 3 x 3 with 16)."""
    registers = plan.mr * plan.vectors + plan.vectors + 1  # what the packed tile was sized to
    side = 4 if registers > 16 else 3
    return side, side


def dot_layout(e: Emitter, a_col_stride: ir.Value, b_row_stride: ir.Value) -> ir.Value:
    """Return whether A's rows and B's columns are contiguous along K (unit strides)."""
    b = e.builder
    a_rows = b.icmp_signed("==", a_col_stride, e.const(1), name="a_rows_contiguous")
    b_columns = b.icmp_signed("==", b_row_stride, e.const(1), name="b_columns_contiguous")
    return b.and_(a_rows, b_columns, name="dot_layout")


def emit_dot(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit `<plan name>_dot(M, N, K, a, a_row_stride, b, b_col_stride, c, c_row_stride,
    accumulate)`: C[M, N] (+)= A @ B for A[i, k] at a[i * a_row_stride + k] and B[k, j] at
    b[j * b_col_stride + k]."""
    signature = (
        "i64 M, i64 N, i64 K, ptr a, i64 a_row_stride, ptr b, i64 b_col_stride,"
        " ptr c, i64 c_row_stride, i1 accumulate"
    )
    fn, e = define_function(module, plan, f"{plan.name}_dot", signature)
    m, n, k, a, a_rs, b, b_cs, c, c_rs, accumulate = fn.args
    mb, nb = dot_blocks(plan)
    irb = e.builder
    lanes = plan.lanes
    whole = irb.mul(irb.sdiv(k, e.const(lanes)), e.const(lanes), name="k_whole")

    full_rows = irb.sub(m, irb.srem(m, e.const(mb)), name="full_rows")

    def column_block(j0: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        columns = _clamped(e, j0, nb, n, "j")
        b_rows = [e.element(b, irb.mul(col, b_cs), name=f"b{j}") for j, col in enumerate(columns)]

        def row_block(count: int) -> Callable[[ir.Value, list[ir.Value]], list[ir.Value]]:
            def body(i0: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                rows = _clamped(e, i0, count, m, "i")
                a_rows = [e.element(a, irb.mul(r, a_rs), name=f"a{i}") for i, r in enumerate(rows)]
                sums = _dot_block(e, a_rows, b_rows, whole, k)
                _store_block(e, sums, (i0, j0), n, nb, rows, c, c_rs, accumulate)
                return []

            return body

        e.loop("i0", 0, full_rows, mb, row_block(mb))
        e.loop("i1", full_rows, m, 1, row_block(1))
        return []

    e.loop("j0", 0, n, nb, column_block)
    irb.ret_void()
    return fn


def _clamped(e: Emitter, start: ir.Value, count: int, size: ir.Value, name: str) -> list[ir.Value]:
    """Return start, start + 1, ... (count of them), each at most size - 1: an edge block
    repeats the last row or column."""
    last = e.builder.sub(size, e.const(1), name=f"{name}_last")
    return [e.min(e.builder.add(start, e.const(p)), last, f"{name}{p}") for p in range(count)]


def _dot_block(
    e: Emitter, a_rows: list[ir.Value], b_rows: list[ir.Value], whole: ir.Value, k: ir.Value
) -> list[ir.Value]:
    """Return the MB x NB dot products of the rows of A with the columns of B: for each row,
    a vector of its NB sums (see _lane_sums)."""
    plan, irb = e.plan, e.builder
    zero = ir.Constant(plan.vector, [0.0] * plan.lanes)
    carried = [(f"acc{i}_{j}", zero) for i in range(len(a_rows)) for j in range(len(b_rows))]

    def accumulate_at(position: ir.Value, accumulators: list[ir.Value], load) -> list[ir.Value]:
        a_vectors = [load(row, position, f"av{i}") for i, row in enumerate(a_rows)]
        b_vectors = [load(row, position, f"bv{j}") for j, row in enumerate(b_rows)]
        return [
            e.fma(a_vectors[i], b_vectors[j], accumulators[i * len(b_rows) + j], f"fma{i}_{j}")
            for i in range(len(a_rows))
            for j in range(len(b_rows))
        ]

    def whole_load(row: ir.Value, position: ir.Value, name: str) -> ir.Value:
        vector = irb.load(e.vector_at(row, position, name), name=name)
        vector.align = plan.itemsize
        return vector

    accumulators = e.loop(
        "kv",
        0,
        whole,
        plan.lanes,
        lambda position, values: accumulate_at(position, values, whole_load),
        carried,
    )
    mask = _tail_mask(e, irb.sub(k, whole, name="k_tail"))

    def tail_load(row: ir.Value, position: ir.Value, name: str) -> ir.Value:
        return e.masked_load(e.vector_at(row, position, name), mask, zero, name)

    accumulators = accumulate_at(whole, accumulators, tail_load)
    columns = len(b_rows)
    return [
        _lane_sums(e, accumulators[i * columns : (i + 1) * columns]) for i in range(len(a_rows))
    ]


def _lane_sums(e: Emitter, vectors: list[ir.Value]) -> ir.Value:
    """Return a vector whose lane j is the sum of the lanes of vectors[j]; its width is the
    count of vectors rounded up to a power of two (lanes past the count repeat the last sum).

    Lanes are summed as a reassociating vector reduction sums them, by halves (lane t with
    lane t + half), but the vectors share the shuffles and adds: pairs merge into one vector
    holding the halved partial sums of both, until one vector holds them all."""
    irb, lanes = e.builder, e.plan.lanes
    width = 1 << (len(vectors) - 1).bit_length()
    groups, segment = [*vectors, *[vectors[-1]] * (width - len(vectors))], lanes
    if width > lanes:  # more vectors than lanes (f64 with 128-bit vectors): two halves
        halves = _lane_sums(e, groups[: width // 2]), _lane_sums(e, groups[width // 2 :])
        return irb.shuffle_vector(
            *halves, ir.Constant(ir.VectorType(I32, width), list(range(width)))
        )
    while len(groups) > 1:
        low, high = (_half_lanes(lanes, segment, first) for first in (0, segment // 2))
        groups = [
            irb.fadd(irb.shuffle_vector(x, y, low), irb.shuffle_vector(x, y, high))
            for x, y in zip(groups[::2], groups[1::2], strict=True)
        ]
        segment //= 2
    (total,) = groups
    spacing = segment
    while segment > 1:
        half = segment // 2
        picks = [i + half if i % segment < half else i for i in range(lanes)]
        shifted = irb.shuffle_vector(total, total, ir.Constant(ir.VectorType(I32, lanes), picks))
        total, segment = irb.fadd(total, shifted), half
    picks = [j * spacing for j in range(width)]
    return irb.shuffle_vector(total, total, ir.Constant(ir.VectorType(I32, width), picks))


def _half_lanes(lanes: int, segment: int, first: int) -> ir.Constant:
    """Return the shuffle that takes, from two vectors of segments `segment` lanes long, the
    half of each segment starting at lane `first` of it: the first vector's, then the
    second's."""
    half = segment // 2
    picks = [
        source * lanes + start + first + t
        for source in (0, 1)
        for start in range(0, lanes, segment)
        for t in range(half)
    ]
    return ir.Constant(ir.VectorType(I32, lanes), picks)


def _tail_mask(e: Emitter, remaining: ir.Value) -> ir.Value:
    """Return the lanes below `remaining` (the K elements after the last whole vector)."""
    lanes = e.plan.lanes
    ids = ir.Constant(ir.VectorType(I64, lanes), list(range(lanes)))
    return e.builder.icmp_signed("<", ids, e.splat(remaining, name="k_tail_limit"), name="tail")


def _store_block(
    e: Emitter,
    sums: list[ir.Value],
    start: tuple[ir.Value, ir.Value],
    columns: ir.Value,
    block: int,
    rows: list[ir.Value],
    c: ir.Value,
    c_rs: ir.Value,
    accumulate: ir.Value,
) -> None:
    """Store each row's vector of sums at C[row, j0:], the first `block` lanes of it that lie
    in the columns below `columns` (N), adding C's old values if asked."""
    irb, plan = e.builder, e.plan
    _, j0 = start
    width = sums[0].type.count
    vector = ir.VectorType(plan.scalar, width)
    ids = ir.Constant(ir.VectorType(I64, width), list(range(width)))
    stored = e.min(irb.sub(columns, j0), block, name="stored_columns")
    limit = irb.insert_element(ir.Constant(ir.VectorType(I64, width), None), stored, e.const(0))
    limit = irb.shuffle_vector(limit, limit, ir.Constant(ir.VectorType(I32, width), [0] * width))
    mask = irb.icmp_signed("<", ids, limit, name="inside")
    suffix = f"v{width}{plan.short}.p0"
    align = ir.Constant(I32, plan.itemsize)
    load = e.declare(
        f"llvm.masked.load.{suffix}",
        ir.FunctionType(vector, [vector.as_pointer(), I32, mask.type, vector]),
    )
    store = e.declare(
        f"llvm.masked.store.{suffix}",
        ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), I32, mask.type]),
    )
    zero = ir.Constant(vector, [0.0] * width)
    for row, value in zip(rows, sums, strict=True):
        at = e.element(c, irb.add(irb.mul(row, c_rs), j0), name="c_row")
        target = irb.bitcast(at, vector.as_pointer(), name="c_at")
        old = irb.call(load, [target, align, mask, zero], name="old")
        total = irb.select(accumulate, irb.fadd(old, value), value)
        irb.call(store, [total, target, align, mask])
