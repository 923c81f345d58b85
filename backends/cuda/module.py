"""Build the CUDA module of a kernel program in a dialect: one kernel function per launch,
and the launches in order (a scatter-add is two, a loop its body's per step: scan.py; the
copies of update values into their variables come last)."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from graphc.backends.cuda.dialect import KernelDialect
from graphc.backends.cuda.gemm import BLOCK as GEMM_BLOCK
from graphc.backends.cuda.gemm import TILE, emit_gemm
from graphc.backends.cuda.kernel_function import KernelFunction
from graphc.backends.cuda.launches import Launch, Launches, finish_launch
from graphc.backends.cuda.loop_kernels import (
    emit_elementwise,
    emit_rows,
    emit_scatter_add,
    emit_scatter_clear,
)
from graphc.backends.cuda.reduction import block_reductions
from graphc.backends.cuda.scan import copy_kernel, emit_scan
from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.llvm.kernels import KernelContext
from graphc.backends.llvm.mathlib import math_function
from graphc.errors import CompileError

BLOCK = 256  # threads per block of loop kernels and scatters


def commit_kernels(program: KernelProgram) -> list[k.LoopKernel]:
    """Return the kernels copying each update value into its variable."""
    return [
        copy_kernel(f"commit_{variable}", variable, value, program.buffers[value])
        for variable, value in program.updates
    ]


def build_module(
    program: KernelProgram,
    dialect: type[KernelDialect],
    aliases: dict[str, str] | None = None,
    cublas_epilogues: bool = False,
) -> tuple[ir.Module, Launches]:
    """Return the module of program's kernels (and its update copies) and their launches;
    `aliases` maps buffers computed in another's memory (updates in place) to it. With
    `cublas_epilogues`, each matmul's epilogue outside loops is also a kernel of its own,
    for calls that hand the product to cuBLAS (a loop's matmuls run the own kernel: the
    host does not know where the loop has moved their buffers)."""
    module = ir.Module(name="graphc_cuda")
    slots = {name: position for position, name in enumerate(program.buffers)}
    dtypes = {name: spec.dtype for name, spec in program.buffers.items()}
    ctx = KernelContext(
        module, slots, dtypes, program.symbols, math_function, None, 0, dict(aliases or {})
    )

    def emit(kernels: Sequence[k.Kernel], outermost: bool = False) -> Launches:
        launches: Launches = []
        for kernel in kernels:
            if isinstance(kernel, k.ScanKernel):
                launches.append(emit_scan(ctx, kernel, dialect, program.buffers, emit))
                continue
            launches.extend(_emit(ctx, kernel, dialect))
            matmul = kernel if isinstance(kernel, k.MatmulKernel) else None
            if matmul and matmul.epilogue and outermost and cublas_epilogues:
                launches.append(_epilogue(ctx, matmul.name, matmul.epilogue, dialect))
        return launches

    return module, emit([*program.kernels, *commit_kernels(program)], outermost=True)


def _function(ctx: KernelContext, name: str, kernel: k.Kernel, dialect, block: int):
    return KernelFunction(ctx, name, sorted(k.buffers_used(kernel)), dialect, block)


def _epilogue(
    ctx: KernelContext, name: str, epilogue: k.LoopKernel, dialect: type[KernelDialect]
) -> Launch:
    """Return the launch of a matmul's epilogue as an elementwise kernel over its output."""
    kf = _function(ctx, f"{name}_epilogue", epilogue, dialect, BLOCK)
    emit_elementwise(kf, epilogue)
    return finish_launch(name, kf, _product(epilogue.domain), BLOCK, after_cublas=True)


def _emit(ctx: KernelContext, kernel: k.Kernel, dialect: type[KernelDialect]) -> list[Launch]:
    if isinstance(kernel, k.LoopKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, BLOCK)
        reductions, whole = block_reductions(kernel)
        if reductions:
            emit_rows(kf, kernel, reductions, whole)
            rows = kernel.domain if whole else kernel.domain[:-1]
            return [finish_launch(kernel.name, kf, _product(rows), 1)]
        emit_elementwise(kf, kernel)
        return [finish_launch(kernel.name, kf, _product(kernel.domain), BLOCK)]
    if isinstance(kernel, k.MatmulKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, GEMM_BLOCK)
        emit_gemm(kf, kernel)
        tiles = k.imul(_tiles(kernel.m), _tiles(kernel.n))
        return [finish_launch(kernel.name, kf, k.imul(_product(kernel.batch), tiles), 1)]
    if isinstance(kernel, k.ScatterAddKernel):
        clear = _function(ctx, f"{kernel.name}_clear", kernel, dialect, BLOCK)
        emit_scatter_clear(clear, kernel)
        add = _function(ctx, kernel.name, kernel, dialect, BLOCK)
        emit_scatter_add(add, kernel)
        return [
            finish_launch(kernel.name, clear, kernel.out_size, BLOCK),
            finish_launch(kernel.name, add, _product(kernel.domain), BLOCK),
        ]
    raise CompileError(
        f"{kernel.name}: the CUDA backend has no {type(kernel).__name__} kernels yet"
    )


def _product(extents: tuple[k.IntExpr, ...]) -> k.IntExpr:
    total: k.IntExpr = k.IConst(1)
    for extent in extents:
        total = k.imul(total, extent)
    return total


def _tiles(size: k.IntExpr) -> k.IntExpr:
    return k.ibin("div", k.iadd(size, k.IConst(TILE - 1)), k.IConst(TILE))
