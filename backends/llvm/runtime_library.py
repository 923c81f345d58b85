"""Functions compiled once per process and shared by every graph's module: the GEMM
kernels. A graph module only declares them; their JIT address is registered as a symbol,
so compiling a graph with a matmul does not re-optimise the (large) GEMM each time."""

from __future__ import annotations

import functools
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm import gemm
from graphc.backends.llvm.jit import CompiledModule, ModuleSource, compile_module
from graphc.backends.llvm.target import CpuTarget, selected_target

_KEEP_ALIVE: list[CompiledModule] = []
# Two threads compiling their first matmul at once would otherwise both build the GEMM.
_LIBRARY_LOCK = threading.Lock()


@functools.cache
def _gemm_symbol(short: str, target: CpuTarget) -> str:
    """Compile the dtype's GEMM for target in a module of its own and register its symbol;
    return it. The symbol is named after the plan (graphc_gemm_f32_6x64), so targets with
    different plans never share one; targets with the same plan may, harmlessly. The plan
    describes the module, so a cached GEMM is loaded without building its IR."""
    plan = gemm.gemm_plan(short, target)

    def build() -> ir.Module:
        module = ir.Module(name=f"graphc_gemm_{short}")
        gemm.gemm_function(module, short, target)
        return module

    compiled = compile_module(ModuleSource(f"gemm_function {plan!r}", build), target)
    _KEEP_ALIVE.append(compiled)
    llvm.add_symbol(plan.name, compiled.address(plan.name))
    return plan.name


def gemm_symbol(dtype: str, target: CpuTarget | None = None) -> str:
    """Return the symbol of the shared GEMM for dtype, compiling and registering it once per
    target (default: the selected target, as for compile_module)."""
    target = target if target is not None else selected_target()
    with _LIBRARY_LOCK:
        return _gemm_symbol(gemm.gemm_plan(dtype, target).short, target)


def gemm_declaration(module: ir.Module, dtype: str, target: CpuTarget | None = None) -> ir.Function:
    """Return a declaration of the shared GEMM for dtype in module."""
    name = gemm_symbol(dtype, target)
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


def register_symbols(matmul_dtypes: set[str]) -> None:
    """Compile (or load) and register the GEMM of each dtype a graph module calls: a module
    loaded from a cache was never built, so nothing declared them on its way."""
    for dtype in sorted(matmul_dtypes):
        gemm_symbol(dtype)
