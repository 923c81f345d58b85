"""Optimise and JIT-compile an LLVM module for the host CPU with llvmlite."""

from __future__ import annotations

import ctypes.util
import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import llvmlite
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


_MEMORY_CACHE: dict[str, CompiledModule] = {}


def cache_directory() -> Path | None:
    """Return the on-disk cache folder (GRAPHC_CACHE_DIR, default ~/.cache/graphc), or None
    when GRAPHC_CACHE=0 disables it."""
    if os.environ.get("GRAPHC_CACHE", "1") == "0":
        return None
    configured = os.environ.get("GRAPHC_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphc"


def module_key(text: str) -> str:
    """Return the cache key of a module: its IR, graphc's and llvmlite's versions, the CPU."""
    from graphc import __version__

    cpu, features = host_cpu()
    digest = hashlib.sha256()
    for part in (text, __version__, llvmlite.__version__, cpu, features):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def compile_module(module: ir.Module) -> CompiledModule:
    """Return the module optimised at O3 for the host and JIT-compiled, reusing an earlier
    compilation of the same IR from this process or from the on-disk cache."""
    machine = target_machine()
    module.triple = llvm.get_process_triple()
    module.data_layout = str(machine.target_data)
    text = str(module)
    key = module_key(text)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    folder = cache_directory()
    stored = _read_cached(folder, key)
    parsed = llvm.parse_assembly(text)
    parsed.verify()
    if stored is None:
        tuning = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
        builder = llvm.create_pass_builder(machine, tuning)
        builder.getModulePassManager().run(parsed, builder)
        optimized = str(parsed)
    else:
        optimized = stored[1]
    engine = llvm.create_mcjit_compiler(parsed, machine)
    if stored is None:
        engine.set_object_cache(
            notify_func=lambda _module, obj: _write_cached(folder, key, obj, optimized)
        )
    else:
        engine.set_object_cache(getbuffer_func=lambda _module: stored[0])
    engine.finalize_object()
    compiled = CompiledModule(engine, optimized, parsed)
    _MEMORY_CACHE[key] = compiled
    return compiled


def _read_cached(folder: Path | None, key: str) -> tuple[bytes, str] | None:
    if folder is None:
        return None
    try:
        return (folder / f"{key}.o").read_bytes(), (folder / f"{key}.ll").read_text()
    except OSError:
        return None


def _write_cached(folder: Path | None, key: str, obj: bytes, optimized: str) -> None:
    """Store object code and optimised IR atomically; a cache that cannot be written is
    skipped (it only saves time)."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".ll", optimized.encode()), (".o", obj)):
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=suffix)
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, folder / f"{key}{suffix}")
    except OSError:
        return
