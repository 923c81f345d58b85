"""Optimise and JIT-compile an LLVM module for the host CPU with llvmlite."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

OPT_LEVEL = 3


@functools.cache
def host_cpu() -> tuple[str, str]:
    """Return this CPU's name and feature string (so generated code uses e.g. AVX-512)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def target_machine() -> llvm.TargetMachine:
    """Return a new target machine for this CPU (an execution engine takes ownership of it)."""
    cpu, features = host_cpu()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=cpu, features=features, opt=OPT_LEVEL, codemodel="jitdefault"
    )


@functools.cache
def thread_pool_library() -> bool:
    """Load libgomp (GCC's OpenMP runtime) for GOMP_parallel; return False if it is absent."""
    path = ctypes.util.find_library("gomp")
    if path is None:
        return False
    try:
        llvm.load_library_permanently(path)
    except RuntimeError:
        return False
    return True


@dataclass
class CompiledModule:
    """A JIT-compiled module: its engine (kept alive), optimised IR text and entry address."""

    engine: llvm.ExecutionEngine
    optimized_ir: str
    module: llvm.ModuleRef

    def address(self, name: str) -> int:
        return self.engine.get_function_address(name)

    def assembly(self) -> str:
        """Return the module's assembly for this CPU."""
        return target_machine().emit_assembly(llvm.parse_assembly(self.optimized_ir))


def compile_module(module: ir.Module) -> CompiledModule:
    """Return the module verified, optimised at O3 for the host, and JIT-compiled."""
    machine = target_machine()
    module.triple = llvm.get_process_triple()
    module.data_layout = str(machine.target_data)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    optimized = str(parsed)
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    return CompiledModule(engine, optimized, parsed)
