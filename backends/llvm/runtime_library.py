"""Functions compiled once per process and shared by every graph's module: the GEMM
kernels. A graph module only declares them; their JIT address is registered as a symbol,
so compiling a graph with a matmul does not re-optimise the (large) GEMM each time."""

from __future__ import annotations

import functools

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm import gemm
from graphc.backends.llvm.jit import CompiledModule, compile_module

_KEEP_ALIVE: list[CompiledModule] = []


@functools.cache
def _gemm_symbol(short: str) -> str:
    """Compile the dtype's GEMM in a module of its own and register its symbol; return it."""
    module = ir.Module(name=f"graphc_gemm_{short}")
    function = gemm.gemm_function(module, short)
    compiled = compile_module(module)
    _KEEP_ALIVE.append(compiled)
    llvm.add_symbol(function.name, compiled.address(function.name))
    return function.name


def gemm_declaration(module: ir.Module, dtype: str) -> ir.Function:
    """Return a declaration of the shared GEMM for dtype in module (compiling it once)."""
    name = _gemm_symbol(gemm.gemm_plan(dtype).short)
    if name in module.globals:
        return module.globals[name]
    element = ir.FloatType() if gemm.gemm_plan(dtype).short == "f32" else ir.DoubleType()
    pointer, i64 = element.as_pointer(), ir.IntType(64)
    signature = ir.FunctionType(
        ir.VoidType(),
        [
            i64,
            i64,
            i64,
            pointer,
            i64,
            i64,
            pointer,
            i64,
            i64,
            pointer,
            i64,
            pointer,
            ir.IntType(32),
        ],
    )
    return ir.Function(module, signature, name)
