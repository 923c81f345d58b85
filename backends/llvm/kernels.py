"""LLVM functions for kernels: every kernel becomes `void name(i8** table, i64* sizes,
i64* error, i64 lo, i64 hi, i64 thread)`, computing the part [lo, hi) of its work range, so
the entry point can run it on one thread or split it across a thread pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.divided_rows import DividedRow, divided_row, merged_short_rows
from graphc.backends.kernel.index import row_major_offset
from graphc.backends.kernel.reductions import (
    RowCache,
    column_reductions,
    outermost_reductions,
    reduction_groups,
    row_cache,
)
from graphc.backends.kernel.transposes import TILE_COLUMNS, TILE_ROWS, reads_across_rows
from graphc.backends.llvm.expressions import (
    I1,
    I8,
    I32,
    I64,
    ExpressionEmitter,
    Piece,
    Scope,
    memory_type,
    register_type,
)
from graphc.backends.llvm.gemm import PACK_B, PACKED_B, SKINNY, gemm_plan
from graphc.backends.llvm.gemm_dot import DOT_MAX_SIDE, is_small
from graphc.backends.llvm.transposed_copy import block_copy, emit_transposed_copy
from graphc.dtypes import DType, bool_
from graphc.errors import CompileError

I8_PTR = I8.as_pointer()
I64_PTR = I64.as_pointer()
KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [I8_PTR.as_pointer(), I64_PTR, I64_PTR, I64, I64, I64])
KERNEL_ARGS = ("table", "sizes", "error", "lo", "hi", "thread")


@dataclass(frozen=True)
class KernelContext:
    """What kernel emission needs from the module: buffer slots, symbols, math, gemm."""

    module: ir.Module
    slots: dict[str, int]
    dtypes: dict[str, DType]
    symbols: tuple[str, ...]
    math: Callable[[ir.Module, str, str], ir.Function]
    gemm: Callable[[ir.Module, str, bool], ir.Function] | None
    workspace_bytes: int
    # Buffers that share memory with another (an update computed in its variable's place).
    aliases: dict[str, str] = field(default_factory=dict)
    # Whether a pooling window's max and min are compares and selects rather than LLVM's
    # maximum/minimum, which the target has no vector instruction for (x86 without AVX-512).
    window_extrema_by_selects: bool = False
    # Whether short rows run masked vector iterations to their end (`FunctionEmitter.counted`'s
    # `predicated`): with AVX-512's mask registers a masked store is a store. AVX2's
    # vmaskmovps store is microcoded on AMD's Zen 3, and other targets have none: there a
    # row's remainder runs scalar (Zen 3, one thread: the CNN's Adam step at batch 32 7.21 ->
    # 6.69 ms, the decoder's 4.19 -> 3.46, the Transformer block's 49.2 -> 43.2).
    masked_tails: bool = False

    def canonical(self, buffer: str) -> str:
        """Return the name of the buffer whose memory `buffer` is."""
        return self.aliases.get(buffer, buffer)


class FunctionEmitter:
    """Emits one kernel function: argument unpacking, loops, and expression emission."""

    def __init__(
        self,
        ctx: KernelContext,
        name: str,
        function_type: ir.FunctionType = KERNEL_TYPE,
        arg_names: tuple[str, ...] = KERNEL_ARGS,
        buffers: list[str] | None = None,
    ) -> None:
        """Emit into a new function `name`. With `buffers`, the code goes into an inlined
        `name.body` that takes each buffer as a `noalias` pointer (so LLVM vectorises without
        run-time overlap checks), and finish() adds `name` loading them from the table."""
        self.ctx = ctx
        self.name = name
        self._buffers = None if buffers is None else sorted({ctx.canonical(b) for b in buffers})
        if self._buffers is None:
            self.function = ir.Function(ctx.module, function_type, name)
        else:
            pointer_types = [memory_type(ctx.dtypes[b]).as_pointer() for b in self._buffers]
            body_type = ir.FunctionType(
                function_type.return_type, [*function_type.args, *pointer_types]
            )
            self.function = ir.Function(ctx.module, body_type, f"{name}.body")
            self.function.linkage = "internal"
            self.function.attributes.add("alwaysinline")
            arg_names = (*arg_names, *self._buffers)
        self.args = {}
        for arg, label in zip(self.function.args, arg_names, strict=True):
            arg.name = label
            self.args[label] = arg
        self._pointers: dict[str, ir.Value] = {}
        for buffer in self._buffers or ():
            self.args[buffer].add_attribute("noalias")
            self._pointers[buffer] = self.args[buffer]
        self.table, self.sizes, self.error = (self.args[n] for n in ("table", "sizes", "error"))
        # Pointers and sizes are loaded in a prologue block, whatever code asks for them first.
        self.entry = self.function.append_basic_block("prologue")
        body = self.function.append_basic_block("body")
        self._jump = ir.IRBuilder(self.entry).branch(body)
        self.builder = ir.IRBuilder(body)
        self._sizes: dict[str, ir.Value] = {}
        self.expr = ExpressionEmitter(
            ctx.module,
            self.builder,
            self.pointer,
            self.size,
            self.error,
            lambda op, dtype: ctx.math(ctx.module, op, dtype.short),
            self.loop,
            ctx.window_extrema_by_selects,
        )

    def _at_entry(self, make: Callable[[ir.IRBuilder], ir.Value]) -> ir.Value:
        builder = ir.IRBuilder(self.entry)
        builder.position_before(self._jump)
        return make(builder)

    def finish(self) -> ir.Function:
        """Return the kernel function: the body itself, or a wrapper passing its pointers."""
        if self._buffers is None:
            return self.function
        kernel_args = len(self.function.args) - len(self._buffers)
        wrapper = ir.Function(
            self.ctx.module,
            ir.FunctionType(
                self.function.function_type.return_type,
                self.function.function_type.args[:kernel_args],
            ),
            self.name,
        )
        # Kept out of line: each kernel stays a named function in profiles and assembly.
        wrapper.attributes.add("noinline")
        b = ir.IRBuilder(wrapper.append_basic_block("entry"))
        pointers = []
        for buffer in self._buffers:
            slot = self.ctx.slots[buffer]
            raw = b.load(b.gep(wrapper.args[0], [ir.Constant(I64, slot)]), name=f"{buffer}.raw")
            pointers.append(
                b.bitcast(raw, memory_type(self.ctx.dtypes[buffer]).as_pointer(), name=buffer)
            )
        b.call(self.function, [*wrapper.args, *pointers])
        b.ret_void()
        return wrapper

    def pointer(self, buffer: str) -> ir.Value:
        """Return the typed pointer of a buffer, loaded once at function entry."""
        buffer = self.ctx.canonical(buffer)
        if buffer not in self._pointers:
            slot = self.ctx.slots[buffer]
            ty = memory_type(self.ctx.dtypes[buffer]).as_pointer()

            def load(b: ir.IRBuilder) -> ir.Value:
                raw = b.load(b.gep(self.table, [ir.Constant(I64, slot)]), name=f"{buffer}.raw")
                return b.bitcast(raw, ty, name=buffer)

            self._pointers[buffer] = self._at_entry(load)
        return self._pointers[buffer]

    def size(self, symbol: str) -> ir.Value:
        """Return the run-time value of a symbolic dim, loaded once at function entry."""
        if symbol not in self._sizes:
            slot = self.ctx.symbols.index(symbol)
            self._sizes[symbol] = self._at_entry(
                lambda b: b.load(b.gep(self.sizes, [ir.Constant(I64, slot)]), name=symbol)
            )
        return self._sizes[symbol]

    # -- loops ------------------------------------------------------------------------------
    def counted(
        self,
        start,
        end,
        carried,
        body,
        name: str,
        predicated: bool = False,
        kept: bool = False,
        forced: bool = False,
    ) -> list[ir.Value]:
        """Emit `for i in [start, end)` carrying values; body(i, carried) -> new carried.
        `predicated` asks the vectoriser for masked vector iterations to the loop's end
        instead of a scalar remainder (a short row's elements all run in vectors) where the
        target's masked stores are cheap (`KernelContext.masked_tails`); `kept`
        keeps the loop from being unrolled whole before the vectoriser sees it; `forced`
        vectorises it where the cost model would not."""
        b = self.builder
        before = b.block
        head = self.function.append_basic_block(f"{name}.head")
        body_block = self.function.append_basic_block(f"{name}.body")
        done = self.function.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        index = b.phi(I64, name=name)
        index.add_incoming(start, before)
        phis = []
        for position, value in enumerate(carried):
            phi = b.phi(value.type, name=f"{name}.acc{position}")
            phi.add_incoming(value, before)
            phis.append(phi)
        b.cbranch(b.icmp_signed("<", index, end), body_block, done)
        b.position_at_end(body_block)
        updated = body(index, phis)
        latch = b.block
        index.add_incoming(b.add(index, ir.Constant(I64, 1), name=f"{name}.next"), latch)
        for phi, value in zip(phis, updated, strict=True):
            phi.add_incoming(value, latch)
        back = b.branch(head)
        wanted = (
            (_PREDICATE_TAIL, predicated and self.ctx.masked_tails),
            (_KEEP, kept),
            (_VECTOR_LOOP_UNROLLS, kept),
            (_VECTORISE, forced),
        )
        hints = [hint for hint, asked in wanted if asked]
        if hints:
            back.set_metadata("llvm.loop", _loop_id(self.ctx.module, *hints))
        b.position_at_end(done)
        return list(phis)

    def loop(
        self, variables, extents, scope: Scope, initial, step, start: ir.Value | None = None
    ) -> list[ir.Value]:
        """Emit nested loops over variables (row-major); step(scope, flat, carried). The
        outermost runs from start (default 0) to its extent."""

        def level(depth: int, outer: Scope, flat: ir.Value, carried: list[ir.Value]):
            if depth == len(variables):
                return step(outer, flat, carried)
            var, extent = variables[depth], extents[depth]

            def body(index, acc):
                inner = outer.child()
                inner.values[var] = index
                new_flat = self.builder.add(self.builder.mul(flat, extent), index)
                return level(depth + 1, inner, new_flat, acc)

            first = start if depth == 0 and start is not None else ir.Constant(I64, 0)
            return self.counted(first, extent, carried, body, var.name)

        return level(0, scope, ir.Constant(I64, 0), list(initial))

    def load(self, buffer: str, offset: ir.Value) -> ir.Value:
        """Return element `offset` of a buffer, in registers (bool as i1)."""
        dtype = self.ctx.dtypes[buffer]
        pointer = self.builder.gep(self.pointer(buffer), [offset], inbounds=True)
        value = self.builder.load(pointer, align=max(1, dtype.itemsize))
        return self.builder.trunc(value, I1) if dtype == bool_ else value

    def store(self, buffer: str, offset: ir.Value, value: ir.Value) -> None:
        dtype = self.ctx.dtypes[buffer]
        if dtype == bool_:
            value = self.builder.zext(value, I8)
        pointer = self.builder.gep(self.pointer(buffer), [offset], inbounds=True)
        self.builder.store(value, pointer, align=max(1, dtype.itemsize))


def _product(b: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
    total = ir.Constant(I64, 1)
    for v in values:
        total = b.mul(total, v)
    return total


# Rows shorter than this run masked vector iterations to their end: the vectoriser's main
# loop takes 64 floats per iteration on AVX-512 (16 lanes, 4 interleaved), so a row of 14 or
# 25 elements never entered it. Longer rows keep the scalar remainder, which costs less than
# masking every iteration (row softmax of 4096 x 1024 took 3.1 ms instead of 2.3 with masks).
SHORT_ROW = 128
# Rows below this run masked vector iterations to their end too where the scalar remainder
# past the main loop (VECTOR_STEP floats an iteration on AVX-512) would be an eighth of the
# row or more: a flat-windows run of 224 floats left 32 scalar copies after three vector
# iterations (MNIST CNN, one thread: 33.8 -> 32.4 us at batch 1, 2.11 -> 2.01 ms at batch 64;
# with the AVX2 plan, whose main loop takes 32, 1-2% faster).
MASKED_TAIL_ROW = 512
VECTOR_STEP = 64
# The fewest rows of a group (`_emit_row_groups`): shorter groups keep the flat row loop.
ROW_GROUP_LEAST = 8
# Columns of a row whose column reductions (reductions.column_reductions) run together: one
# accumulator per column on the stack.
COLUMN_BLOCK = 256
_PREDICATE_TAIL = ("llvm.loop.vectorize.predicate.enable", True)
# Vectorise a loop the cost model would leave scalar: a short row taken k elements a trip
# (divided_rows.py), whose 14 trips of a 28-wide row it judged too few.
_VECTORISE = ("llvm.loop.vectorize.enable", True)
# A loop of a constant, small trip count is unrolled whole before vectorisation, into scalar
# code: a 28-element im2col row became 28 scalar loads instead of two masked vector ones.
# The vector loop the vectoriser makes of such a loop, which would inherit the hint, may be
# unrolled: a row of 14 is two masked iterations, whose masks then become constants instead
# of being computed from the index in each (MNIST CNN, one thread, Zen 3: batch 64
# 3.34 -> 3.00 ms, batch 1 53 -> 48 us).
_KEEP = ("llvm.loop.unroll.disable", None)
_VECTOR_LOOP_UNROLLS = ("llvm.loop.vectorize.followup_vectorized", (("llvm.loop.isvectorized", 1),))


def masked_row(length: int) -> bool:
    """Return whether a row of a constant length runs masked vector iterations to its end
    (SHORT_ROW, MASKED_TAIL_ROW) rather than a main loop and a scalar remainder."""
    remainder = length % VECTOR_STEP
    return length < SHORT_ROW or (length < MASKED_TAIL_ROW and 8 * remainder >= length)


# A loop hint: a name alone, with a flag (i1) or a count (i32), or with the hints of a followup
# loop (the loop a transformation makes, e.g. the vectoriser's vector loop).
LoopHint = tuple[str, "bool | int | None | tuple[LoopHint, ...]"]


def _loop_id(module: ir.Module, *hints: LoopHint) -> ir.values.MDValue:
    """Return a new loop ID carrying hints: a metadata node whose first operand is itself, as
    LLVM names a loop. llvmlite's add_metadata shares equal nodes and cannot refer to the
    node it makes, so the ID is made directly and pointed at itself."""
    properties = [_hint_node(module, hint) for hint in hints]
    loop_id = ir.values.MDValue(module, properties, name=str(len(module.metadata)))
    loop_id.operands = (loop_id, *properties)
    return loop_id


def _hint_node(module: ir.Module, hint: LoopHint) -> ir.values.MDValue:
    """Return one hint's metadata node: its name, then its flag, count or followup's hints."""
    name, value = hint
    operands: list = [ir.MetaDataString(module, name)]
    if isinstance(value, bool):
        operands.append(ir.Constant(ir.IntType(1), value))
    elif isinstance(value, int):
        operands.append(ir.Constant(ir.IntType(32), value))
    elif value is not None:
        operands.extend(_hint_node(module, inner) for inner in value)
    return module.add_metadata(operands)


def loop_work(emitter: FunctionEmitter, kernel: k.LoopKernel, scope: Scope) -> ir.Value:
    """Return the size of a loop kernel's work range (its domain's element count)."""
    return _product(emitter.builder, [emitter.expr.index(d, scope) for d in kernel.domain])


def loop_split(
    emitter: FunctionEmitter, kernel: k.LoopKernel, scope: Scope
) -> tuple[ir.Value | int, ir.Value | None]:
    """Return a loop kernel's rough cost per element of its domain and the grain it splits
    its range in over threads.

    The cost is its IR nodes plus each reduction's body times its length (per row where the
    kernel hoists the reduction out of rows): an int where there is no reduction, else a
    value of the call's sizes. The grain is None (the default) without reductions; whole
    rows where a reduction is computed once per row (a row split in two would compute it
    twice, and its elements could round differently from one thread's); else single
    elements, each of which reduces many values."""
    reductions = outermost_reductions(store.value for store in kernel.stores)
    nodes = sum(_nodes(store.value, stop_at_reduce=True) for store in kernel.stores)
    if not reductions:
        return max(1, nodes), None
    b = emitter.builder
    index = emitter.expr.index
    row = _row_length(emitter, kernel, scope)
    cost: ir.Value = ir.Constant(I64, nodes)
    grain: ir.Value = ir.Constant(I64, 1)
    for reduction in reductions:
        length = _product(b, [index(extent, scope) for extent in reduction.extents])
        work = b.mul(length, ir.Constant(I64, _nodes(reduction.body, stop_at_reduce=False)))
        if _per_row(kernel, reduction):
            work = b.sdiv(work, row)
            grain = row
        cost = b.add(cost, work)
    return cost, grain


def _per_row(kernel: k.LoopKernel, reduction: k.Reduce) -> bool:
    """Return whether a loop kernel computes a reduction once per row (it does not read the
    innermost variable)."""
    return bool(kernel.vars) and kernel.vars[-1] not in k.free_vars(reduction)


def _row_length(emitter: FunctionEmitter, kernel: k.LoopKernel, scope: Scope) -> ir.Value:
    """Return the elements of one row of a loop kernel's domain (at least 1)."""
    b = emitter.builder
    if not kernel.domain:
        return ir.Constant(I64, 1)
    inner = emitter.expr.index(kernel.domain[-1], scope)
    return b.select(b.icmp_signed(">", inner, ir.Constant(I64, 0)), inner, ir.Constant(I64, 1))


def _nodes(expr, stop_at_reduce: bool) -> int:
    """Return the IR nodes of an expression; a Reduce counts one when stop_at_reduce, else its
    body counts 16 (nested reductions are rare and short)."""
    if isinstance(expr, k.Reduce):
        return 1 if stop_at_reduce else 16 + _nodes(expr.body, stop_at_reduce)
    return 1 + sum(_nodes(child, stop_at_reduce) for child in k.children(expr))


def emit_loop_kernel(ctx: KernelContext, kernel: k.LoopKernel) -> ir.Function:
    """Emit a loop kernel: rows of the domain, row-invariant reductions hoisted out of rows."""
    if not reads_across_rows(kernel):
        kernel = merged_short_rows(kernel) or kernel
    fe = FunctionEmitter(ctx, kernel.name, buffers=sorted(k.buffers_used(kernel)))
    b = fe.builder
    scope = Scope()
    extents = [fe.expr.index(d, scope) for d in kernel.domain]
    if not kernel.domain:
        with b.if_then(b.icmp_signed("<", fe.args["lo"], fe.args["hi"])):
            _emit_stores(fe, kernel, scope, ir.Constant(I64, 0))
        b.ret_void()
        return fe.finish()
    inner_extent = extents[-1]
    outer_vars, inner_var = kernel.vars[:-1], kernel.vars[-1]
    safe_inner = b.select(
        b.icmp_signed(">", inner_extent, ir.Constant(I64, 0)), inner_extent, ir.Constant(I64, 1)
    )
    first_row = b.sdiv(fe.args["lo"], safe_inner, name="first_row")
    end_row = b.sdiv(
        b.add(fe.args["hi"], b.sub(safe_inner, ir.Constant(I64, 1))), safe_inner, name="end_row"
    )
    if reads_across_rows(kernel):
        _emit_transposing(fe, kernel, scope, extents, (first_row, end_row))
        b.ret_void()
        return fe.finish()
    groups = reduction_groups(_row_invariant_reductions(kernel, inner_var))
    columns = column_reductions(kernel)
    short = isinstance(kernel.domain[-1], k.IConst) and masked_row(kernel.domain[-1].value)
    caches: list[RowCache | None] = []
    for group in groups:
        cache = row_cache(kernel, group[0], ctx.dtypes, ctx.canonical) if len(group) == 1 else None
        # A buffer holds one cached body: a second would overwrite the first.
        taken = any(
            c is not None and cache is not None and c.buffer == cache.buffer for c in caches
        )
        caches.append(None if taken else cache)

    plain = not (columns or groups or any(cache is not None for cache in caches))
    divided = divided_row(kernel) if plain else None

    def row_body(row, carried):
        row_scope = _row_scope(scope, outer_vars, row, carried)
        row_start = b.mul(row, inner_extent, name="row_start")
        start, end = _row_part(fe, row_start, ir.Constant(I64, 0), inner_extent)
        for group, cache in zip(groups, caches, strict=True):
            pieces = None
            if cache is not None:
                pieces = _caching_pieces(fe, group[0], cache, row_start, (start, end), inner_extent)
            fe.expr.reductions(group, row_scope, pieces)

        def elements(
            first: ir.Value, last: ir.Value, known: Callable | None = None, kept: bool = False
        ) -> None:
            """Emit the stores of the row's elements [first, last); known(scope, i) puts
            values computed before the loop into each element's scope; kept as for
            FunctionEmitter.counted."""

            def inner_body(i, acc):
                inner_scope = row_scope.child()
                inner_scope.values[inner_var] = i
                if known is not None:
                    known(inner_scope, i)
                offset = b.add(row_start, i)
                for cache in caches:
                    if cache is not None:
                        inner_scope.values[cache.element] = fe.load(cache.buffer, offset)
                _emit_stores(fe, kernel, inner_scope, offset)
                return []

            fe.counted(first, last, [], inner_body, inner_var.name, predicated=short, kept=kept)

        if divided is not None:
            # Whole rows k elements a trip (divided_rows.py); a part of a row as usual.
            zero = ir.Constant(I64, 0)
            whole = b.and_(b.icmp_signed("==", start, zero), b.icmp_signed("==", end, inner_extent))
            with b.if_else(whole) as (whole_row, part_of_row):
                with whole_row:
                    _divided_elements(fe, divided, row_scope, row_start, short)
                with part_of_row:
                    elements(start, end)
        elif columns:
            _column_blocks(fe, columns, inner_var, row_scope, (start, end), elements)
        elif short and not groups:
            # A short row wholly inside this call's part runs with constant bounds: its masked
            # vector iterations then need no run-time trip count (the MNIST CNN's forward at
            # batch 64, rows of 14 and 28: 3.95 -> 3.52 ms, one thread).
            zero = ir.Constant(I64, 0)
            whole = b.and_(b.icmp_signed("==", start, zero), b.icmp_signed("==", end, inner_extent))
            with b.if_else(whole) as (whole_row, part_of_row):
                with whole_row:
                    elements(zero, inner_extent, kept=True)
                with part_of_row:
                    elements(start, end)
        else:
            elements(start, end)
        return _next_indices(b, carried, extents[:-1]) if len(outer_vars) > 1 else []

    if len(outer_vars) > 1 and short and _grouped(kernel):
        _emit_row_groups(fe, outer_vars, extents, (first_row, end_row), row_body)
    elif len(outer_vars) > 1:
        fe.counted(
            first_row, end_row, _indices_of(b, first_row, outer_vars, extents), row_body, "row"
        )
    elif outer_vars:
        fe.counted(first_row, end_row, [], row_body, "row")
    else:
        # One row: its start is visibly 0, so the stores' offsets are the loads' (a row loop
        # would hide that behind row * extent, and the vectoriser's run-time check then fails).
        row_body(ir.Constant(I64, 0), [])
    b.ret_void()
    return fe.finish()


def _grouped(kernel: k.LoopKernel) -> bool:
    """Return whether a loop kernel's rows run in groups (`_emit_row_groups`): unless the
    second-to-last dim is a constant too small for its loop to repay the loop's setup."""
    across = kernel.domain[-2]
    return not isinstance(across, k.IConst) or across.value >= ROW_GROUP_LEAST


def _emit_row_groups(
    fe: FunctionEmitter,
    outer_vars: Sequence[k.Var],
    extents: Sequence[ir.Value],
    rows: tuple[ir.Value, ir.Value],
    row_body: Callable,
) -> None:
    """Emit the rows [first, end) of a domain of at least three dims as a loop over groups of
    rows (the dims but the last two, an odometer) around a loop over the second-to-last dim.
    Its index is then the inner loop's own, so what the row's stores compute from the outer
    indices (a padded window's bounds and offsets) is hoisted out of it: a row of 16 channels
    of a channels-last pool had ~60 instructions of index bookkeeping to its 2 vectors."""
    b = fe.builder
    first_row, end_row = rows
    one, zero = ir.Constant(I64, 1), ir.Constant(I64, 0)
    across = b.select(b.icmp_signed(">", extents[-2], zero), extents[-2], one, name="across")
    first_group = b.sdiv(first_row, across, name="first_group")
    end_group = b.sdiv(b.add(end_row, b.sub(across, one)), across, name="end_group")
    group_vars, group_extents = outer_vars[:-1], extents[:-2]

    def group_body(group: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        indices = list(carried) if len(group_vars) > 1 else [group]
        group_start = b.mul(group, across, name="group_start")
        first = _max(b, b.sub(first_row, group_start), zero)
        last = _min(b, b.sub(end_row, group_start), across)

        def row_in_group(position: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            row_body(b.add(group_start, position, name="row"), [*indices, position])
            return []

        fe.counted(first, last, [], row_in_group, "row")
        return _next_indices(b, carried, group_extents) if len(group_vars) > 1 else []

    if len(group_vars) > 1:
        start = _indices_of(b, first_group, group_vars, group_extents)
        fe.counted(first_group, end_group, start, group_body, "rows")
    else:
        fe.counted(first_group, end_group, [], group_body, "rows")


def _divided_elements(
    fe: FunctionEmitter, divided: DividedRow, row_scope: Scope, row_start: ir.Value, short: bool
) -> None:
    """Emit a whole row `divided.size` elements a trip: trip j stores element size * j + r
    with the stores whose divisions by size are gone, for each r in turn."""
    b = fe.builder
    size = ir.Constant(I64, divided.size)

    def trip(j: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        trip_scope = row_scope.child()
        trip_scope.values[divided.var] = j
        first = b.add(row_start, b.mul(j, size))
        for r, (stores, element) in enumerate(zip(divided.stores, divided.elements, strict=True)):
            _store_values(fe, stores, element, trip_scope, b.add(first, ir.Constant(I64, r)))
        return []

    zero, trips = ir.Constant(I64, 0), ir.Constant(I64, divided.trips)
    fe.counted(zero, trips, [], trip, divided.var.name, predicated=short, kept=True, forced=True)


def _row_scope(scope: Scope, outer_vars, row: ir.Value, carried: list[ir.Value]) -> Scope:
    """Return a row's scope. For a 2-d domain the outer index is the row itself, so a load at
    [i0, i1] and the store at row * width + i1 are visibly the same address. Deeper domains
    carry their outer indices from row to row, an odometer (a division per dim per row was
    most of a short row's time: 14-element rows of a convolution's im2col)."""
    row_scope = scope.child()
    if len(outer_vars) == 1:
        row_scope.values[outer_vars[0]] = row
    else:
        row_scope.values.update(zip(outer_vars, carried, strict=True))
    return row_scope


def _row_part(
    fe: FunctionEmitter, row_start: ir.Value, first: ir.Value, last: ir.Value
) -> tuple[ir.Value, ir.Value]:
    """Return the columns [first, last) of the row at row_start clipped to this call's part
    [lo, hi) of the range."""
    b = fe.builder
    start = _max(b, b.sub(fe.args["lo"], row_start), first)
    return start, _min(b, b.sub(fe.args["hi"], row_start), last)


def _emit_transposing(
    fe: FunctionEmitter,
    kernel: k.LoopKernel,
    scope: Scope,
    extents: list[ir.Value],
    rows: tuple[ir.Value, ir.Value],
) -> None:
    """Emit the rows of a kernel that reads across rows: in blocks transposed in registers
    where it only copies (transposed_copy.block_copy), else in tiles of elements."""
    copy = block_copy(kernel, fe.ctx.dtypes, fe.ctx.canonical)
    if copy is None:
        _emit_row_tiles(fe, kernel, scope, extents, rows)
        return
    outer_vars, inner_var = kernel.vars[:-1], kernel.vars[-1]

    def source_offset(row: ir.Value) -> ir.Value:
        row_scope = scope.child()
        indices = _indices_of(fe.builder, row, outer_vars, extents)
        row_scope.values.update(zip(outer_vars, indices, strict=True))
        row_scope.values[inner_var] = ir.Constant(I64, 0)
        return fe.expr.index(copy.source.offset, row_scope)

    def elementwise(part: tuple[ir.Value, ir.Value]) -> None:
        _emit_row_tiles(fe, kernel, scope, extents, part)

    emit_transposed_copy(fe, kernel, copy, rows, source_offset, elementwise)


def _emit_row_tiles(
    fe: FunctionEmitter,
    kernel: k.LoopKernel,
    scope: Scope,
    extents: list[ir.Value],
    rows: tuple[ir.Value, ir.Value],
) -> None:
    """Emit the rows of a kernel that reads across rows (transposes.reads_across_rows)
    TILE_ROWS at a time, TILE_COLUMNS columns of each in turn: the tile's rows read
    neighbouring elements of the same lines, loaded once for the tile (a 2304 x 256 transpose
    row by row ran at 1 GB/s, a line from memory per element)."""
    b = fe.builder
    first_row, end_row = rows
    outer_vars, inner_var = kernel.vars[:-1], kernel.vars[-1]
    width = extents[-1]
    tile_rows, tile_columns = ir.Constant(I64, TILE_ROWS), ir.Constant(I64, TILE_COLUMNS)
    tiles = b.sdiv(b.add(b.sub(end_row, first_row), ir.Constant(I64, TILE_ROWS - 1)), tile_rows)
    column_tiles = b.sdiv(b.add(width, ir.Constant(I64, TILE_COLUMNS - 1)), tile_columns)
    carries = len(outer_vars) > 1

    def tile(index: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        top = b.add(first_row, b.mul(index, tile_rows), name="tile_top")
        bottom = _min(b, b.add(top, tile_rows), end_row)
        top_indices = _indices_of(b, top, outer_vars, extents) if carries else []

        def columns(column_tile: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            left = b.mul(column_tile, tile_columns, name="tile_left")
            right = _min(b, b.add(left, tile_columns), width)

            def row(row: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                row_scope = _row_scope(scope, outer_vars, row, carried)
                row_start = b.mul(row, width, name="row_start")
                start, end = _row_part(fe, row_start, left, right)

                def element(i: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                    element_scope = row_scope.child()
                    element_scope.values[inner_var] = i
                    _emit_stores(fe, kernel, element_scope, b.add(row_start, i))
                    return []

                fe.counted(start, end, [], element, inner_var.name)
                return _next_indices(b, carried, extents[:-1]) if carries else []

            fe.counted(top, bottom, top_indices, row, "row")
            return []

        fe.counted(ir.Constant(I64, 0), column_tiles, [], columns, "column_tile")
        return []

    fe.counted(ir.Constant(I64, 0), tiles, [], tile, "row_tile")


def _column_blocks(
    fe: FunctionEmitter,
    columns: list[k.Reduce],
    inner: k.Var,
    scope: Scope,
    part: tuple[ir.Value, ir.Value],
    elements: Callable,
) -> None:
    """Emit a row's elements part = [start, end) in blocks of COLUMN_BLOCK, computing the
    column reductions of each block first with the loops swapped: for every step of a
    reduction's own loops, one vector pass over the block's columns into an accumulator per
    column (contiguous loads where the reduction's loop would read down a column)."""
    b = fe.builder
    start, end = part
    block = ir.Constant(I64, COLUMN_BLOCK)

    def accumulator(reduction: k.Reduce) -> ir.Value:
        kind = register_type(reduction.body.dtype)
        return fe._at_entry(lambda entry: entry.alloca(kind, size=COLUMN_BLOCK))

    accumulators = [accumulator(r) for r in columns]
    blocks = b.sdiv(b.add(b.sub(end, start), ir.Constant(I64, COLUMN_BLOCK - 1)), block)

    def one_block(index: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        first = b.add(start, b.mul(index, block), name="block_start")
        width = b.sub(_min(b, b.add(first, block), end), first, name="block_width")
        for reduction, accumulator in zip(columns, accumulators, strict=True):
            identity = fe.expr.identity(reduction.op, reduction.body.dtype)

            def clear(j, _, accumulator=accumulator, identity=identity):
                b.store(identity, b.gep(accumulator, [j]))
                return []

            fe.counted(ir.Constant(I64, 0), width, [], clear, "clear", predicated=True)

            def step(inner_scope, flat, carried, reduction=reduction, accumulator=accumulator):
                def column(j, _):
                    element = inner_scope.child()
                    element.values[inner] = b.add(first, j)
                    pointer = b.gep(accumulator, [j])
                    value = fe.expr.value(reduction.body, element)
                    (total,) = fe.expr.combine(
                        reduction.op, reduction.body.dtype, [b.load(pointer)], value, flat
                    )
                    b.store(total, pointer)
                    return []

                fe.counted(ir.Constant(I64, 0), width, [], column, "column", predicated=True)
                return carried

            extents = [fe.expr.index(x, scope) for x in reduction.extents]
            fe.loop(reduction.vars, extents, scope, [], step)

        def known(element_scope: Scope, i: ir.Value) -> None:
            at = b.sub(i, first)
            for reduction, accumulator in zip(columns, accumulators, strict=True):
                element_scope.values[reduction] = b.load(b.gep(accumulator, [at]))

        elements(first, b.add(first, width), known)
        return []

    fe.counted(ir.Constant(I64, 0), blocks, [], one_block, "block")


def _caching_pieces(
    fe: FunctionEmitter,
    reduction: k.Reduce,
    cache: RowCache,
    row_start: ir.Value,
    part: tuple[ir.Value, ir.Value],
    extent: ir.Value,
) -> list[Piece]:
    """Return a row reduction's range in three pieces, the middle one (the part of the row
    this call computes) storing the body into the cache buffer: elements of the row outside
    it belong to another thread's part, which may already hold final values."""
    (var,) = reduction.vars

    def keep(inner: Scope) -> None:
        offset = fe.builder.add(row_start, inner.values[var])
        fe.store(cache.buffer, offset, fe.expr.value(reduction.body, inner))

    start, end = part
    return [(ir.Constant(I64, 0), start, None), (start, end, keep), (end, extent, None)]


def _emit_stores(fe: FunctionEmitter, kernel: k.LoopKernel, scope: Scope, offset) -> None:
    """Store every value of the element at offset, computing its reductions first (those with
    equal extents in one loop nest). A later store that reads an earlier one's buffer at this
    element (an epilogue) takes the value itself: a load there would be a dependence the
    vectoriser only rules out by a run-time check that then fails."""
    pending = outermost_reductions(store.value for store in kernel.stores)
    for group in reduction_groups(pending, done=scope.values):
        fe.expr.reductions(group, scope)
    _store_values(fe, kernel.stores, row_major_offset(kernel.vars, kernel.domain), scope, offset)


def _store_values(
    fe: FunctionEmitter, stores: Sequence[k.Store], element: k.IntExpr, scope: Scope, offset
) -> None:
    """Store each value of the element whose row-major index is `element` at offset, in order,
    each visible to the later ones as the load of its buffer at that element."""
    for store in stores:
        value = fe.expr.value(store.value, scope)
        fe.store(store.buffer, offset, value)
        scope.values[k.Load(store.buffer, element, fe.ctx.dtypes[store.buffer])] = value


def _max(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _indices_of(
    b: ir.IRBuilder, row: ir.Value, variables: Sequence[k.Var], extents: Sequence[ir.Value]
) -> list[ir.Value]:
    """Return the outer indices of a row (row-major over extents; the outermost is what is
    left of the row, no modulo)."""
    indices: list[ir.Value] = []
    remaining = row
    for depth in reversed(range(1, len(variables))):
        indices.append(b.srem(remaining, extents[depth], name=variables[depth].name))
        remaining = b.sdiv(remaining, extents[depth])
    return [remaining, *reversed(indices)]


def _next_indices(
    b: ir.IRBuilder, indices: Sequence[ir.Value], extents: Sequence[ir.Value]
) -> list[ir.Value]:
    """Return the outer indices of the next row: the innermost goes up by one, and a dim that
    reaches its extent goes back to 0 and carries into the one outside it."""
    one, zero = ir.Constant(I64, 1), ir.Constant(I64, 0)
    following = list(indices)
    carry = ir.Constant(ir.IntType(1), 1)
    for depth in reversed(range(1, len(indices))):
        bumped = b.add(indices[depth], one)
        wraps = b.icmp_signed(">=", bumped, extents[depth])
        following[depth] = b.select(carry, b.select(wraps, zero, bumped), indices[depth])
        carry = b.and_(carry, wraps)
    following[0] = b.add(indices[0], b.zext(carry, I64))
    return following


def _row_invariant_reductions(kernel: k.LoopKernel, inner: k.Var) -> list[k.Reduce]:
    """Return the outermost Reduce subexpressions that do not read the innermost variable
    (only whole reductions move; one nested in another's body stays with its loop)."""
    found = outermost_reductions(store.value for store in kernel.stores)
    return [reduction for reduction in found if inner not in k.free_vars(reduction)]


def matmul_work(
    emitter: FunctionEmitter, kernel: k.MatmulKernel, scope: Scope
) -> tuple[ir.Value, ir.Value]:
    """Return a matmul's work range and the flops per unit of it: the rows of its matrices
    one after another, if a matrix has at least as many rows as columns, else the columns
    (of every matrix). The kernel reads lo and hi the same way."""
    b = emitter.builder
    index = emitter.expr.index
    m, n, depth = index(kernel.m, scope), index(kernel.n, scope), index(kernel.k, scope)
    batch = _product(b, [index(d, scope) for d in kernel.batch])
    two = ir.Constant(I64, 2)
    by_rows = b.icmp_signed(">=", m, n)
    total = b.select(by_rows, b.mul(batch, m), n)
    cost = b.select(by_rows, b.mul(b.mul(n, depth), two), b.mul(b.mul(m, depth), b.mul(batch, two)))
    return total, cost


def narrow_gemm(kernel: k.MatmulKernel) -> bool:
    """Return whether a matmul calls the narrow plan's GEMM: its columns are a constant that
    fits the narrow tile, and no B packed for the other plan waits for it. Products of at
    most DOT_MAX_SIDE columns take the skinny paths, which gain less from the narrow tile
    than compiling its GEMM costs (0.3 s, once per machine), so they keep the other plan;
    a product whose A's depth is in runs never takes them."""
    if kernel.packed_b is not None or not isinstance(kernel.n, k.IConst):
        return False
    narrow = gemm_plan(kernel.dtype.short, narrow=True)
    fewest = 0 if kernel.a_depth_runs is not None else DOT_MAX_SIDE
    fits = fewest < kernel.n.value <= narrow.nr
    return fits and narrow != gemm_plan(kernel.dtype.short)


def emit_matmul_kernel(ctx: KernelContext, kernel: k.MatmulKernel) -> ir.Function:
    """Emit the GEMM calls of a (batched) matmul over a block of rows or columns, one per
    matrix of the batch (A's depth or rows in runs where it has `Runs`)."""
    buffers = [kernel.a.buffer, kernel.b.buffer, kernel.out, "workspace"]
    if kernel.packed_b is not None:
        buffers.append(kernel.packed_b)
    fe = FunctionEmitter(ctx, kernel.name, buffers=buffers)
    b = fe.builder
    scope = Scope()
    index = fe.expr.index
    m, n, depth = index(kernel.m, scope), index(kernel.n, scope), index(kernel.k, scope)
    # The block: rows lo..hi of the matrices one after another (each matrix's share of them
    # is one GEMM call), or columns lo..hi of every matrix (see matmul_work).
    lo, hi = fe.args["lo"], fe.args["hi"]
    zero = ir.Constant(I64, 0)
    by_rows = b.icmp_signed(">=", m, n, name="by_rows")
    height = _max(b, m, ir.Constant(I64, 1))
    columns = b.select(by_rows, n, b.sub(hi, lo), name="columns")
    column_start = b.select(by_rows, zero, lo, name="column_start")
    a_rs, a_cs = index(kernel.a.strides[-2], scope), index(kernel.a.strides[-1], scope)
    b_rs, b_cs = index(kernel.b.strides[-2], scope), index(kernel.b.strides[-1], scope)
    batch = [index(d, scope) for d in kernel.batch]
    elem = memory_type(kernel.dtype)
    workspace = b.bitcast(fe.pointer("workspace"), I8.as_pointer())
    workspace = b.gep(workspace, [b.mul(fe.args["thread"], ir.Constant(I64, ctx.workspace_bytes))])
    workspace = b.bitcast(workspace, elem.as_pointer())
    if ctx.gemm is None:
        raise CompileError(f"{kernel.name}: a matmul kernel needs the GEMM micro-kernel")
    gemm = ctx.gemm(ctx.module, kernel.dtype.short, narrow_gemm(kernel))
    # Decided on the whole product, so every thread's block takes the same path.
    small = is_small(b, m, n, depth)
    flags = b.select(small, ir.Constant(I32, SKINNY), ir.Constant(I32, 0), name="gemm_flags")
    # A's depth in runs (a window_matmul's kernel rows), or one run of all of it.
    depth_runs = kernel.a_depth_runs
    runs = [depth, ir.Constant(I64, 0)]
    if depth_runs is not None:
        runs = [index(depth_runs.length, scope), index(depth_runs.stride, scope)]
    # A's rows in runs (a window_matmul's output rows): the GEMM finds the block's first row.
    row_runs = kernel.a_row_runs
    runs += [ir.Constant(I64, 0)] * 2
    if row_runs is not None:
        tallest = gemm_plan(kernel.dtype.short, narrow=narrow_gemm(kernel)).mr
        if not (isinstance(row_runs.length, k.IConst) and row_runs.length.value >= tallest):
            raise CompileError(
                f"{kernel.name}: A's rows come in runs of {row_runs.length}, fewer than the "
                f"GEMM's {tallest}-row tiles"
            )
        runs[2:] = [index(row_runs.length, scope), index(row_runs.stride, scope)]
    if kernel.packed_b is None:
        packed_b = ir.Constant(elem.as_pointer(), None)
    else:
        packed_b = b.bitcast(fe.pointer(kernel.packed_b), elem.as_pointer())
        flags = b.or_(flags, ir.Constant(I32, PACKED_B), name="gemm_flags")
    shared_b = kernel.batch and all(
        isinstance(stride, k.IConst) and stride.value == 0 for stride in kernel.b.strides[:-2]
    )
    if shared_b and kernel.packed_b is None:
        flags, packed_b = _pack_shared_b(fe, kernel, gemm, (m, n, depth), flags, workspace)

    def batch_body(flat, carried):
        first_row = b.mul(flat, m)
        row_start = b.select(by_rows, _max(b, b.sub(lo, first_row), zero), zero, name="row_start")
        row_end = b.select(by_rows, _min(b, b.sub(hi, first_row), m), m, name="row_end")
        rows = b.sub(row_end, row_start, name="rows")
        remaining = flat
        a_off, b_off = ir.Constant(I64, 0), ir.Constant(I64, 0)
        for position in reversed(range(len(batch))):
            i = b.srem(remaining, batch[position])
            remaining = b.sdiv(remaining, batch[position])
            a_off = b.add(a_off, b.mul(i, index(kernel.a.strides[position], scope)))
            b_off = b.add(b_off, b.mul(i, index(kernel.b.strides[position], scope)))
        c_off = b.mul(flat, b.mul(m, n))
        if row_runs is None:
            a_off = b.add(a_off, b.mul(row_start, a_rs))
        b_off = b.add(b_off, b.mul(column_start, b_cs))
        c_off = b.add(c_off, b.add(b.mul(row_start, n), column_start))
        a_ptr = b.gep(fe.pointer(kernel.a.buffer), [a_off])
        b_ptr = b.gep(fe.pointer(kernel.b.buffer), [b_off])
        c_ptr = b.gep(fe.pointer(kernel.out), [c_off])
        b.call(
            gemm,
            [
                rows,
                columns,
                depth,
                a_ptr,
                a_rs,
                a_cs,
                b_ptr,
                b_rs,
                b_cs,
                c_ptr,
                n,
                workspace,
                flags,
                packed_b,
                n,
                column_start,
                *runs,
                row_start,
            ],
        )
        return []

    first = b.select(by_rows, b.sdiv(lo, height), zero, name="first_matrix")
    last = b.sdiv(b.add(hi, b.sub(height, ir.Constant(I64, 1))), height)
    end = b.select(by_rows, _min(b, last, _product(b, batch)), _product(b, batch), name="end")
    fe.counted(first, end, [], batch_body, "batch")
    b.ret_void()
    return fe.finish()


def _pack_shared_b(
    fe: FunctionEmitter,
    kernel: k.MatmulKernel,
    gemm: ir.Function,
    sizes: tuple[ir.Value, ir.Value, ir.Value],
    flags: ir.Value,
    workspace: ir.Value,
) -> tuple[ir.Value, ir.Value]:
    """Pack the B that a batched matmul's matrices share once, into the thread's workspace
    (the GEMM's own B block, unused while it reads a packed B), where the block splits rows,
    the product takes the packed path, B fits, and has more than one column (a call computing
    one column may transpose the product and pack its A there instead); return the flags and
    packed_b of its calls. Each call would otherwise pack the same B again (a convolution's
    weights, 64 times at batch 64)."""
    b = fe.builder
    m, n, depth = sizes
    plan = gemm_plan(kernel.dtype.short, narrow=narrow_gemm(kernel))
    panels = b.sdiv(b.add(n, ir.Constant(I64, plan.nr - 1)), ir.Constant(I64, plan.nr))
    size = b.mul(depth, b.mul(panels, ir.Constant(I64, plan.nr)))
    fits = b.icmp_signed("<=", size, ir.Constant(I64, plan.packed_b_elements))
    # A in runs never takes the skinny paths (gemm_function).
    in_runs = kernel.a_depth_runs is not None or kernel.a_row_runs is not None
    packed_path = ir.Constant(ir.IntType(1), 1)
    if not in_runs:
        packed_path = b.icmp_signed("==", flags, ir.Constant(I32, 0))
    splits_rows = b.icmp_signed(">=", m, n)
    columns = b.icmp_signed(">", n, ir.Constant(I64, 1))
    ahead = b.and_(b.and_(b.and_(splits_rows, columns), packed_path), fits, name="b_packed_ahead")
    zero = ir.Constant(I64, 0)
    null = ir.Constant(workspace.type, None)
    with b.if_then(ahead):
        b.call(
            gemm,
            [
                zero,
                n,
                depth,
                null,
                zero,
                zero,
                b.bitcast(fe.pointer(kernel.b.buffer), workspace.type),
                fe.expr.index(kernel.b.strides[-2], Scope()),
                fe.expr.index(kernel.b.strides[-1], Scope()),
                null,
                zero,
                null,
                ir.Constant(I32, PACK_B),
                workspace,
                *[zero] * 7,
            ],
        )
    flags = b.select(ahead, ir.Constant(I32, PACKED_B), flags, name="gemm_flags")
    return flags, b.select(ahead, workspace, null, name="packed_b")


def emit_packing(ctx: KernelContext, fe: FunctionEmitter, kernel: k.MatmulKernel) -> None:
    """Emit, into fe's function (the loop around kernel), the GEMM call packing the matmul's B
    whole into its packed_b buffer, which the kernel then reads at every step."""
    if ctx.gemm is None or kernel.packed_b is None:
        raise CompileError(f"{kernel.name}: packing B needs the GEMM and a packed_b buffer")
    b = fe.builder
    scope = Scope()
    index = fe.expr.index
    elem = memory_type(kernel.dtype).as_pointer()
    zero, null = ir.Constant(I64, 0), ir.Constant(elem, None)
    b.call(
        ctx.gemm(ctx.module, kernel.dtype.short, False),
        [
            zero,
            index(kernel.n, scope),
            index(kernel.k, scope),
            null,
            zero,
            zero,
            b.bitcast(fe.pointer(kernel.b.buffer), elem),
            index(kernel.b.strides[-2], scope),
            index(kernel.b.strides[-1], scope),
            null,
            zero,
            null,
            ir.Constant(I32, PACK_B),
            b.bitcast(fe.pointer(kernel.packed_b), elem),
            *[zero] * 7,
        ],
    )


def emit_scatter_kernel(ctx: KernelContext, kernel: k.ScatterAddKernel) -> ir.Function:
    """Emit a scatter-add: zero the output, then add every source element at its target
    (single-threaded: targets may repeat)."""
    fe = FunctionEmitter(ctx, kernel.name, buffers=sorted(k.buffers_used(kernel)))
    b = fe.builder
    scope = Scope()
    size = fe.expr.index(kernel.out_size, scope)
    zero = ir.Constant(register_type(kernel.dtype), 0.0 if kernel.dtype.is_float else 0)

    def clear(i, carried):
        fe.store(kernel.out, i, zero)
        return []

    with b.if_then(b.icmp_signed("<", fe.args["lo"], fe.args["hi"])):
        fe.counted(ir.Constant(I64, 0), size, [], clear, "clear")
        extents = [fe.expr.index(d, scope) for d in kernel.domain]

        def accumulate(inner: Scope, flat, carried):
            target = fe.expr.index(kernel.target, inner)
            value = fe.expr.value(kernel.value, inner)
            pointer = b.gep(fe.pointer(kernel.out), [target], inbounds=True)
            old = b.load(pointer)
            b.store(b.fadd(old, value) if kernel.dtype.is_float else b.add(old, value), pointer)
            return []

        fe.loop(kernel.vars, extents, scope, [], accumulate)
    b.ret_void()
    return fe.finish()


def emit_sparse_update(ctx: KernelContext, kernel: k.SparseUpdateKernel) -> ir.Function:
    """Emit a sparse update's sparse path (single-threaded): clear the scatter's output at
    each target, add the source into it in order (as the scatter does, so each sum has the
    scatter's bits), then at each target store the update and clear the target again, so a
    target met twice is updated by scale * 0 the second time, which changes nothing. A bad
    index stops it after the first pass, before any variable changes.

    Where the target is a row's start plus the innermost loop variable (an embedding's row
    and column), each pass checks the row's index once and runs along the row in vectors."""
    scatter, update = kernel.scatter, kernel.update
    fe = FunctionEmitter(ctx, kernel.name, buffers=sorted(k.buffers_used(kernel)))
    b = fe.builder
    scope = Scope()
    zero = ir.Constant(register_type(scatter.dtype), 0.0)
    extents = [fe.expr.index(d, scope) for d in scatter.domain]
    (store,) = update.stores
    (element,) = update.vars
    target, last = scatter.target, scatter.vars[-1]
    by_rows = (
        isinstance(target, k.IBin)
        and target.op == "add"
        and target.b == last
        and last not in k.free_vars(target.a)
    )
    row_vars, row_extents = (
        (scatter.vars[:-1], extents[:-1]) if by_rows else (scatter.vars, extents)
    )
    row_start = target.a if by_rows else target  # type: ignore[union-attr]
    row_length = extents[-1] if by_rows else ir.Constant(I64, 1)

    def at_targets(action: Callable[[Scope, ir.Value], None]) -> None:
        def row(outer: Scope, flat: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            start = fe.expr.index(row_start, outer)

            def column(j: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                inner = outer.child()
                if by_rows:
                    inner.values[last] = j
                action(inner, b.add(start, j))
                return []

            fe.counted(ir.Constant(I64, 0), row_length, [], column, "column", by_rows, by_rows)
            return []

        fe.loop(row_vars, row_extents, scope, [], row)

    def clear(inner: Scope, position: ir.Value) -> None:
        fe.store(scatter.out, position, zero)

    def accumulate(inner: Scope, position: ir.Value) -> None:
        total = b.fadd(fe.load(scatter.out, position), fe.expr.value(scatter.value, inner))
        fe.store(scatter.out, position, total)

    def apply(inner: Scope, position: ir.Value) -> None:
        at_target = inner.child()
        at_target.values[element] = position
        fe.store(store.buffer, position, fe.expr.value(store.value, at_target))
        fe.store(scatter.out, position, zero)

    with b.if_then(b.icmp_signed("<", fe.args["lo"], fe.args["hi"])):
        at_targets(clear)
        checked = b.icmp_signed("==", b.load(fe.error), ir.Constant(I64, 0), name="indices_ok")
        with b.if_then(checked):
            at_targets(accumulate)
            at_targets(apply)
    b.ret_void()
    return fe.finish()
