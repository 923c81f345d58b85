"""Optimise and JIT-compile an LLVM module for the selected CPU target with llvmlite.

Compiled modules are cached in memory (the most recent ones, plus every one an executable
still uses) and on disk. A disk entry is one file, `<key>.o`: a header line naming the key and
the size and sha256 of each part, then the object code and the optimised IR. An entry is
written to a temporary file in the same folder and renamed into place, so a reader never sees
half of one; it is checked in full before MCJIT sees a byte, and one that fails any check is
deleted and compiled again.

A module is given either as LLVM IR (keyed by its text) or as a ModuleSource: a description
that determines the IR (keyed by the description and a fingerprint of graphc's own source
files), built only when neither cache has it. A process that finds everything on disk then
skips building and printing IR altogether and only loads object code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm import codegen, compile_helpers
from graphc.backends.llvm.target import CpuTarget, can_execute, selected_target
from graphc.errors import CompileError
from graphc.version import __version__

# Compiled modules kept in memory after the last executable using them is gone.
RECENT_MODULES = 64
# A temporary file this old was left by a writer that died; younger ones may be in use.
STALE_TEMPORARY_SECONDS = 600
_ENTRY_MAGIC = b"graphc-cache-entry 1\n"
_HEADER_LIMIT = 4096


def target_machine(target: CpuTarget | None = None) -> llvm.TargetMachine:
    """Return a new target machine for target, default the selected one (GRAPHC_CPU, else
    this CPU); an execution engine takes ownership of it."""
    target = target if target is not None else selected_target()
    return target.target_machine(opt=codegen.OPT_LEVEL, codemodel="jitdefault")


@dataclass(eq=False)
class CompiledModule:
    """A JIT-compiled module: its engine, optimised IR text and entry address.

    Each module is parsed into an LLVM context of its own (the global one never frees the
    constants and types a module adds), and the engine, the machine code and the context are
    freed when the last reference to this object goes away: whoever calls into the code
    holds it."""

    engine: llvm.ExecutionEngine
    optimized_ir: str
    module: llvm.ModuleRef
    context: llvm.ContextRef
    target: CpuTarget | None = None  # what it was compiled for (None: the selected target)
    object_code: bytes = b""  # the machine code MCJIT loaded, kept alive with the engine

    def address(self, name: str) -> int:
        return self.engine.get_function_address(name)

    def assembly(self) -> str:
        """Return the module's assembly for the CPU it was compiled for."""
        context = llvm.create_context()
        module = None
        try:
            module = llvm.parse_assembly(self.optimized_ir, context)
            return target_machine(self.target).emit_assembly(module)
        finally:
            _dispose(None, module, context)

    def __post_init__(self) -> None:
        # Not __del__: when this object dies in a reference cycle, the garbage collector runs
        # the finalisers of everything only the cycle reaches in any order, and llvmlite's own
        # (the context's before the engine's) would free the context under a live engine. The
        # finaliser's registry holds the three, so they stay out of the garbage and are freed
        # here, engine first. At interpreter exit LLVM frees everything with the process.
        finalizer = weakref.finalize(self, _dispose, self.engine, self.module, self.context)
        finalizer.atexit = False


def _dispose(
    engine: llvm.ExecutionEngine | None, module: llvm.ModuleRef | None, context: llvm.ContextRef
) -> None:
    """Free an engine (which owns its module), else a module, then their context: a module
    must go before the context it lives in."""
    if engine is not None:
        engine.close()
    elif module is not None:
        module.close()
    context.close()


_recent: OrderedDict[str, CompiledModule] = OrderedDict()
_live: weakref.WeakValueDictionary[str, CompiledModule] = weakref.WeakValueDictionary()
_memory_lock = threading.Lock()
_cleaned_folders: set[Path] = set()
# How each module asked of compile_module came: compiled by LLVM, loaded from the disk cache,
# or found in memory (compile_counts).
_counts = {"compiled": 0, "loaded": 0, "reused": 0}


def _recall(key: str) -> CompiledModule | None:
    """Return the module compiled under key if this process still has it."""
    with _memory_lock:
        compiled = _live.get(key)
        if compiled is not None:
            _keep_recent(key, compiled)
            _counts["reused"] += 1
        return compiled


def compile_counts() -> dict[str, int]:
    """Return how many modules this process has asked compile_module for, by how each came:
    `compiled` (optimised and compiled by LLVM), `loaded` (object code from the disk cache)
    and `reused` (already in memory). A Function compiles its modules when it is built; a
    call never does, whatever its symbolic sizes (tests count them around calls)."""
    with _memory_lock:
        return dict(_counts)


def _remember(key: str, compiled: CompiledModule) -> None:
    with _memory_lock:
        _live[key] = compiled
        _keep_recent(key, compiled)


def _keep_recent(key: str, compiled: CompiledModule) -> None:
    _recent[key] = compiled
    _recent.move_to_end(key)
    while len(_recent) > RECENT_MODULES:
        _recent.popitem(last=False)


def memory_cache_sizes() -> dict[str, int]:
    """Return how many compiled modules the in-memory cache holds: `recent` (kept by the
    cache itself, at most RECENT_MODULES) and `live` (also those executables still use)."""
    with _memory_lock:
        return {"recent": len(_recent), "live": len(_live)}


def clear_memory_cache() -> None:
    """Forget every compiled module (those in use stay alive in their executables)."""
    with _memory_lock:
        _recent.clear()
        _live.clear()


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


@dataclass(frozen=True)
class ModuleSource:
    """A module known by a description that determines its IR; `build` makes the module and
    runs only when no cache holds the description's compiled code."""

    description: str
    build: Callable[[], ir.Module]
    # How the IR is optimised: "standard" (the O3 pipeline, which vectorises plain loops) or
    # "vectorised" (a short pipeline for IR already written in vectors, such as the GEMM).
    pipeline: str = "standard"


@functools.cache
def source_fingerprint() -> str:
    """Return a hash of graphc's Python sources: the code that turns a ModuleSource's
    description into IR, so a changed code generator never reuses an older entry."""
    folders = {
        Path(folder).resolve()
        for name in ("graphc", "graphc.backends", "graphc.passes")
        for folder in sys.modules[name].__path__
    }
    files = {path for folder in folders for path in folder.rglob("*.py")}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def module_key(text: str, target: CpuTarget | None = None, *, described: bool = False) -> str:
    """Return the cache key of a module: its IR (or, when described, its description and the
    sources' fingerprint), graphc's and llvmlite's versions, and the target's CPU name and
    features (default: the selected target)."""
    target = target if target is not None else selected_target()
    digest = hashlib.sha256()
    parts = [text, __version__, llvmlite.__version__, target.cpu, target.features]
    parts += codegen.LLVM_OPTIONS
    if described:
        parts += ["described", source_fingerprint()]
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def compile_module(
    source: ir.Module | ModuleSource, target: CpuTarget | None = None
) -> CompiledModule:
    """Return the module optimised for target (default: the selected one, see
    target.selected_target; the pipeline a ModuleSource names, else O3) and JIT-compiled,
    reusing an earlier compilation of the same IR (or description) for the same target from
    this process or from the on-disk cache. Object code, fresh or stored, is loaded the same
    way: into an engine over an empty module."""
    return prepare_modules([source], target)[0].load()


@dataclass(eq=False)
class PreparedModule:
    """A module's object code, ready to load: found in memory, on disk, or just compiled."""

    key: str
    target: CpuTarget
    outcome: str  # "reused", "loaded" or "compiled", as compile_counts counts them
    compiled: CompiledModule | None = None  # what memory held
    stored: tuple[bytes, str] | None = None  # object code and optimised IR

    def load(self) -> CompiledModule:
        """Return the module loaded into an engine of its own (or the one memory held). A
        module that calls library functions loads after they are registered."""
        if self.compiled is not None:
            return self.compiled  # counted as reused when memory was asked
        assert self.stored is not None
        compiled = _load_object(*self.stored, target_machine(self.target), self.target)
        _remember(self.key, compiled)
        with _memory_lock:
            _counts[self.outcome] += 1
        return compiled


def prepare_modules(
    sources: list[ir.Module | ModuleSource], target: CpuTarget | None = None
) -> list[PreparedModule]:
    """Return each source's object code for target, as compile_module finds or makes it,
    without loading any: the modules neither cache holds compile side by side, all but the
    last in helper processes where the host has cores to spare (compile_helpers.py)."""
    target = target if target is not None else selected_target()
    if not can_execute(target):
        raise CompileError(f"cannot JIT-compile for {target.cpu}: this CPU cannot run its code")
    machine = target_machine(target)
    folder = cache_directory()
    prepared: list[PreparedModule] = []
    missing: list[tuple[PreparedModule, ir.Module | ModuleSource, str | None]] = []
    for source in sources:
        key, text = _key(source, target, machine)
        compiled = _recall(key)
        if compiled is not None:
            prepared.append(PreparedModule(key, target, "reused", compiled=compiled))
            continue
        entry = PreparedModule(key, target, "loaded", stored=_read_cached(folder, key))
        prepared.append(entry)
        if entry.stored is None:
            entry.outcome = "compiled"
            missing.append((entry, source, text))
    results = _compile([(source, text) for _, source, text in missing], target, machine)
    for (entry, _, _), result in zip(missing, results, strict=True):
        entry.stored = result
        _write_cached(folder, entry.key, *result)
    return prepared


def _compile(
    sources: list[tuple[ir.Module | ModuleSource, str | None]],
    target: CpuTarget,
    machine: llvm.TargetMachine,
) -> list[tuple[bytes, str]]:
    """Return each module's (object code, optimised IR), given with its IR text where it has
    one: all but the last compile in helper processes while this one compiles the last (where
    helper_count allows any), and whatever a helper failed to compile compiles here."""
    helpers = compile_helpers.helper_count(len(sources))
    elsewhere = sources[: len(sources) - 1] if helpers else []
    texts = [_text(source, text, target, machine) for source, text in elsewhere]
    spec = target.machine_spec(codegen.OPT_LEVEL)
    requests = [
        codegen.request(spec, _pipeline(source), text)
        for (source, _), text in zip(elsewhere, texts, strict=True)
    ]
    batch = compile_helpers.HelperBatch(requests, helpers)
    here = [
        codegen.object_code(_text(source, text, target, machine), machine, _pipeline(source))
        for source, text in sources[len(elsewhere) :]
    ]
    sent = [
        result or codegen.object_code(text, machine, _pipeline(source))
        for (source, _), text, result in zip(elsewhere, texts, batch.results(), strict=True)
    ]
    return sent + here


def _key(
    source: ir.Module | ModuleSource, target: CpuTarget, machine: llvm.TargetMachine
) -> tuple[str, str | None]:
    """Return a module's cache key and, for IR given as such, its text (a ModuleSource is
    keyed by its description and built only if no cache has it)."""
    if isinstance(source, ModuleSource):
        description = f"{source.description}\0pipeline {source.pipeline}"
        return module_key(description, target, described=True), None
    text = _prepared_text(source, target, machine)
    return module_key(text, target), text


def _pipeline(source: ir.Module | ModuleSource) -> str:
    return source.pipeline if isinstance(source, ModuleSource) else "standard"


def _text(
    source: ir.Module | ModuleSource,
    text: str | None,
    target: CpuTarget,
    machine: llvm.TargetMachine,
) -> str:
    """Return the module's IR text: text where keying it made it, else the ModuleSource built."""
    if text is not None:
        return text
    assert isinstance(source, ModuleSource)
    return _prepared_text(source.build(), target, machine)


def _prepared_text(module: ir.Module, target: CpuTarget, machine: llvm.TargetMachine) -> str:
    """Return the module's IR text with the target's triple and data layout set."""
    module.triple = target.triple
    module.data_layout = str(machine.target_data)
    return str(module)


def _load_object(
    obj: bytes, optimized: str, machine: llvm.TargetMachine, target: CpuTarget
) -> CompiledModule:
    """Return an engine running stored object code: an empty module plus the object, so no
    IR is parsed (the optimised IR is kept as text for Function.llvm_ir and asm)."""
    context = llvm.create_context()
    empty = engine = None
    try:
        empty = llvm.parse_assembly("", context)
        empty.triple = target.triple
        empty.data_layout = str(machine.target_data)
        engine = llvm.create_mcjit_compiler(empty, machine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
    except BaseException:
        _dispose(engine, empty, context)
        raise
    return CompiledModule(engine, optimized, empty, context, target, obj)


def _entry_path(folder: Path, key: str) -> Path:
    return folder / f"{key}.o"


def _entry_bytes(key: str, obj: bytes, optimized: str) -> bytes:
    """Return the cache entry for key: magic line, header line, object code, optimised IR."""
    ir_bytes = optimized.encode()
    header = {
        "key": key,
        "object": [len(obj), hashlib.sha256(obj).hexdigest()],
        "ir": [len(ir_bytes), hashlib.sha256(ir_bytes).hexdigest()],
    }
    return _ENTRY_MAGIC + json.dumps(header).encode() + b"\n" + obj + ir_bytes


def _parse_entry(key: str, data: bytes) -> tuple[bytes, str] | None:
    """Return (object code, optimised IR) if data is a whole, intact entry for key."""
    if not data.startswith(_ENTRY_MAGIC):
        return None
    start = len(_ENTRY_MAGIC)
    end = data.find(b"\n", start, start + _HEADER_LIMIT)
    if end < 0:
        return None
    try:
        header = json.loads(data[start:end])
        (object_size, object_hash), (ir_size, ir_hash) = header["object"], header["ir"]
        if header["key"] != key or not all(isinstance(n, int) for n in (object_size, ir_size)):
            return None
    except (ValueError, TypeError, KeyError):
        return None
    body = data[end + 1 :]
    if object_size < 0 or ir_size < 0 or len(body) != object_size + ir_size:
        return None
    obj, ir_bytes = body[:object_size], body[object_size:]
    if hashlib.sha256(obj).hexdigest() != object_hash:
        return None
    if hashlib.sha256(ir_bytes).hexdigest() != ir_hash:
        return None
    try:
        return obj, ir_bytes.decode()
    except UnicodeDecodeError:
        return None


def _read_cached(folder: Path | None, key: str) -> tuple[bytes, str] | None:
    """Return the stored (object code, optimised IR) for key, or None; an entry that is not
    intact (truncated, flipped bits, another key's, an older format) is deleted."""
    if folder is None:
        return None
    path = _entry_path(folder, key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    stored = _parse_entry(key, data)
    if stored is None:
        for damaged in (path, folder / f"{key}.ll"):  # `.ll`: the older two-file format
            with contextlib.suppress(OSError):
                damaged.unlink()
    return stored


def _write_cached(folder: Path | None, key: str, obj: bytes, optimized: str) -> None:
    """Store the entry atomically (temporary file, then rename: concurrent writers each
    put a whole entry in place); a cache that cannot be written is skipped (it only saves
    time)."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix="tmp", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(_entry_bytes(key, obj, optimized))
            os.replace(temporary, _entry_path(folder, key))
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        return


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files that writers killed mid-write left behind (once per process
    and folder); ones younger than STALE_TEMPORARY_SECONDS may still be being written."""
    if folder in _cleaned_folders:
        return
    _cleaned_folders.add(folder)
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    for path in folder.glob("tmp*"):
        if path.suffix not in (".part", ".o", ".ll"):  # .o/.ll: the older format's names
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue
