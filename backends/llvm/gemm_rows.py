"""The GEMM's unpacked path for small products whose B has contiguous rows: each row of C
is a sum of rows of B scaled by A's elements, read where A and B lie.

The packed path's micro-kernel does the same arithmetic on copies of A and B laid out in
panels; for a small product (a gradient at batch 4, x @ W at batch 16) the copies, the block
loops and the masked edge tiles cost more than the FMAs. This path keeps a tile of the
micro-kernel's kind (ROW_TILE rows by the plan's vectors of columns, in registers) and its
rank-1 updates, but broadcasts A[i, k] straight from A and loads B's row k straight from B.
Rows left after whole tiles go one at a time; the last block of columns, if partial, is masked
(only it: AVX2's masked store is microcoded on Zen 3, slow even with every lane on).
"""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm.gemm_emitter import Emitter, define_function
from graphc.backends.llvm.gemm_plan import GemmPlan

# Rows of C per tile: fewer than the packed tile's MR (6), since every tile reads all of B's
# rows again and the rows left over after whole tiles go one at a time (batch 16 = 4 x 4).
ROW_TILE = 4


def emit_rows(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit `<plan name>_rows(M, N, K, a, a_row_stride, a_col_stride, b, b_row_stride, c,
    c_row_stride, accumulate)`: C[M, N] (+)= A @ B for B[k, j] at b[k * b_row_stride + j]."""
    signature = (
        "i64 M, i64 N, i64 K, ptr a, i64 a_row_stride, i64 a_col_stride, ptr b,"
        " i64 b_row_stride, ptr c, i64 c_row_stride, i1 accumulate"
    )
    fn, e = define_function(module, plan, f"{plan.name}_rows", signature)
    m, n, k, a, a_rs, a_cs, b, b_rs, c, c_rs, accumulate = fn.args
    irb = e.builder
    full_rows = irb.sub(m, irb.srem(m, e.const(ROW_TILE)), name="full_rows")

    def column_block(j0: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        columns = irb.sub(n, j0, name="columns")
        whole = irb.icmp_signed(">=", columns, e.const(plan.nr), name="whole_columns")
        with irb.if_else(whole) as (then, otherwise):
            with then:
                rows_of_tiles(j0, [None] * plan.vectors)
            with otherwise:
                rows_of_tiles(j0, e.column_masks(columns, name="columns"))
        return []

    def rows_of_tiles(j0: ir.Value, masks: list[ir.Value | None]) -> None:
        def row_block(count: int):
            def body(i0: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                tile = _tile(e, count, masks, (a, a_rs, a_cs), (b, b_rs), (i0, j0), k)
                _store_tile(e, tile, masks, (c, c_rs), (i0, j0), accumulate)
                return []

            return body

        e.loop("i0", 0, full_rows, ROW_TILE, row_block(ROW_TILE))
        e.loop("i1", full_rows, m, 1, row_block(1))

    e.loop("j0", 0, n, plan.nr, column_block)
    irb.ret_void()
    return fn


def _tile(
    e: Emitter,
    rows: int,
    masks: list[ir.Value | None],
    a: tuple[ir.Value, ir.Value, ir.Value],
    b: tuple[ir.Value, ir.Value],
    origin: tuple[ir.Value, ir.Value],
    k: ir.Value,
) -> list[list[ir.Value]]:
    """Return the rows x vectors accumulators of C's tile at origin after all K updates."""
    plan, irb = e.plan, e.builder
    (a_ptr, a_rs, a_cs), (b_ptr, b_rs), (i0, j0) = a, b, origin
    zero = ir.Constant(plan.vector, [0.0] * plan.lanes)
    a_rows = [
        e.element(a_ptr, irb.mul(irb.add(i0, e.const(r)), a_rs), f"a{r}") for r in range(rows)
    ]
    b_start = e.element(b_ptr, j0, "b_columns")
    carried = [(f"acc{r}_{v}", zero) for r in range(rows) for v in range(plan.vectors)]

    def update(depth: ir.Value, accumulators: list[ir.Value]) -> list[ir.Value]:
        b_row = e.element(b_start, irb.mul(depth, b_rs), "b_row")
        b_vectors = [
            e.load_lanes(e.vector_at(b_row, v * plan.lanes, f"b{v}"), mask, zero, f"bv{v}")
            for v, mask in enumerate(masks)
        ]
        updated = []
        for r, row in enumerate(a_rows):
            scalar = irb.load(e.element(row, irb.mul(depth, a_cs), f"a{r}k"), name=f"a{r}_k")
            broadcast = e.splat(scalar, f"a{r}_splat")
            for v, vector in enumerate(b_vectors):
                position = r * plan.vectors + v
                updated.append(e.fma(broadcast, vector, accumulators[position], f"fma{r}_{v}"))
        return updated

    flat = e.loop("k", 0, k, 1, update, carried)
    return [flat[r * plan.vectors : (r + 1) * plan.vectors] for r in range(rows)]


def _store_tile(
    e: Emitter,
    tile: list[list[ir.Value]],
    masks: list[ir.Value | None],
    c: tuple[ir.Value, ir.Value],
    origin: tuple[ir.Value, ir.Value],
    accumulate: ir.Value,
) -> None:
    """Store the tile's columns inside C, adding C's old values if asked."""
    plan, irb = e.plan, e.builder
    (c_ptr, c_rs), (i0, j0) = c, origin
    zero = ir.Constant(plan.vector, [0.0] * plan.lanes)
    for r, vectors in enumerate(tile):
        row = e.element(c_ptr, irb.add(irb.mul(irb.add(i0, e.const(r)), c_rs), j0), f"c{r}")
        for v, (value, mask) in enumerate(zip(vectors, masks, strict=True)):
            target = e.vector_at(row, v * plan.lanes, f"c{r}_{v}")
            old = e.load_lanes(target, mask, zero, f"old{r}_{v}")
            total = irb.select(accumulate, irb.fadd(old, value), value)
            e.store_lanes(total, target, mask)
