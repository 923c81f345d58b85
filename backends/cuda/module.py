"""Build the CUDA module of a kernel program in a dialect: one kernel function per launch,
and the launches in order (a scatter-add is two; the copies of update values into their
variables come last)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.cuda.dialect import KernelDialect
from graphc.backends.cuda.gemm import BLOCK as GEMM_BLOCK
from graphc.backends.cuda.gemm import TILE, emit_gemm
from graphc.backends.cuda.kernel_function import KernelFunction
from graphc.backends.cuda.loop_kernels import (
    emit_elementwise,
    emit_rows,
    emit_scatter_add,
    emit_scatter_clear,
)
from graphc.backends.cuda.reduction import block_reductions
from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index import Index, dim_expr
from graphc.backends.llvm.kernels import KernelContext
from graphc.backends.llvm.mathlib import math_function
from graphc.errors import CompileError

BLOCK = 256  # threads per block of loop kernels and scatters


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the kernel it belongs to, the symbol to launch, threads per block,
    and the grid: enough blocks for `units` units of work at `per_block` per block (a driver
    may cap it; every kernel loops over what its grid does not cover)."""

    kernel: str
    symbol: str
    block: int
    units: k.IntExpr
    per_block: int


def commit_kernels(program: KernelProgram) -> list[k.LoopKernel]:
    """Return the kernels copying each update value into its variable."""
    kernels = []
    for variable, value in program.updates:
        spec = program.buffers[value]
        domain = tuple(dim_expr(d) for d in spec.shape)
        variables = tuple(k.Var(f"i{position}") for position in range(len(domain)))
        offset = Index(spec.shape, dims=variables).linear()
        store = k.Store(variable, k.Load(value, offset, spec.dtype))
        kernels.append(k.LoopKernel(f"commit_{variable}", domain, variables, (store,)))
    return kernels


def build_module(
    program: KernelProgram, dialect: type[KernelDialect], aliases: dict[str, str] | None = None
) -> tuple[ir.Module, list[Launch]]:
    """Return the module of program's kernels (and its update copies) and their launches;
    `aliases` maps buffers computed in another's memory (updates in place) to it."""
    module = ir.Module(name="graphc_cuda")
    slots = {name: position for position, name in enumerate(program.buffers)}
    dtypes = {name: spec.dtype for name, spec in program.buffers.items()}
    ctx = KernelContext(
        module, slots, dtypes, program.symbols, math_function, None, 0, dict(aliases or {})
    )
    launches: list[Launch] = []
    for kernel in [*program.kernels, *commit_kernels(program)]:
        launches.extend(_emit(ctx, kernel, dialect))
    return module, launches


def _function(ctx: KernelContext, name: str, kernel: k.Kernel, dialect, block: int):
    return KernelFunction(ctx, name, sorted(k.buffers_used(kernel)), dialect, block)


def _emit(ctx: KernelContext, kernel: k.Kernel, dialect: type[KernelDialect]) -> list[Launch]:
    if isinstance(kernel, k.LoopKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, BLOCK)
        reductions, whole = block_reductions(kernel)
        if reductions:
            emit_rows(kf, kernel, reductions, whole)
            rows = kernel.domain if whole else kernel.domain[:-1]
            return [Launch(kernel.name, kf.finish(), BLOCK, _product(rows), 1)]
        emit_elementwise(kf, kernel)
        return [Launch(kernel.name, kf.finish(), BLOCK, _product(kernel.domain), BLOCK)]
    if isinstance(kernel, k.MatmulKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, GEMM_BLOCK)
        emit_gemm(kf, kernel)
        tiles = k.imul(_tiles(kernel.m), _tiles(kernel.n))
        return [
            Launch(kernel.name, kf.finish(), GEMM_BLOCK, k.imul(_product(kernel.batch), tiles), 1)
        ]
    clear = _function(ctx, f"{kernel.name}_clear", kernel, dialect, BLOCK)
    emit_scatter_clear(clear, kernel)
    add = _function(ctx, kernel.name, kernel, dialect, BLOCK)
    emit_scatter_add(add, kernel)
    return [
        Launch(kernel.name, clear.finish(), BLOCK, kernel.out_size, BLOCK),
        Launch(kernel.name, add.finish(), BLOCK, _product(kernel.domain), BLOCK),
    ]


def evaluate(e: k.IntExpr, bindings: Mapping[str, int]) -> int:
    """Return the value of an index expression of sizes for these symbol sizes."""
    if isinstance(e, k.IConst):
        return e.value
    if isinstance(e, k.SymSize):
        return bindings[e.symbol]
    if isinstance(e, k.IBin):
        folded = k.ibin(e.op, k.IConst(evaluate(e.a, bindings)), k.IConst(evaluate(e.b, bindings)))
        assert isinstance(folded, k.IConst)
        return folded.value
    raise CompileError(f"a launch size that depends on data: {e}")


def _product(extents: tuple[k.IntExpr, ...]) -> k.IntExpr:
    total: k.IntExpr = k.IConst(1)
    for extent in extents:
        total = k.imul(total, extent)
    return total


def _tiles(size: k.IntExpr) -> k.IntExpr:
    return k.ibin("div", k.iadd(size, k.IConst(TILE - 1)), k.IConst(TILE))
