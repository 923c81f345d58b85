"""Build the LLVM module of a kernel program: one function per kernel and one entry point,
`void graph_main(i8** table, i64* sizes, i64* error, i64 threads)`, that runs every kernel in
order (splitting large ones over graphc's thread pool), stops at the first run-time error,
and only then copies update values into the variables and source outputs into place."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index import dim_expr
from graphc.backends.llvm.expressions import I8, I64, Scope
from graphc.backends.llvm.kernels import (
    FunctionEmitter,
    KernelContext,
    emit_loop_kernel,
    emit_matmul_kernel,
    emit_scatter_kernel,
    loop_work,
    matmul_work,
)
from graphc.backends.llvm.parallel import emit_run
from graphc.dtypes import float32

ENTRY_NAME = "graph_main"
ENTRY_TYPE = ir.FunctionType(
    ir.VoidType(), [I8.as_pointer().as_pointer(), I64.as_pointer(), I64.as_pointer(), I64]
)


def slot_names(program: KernelProgram) -> list[str]:
    """Return the pointer-table layout: every buffer, then the GEMM workspace."""
    return [*program.buffers, "workspace"]


def build_module(
    program: KernelProgram,
    math: Callable[[ir.Module, str, str], ir.Function],
    gemm: Callable[[ir.Module, str], ir.Function] | None,
    workspace_bytes: int,
    parallel: bool,
    aliases: dict[str, str] | None = None,
) -> ir.Module:
    """Return the LLVM module computing program; `aliases` maps buffers that share another's
    memory (updates computed in place) to that buffer."""
    module = ir.Module(name="graphc")
    slots = {name: position for position, name in enumerate(slot_names(program))}
    dtypes = {name: spec.dtype for name, spec in program.buffers.items()}
    dtypes["workspace"] = float32
    ctx = KernelContext(
        module, slots, dtypes, program.symbols, math, gemm, workspace_bytes, dict(aliases or {})
    )
    entry = FunctionEmitter(ctx, ENTRY_NAME, ENTRY_TYPE, ("table", "sizes", "error", "threads"))
    b = entry.builder
    table, sizes, error, threads = entry.function.args
    done = entry.function.append_basic_block("failed")
    for kernel in program.kernels:
        for function, work in _kernel_functions(ctx, entry, kernel):
            emit_run(entry, function, work, threads if parallel else None, table, sizes, error)
            failed = b.icmp_signed("!=", b.load(error), ir.Constant(I64, 0))
            next_block = entry.function.append_basic_block(f"after_{function.name}")
            b.cbranch(failed, done, next_block)
            b.position_at_end(next_block)
    _commit(entry, program)
    b.ret_void()
    b.position_at_end(done)
    b.ret_void()
    return module


# A kernel's function and its work: (the size of its work range, a per-element cost).
KernelCall = tuple[ir.Function, tuple[ir.Value, ir.Value | int]]


def _kernel_functions(ctx, entry: FunctionEmitter, kernel) -> list[KernelCall]:
    scope = Scope()
    if isinstance(kernel, k.LoopKernel):
        return [(emit_loop_kernel(ctx, kernel), (loop_work(entry, kernel, scope), _cost(kernel)))]
    if isinstance(kernel, k.MatmulKernel):
        if ctx.gemm is None:
            raise NotImplementedError("matmul needs the GEMM micro-kernel")
        functions: list[KernelCall] = [
            (emit_matmul_kernel(ctx, kernel), matmul_work(entry, kernel, scope))
        ]
        if kernel.epilogue is not None:
            epilogue = kernel.epilogue
            functions.append(
                (
                    emit_loop_kernel(ctx, epilogue),
                    (loop_work(entry, epilogue, scope), _cost(epilogue)),
                )
            )
        return functions
    return [(emit_scatter_kernel(ctx, kernel), (ir.Constant(I64, 1), 0))]


def _cost(kernel: k.LoopKernel) -> int:
    """Return a rough per-element cost: IR nodes, with each reduction counted 16 times."""

    def size(expr) -> int:
        own = 16 if isinstance(expr, k.Reduce) else 1
        return own + sum(size(child) for child in k.children(expr))

    return max(1, sum(size(store.value) for store in kernel.stores))


def _commit(entry: FunctionEmitter, program: KernelProgram) -> None:
    """Copy each update value into its variable, after every kernel has succeeded."""
    b = entry.builder
    memcpy = entry.ctx.module.declare_intrinsic(
        "llvm.memcpy", [I8.as_pointer(), I8.as_pointer(), I64]
    )
    scope = Scope()
    for target, source in program.updates:
        spec = program.buffers[source]
        count = ir.Constant(I64, 1)
        for d in spec.shape:
            count = b.mul(count, entry.expr.index(dim_expr(d), scope))
        size = b.mul(count, ir.Constant(I64, max(1, spec.dtype.itemsize)))
        dst = b.bitcast(entry.pointer(target), I8.as_pointer())
        src = b.bitcast(entry.pointer(source), I8.as_pointer())
        b.call(memcpy, [dst, src, size, ir.Constant(ir.IntType(1), 0)])
