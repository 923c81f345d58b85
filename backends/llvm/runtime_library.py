"""Functions compiled once per process and shared by every graph's module: the GEMM
kernels and the thread pool. A graph module only declares them; their JIT address is
registered as a symbol, so compiling a graph does not re-optimise them each time."""

from __future__ import annotations

import ctypes
import functools
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm import gemm
from graphc.backends.llvm.jit import CompiledModule, ModuleSource, compile_module
from graphc.backends.llvm.target import CpuTarget, selected_target
from graphc.backends.llvm.thread_pool import ENTRY_NAME as PARALLEL_NAME
from graphc.backends.llvm.thread_pool import FLUSH_NAME, TASK_TYPE, thread_pool_module

_KEEP_ALIVE: list[CompiledModule] = []
# Two threads compiling their first matmul at once would otherwise both build the GEMM.
_LIBRARY_LOCK = threading.Lock()


@functools.cache
def _gemm_symbol(short: str, target: CpuTarget, narrow: bool) -> str:
    """Compile the dtype's GEMM (of the narrow plan or the other) for target in a module of
    its own and register its symbol; return it. The symbol is named after the plan
    (graphc_gemm_f32_6x64), so targets with different plans never share one; targets with
    the same plan may, harmlessly. The plan describes the module, so a cached GEMM is loaded
    without building its IR."""
    plan = gemm.gemm_plan(short, target, narrow)

    def build() -> ir.Module:
        module = ir.Module(name=plan.name)
        gemm.gemm_function(module, short, target, narrow)
        return module

    source = ModuleSource(f"gemm_function {plan!r}", build, pipeline="vectorised")
    compiled = compile_module(source, target)
    _KEEP_ALIVE.append(compiled)
    llvm.add_symbol(plan.name, compiled.address(plan.name))
    return plan.name


def gemm_symbol(dtype: str, target: CpuTarget | None = None, narrow: bool = False) -> str:
    """Return the symbol of the shared GEMM for dtype (of the narrow plan with narrow),
    compiling and registering it once per target (default: the selected target, as for
    compile_module)."""
    target = target if target is not None else selected_target()
    with _LIBRARY_LOCK:
        return _gemm_symbol(gemm.gemm_plan(dtype, target).short, target, narrow)


def gemm_declaration(
    module: ir.Module, dtype: str, narrow: bool = False, target: CpuTarget | None = None
) -> ir.Function:
    """Return a declaration of the shared GEMM for dtype (of the narrow plan with narrow) in
    module (register_symbols compiles it before the module is loaded)."""
    name = gemm.gemm_plan(dtype, target, narrow).name
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
            pointer,
            i64,
            i64,
        ],
    )
    return ir.Function(module, signature, name)


@functools.cache
def _parallel_symbol() -> str:
    """Compile the thread pool once per process, for the target selected at its first use
    (its code does not depend on the vector ISA), and register graphc_parallel."""
    target = selected_target()
    source = ModuleSource(f"thread_pool_module {target.triple}", lambda: thread_pool_module(target))
    compiled = compile_module(source, target)
    _KEEP_ALIVE.append(compiled)
    llvm.add_symbol(PARALLEL_NAME, compiled.address(PARALLEL_NAME))
    llvm.add_symbol(FLUSH_NAME, compiled.address(FLUSH_NAME))
    return PARALLEL_NAME


def parallel_declaration(module: ir.Module) -> ir.Function:
    """Return a declaration of graphc_parallel(task, record, chunks, threads) in module
    (see thread_pool.py; register_symbols compiles the pool before the module is loaded)."""
    name = PARALLEL_NAME
    if name in module.globals:
        return module.globals[name]
    i64 = ir.IntType(64)
    signature = ir.FunctionType(
        ir.VoidType(), [TASK_TYPE.as_pointer(), ir.IntType(8).as_pointer(), i64, i64]
    )
    return ir.Function(module, signature, name)


def register_symbols(gemms: set[tuple[str, bool]], parallel: bool) -> None:
    """Compile (or load) and register the library functions a graph module calls: the GEMM
    of each (dtype, narrow) it uses and, for a module that splits work over threads, the
    thread pool. A module loaded from a cache was never built, so nothing declared them on
    its way."""
    for dtype, narrow in sorted(gemms):
        gemm_symbol(dtype, narrow=narrow)
    if parallel:
        with _LIBRARY_LOCK:
            _parallel_symbol()


def parallel_address() -> int:
    """Return graphc_parallel's address (compiling the pool on first use), for callers
    outside generated code such as tests."""
    with _LIBRARY_LOCK:
        name = _parallel_symbol()
    return llvm.address_of_symbol(name)


def flush_denormals(on: bool) -> bool:
    """Set or clear flush-to-zero and denormals-are-zero for the calling thread (the pool's
    workers follow the caller); return False where the CPU has no such mode."""
    with _LIBRARY_LOCK:
        _parallel_symbol()
    function = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(llvm.address_of_symbol(FLUSH_NAME))
    return bool(function(int(on)))
