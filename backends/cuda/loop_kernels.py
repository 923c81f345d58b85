"""Loop kernels and scatter-adds as CUDA kernels.

A loop kernel with no per-row reduction runs one thread per element over a grid-stride loop.
One whose stores use reductions with one value per row (softmax, logsumexp, layer norm, sums
over the last axis, argmax) runs one block per row: the block computes each such reduction
together (reduction.py), then its threads store the row's elements. Other reductions (over a
leading axis) are folded by each thread for its own element. A scatter-add clears its output
in one kernel and adds every source element with an atomic add in a second.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.cuda.kernel_function import KernelFunction, bind_indices, product
from graphc.backends.cuda.loops import OpenLoop
from graphc.backends.cuda.reduction import block_reduce
from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I64, Scope, register_type


def grid_stride(
    kf: KernelFunction, total: ir.Value, body: Callable[[ir.Value], None], name: str
) -> None:
    """Emit a thread region where the grid's threads visit every index below total."""
    d, b = kf.dialect, kf.builder
    with d.threads():
        block = ir.Constant(I64, d.block)
        first = b.add(b.mul(d.block_index(), block), d.thread_index())
        loop = OpenLoop(b, first, total, b.mul(d.grid_size(), block), name)
        body(loop.index)
        loop.close()


def emit_elementwise(kf: KernelFunction, kernel: k.LoopKernel) -> None:
    """Emit a loop kernel with one thread per element of its domain."""
    uniform = Scope()
    extents = [kf.expr.index(x, uniform) for x in kernel.domain]

    def element(flat: ir.Value) -> None:
        scope = uniform.child()
        bind_indices(kf.builder, scope, kernel.vars, extents, flat)
        for store in kernel.stores:
            kf.store(store.buffer, flat, kf.expr.value(store.value, scope))

    grid_stride(kf, product(kf.builder, extents), element, "element")


def emit_rows(
    kf: KernelFunction, kernel: k.LoopKernel, reductions: list[k.Reduce], whole: bool
) -> None:
    """Emit a loop kernel with one block per row of its domain (per element if `whole`, or
    for a 0-d domain), computing each of `reductions` together first."""
    d, b = kf.dialect, kf.builder
    uniform = Scope()
    extents = [kf.expr.index(x, uniform) for x in kernel.domain]
    columns_var = kernel.vars[-1:] if kernel.vars and not whole else ()
    row_vars = kernel.vars[: len(kernel.vars) - len(columns_var)]
    width = extents[-1] if columns_var else ir.Constant(I64, 1)
    rows = product(b, extents[: len(row_vars)])
    results = [
        d.shared(register_type(r.dtype), 1, f"reduced{position}")
        for position, r in enumerate(reductions)
    ]
    loop = OpenLoop(b, d.block_index(), rows, d.grid_size(), "row")
    row_scope = uniform.child()
    bind_indices(b, row_scope, row_vars, extents[: len(row_vars)], loop.index)
    done: list[tuple[k.Reduce, ir.Value]] = []

    def phase_scope() -> Scope:
        scope = row_scope.child()
        for reduction, result in done:
            scope.values[reduction] = b.load(result)
        return scope

    # One region per row: only barriers separate its phases, so the emulator sees a missing one.
    with d.threads():
        for reduction, result in zip(reductions, results, strict=True):
            block_reduce(kf, reduction, phase_scope, result)
            done.append((reduction, result))
        scope = phase_scope()
        row_start = b.mul(loop.index, width, name="row_start")
        columns = OpenLoop(b, d.thread_index(), width, d.block, "column")
        inner = scope.child()
        if columns_var:
            inner.values[columns_var[0]] = columns.index
        offset = b.add(row_start, columns.index)
        for store in kernel.stores:
            kf.store(store.buffer, offset, kf.expr.value(store.value, inner))
        columns.close()
    loop.close()


def emit_scatter_clear(kf: KernelFunction, kernel: k.ScatterAddKernel) -> None:
    """Emit the zeroing of a scatter-add's output."""
    zero = ir.Constant(register_type(kernel.dtype), 0.0 if kernel.dtype.is_float else 0)
    total = kf.expr.index(kernel.out_size, Scope())
    grid_stride(kf, total, lambda flat: kf.store(kernel.out, flat, zero), "clear")


def emit_scatter_add(kf: KernelFunction, kernel: k.ScatterAddKernel) -> None:
    """Emit the atomic adds of every source element of a scatter-add at its target."""
    b = kf.builder
    uniform = Scope()
    extents = [kf.expr.index(x, uniform) for x in kernel.domain]

    def element(flat: ir.Value) -> None:
        scope = uniform.child()
        bind_indices(b, scope, kernel.vars, extents, flat)
        target = kf.expr.index(kernel.target, scope)
        value = kf.expr.value(kernel.value, scope)
        pointer = b.gep(kf.pointer(kernel.out), [target], inbounds=True)
        b.atomic_rmw("fadd" if kernel.dtype.is_float else "add", pointer, value, "monotonic")

    grid_stride(kf, product(b, extents), element, "add")
