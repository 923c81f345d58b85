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
    the grid: enough blocks for `units` units of work at `per_block` per block (a driver
    may cap it; every kernel loops over what its grid does not cover), and the block-shared
    memory the kernel declares."""

    kernel: str
    symbol: str
    block: int
    units: k.IntExpr
    per_block: int
    shared_bytes: int
    # A matmul's epilogue on its own, launched only after cuBLAS computed the product (the
    # own GEMM kernel applies the epilogue as it stores).
    after_cublas: bool = False

    def grid(self, bindings: Mapping[str, int], max_blocks: int) -> int:
        """Return the number of blocks for these symbol sizes, at most max_blocks."""
        return min(max_blocks, max(1, -(-evaluate(self.units, bindings) // self.per_block)))

    def grid_text(self, max_blocks: int) -> str:
        """Return the grid as a formula of the symbol sizes (a number when they fix it)."""
        if isinstance(self.units, k.IConst):
            return str(self.grid({}, max_blocks))
        blocks = size_text(self.units)
        if self.per_block > 1:
            blocks = f"ceil({blocks} / {self.per_block})"
        return f"min({blocks}, {max_blocks})"


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
    program: KernelProgram,
    dialect: type[KernelDialect],
    aliases: dict[str, str] | None = None,
    cublas_epilogues: bool = False,
) -> tuple[ir.Module, list[Launch]]:
    """Return the module of program's kernels (and its update copies) and their launches;
    `aliases` maps buffers computed in another's memory (updates in place) to it. With
    `cublas_epilogues`, each matmul's epilogue is also a kernel of its own, for calls that
    hand the product to cuBLAS."""
    module = ir.Module(name="graphc_cuda")
    slots = {name: position for position, name in enumerate(program.buffers)}
    dtypes = {name: spec.dtype for name, spec in program.buffers.items()}
    ctx = KernelContext(
        module, slots, dtypes, program.symbols, math_function, None, 0, dict(aliases or {})
    )
    launches: list[Launch] = []
    for kernel in [*program.kernels, *commit_kernels(program)]:
        launches.extend(_emit(ctx, kernel, dialect))
        if cublas_epilogues and isinstance(kernel, k.MatmulKernel) and kernel.epilogue:
            launches.append(_epilogue(ctx, kernel.name, kernel.epilogue, dialect))
    return module, launches


def _function(ctx: KernelContext, name: str, kernel: k.Kernel, dialect, block: int):
    return KernelFunction(ctx, name, sorted(k.buffers_used(kernel)), dialect, block)


def _launch(
    kernel: str, kf: KernelFunction, units: k.IntExpr, per_block: int, after_cublas: bool = False
) -> Launch:
    """Finish a kernel function and return its launch."""
    symbol = kf.finish()
    shared = kf.dialect.shared_bytes
    return Launch(kernel, symbol, kf.block, units, per_block, shared, after_cublas)


def _epilogue(
    ctx: KernelContext, name: str, epilogue: k.LoopKernel, dialect: type[KernelDialect]
) -> Launch:
    """Return the launch of a matmul's epilogue as an elementwise kernel over its output."""
    kf = _function(ctx, f"{name}_epilogue", epilogue, dialect, BLOCK)
    emit_elementwise(kf, epilogue)
    return _launch(name, kf, _product(epilogue.domain), BLOCK, after_cublas=True)


def _emit(ctx: KernelContext, kernel: k.Kernel, dialect: type[KernelDialect]) -> list[Launch]:
    if isinstance(kernel, k.LoopKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, BLOCK)
        reductions, whole = block_reductions(kernel)
        if reductions:
            emit_rows(kf, kernel, reductions, whole)
            rows = kernel.domain if whole else kernel.domain[:-1]
            return [_launch(kernel.name, kf, _product(rows), 1)]
        emit_elementwise(kf, kernel)
        return [_launch(kernel.name, kf, _product(kernel.domain), BLOCK)]
    if isinstance(kernel, k.MatmulKernel):
        kf = _function(ctx, kernel.name, kernel, dialect, GEMM_BLOCK)
        emit_gemm(kf, kernel)
        tiles = k.imul(_tiles(kernel.m), _tiles(kernel.n))
        return [_launch(kernel.name, kf, k.imul(_product(kernel.batch), tiles), 1)]
    if isinstance(kernel, k.ScatterAddKernel):
        clear = _function(ctx, f"{kernel.name}_clear", kernel, dialect, BLOCK)
        emit_scatter_clear(clear, kernel)
        add = _function(ctx, kernel.name, kernel, dialect, BLOCK)
        emit_scatter_add(add, kernel)
        return [
            _launch(kernel.name, clear, kernel.out_size, BLOCK),
            _launch(kernel.name, add, _product(kernel.domain), BLOCK),
        ]
    raise CompileError(
        f"{kernel.name}: the CUDA backend has no {type(kernel).__name__} kernels yet"
    )


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


# How size_text writes the operators of index expressions, with their precedence.
_OPERATORS = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("//", 2), "mod": ("%", 2)}


def size_text(e: k.IntExpr) -> str:
    """Return an index expression of sizes as a formula, such as `(B + 63) // 64 * 4`."""
    if isinstance(e, k.IConst):
        return str(e.value)
    if isinstance(e, k.SymSize):
        return e.symbol
    if isinstance(e, k.IBin) and e.op in _OPERATORS:
        symbol, precedence = _OPERATORS[e.op]
        parts = []
        for side, operand in (("a", e.a), ("b", e.b)):
            text = size_text(operand)
            inner = _OPERATORS.get(operand.op, ("", 3))[1] if isinstance(operand, k.IBin) else 3
            if inner < precedence or (side == "b" and inner == precedence and e.op != "add"):
                text = f"({text})"
            parts.append(text)
        return f"{parts[0]} {symbol} {parts[1]}"
    if isinstance(e, k.IBin):
        return f"{e.op}({size_text(e.a)}, {size_text(e.b)})"
    raise CompileError(f"a launch size that depends on data: {e}")


def _product(extents: tuple[k.IntExpr, ...]) -> k.IntExpr:
    total: k.IntExpr = k.IConst(1)
    for extent in extents:
        total = k.imul(total, extent)
    return total


def _tiles(size: k.IntExpr) -> k.IntExpr:
    return k.ibin("div", k.iadd(size, k.IConst(TILE - 1)), k.IConst(TILE))
