"""BLIS-style packed GEMM emitted as LLVM IR: C = A @ B (or C += A @ B) for float32 and float64.

The loop nest is BLIS's (Van Zee and van de Geijn, 2015), with its names: columns of C go in
blocks of NC (loop jc); the depth in blocks of KC (loop pc), for which B is packed into
zero-padded KC x NR panels; rows in blocks of MC (loop ic), for which A is packed into MR-row
panels. The macro-kernel (loops jr, ir) then keeps one MR x NR micro-tile of C in vector
registers while it walks KC rank-1 updates: broadcast A[i, k], multiply by B's row k, FMA.
Edge tiles are written with masked loads and stores, so no shape needs padding by the caller.

The sizes come from a plan per dtype and CPU target (`gemm_plan`, from the target's vector
registers and cache sizes), and every emitted function is named after its plan, so modules for
different targets never define the same name differently.

Every function is single-threaded and keeps no global state: callers parallelise by giving each
thread its own workspace and a disjoint block of columns (offset B and C pointers).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.gemm_dot import dot_layout, emit_dot
from graphc.backends.llvm.gemm_emitter import (
    I32,
    Emitter,
    Matrix,
    define_function,
)
from graphc.backends.llvm.gemm_plan import KC_MAX, GemmPlan, gemm_plan, workspace_bytes
from graphc.backends.llvm.gemm_rows import emit_rows
from graphc.backends.llvm.register_blocks import transpose_block
from graphc.backends.llvm.target import CpuTarget

__all__ = ["KC_MAX", "GemmPlan", "gemm_function", "gemm_plan", "workspace_bytes"]

# Bits of the GEMM's flags argument.
ACCUMULATE = 1
SKINNY = 2
PACKED_B = 4  # B is already packed whole at packed_b (by a call with PACK_B)
PACK_B = 8  # only pack all of B into packed_b
# A column block of one panel reads A where it lies (each element of A is used once, so
# packing would only copy it), and so does a block whose rows of B take at most
# IN_PLACE_ROW_BYTES when A's rows are contiguous. Packing A pays for itself over many panels
# (1024 x 1024 x 1024 f32: 167 GFLOP/s packed, 155 in place); over a few it is mostly a copy.
# One thread, AVX-512 (4 panels of 64 f32): 2048 x 512 @ 512 x N went 142 -> 170 GFLOP/s at
# N = 128, 150 -> 171 at 192, 153 -> 165 at 256. AVX2 (Zen 3; panels of 16 f32, 8 f64), at 4
# panels then: 82-86 -> 100 at N = 48 and 64; at 16 panels, 2048 x 512 @ 512 x 256 90.7-92.5
# -> 95.6-97.1 (x 128: 86-87 -> 96-97), 512 x 1024 @ 1024 x 256 89-90 -> 93-94, an MLP's
# inference at batch 64 (784-256-256-10) 0.394-0.398 -> 0.379-0.381 ms, f64 x 64 and x 128
# 42-46 -> 46-47. A transposed A (a weight gradient's dY.T) read in place over several panels
# steps a whole column per k in every row: 2048 x 512 @ 512 x 256 went 133 -> 88, so it is
# packed.
IN_PLACE_ROW_BYTES = 1024
# The row_length standing for no row runs: longer than any M, and no sum of it overflows.
NO_ROW_RUNS = 1 << 48


def gemm_function(
    module: ir.Module, dtype: str, target: CpuTarget | None = None, narrow: bool = False
) -> ir.Function:
    """Return the plan's GEMM (`GemmPlan.name`, e.g. `graphc_gemm_f32_6x64`, or with narrow
    the narrow plan's, `graphc_gemm_f32_12x32`) in the module, emitting it (and its helpers)
    on first use.

    Signature (C calling convention; strides in elements):
        void graphc_gemm_f32_6x64(i64 M, i64 N, i64 K,
                                  float* A, i64 a_row_stride, i64 a_col_stride,
                                  float* B, i64 b_row_stride, i64 b_col_stride,
                                  float* C, i64 c_row_stride,
                                  float* workspace, i32 flags,
                                  float* packed_b, i64 packed_columns, i64 first_column,
                                  i64 run_length, i64 run_stride,
                                  i64 row_length, i64 row_stride, i64 first_row)
    computes C[M, N] = A[M, K] @ B[K, N], or C += A @ B when flags has ACCUMULATE.

    A's depth may come in runs (a window_matmul's kernel rows): with 0 < run_length < K,
    A[i, k] is at A + i * a_row_stride + (k % run_length) * a_col_stride + (k / run_length) *
    run_stride. Such a call reads A in place and takes neither skinny path; its depth goes in
    groups of whole runs that fit one block of KC (`_depth_groups`), so any K works. Any
    other run_length means one run.

    A's rows may come in runs too (a window_matmul's output rows, without the windows that
    stand for no output): with row_length > 0, A's row i is row r = first_row + i of the
    runs, at A + (r % row_length) * a_row_stride + (r / row_length) * row_stride; C's rows
    stay contiguous. A run holds at least MR rows (ROW_RUN_LEAST covers every plan), so a
    micro-tile's rows cross into the next run at most once. Such a call reads A in place and
    takes neither skinny path. A row_length of 0 means no runs (first_row is then ignored).

    With SKINNY (the caller's whole product is small, see gemm_dot.is_small) it reads A and B
    unpacked: by dot products when A's rows and B's columns are contiguous (gemm_dot.py), by
    rows of B when B's rows are (gemm_rows.py); other layouts are packed. A and B are read
    through both strides, so transposed operands need no copy; C's columns are contiguous.

    A loop that multiplies by the same B at every step packs it once (and so does a batched
    product whose matrices share B): a call with PACK_B packs all of B[K, N] into packed_b
    (K x (N rounded up to NR) elements, 64-byte aligned like the workspace) and computes
    nothing; calls with PACKED_B then read their B from there, their columns starting at
    first_column of a packed B of packed_columns columns (a block that does not start at a
    panel packs as usual, and so does a depth in runs of more than one group). workspace
    holds workspace_bytes(dtype, target) bytes, 64-byte aligned, private to the call.
    """
    plan = gemm_plan(dtype, target, narrow)
    if plan.name in module.globals:
        return module.globals[plan.name]
    micro_kernels = (_emit_micro_kernel(module, plan, layout) for layout in _A_LAYOUTS)
    macro_kernel = _emit_macro_kernel(module, plan, *micro_kernels)
    pack_a = _emit_pack_a(module, plan)
    pack_b = _emit_pack_b(module, plan)
    dot, rows = emit_dot(module, plan), emit_rows(module, plan)
    return _emit_driver(module, plan, plan.name, pack_a, pack_b, macro_kernel, dot, rows)


# --- packing ------------------------------------------------------------------------------------


def _emit_pack_b(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit pack_b: copy B[kc, nc] into kc x NR panels, zero-padding the last panel's columns."""
    signature = (
        "i64 kc, i64 nc, ptr noalias b, i64 b_row_stride, i64 b_col_stride, ptr noalias b_packed"
    )
    fn, e = define_function(module, plan, f"{plan.name}_pack_b", signature)
    kc, nc, b_ptr, row_stride, col_stride, packed = fn.args
    b = Matrix(b_ptr, row_stride, col_stride)

    def panel(jr: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        columns = e.builder.sub(nc, jr, name="columns")
        dest = e.element(packed, e.builder.mul(jr, kc), name="panel")
        source = b.block(e, 0, jr, name="b_panel")
        contiguous = e.builder.icmp_signed("==", col_stride, e.const(1), name="contiguous")
        transposed = e.builder.and_(
            e.builder.icmp_signed("==", row_stride, e.const(1)),
            e.builder.icmp_signed(">=", columns, e.const(plan.nr)),
            name="transposed_panel",
        )
        with e.builder.if_else(contiguous) as (then, otherwise):
            with then:
                _pack_b_rows(e, kc, columns, source, dest)
            with otherwise, e.builder.if_else(transposed) as (whole, rest):
                with whole:
                    _pack_b_transposed(e, kc, source, dest)
                with rest:
                    _pack_b_columns(e, 0, kc, columns, source, dest)
        return []

    e.loop("jr", 0, nc, plan.nr, panel)
    e.builder.ret_void()
    return fn


def _pack_b_rows(e: Emitter, kc: ir.Value, columns: ir.Value, b: Matrix, dest: ir.Value) -> None:
    """Copy a panel whose columns are contiguous a row of vectors at a time, masked past nc."""
    plan = e.plan
    masks = e.column_masks(columns, name="column_mask")
    zero = ir.Constant(plan.vector, None)

    def row(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        src_row = e.builder.mul(k, b.row_stride, name="b_row")
        dest_row = e.builder.mul(k, e.const(plan.nr), name="packed_row")
        for v, mask in enumerate(masks):
            src_at = e.builder.add(src_row, e.const(v * plan.lanes), name="b_at")
            value = e.masked_load(e.vector_at(b.ptr, src_at, "b"), mask, zero, name=f"b{v}")
            dest_at = e.builder.add(dest_row, e.const(v * plan.lanes), name="packed_at")
            e.builder.store(value, e.vector_at(dest, dest_at, "packed"), align=plan.vector_align)
        return []

    e.loop("k", 0, kc, 1, row)


def _pack_b_transposed(e: Emitter, kc: ir.Value, b: Matrix, dest: ir.Value) -> None:
    """Copy a whole panel of B whose columns are contiguous along K (B = W.T, as x @ W.T reads
    it): LANES x LANES blocks are read a column vector at a time, transposed in registers and
    written a row vector at a time; the rows past the last whole block go element by element."""
    plan = e.plan
    lanes = plan.lanes
    irb = e.builder
    whole = irb.mul(irb.sdiv(kc, e.const(lanes)), e.const(lanes), name="k_whole")
    vector_pointer = plan.vector.as_pointer()

    def block(k0: ir.Value, first: ir.Value) -> None:
        columns = []
        for j in range(lanes):
            column = irb.add(first, e.const(j))
            at = e.element(b.ptr, b.offset(e, k0, column, "b_at"), "b_column")
            columns.append(irb.load(irb.bitcast(at, vector_pointer), align=plan.itemsize))
        for row, vector in enumerate(transpose_block(irb, columns)):
            at = irb.add(irb.mul(irb.add(k0, e.const(row)), e.const(plan.nr)), first)
            target = irb.bitcast(e.element(dest, at, "packed"), vector_pointer)
            irb.store(vector, target, align=plan.vector_align)

    def block_rows(k0: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        def column_block(first: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            block(k0, first)
            return []

        # A loop over the panel's column blocks, not unrolled: the GEMM library is compiled in
        # every process, and unrolled this path alone took 0.14 s of its 0.34 s (f32).
        e.loop("j0", 0, plan.nr, lanes, column_block)
        return []

    e.loop("k0", 0, whole, lanes, block_rows)
    _pack_b_columns(e, whole, kc, e.const(plan.nr), b, dest)


def _pack_b_columns(
    e: Emitter, k_start: int | ir.Value, kc: ir.Value, columns: ir.Value, b: Matrix, dest: ir.Value
) -> None:
    """Copy rows k_start..kc of a panel of strided B (e.g. transposed) element by element;
    zero the padding columns."""
    plan = e.plan
    present = e.min(columns, plan.nr, name="present")

    # k outer, j inner: the panel is written in order and the NR source rows being read
    # stay in L1 across consecutive k (the other order misses on every write of a large KC).
    def row(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        dest_row = e.builder.mul(k, e.const(plan.nr), name="packed_row")

        def element(j: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            src = e.element(b.ptr, b.offset(e, k, j, "b_at"), "b")
            value = e.builder.load(src, name="b_elem", typ=plan.scalar)
            dest_at = e.builder.add(dest_row, j, name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
            return []

        def padding(j: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            dest_at = e.builder.add(dest_row, j, name="packed_at")
            e.builder.store(ir.Constant(plan.scalar, 0.0), e.element(dest, dest_at, "packed"))
            return []

        e.loop("j", 0, present, 1, element)
        e.loop("j_pad", present, plan.nr, 1, padding)
        return []

    e.loop("k", k_start, kc, 1, row)


def _emit_pack_a(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit pack_a: copy A[mc, kc] into MR-row panels stored k-major, zero-padding missing rows."""
    signature = (
        "i64 mc, i64 kc, ptr noalias a, i64 a_row_stride, i64 a_col_stride, ptr noalias a_packed"
    )
    fn, e = define_function(module, plan, f"{plan.name}_pack_a", signature)
    mc, kc, a_ptr, row_stride, col_stride, packed = fn.args
    a = Matrix(a_ptr, row_stride, col_stride)

    def panel(ir_start: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        rows = e.builder.sub(mc, ir_start, name="rows")
        dest = e.element(packed, e.builder.mul(ir_start, kc), name="panel")
        source = a.block(e, ir_start, 0, name="a_panel")
        full = e.builder.icmp_signed(">=", rows, e.const(plan.mr), name="full_panel")
        with e.builder.if_else(full) as (then, otherwise):
            with then:
                _pack_a_full(e, kc, source, dest)
            with otherwise:
                _pack_a_partial(e, kc, rows, source, dest)
        return []

    contiguous = e.builder.icmp_signed("==", row_stride, e.const(1), name="a_columns_contiguous")
    with e.builder.if_else(contiguous) as (then, otherwise):
        with then:
            _pack_a_by_columns(e, mc, kc, a, packed)
        with otherwise:
            e.loop("ir", 0, mc, plan.mr, panel)
    e.builder.ret_void()
    return fn


def _pack_a_by_columns(e: Emitter, mc: ir.Value, kc: ir.Value, a: Matrix, dest: ir.Value) -> None:
    """Pack an A whose columns are contiguous (a transpose: windows on the left of a
    convolution's product, a weight gradient's x.T) column by column: each column's mc
    elements are read as one run and dealt out MR at a time to the panels, and the last
    panel's missing rows get zeros. Panel by panel, every k would start a run of MR elements
    in another page: 12544 x 144 windows packed in 1.27 ms that way, 0.57 ms this way (Zen 3)."""
    plan, b = e.plan, e.builder
    column_type = ir.VectorType(plan.scalar, plan.mr).as_pointer()
    full_rows = b.sub(mc, b.srem(mc, e.const(plan.mr)), name="full_rows")
    panel_size = b.mul(kc, e.const(plan.mr), name="panel_size")
    last_panel = b.mul(b.sdiv(full_rows, e.const(plan.mr)), panel_size, name="last_panel")

    def column(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        source = e.element(a.ptr, b.mul(k, a.col_stride), "a_column")
        target = e.element(dest, b.mul(k, e.const(plan.mr)), "packed_column")

        def panel(i: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            rows = b.bitcast(e.element(source, i, "a_rows"), column_type)
            at = b.mul(b.sdiv(i, e.const(plan.mr)), panel_size, name="panel_at")
            packed = b.bitcast(e.element(target, at, "panel_column"), column_type)
            b.store(b.load(rows, name="a_column", align=plan.itemsize), packed, align=plan.itemsize)
            return []

        def last_row(r: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            row = b.add(full_rows, r, name="row")
            inside = b.icmp_signed("<", row, mc, name="inside")
            safe_row = b.select(inside, row, full_rows, name="safe_row")
            loaded = b.load(e.element(source, safe_row, "a_at"), name="a", typ=plan.scalar)
            value = b.select(inside, loaded, ir.Constant(plan.scalar, 0.0), name="a_or_zero")
            b.store(value, e.element(target, b.add(last_panel, r), "packed"))
            return []

        e.loop("i", 0, full_rows, plan.mr, panel)
        with b.if_then(b.icmp_signed("<", full_rows, mc, name="partial_panel")):
            e.loop("r", 0, plan.mr, 1, last_row)
        return []

    e.loop("k", 0, kc, 1, column)


def _pack_a_full(e: Emitter, kc: ir.Value, a: Matrix, dest: ir.Value) -> None:
    """Copy a panel of MR rows: for each k, the MR elements of column k, unrolled; when A's
    columns are contiguous (A is a transpose: a weight gradient's x.T), as one vector."""
    plan = e.plan
    column_type = ir.VectorType(plan.scalar, plan.mr)

    def column(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        dest_col = e.builder.mul(k, e.const(plan.mr), name="packed_col")
        for i in range(plan.mr):
            src = e.element(a.ptr, a.offset(e, i, k, "a_at"), "a")
            value = e.builder.load(src, name=f"a{i}", typ=plan.scalar)
            dest_at = e.builder.add(dest_col, e.const(i), name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
        return []

    def contiguous_column(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        src = e.element(a.ptr, e.builder.mul(k, a.col_stride), "a_column")
        value = e.builder.load(
            e.builder.bitcast(src, column_type.as_pointer()), name="a_col", align=plan.itemsize
        )
        target = e.element(dest, e.builder.mul(k, e.const(plan.mr)), "packed_col")
        e.builder.store(
            value, e.builder.bitcast(target, column_type.as_pointer()), align=plan.itemsize
        )
        return []

    contiguous = e.builder.icmp_signed("==", a.row_stride, e.const(1), name="a_columns_contiguous")
    with e.builder.if_else(contiguous) as (then, otherwise):
        with then:
            e.loop("k", 0, kc, 1, contiguous_column)
        with otherwise:
            e.loop("k", 0, kc, 1, column)


def _pack_a_partial(e: Emitter, kc: ir.Value, rows: ir.Value, a: Matrix, dest: ir.Value) -> None:
    """Copy the last panel of fewer than MR rows: zero it, then copy the rows that exist."""
    plan = e.plan

    def clear(n: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        e.builder.store(ir.Constant(plan.scalar, 0.0), e.element(dest, n, "packed"))
        return []

    e.loop("n", 0, e.builder.mul(kc, e.const(plan.mr)), 1, clear)

    def row(i: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        def element(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            src = e.element(a.ptr, a.offset(e, i, k, "a_at"), "a")
            value = e.builder.load(src, name="a_elem", typ=plan.scalar)
            dest_at = e.builder.add(e.builder.mul(k, e.const(plan.mr)), i, name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
            return []

        e.loop("k", 0, kc, 1, element)
        return []

    e.loop("i", 0, rows, 1, row)


# --- kernels ------------------------------------------------------------------------------------


# How a micro-kernel reads A: packed into a panel, where it lies through both strides, or
# where it lies with each row contiguous (A[i, k] at row i's start + k: a window_matmul's
# windows, an activation times a few panels of weights). With contiguous rows the addresses of
# the unrolled k steps are each row's start plus a constant; through a column stride they are
# MR x unroll sums, which do not fit the registers (the 6 x 16 AVX2 kernel reloaded 16 of them
# from the stack every 4 k: 62% of the MNIST CNN's time against 50% reading rows).
_A_LAYOUTS = ("packed", "strided", "rows")


def _emit_micro_kernel(module: ir.Module, plan: GemmPlan, a_layout: str) -> ir.Function:
    """Emit the micro-kernel: C[mr, nr] (+)= A panel @ B panel with the tile in registers.

    With A in place (a_layout "strided" or "rows"; see IN_PLACE_ROW_BYTES: a product of a few
    column panels uses each element of A a few times, so packing it is mostly a copy): A[i, k]
    at a[i * a_row_stride + k * a_col_stride], a_col_stride 1 for "rows", rows past mr
    reading row mr - 1 again (never stored), and row_skip elements further from the row
    where row_phase + i reaches row_length (A's rows in runs, see gemm_function; row_phase
    is the tile's first row's place in its run, and a run holds at least MR rows); and A's
    depth may come in runs (see gemm_function): column k at a[(k % run_length) *
    a_col_stride + (k / run_length) * run_stride] (a run_length of at least kc: one run)."""
    signature = (
        "i64 kc, ptr noalias a_panel, ptr noalias b_panel, ptr noalias c, i64 c_row_stride,"
        " i64 mr, i64 nr, i1 beta"
    )
    in_place = a_layout != "packed"
    suffix = f"_{a_layout}" if in_place else ""
    if in_place:
        signature += ", i64 a_row_stride, i64 a_col_stride, i64 run_length, i64 run_stride"
        signature += ", i64 row_phase, i64 row_length, i64 row_skip"
    fn, e = define_function(module, plan, f"{plan.name}_micro_kernel{suffix}", signature)
    kc, a_panel, b_panel, c, c_row_stride, mr, nr, beta = fn.args[:8]
    irb = e.builder
    if in_place:
        a_row_stride, a_col_stride, run_length, run_stride = fn.args[8:12]
        row_phase, row_length, row_skip = fn.args[12:]
        last_row = irb.sub(mr, e.const(1), name="last_row")
        rows = []
        for i in range(plan.mr):
            row = e.min(e.const(i), last_row, name=f"a_row{i}")
            past_run = irb.icmp_signed(
                ">=", irb.add(row_phase, row), row_length, name=f"a_row{i}_past_run"
            )
            skip = irb.select(past_run, row_skip, e.const(0), name=f"a_row{i}_skip")
            rows.append(irb.add(irb.mul(row, a_row_stride), skip, name=f"a_row{i}_at"))
        column_step: ir.Value = a_col_stride if a_layout == "strided" else e.const(1)
    else:
        rows = [e.const(i) for i in range(plan.mr)]
        column_step = e.const(plan.mr)
        run_length, run_stride = kc, e.const(0)
    zero = ir.Constant(plan.vector, None)
    tile = [(f"c{i}_{v}", zero) for i in range(plan.mr) for v in range(plan.vectors)]
    # Where A's column k is: run_at + within * column_step, stepped along k, wrapping to the
    # next run after run_length columns (never within one run, as for a packed panel).
    position = [("within", e.const(0)), ("run_at", e.const(0))]

    def update(k: ir.Value, state: list[ir.Value]) -> list[ir.Value]:
        within, run_at, acc = state[0], state[1], state[2:]
        a_column = irb.add(run_at, irb.mul(within, column_step), name="a_col")
        a_elements = [e.element(a_panel, irb.add(a_column, row, name="a_at"), "a") for row in rows]
        acc = _rank1_update(e, a_elements, b_panel, k, acc)
        following = irb.add(within, e.const(1), name="following")
        wraps = irb.icmp_signed("==", following, run_length, name="next_run")
        within = irb.select(wraps, e.const(0), following, name="within")
        run_at = irb.select(wraps, irb.add(run_at, run_stride), run_at, name="run_at")
        return [within, run_at, *acc]

    def unrolled(k: ir.Value, state: list[ir.Value]) -> list[ir.Value]:
        for u in range(plan.unroll):
            state = update(irb.add(k, e.const(u), name=f"k{u}") if u else k, state)
        return state

    # A packed block's product is large and its C often in L3 or DRAM: prefetching the tile
    # for writing kept 1024^2 and 2048^2 f32 at 90-94 GFLOP/s, 77-89 without (Zen 3). A
    # product read in place has a few column panels, its C block mostly in cache, and the
    # prefetches cost more than they saved: MNIST MLP inference at batch 64, one thread,
    # 0.395-0.398 -> 0.380-0.381 ms, the MNIST CNN 1.80-1.81 -> 1.76-1.78 (Zen 3).
    if not in_place:
        _prefetch_tile(e, c, c_row_stride, mr)
    k_rest = irb.srem(kc, e.const(plan.unroll), name="k_rest")
    k_main = irb.sub(kc, k_rest, name="k_main")
    state = e.loop("k", 0, k_main, plan.unroll, unrolled, position + tile)
    names = [name for name, _ in position + tile]
    tail = [(f"{name}.tail", value) for name, value in zip(names, state, strict=True)]
    acc = e.loop("k_tail", k_main, kc, 1, update, tail)[2:]
    whole = irb.and_(
        irb.icmp_signed("==", mr, e.const(plan.mr), name="all_rows"),
        irb.icmp_signed("==", nr, e.const(plan.nr), name="all_columns"),
        name="whole_tile",
    )
    with irb.if_else(whole) as (then, otherwise):
        with then:
            _store_whole_tile(e, acc, c, c_row_stride, beta)
        with otherwise:
            _store_tile(e, acc, c, c_row_stride, mr, nr, beta)
    irb.ret_void()
    return fn


def _prefetch_tile(e: Emitter, c: ir.Value, c_row_stride: ir.Value, mr: ir.Value) -> None:
    """Prefetch the tile's rows of C for writing, so its update does not wait on L3 or DRAM."""
    plan = e.plan
    last_row = e.builder.sub(mr, e.const(1), name="last_row")
    for i in range(plan.mr):
        # Prefetches cannot fault, but rows past mr would only waste bandwidth: re-fetch the last.
        row = e.min(e.const(i), last_row, name=f"prefetch_row{i}")
        row_at = e.builder.mul(row, c_row_stride, name=f"prefetch_row{i}_at")
        for line in range(-(-plan.nr * plan.itemsize // 64)):
            at = e.builder.add(row_at, e.const(line * 64 // plan.itemsize), name="prefetch_at")
            e.prefetch_for_write(e.element(c, at, "c"))


def _rank1_update(
    e: Emitter, a_elements: list[ir.Value], b_panel: ir.Value, k: ir.Value, acc: list[ir.Value]
) -> list[ir.Value]:
    """Emit tile += A[:, k] (outer) B[k, :], A[:, k] at the MR pointers a_elements, and return
    the new accumulators (row-major order)."""
    plan = e.plan
    b_row = e.builder.mul(k, e.const(plan.nr), name="b_row")
    b_vecs = []
    for v in range(plan.vectors):
        b_at = e.builder.add(b_row, e.const(v * plan.lanes), name="b_at")
        ptr = e.vector_at(b_panel, b_at, "b")
        b_vecs.append(e.builder.load(ptr, name=f"b{v}", align=plan.vector_align, typ=plan.vector))
    out = []
    for i, a_pointer in enumerate(a_elements):
        a_elem = e.builder.load(a_pointer, name=f"a{i}.elem", typ=plan.scalar)
        a_value = e.splat(a_elem, name=f"a{i}")
        for v, b_vec in enumerate(b_vecs):
            out.append(e.fma(a_value, b_vec, acc[i * plan.vectors + v], name=f"c{i}_{v}"))
    return out


def _store_whole_tile(
    e: Emitter, acc: list[ir.Value], c: ir.Value, c_row_stride: ir.Value, beta: ir.Value
) -> None:
    """Write a whole tile with plain vector loads and stores: AVX2's masked store is
    microcoded on Zen 3 and cost the MNIST CNN's GEMMs 8% there even with every lane on."""
    plan, b = e.plan, e.builder
    with b.if_else(beta) as (add_old, overwrite):
        for block, adds in ((add_old, True), (overwrite, False)):
            with block:
                for i in range(plan.mr):
                    row = b.mul(e.const(i), c_row_stride, name=f"c_row{i}")
                    for v in range(plan.vectors):
                        at = b.add(row, e.const(v * plan.lanes), name="c_at")
                        ptr = e.vector_at(c, at, f"c{i}_{v}.ptr")
                        value = acc[i * plan.vectors + v]
                        if adds:
                            old = b.load(ptr, align=plan.itemsize, typ=plan.vector)
                            value = b.fadd(value, old, name=f"c{i}_{v}.new")
                        b.store(value, ptr, align=plan.itemsize)


def _store_tile(
    e: Emitter,
    acc: list[ir.Value],
    c: ir.Value,
    c_row_stride: ir.Value,
    mr: ir.Value,
    nr: ir.Value,
    beta: ir.Value,
) -> None:
    """Write the first mr rows and nr columns of the tile to C, adding C's old values if beta,
    with masked loads and stores (an edge tile; a whole one takes _store_whole_tile)."""
    plan, b = e.plan, e.builder
    store_masks = e.column_masks(nr, name="store_mask")
    beta_lanes = e.splat(beta, name="beta_lanes")
    # With beta false the load mask is empty: C is not read, so NaNs in fresh memory cannot leak,
    # and masked-off lanes read -0.0, the identity of fadd (+0.0 would turn -0.0 into +0.0).
    load_masks = [b.and_(m, beta_lanes, name=f"load_mask{v}") for v, m in enumerate(store_masks)]
    negative_zero = ir.Constant(plan.vector, [-0.0] * plan.lanes)
    done = b.append_basic_block("store.done")
    for i in range(plan.mr):
        if i:
            row_block = b.append_basic_block(f"store.row{i}")
            b.cbranch(b.icmp_signed(">", mr, e.const(i), name=f"has_row{i}"), row_block, done)
            b.position_at_end(row_block)
        row = b.mul(e.const(i), c_row_stride, name=f"c_row{i}")
        for v in range(plan.vectors):
            name = f"c{i}_{v}"
            ptr = e.vector_at(c, b.add(row, e.const(v * plan.lanes), name="c_at"), f"{name}.ptr")
            old = e.masked_load(ptr, load_masks[v], negative_zero, name=f"{name}.old")
            new = b.fadd(acc[i * plan.vectors + v], old, name=f"{name}.new")
            e.masked_store(new, ptr, store_masks[v])
    b.branch(done)
    b.position_at_end(done)


def _emit_macro_kernel(
    module: ir.Module,
    plan: GemmPlan,
    micro_kernel: ir.Function,
    strided_kernel: ir.Function,
    rows_kernel: ir.Function,
) -> ir.Function:
    """Emit the macro-kernel: sweep micro-tiles over A[mc, kc] and packed B[kc, nc], with A
    packed at a, or where it lies (strides a_row_stride, a_col_stride, its depth in runs of
    run_length run_stride apart, its rows in runs of row_length, the first row at row_phase
    of its run and row_skip elements more between runs) when a_unpacked."""
    signature = (
        "i64 mc, i64 nc, i64 kc, ptr noalias a, ptr noalias b_packed, ptr noalias c,"
        " i64 c_row_stride, i1 beta, i64 a_row_stride, i64 a_col_stride, i1 a_unpacked,"
        " i64 run_length, i64 run_stride, i64 row_phase, i64 row_length, i64 row_skip"
    )
    fn, e = define_function(module, plan, f"{plan.name}_macro_kernel", signature)
    mc, nc, kc, a_ptr, b_packed, c_ptr, c_row_stride, beta = fn.args[:8]
    a_row_stride, a_col_stride, a_unpacked, run_length, run_stride = fn.args[8:13]
    row_phase, row_length, row_skip = fn.args[13:]
    c = Matrix(c_ptr, c_row_stride, e.const(1))
    irb = e.builder
    rows_contiguous = irb.icmp_signed("==", a_col_stride, e.const(1), name="a_rows_contiguous")
    tile_rows = irb.mul(e.const(plan.mr), a_row_stride, name="tile_rows")

    def column_panel(jr: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        nr = e.min(irb.sub(nc, jr), plan.nr, name="nr")
        b_panel = e.element(b_packed, irb.mul(jr, kc), name="b_panel")

        def row_panel(ir_start: ir.Value, place: list[ir.Value]) -> list[ir.Value]:
            phase, a_at = place
            mr = e.min(irb.sub(mc, ir_start), plan.mr, name="mr")
            c_tile = c.block(e, ir_start, jr, name="c_tile").ptr
            arguments = [b_panel, c_tile, c_row_stride, mr, nr, beta]
            with irb.if_else(a_unpacked) as (unpacked, packed):
                with unpacked:
                    a_rows = e.element(a_ptr, a_at, name="a_rows")
                    in_place = [kc, a_rows, *arguments, a_row_stride, a_col_stride]
                    in_place += [run_length, run_stride, phase, row_length, row_skip]
                    with irb.if_else(rows_contiguous) as (by_rows, by_strides):
                        with by_rows:
                            irb.call(rows_kernel, in_place)
                        with by_strides:
                            irb.call(strided_kernel, in_place)
                with packed:
                    a_panel = e.element(a_ptr, irb.mul(ir_start, kc), name="a_panel")
                    irb.call(micro_kernel, [kc, a_panel, *arguments])
            # The next tile's first row: MR rows on, past the end of its run at most once.
            following = irb.add(phase, e.const(plan.mr), name="following")
            next_run = irb.icmp_signed(">=", following, row_length, name="next_run")
            phase = irb.select(next_run, irb.sub(following, row_length), following)
            a_at = irb.add(a_at, tile_rows)
            a_at = irb.add(a_at, irb.select(next_run, row_skip, e.const(0)), name="a_at")
            return [phase, a_at]

        e.loop("ir", 0, mc, plan.mr, row_panel, [("phase", row_phase), ("a_at", e.const(0))])
        return []

    e.loop("jr", 0, nc, plan.nr, column_panel)
    irb.ret_void()
    return fn


def _flag(e: Emitter, flags: ir.Value, bit: int, name: str = "") -> ir.Value:
    """Return whether flags has bit."""
    masked = e.builder.and_(flags, ir.Constant(I32, bit))
    return e.builder.icmp_signed("!=", masked, ir.Constant(I32, 0), name=name)


def _panels_width(e: Emitter, columns: ir.Value) -> ir.Value:
    """Return columns rounded up to whole panels of NR: the width of a packed B's rows."""
    nr = e.const(e.plan.nr)
    panels = e.builder.sdiv(e.builder.add(columns, e.const(e.plan.nr - 1)), nr)
    return e.builder.mul(panels, nr, name="packed_width")


def _pack_whole_b(
    e: Emitter, pack_b: ir.Function, n: ir.Value, k: ir.Value, b: Matrix, dest: ir.Value
) -> None:
    """Pack all of B[K, N] into dest, depth block after depth block: block pc's panels start
    at row pc of rows N-rounded-up-to-NR wide, where a PACKED_B call finds them."""
    width = _panels_width(e, n)

    def depth_block(pc: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        kc = e.min(e.builder.sub(k, pc), e.plan.kc, name="kc")
        target = e.element(dest, e.builder.mul(pc, width), name="packed_block")
        e.builder.call(pack_b, [kc, n, *b.block(e, pc, 0, name="b_block"), target])
        return []

    e.loop("pc", 0, k, e.plan.kc, depth_block)


def _transpose_column_output(
    e: Emitter,
    m: ir.Value,
    n: ir.Value,
    a: Matrix,
    b: Matrix,
    c_row_stride: ir.Value,
    a_in_runs: ir.Value,
) -> tuple[ir.Value, tuple[ir.Value, ir.Value, Matrix, Matrix]]:
    """Return whether to swap, and (M, N, A, B), swapped to compute C.T = B.T @ A.T when C is
    a contiguous column (and A's depth is not in runs, which only A may have).

    A contiguous column C[M, 1] is also a row C.T[1, M]; as a row it fills one micro-tile row in
    MR instead of one column in NR (matrix @ vector measured 1.6x faster). The products and
    their order over k are the same, so the result is bitwise the same.
    """
    irb = e.builder
    one_column = irb.icmp_signed("==", n, e.const(1), name="one_column")
    contiguous = irb.icmp_signed("==", c_row_stride, e.const(1), name="contiguous_column")
    several_rows = irb.icmp_signed(">", m, e.const(1), name="several_rows")
    swap = irb.and_(irb.and_(one_column, contiguous), several_rows)
    swap = irb.and_(swap, irb.not_(a_in_runs), name="transpose_c")
    return swap, (
        irb.select(swap, n, m, name="m"),
        irb.select(swap, m, n, name="n"),
        b.T.select(e, swap, a, name="a_operand"),
        a.T.select(e, swap, b, name="b_operand"),
    )


def _emit_driver(
    module: ir.Module,
    plan: GemmPlan,
    name: str,
    pack_a: ir.Function,
    pack_b: ir.Function,
    macro_kernel: ir.Function,
    dot: ir.Function,
    rows: ir.Function,
) -> ir.Function:
    """Emit the exported entry: for small products, the dot path or the row path where the
    operands are laid out for one, else the NC / KC / MC block loops around packing and the
    macro-kernel."""
    signature = (
        "i64 M, i64 N, i64 K, ptr a, i64 a_row_stride, i64 a_col_stride,"
        " ptr b, i64 b_row_stride, i64 b_col_stride, ptr c, i64 c_row_stride,"
        " ptr workspace, i32 flags, ptr packed_b, i64 packed_columns, i64 first_column,"
        " i64 run_length, i64 run_stride, i64 row_length, i64 row_stride, i64 first_row"
    )
    fn, e = define_function(module, plan, name, signature, internal=False)
    m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, b_cs, c_ptr, c_rs, workspace, flags = fn.args[:13]
    packed_b, packed_columns, first_column, run_length, run_stride = fn.args[13:18]
    row_length, row_stride, first_row = fn.args[18:]
    irb = e.builder
    with irb.if_then(_flag(e, flags, PACK_B)):
        _pack_whole_b(e, pack_b, n, k, Matrix(b_ptr, b_rs, b_cs), packed_b)
        irb.ret_void()
    accumulate_old = _flag(e, flags, ACCUMULATE, name="accumulate")
    in_runs = irb.and_(
        irb.icmp_signed(">", run_length, e.const(0)),
        irb.icmp_signed("<", run_length, k),
        name="in_runs",
    )
    one_run = irb.select(irb.icmp_signed(">", k, e.const(0)), k, e.const(1), name="one_run")
    run_length = irb.select(in_runs, run_length, one_run, name="run_length")
    row_runs = irb.icmp_signed(">", row_length, e.const(0), name="row_runs")
    in_place_runs = irb.or_(in_runs, row_runs, name="in_place_runs")
    skinny = irb.and_(_flag(e, flags, SKINNY), irb.not_(in_place_runs), name="skinny")
    by_dots = fn.append_basic_block("by_dots")
    not_dots = fn.append_basic_block("not_dots")
    by_rows = fn.append_basic_block("by_rows")
    packed = fn.append_basic_block("packed")
    irb.cbranch(irb.and_(skinny, dot_layout(e, a_cs, b_rs)), by_dots, not_dots)
    irb.position_at_end(by_dots)
    irb.call(dot, [m, n, k, a_ptr, a_rs, b_ptr, b_cs, c_ptr, c_rs, accumulate_old])
    irb.ret_void()
    irb.position_at_end(not_dots)
    b_rows_contiguous = irb.icmp_signed("==", b_cs, e.const(1), name="b_rows_contiguous")
    irb.cbranch(irb.and_(skinny, b_rows_contiguous), by_rows, packed)
    irb.position_at_end(by_rows)
    irb.call(rows, [m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, c_ptr, c_rs, accumulate_old])
    irb.ret_void()
    irb.position_at_end(packed)
    # Without row runs: one run longer than any M, no skip, first row 0.
    row_length = irb.select(row_runs, row_length, e.const(NO_ROW_RUNS), name="row_length")
    first_row = irb.select(row_runs, first_row, e.const(0), name="first_row")
    a_run = e.element(a_ptr, irb.mul(irb.sdiv(first_row, row_length), row_stride), name="first_run")
    first_phase = irb.srem(first_row, row_length, name="first_phase")
    row_skip = irb.sub(row_stride, irb.mul(row_length, a_rs))
    row_skip = irb.select(row_runs, row_skip, e.const(0), name="row_skip")
    swapped, (m, n, a, b) = _transpose_column_output(
        e, m, n, Matrix(a_run, a_rs, a_cs), Matrix(b_ptr, b_rs, b_cs), c_rs, in_place_runs
    )
    c = Matrix(c_ptr, c_rs, e.const(1))
    at_panel = irb.icmp_signed(
        "==", irb.srem(first_column, e.const(plan.nr)), e.const(0), name="at_panel"
    )
    prepacked = irb.and_(
        irb.and_(_flag(e, flags, PACKED_B), irb.not_(swapped)), at_panel, name="prepacked"
    )
    groups, depth_group = _depth_groups(e, k, a, b, run_length, run_stride)
    # A depth in runs packs B per group of runs: a whole B packed ahead has that layout only
    # where one group holds all of K.
    one_group = irb.icmp_signed("==", groups, e.const(1), name="one_group")
    prepacked = irb.and_(prepacked, irb.or_(irb.not_(in_runs), one_group), name="prepacked")
    packed_width = _panels_width(e, packed_columns)
    a_packed = e.element(workspace, plan.packed_b_elements, name="a_packed")
    a_rows_contiguous = irb.icmp_signed("==", a.col_stride, e.const(1), name="a_rows_contiguous")

    def group(g: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        k_g, a_g, b_g, runs = depth_group(g)
        accumulate = irb.or_(accumulate_old, irb.icmp_signed(">", g, e.const(0)), name="added")
        # K = 0 still makes one depth block (of depth 0), so C is overwritten with zeros.
        k_end = irb.select(irb.icmp_signed(">", k_g, e.const(0)), k_g, e.const(1), name="k_end")

        def column_block(jc: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            nc = e.min(irb.sub(n, jc), plan.nc, name="nc")
            few_panels = irb.icmp_signed(
                "<=", nc, e.const(IN_PLACE_ROW_BYTES // plan.itemsize), name="few_panels"
            )
            one_panel = irb.icmp_signed("<=", nc, e.const(plan.nr), name="one_panel")
            by_layout = irb.or_(one_panel, irb.and_(few_panels, a_rows_contiguous))
            in_place = irb.or_(by_layout, in_place_runs, name="a_in_place")

            def depth_block(pc: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                kc = e.min(irb.sub(k_g, pc), plan.kc, name="kc")
                # A prepacked B's depth block pc starts at row pc of panels packed_width wide,
                # and its column jc at panel (first_column + jc) / NR of that block.
                column = irb.add(first_column, jc, name="packed_column")
                ready = e.element(
                    packed_b,
                    irb.add(irb.mul(pc, packed_width), irb.mul(column, kc)),
                    name="b_prepacked",
                )
                with irb.if_then(irb.not_(prepacked)):
                    irb.call(pack_b, [kc, nc, *b_g.block(e, pc, jc, name="b_block"), workspace])
                b_packed = irb.select(prepacked, ready, workspace, name="b_packed")
                later_depth = irb.icmp_signed(">", pc, e.const(0), name="later_depth")
                beta = irb.or_(accumulate, later_depth, name="beta")

                def row_block(ic: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                    mc = e.min(irb.sub(m, ic), plan.mc, name="mc")
                    row = irb.add(first_phase, ic, name="block_row")
                    phase = irb.srem(row, row_length, name="block_phase")
                    run_at = irb.mul(irb.sdiv(row, row_length), row_stride)
                    row_at = irb.add(run_at, irb.mul(phase, a_g.row_stride), name="block_row_at")
                    a_block = a_g.block(e, 0, pc, name="a_block")
                    a_block = Matrix(
                        e.element(a_block.ptr, row_at, name="a_block_rows"),
                        a_block.row_stride,
                        a_block.col_stride,
                    )
                    with irb.if_then(irb.not_(in_place)):
                        irb.call(pack_a, [mc, kc, *a_block, a_packed])
                    a_source = irb.select(in_place, a_block.ptr, a_packed, name="a_source")
                    c_block = c.block(e, ic, jc, name="c_block").ptr
                    strides = [a_block.row_stride, a_block.col_stride, in_place]
                    row_runs = [phase, row_length, row_skip]
                    irb.call(
                        macro_kernel,
                        [mc, nc, kc, a_source, b_packed, c_block, c_rs, beta, *strides, *runs]
                        + row_runs,
                    )
                    return []

                e.loop("ic", 0, m, plan.mc, row_block)
                return []

            e.loop("pc", 0, k_end, plan.kc, depth_block)
            return []

        e.loop("jc", 0, n, plan.nc, column_block)
        return []

    e.loop("group", 0, groups, 1, group)
    irb.ret_void()
    return fn


def _depth_groups(
    e: Emitter, k: ir.Value, a: Matrix, b: Matrix, run_length: ir.Value, run_stride: ir.Value
) -> tuple[ir.Value, Callable[[ir.Value], tuple[ir.Value, Matrix, Matrix, list[ir.Value]]]]:
    """Return the number of depth groups and a function emitting group g's (depth, A, B, [run
    length, run stride]): A's runs go in groups of as many whole runs as one depth block of KC
    holds (a run longer than KC is a group of its own, read as one run), so no depth block
    splits a run. Without runs (run_length >= K) all of K is one group."""
    irb, kc = e.builder, e.const(e.plan.kc)
    fits = irb.icmp_signed("<=", run_length, kc, name="runs_fit")
    per_group = irb.select(fits, irb.sdiv(kc, run_length), e.const(1), name="runs_per_group")
    depth = irb.mul(per_group, run_length, name="group_depth")
    groups = irb.sdiv(irb.add(k, irb.sub(depth, e.const(1))), depth)
    groups = irb.select(irb.icmp_signed(">", groups, e.const(1)), groups, e.const(1), name="groups")

    def group(g: ir.Value) -> tuple[ir.Value, Matrix, Matrix, list[ir.Value]]:
        first = irb.mul(g, depth, name="group_start")
        k_g = e.min(irb.sub(k, first), depth, name="group_depth")
        a_g = Matrix(
            e.element(a.ptr, irb.mul(irb.mul(g, per_group), run_stride), name="a_group"),
            a.row_stride,
            a.col_stride,
        )
        b_g = Matrix(
            e.element(b.ptr, irb.mul(first, b.row_stride), name="b_group"),
            b.row_stride,
            b.col_stride,
        )
        length = irb.select(fits, run_length, k_g, name="group_run_length")
        return k_g, a_g, b_g, [length, run_stride]

    return groups, group
