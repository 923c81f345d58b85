"""Reductions a whole block computes together: each thread folds a strided share of the
elements, warps combine their lanes with shuffles, and one warp combines the warps' partials
from shared memory.

argmax and argmin carry (value, flat index) pairs. A thread meets its elements in increasing
order and keeps the first extremum, as the CPU loop does; pairs from different threads are
combined by value, ties (and two NaNs) going to the smaller index, so the block finds the same
first extremum.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.cuda.dialect import WARP, Slot
from graphc.backends.cuda.kernel_function import KernelFunction, bind_indices, product
from graphc.backends.cuda.loops import OpenLoop
from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I64, Scope, register_type
from graphc.dtypes import DType

ARG_REDUCTIONS = ("argmax", "argmin")


def block_reductions(kernel: k.LoopKernel) -> tuple[list[k.Reduce], bool]:
    """Return the reductions a block computes together, each after those its body uses, and
    whether a block takes a whole domain element rather than a row.

    A row's reductions read no variable of the innermost domain dim (softmax's max and sum).
    Failing those, a kernel whose reductions walk their input contiguously (a sum or argmax
    over the last axis) gives each output element a block; other reductions (over a leading
    axis) are left to each thread, whose neighbours then read neighbouring elements."""
    rows = _independent_reductions(kernel, frozenset(kernel.vars[-1:]))
    if rows:
        return rows, False
    elements = _independent_reductions(kernel, frozenset())
    if any(_contiguous(reduction) for reduction in elements):
        return elements, True
    return [], False


def _independent_reductions(kernel: k.LoopKernel, excluded: frozenset[k.Var]) -> list[k.Reduce]:
    """Return the reductions reading none of `excluded` nor an enclosing reduction's
    variables, innermost first."""
    found: list[k.Reduce] = []

    def visit(expr, bound: frozenset[k.Var]) -> None:
        if isinstance(expr, k.Reduce):
            for child in k.children(expr):
                visit(child, bound | frozenset(expr.vars))
            if not k.free_vars(expr) & (bound | excluded) and expr not in found:
                found.append(expr)
            return
        for child in k.children(expr):
            visit(child, bound)

    for store in kernel.stores:
        visit(store.value, frozenset())
    return found


def _contiguous(reduction: k.Reduce) -> bool:
    """Return whether some load in the body steps by one element with the innermost variable."""
    last = reduction.vars[-1]
    for load in k.loads(reduction.body):
        at_zero, at_one = _at(load.offset, last, 0), _at(load.offset, last, 1)
        if at_zero is None or at_one is None:
            continue
        if k.ibin("sub", at_one, at_zero) == k.IConst(1):
            return True
    return False


def _at(e: k.IntExpr, var: k.Var, value: int) -> k.IntExpr | None:
    """Return e with var at value and every other variable at 0, folded (None if e reads
    data)."""
    if isinstance(e, k.Var):
        return k.IConst(value if e == var else 0)
    if isinstance(e, k.IBin):
        a, b = _at(e.a, var, value), _at(e.b, var, value)
        return None if a is None or b is None else k.ibin(e.op, a, b)
    if isinstance(e, (k.IConst, k.SymSize)):
        return e
    return None


def block_reduce(
    kf: KernelFunction, e: k.Reduce, phase_scope: Callable[[], Scope], result: ir.Value
) -> None:
    """Emit, inside a thread region, the block's reduction e (of the current row) into the
    shared `result`, which every thread may read after the closing barrier. phase_scope()
    gives the phase that evaluates e's body its scope."""
    d, b, expr = kf.dialect, kf.builder, kf.expr
    dtype = e.body.dtype
    ty = register_type(dtype)
    arg = e.op in ARG_REDUCTIONS
    slots = [d.private(ty, "acc")] + ([d.private(I64, "at")] if arg else [])
    warps = d.block // WARP
    partials = [
        d.shared(slot.type, warps, f"partial{position}") for position, slot in enumerate(slots)
    ]
    initial = [expr.identity(e.op, dtype)] + ([ir.Constant(I64, 0)] if arg else [])
    scope = phase_scope()
    extents = [expr.index(x, scope) for x in e.extents]
    loop = OpenLoop(b, d.thread_index(), product(b, extents), d.block, "fold", initial)
    inner = scope.child()
    bind_indices(b, inner, e.vars, extents, loop.index)
    value = expr.value(e.body, inner)
    folded = loop.close(expr.combine(e.op, dtype, loop.carried, value, loop.index))
    for slot, mine in zip(slots, folded, strict=True):
        d.set(slot, mine)
    warp_reduce(kf, e.op, dtype, slots)
    with b.if_then(b.icmp_signed("==", d.lane(), ir.Constant(I64, 0))):
        warp = d.warp()
        for slot, partial in zip(slots, partials, strict=True):
            b.store(d.get(slot), b.gep(partial, [warp]))
    d.barrier()
    # Every warp combines the partials (the same ones), so no shuffle sits in a branch.
    lane = d.lane()
    present = b.icmp_signed("<", lane, ir.Constant(I64, warps))
    at = b.select(present, lane, ir.Constant(I64, 0))
    for slot, partial, start in zip(slots, partials, initial, strict=True):
        d.set(slot, b.select(present, b.load(b.gep(partial, [at])), start))
    warp_reduce(kf, e.op, dtype, slots)
    # Lane 0 of the last warp writes: the emulator runs the last warp first, so a barrier
    # missing before or after this shows (its partials, or the result, read unwritten).
    writer = ir.Constant(I64, d.block - WARP)
    with b.if_then(b.icmp_signed("==", d.thread_index(), writer)):
        final = [d.get(slot) for slot in slots]
        b.store(expr.from_i64(final[1], e.dtype) if arg else final[0], result)
    d.barrier()


def warp_reduce(kf: KernelFunction, op: str, dtype: DType, slots: list[Slot]) -> None:
    """Combine the slots' values over each warp into its lane 0 (halving the distance)."""
    d = kf.dialect
    offset = WARP // 2
    while offset:
        others = d.shuffle_down(slots, offset)
        mine = [d.get(slot) for slot in slots]
        if op in ARG_REDUCTIONS:
            merged = _merge_pairs(kf, op, dtype, mine, others)
        else:
            merged = kf.expr.combine(op, dtype, mine[:1], others[0], ir.Constant(I64, 0))
        for slot, value in zip(slots, merged, strict=True):
            d.set(slot, value)
        offset //= 2


def _merge_pairs(
    kf: KernelFunction, op: str, dtype: DType, mine: list[ir.Value], other: list[ir.Value]
) -> list[ir.Value]:
    """Return the (value, index) pair of two that comes first as an extremum: the better
    value, NaN before numbers, the smaller index on a tie."""
    b = kf.builder
    (value, index), (their_value, their_index) = mine, other
    earlier = b.icmp_signed("<", their_index, index)
    relation = ">" if op == "argmax" else "<"
    if dtype.is_float:
        nan, their_nan = (
            b.fcmp_unordered("uno", value, value),
            b.fcmp_unordered("uno", their_value, their_value),
        )
        better = b.fcmp_ordered(relation, their_value, value)
        tie = b.fcmp_ordered("==", their_value, value)
        numbers = b.or_(better, b.and_(tie, earlier))
        take = b.select(their_nan, b.or_(b.not_(nan), earlier), b.and_(b.not_(nan), numbers))
    else:
        better = b.icmp_signed(relation, their_value, value)
        tie = b.icmp_signed("==", their_value, value)
        take = b.or_(better, b.and_(tie, earlier))
    return [b.select(take, their_value, value), b.select(take, their_index, index)]
