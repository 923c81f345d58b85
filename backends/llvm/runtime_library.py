"""Functions compiled once per process and shared by every graph's module: the GEMM
kernels and the thread pool. A graph module only declares them; their JIT address is
registered as a symbol, so compiling a graph does not re-optimise them each time."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm import gemm
from graphc.backends.llvm.jit import CompiledModule, ModuleSource, compile_module, prepare_modules
from graphc.backends.llvm.target import CpuTarget, selected_target
from graphc.backends.llvm.thread_pool import ENTRY_NAME as PARALLEL_NAME
from graphc.backends.llvm.thread_pool import FLUSH_NAME, TASK_TYPE, thread_pool_module

_KEEP_ALIVE: list[CompiledModule] = []
# Two threads compiling their first matmul at once would otherwise both build the GEMM.
_LIBRARY_LOCK = threading.Lock()
# The description of each library module whose symbols this process has registered: the first
# target to ask for one compiles it (the pool does not depend on the vector ISA; a GEMM's
# description names its plan, and any target with that plan runs the same kernel).
_registered: set[str] = set()


@dataclass(frozen=True)
class _LibraryModule:
    """A library module and the symbols it defines."""

    source: ModuleSource
    symbols: tuple[str, ...]


def _gemm_module(dtype: str, target: CpuTarget, narrow: bool) -> _LibraryModule:
    """The dtype's GEMM (of the narrow plan or the other) for target in a module of its own.
    The symbol is named after the plan (graphc_gemm_f32_6x64), so targets with different
    plans never share one; targets with the same plan may, harmlessly. The plan describes the
    module, so a cached GEMM is loaded without building its IR."""
    plan = gemm.gemm_plan(dtype, target, narrow)

    def build() -> ir.Module:
        module = ir.Module(name=plan.name)
        gemm.gemm_function(module, plan.short, target, narrow)
        return module

    source = ModuleSource(f"gemm_function {plan!r}", build, pipeline="vectorised")
    return _LibraryModule(source, (plan.name,))


def _pool_module(target: CpuTarget) -> _LibraryModule:
    """The thread pool (its code does not depend on the vector ISA)."""
    source = ModuleSource(f"thread_pool_module {target.triple}", lambda: thread_pool_module(target))
    return _LibraryModule(source, (PARALLEL_NAME, FLUSH_NAME))


def compile_with_library(
    source: ir.Module | ModuleSource, gemms: set[tuple[str, bool]], parallel: bool
) -> CompiledModule:
    """Return a graph module compiled (as compile_module does) and loaded once the library
    functions it calls are registered: the GEMM of each (dtype, narrow) it uses and, for a
    module that splits work over threads, the thread pool. Library modules that neither
    cache holds compile side by side with the graph's (jit.prepare_modules)."""
    target = selected_target()
    wanted = [_gemm_module(dtype, target, narrow) for dtype, narrow in sorted(gemms)]
    wanted += [_pool_module(target)] if parallel else []
    with _LIBRARY_LOCK:
        needed = [module for module in wanted if module.source.description not in _registered]
        if needed:
            prepared = prepare_modules([module.source for module in needed] + [source], target)
            for module, library in zip(needed, prepared[:-1], strict=True):
                _register(module, library.load())
            return prepared[-1].load()
    return compile_module(source, target)


def _register(module: _LibraryModule, compiled: CompiledModule) -> None:
    _KEEP_ALIVE.append(compiled)
    for name in module.symbols:
        llvm.add_symbol(name, compiled.address(name))
    _registered.add(module.source.description)


def _load_pool() -> None:
    """Compile (or load) and register the thread pool unless this process has, for callers
    outside generated code (tests, gc.set_flush_denormal)."""
    pool = _pool_module(selected_target())
    with _LIBRARY_LOCK:
        if pool.source.description not in _registered:
            _register(pool, compile_module(pool.source))


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


def parallel_address() -> int:
    """Return graphc_parallel's address (compiling the pool on first use), for callers
    outside generated code such as tests."""
    _load_pool()
    return llvm.address_of_symbol(PARALLEL_NAME)


def flush_denormals(on: bool) -> bool:
    """Set or clear flush-to-zero and denormals-are-zero for the calling thread (the pool's
    workers follow the caller); return False where the CPU has no such mode."""
    _load_pool()
    function = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(llvm.address_of_symbol(FLUSH_NAME))
    return bool(function(int(on)))
