"""LLVMExecutable: compiles a graph to native code once, then runs it per call.

Per call, Python fills one table of buffer pointers (inputs, variables, constants, fresh
output arrays, and slices of one reused arena for intermediates) and crosses into native
code once; the entry point runs every kernel and applies the updates itself.

The table, the size and error buffers and the arena belong to the executable, and the native
call releases the GIL, so calls of one executable are serialised by its lock; calls of
different executables run in parallel, each on its calling thread's GEMM workspace.
"""

from __future__ import annotations

import ctypes
import functools
import math
import operator
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from graphc.backends.calls import Runner, RunsBound, Storage, undone_on_error
from graphc.backends.kernel import KernelProgram, build_program
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import updates_from_kernels
from graphc.backends.kernel.inplace import in_place_updates
from graphc.backends.kernel.sparse_updates import sparse_updates
from graphc.backends.llvm import gemm
from graphc.backends.llvm.collectives import register_collectives
from graphc.backends.llvm.entry_point import FRAME, RUN_NAME, SHARED, VARIABLE_FIELDS
from graphc.backends.llvm.jit import (
    ModuleSource,
    module_key,
)
from graphc.backends.llvm.kernels import narrow_gemm
from graphc.backends.llvm.mathlib import math_function
from graphc.backends.llvm.memory import (
    ARRAY_DATA_OFFSET,
    PLANS_KEPT,
    TUPLE_ITEMS_OFFSET,
    WORKSPACES,
    ArenaPlanner,
    Workspace,
    data_address,
)
from graphc.backends.llvm.module_source import module_source
from graphc.backends.llvm.prepacked import ROLE as PACKED_ROLE
from graphc.backends.llvm.prepacked import packed_kernels, with_packed_weights
from graphc.backends.llvm.program import (
    ERROR_FIELDS,
    STEP_FIELD,
    build_module,
    slot_names,
)
from graphc.backends.llvm.python_entry import entry_builtins, frame_fields
from graphc.backends.llvm.runtime_library import compile_with_library, gemm_declaration
from graphc.dims import evaluate_shape
from graphc.errors import IndexingError, located
from graphc.graph import Graph
from graphc.passes.fusion import partition
from graphc.recent import RecentValues

_RUN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)
_ON_DEVICE = operator.attrgetter("device_copies")


def thread_count() -> int:
    """Return the threads kernels may use: GRAPHC_NUM_THREADS, else the usable cores."""
    configured = os.environ.get("GRAPHC_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


class LLVMExecutable(RunsBound):
    """A graph compiled to one native entry point."""

    def __init__(self, graph: Graph) -> None:
        graph = updates_from_kernels(graph)
        self.graph = graph
        self.partition = partition(graph)
        program = build_program(graph, self.partition)
        # Updates computed straight into their variable need no copy at the end of a call.
        self._in_place = in_place_updates(program)
        # An embedding's SGD-style update may touch only the rows a step looked up.
        self.program: KernelProgram = with_packed_weights(
            replace(
                sparse_updates(program, self._in_place),
                updates=[(v, u) for v, u in program.updates if u not in self._in_place],
            ),
            graph.updated_storages(),
        )
        threads = thread_count()
        parallel = threads > 1
        workspace = max(gemm.workspace_bytes("f32"), gemm.workspace_bytes("f64"))
        source = module_source(
            build_module,
            self.program,
            math_function,
            gemm_declaration,
            workspace,
            parallel,
            self._in_place,
        )
        self._build = source.build if isinstance(source, ModuleSource) else lambda: source
        register_collectives(self.program.kernels)
        gemms = {
            (kernel.dtype.name, narrow_gemm(kernel))
            for kernel in k.nested_kernels(self.program.kernels)
            if isinstance(kernel, k.MatmulKernel)
        }
        # Holding the compiled module keeps its engine, and so the entry's code, alive.
        self.compiled = compile_with_library(source, gemms, parallel)
        _dump(self.program, lambda: self.llvm_ir, self.compiled)
        self._run_entry = _RUN(self.compiled.address(RUN_NAME))
        self._lock = threading.Lock()
        self._threads = threads
        self._slots = slot_names(self.program)
        self._table = np.zeros(len(self._slots), dtype=np.uint64)
        # The symbols' sizes, then a word per packed weight: nonzero to pack it again.
        self._packed = packed_kernels(self.program)
        self._sizes = np.zeros(
            max(1, len(self.program.symbols) + len(self._packed)), dtype=np.int64
        )
        self._error = np.zeros(ERROR_FIELDS, dtype=np.int64)
        # Each pool thread packs into its own slice of the calling thread's workspace.
        uses_gemm = any(
            isinstance(kernel, k.MatmulKernel) for kernel in k.nested_kernels(self.program.kernels)
        )
        self._workspace_bytes = workspace * self._threads if uses_gemm else 0
        self._workspace_slot = self._slots.index("workspace")
        self._workspace_address = 0
        self._planner = ArenaPlanner(
            self.program, self.program.buffer_lifetimes(), exclude=set(self._in_place)
        )
        # graph_run's arguments; the number of steps is the installed call's.
        self._constants = {
            name: spec.node.attrs["value"]
            for name, spec in self.program.buffers.items()
            if spec.role == "constant"
        }
        self._classify_slots()
        # The table slot of each array a call hands over: its fed arrays, then its outputs'.
        slot_of_input = {position: slot for slot, position in self._input_slots}
        self._array_slots = np.array(
            [slot_of_input.get(position, -1) for position in range(len(graph.inputs))]
            + [slot for slot, _ in self._output_slots],
            dtype=np.int64,
        )
        frame = {
            "table": self._table.ctypes.data,
            "sizes": self._sizes.ctypes.data,
            "error": self._error.ctypes.data,
            "threads": threads,
            "steps": 1,
            "data_offset": ARRAY_DATA_OFFSET or 0,
            "array_count": len(self._array_slots),
            "input_count": len(graph.inputs),
            "array_slots": self._array_slots.ctypes.data,
            "array_bytes": 0,  # the installed call's
            "variable_count": len(self._variable_spans) // VARIABLE_FIELDS,
            "variables": self._variable_spans.ctypes.data,
            "arrays": 0,  # each call's
            "run": self.compiled.address(RUN_NAME),
            **frame_fields(),
        }
        self._frame = np.array([frame[name] for name in FRAME], dtype=np.int64)
        # {screen: run a call on a tuple of its arrays, returning graph_run's status}.
        self._enter = entry_builtins(self._frame) or {
            screen: functools.partial(self._enter_by_ctypes, screen) for screen in (False, True)
        }
        # The bound calls of the most recent symbol sizes, and the one whose sizes and
        # intermediates' addresses the table holds now.
        self._bound_calls: RecentValues[Runner] = RecentValues(PLANS_KEPT)
        self._installed: _BoundCall | None = None
        self._updated = graph.updated_storages()
        # graph_run screens a call's arrays for shared memory where it reads them itself.
        self.screens_memory = TUPLE_ITEMS_OFFSET is not None

    @property
    def llvm_ir(self) -> str:
        """Return the module's IR before optimisation (built again if it came from a cache)."""
        return str(self._build())

    def memory_stats(self) -> dict[str, int]:
        """Return the arena size in bytes (intermediates) of the last call's shapes, the GEMM
        workspace a call needs from its thread's shared one (0 without a matmul), and how
        many updates are computed straight into their variables (the rest are copied), and
        the bytes of the weights kept packed for the GEMM (`prepacked.py`)."""
        return {
            "arena_bytes": self._planner.arena_bytes,
            "workspace_bytes": self._workspace_bytes,
            "packed_weight_bytes": sum(copy.nbytes for copy in self._packed_copies),
            "in_place_updates": len(self._in_place),
            "copied_updates": len(self.program.updates),
        }

    def _classify_slots(self) -> None:
        """Sort the pointer table's slots by where their address comes from, and write the
        ones that never change (constants) once."""
        self._input_slots: list[tuple[int, int]] = []
        self._variable_slots: list[tuple[int, Storage]] = []
        self._output_slots: list[tuple[int, str]] = []
        temps: list[tuple[int, str]] = []
        packed: dict[str, Workspace] = {}
        feeds = {f"in_{node.name}": i for i, node in enumerate(self.graph.inputs)}
        for slot, name in enumerate(self._slots):
            if name == "workspace":
                continue
            spec = self.program.buffers[name]
            if spec.role == "input":
                self._input_slots.append((slot, feeds[name]))
            elif spec.role == "constant":
                self._table[slot] = data_address(self._constants[name])
            elif spec.role == "variable" or name in self._in_place:
                variable = (
                    spec if spec.role == "variable" else self.program.buffers[self._in_place[name]]
                )
                self._variable_slots.append((slot, variable.node.attrs["storage"]))
            elif spec.role == "output":
                self._output_slots.append((slot, name))
            elif spec.role == PACKED_ROLE:  # aligned like the GEMM's workspace
                packed[name] = Workspace(_static_bytes(spec))
                self._table[slot] = packed[name].address
            else:
                temps.append((slot, name))
        # The Variables a call writes come first: it reads them through `value`.
        updated = {id(storage) for storage in self.graph.updated_storages()}
        self._variable_slots.sort(key=lambda entry: id(entry[1]) not in updated)
        self._variable_storages = tuple(storage for _, storage in self._variable_slots)
        written = sum(id(storage) in updated for storage in self._variable_storages)
        self._written_storages = self._variable_storages[:written]
        self._read_storages = self._variable_storages[written:]
        # Each packed weight's copy, the storage it is packed from and the version it holds
        # (-1: none yet; the packing word of each starts nonzero).
        self._packed_copies = [packed[name] for _, name in self._packed]
        buffers = self.program.buffers
        self._packed_storages = [
            buffers[kernel.b.buffer].node.attrs["storage"] for kernel, _ in self._packed
        ]
        self._packed_versions = [-1] * len(self._packed)
        # (slot, bytes, updated) of each Variable's table entry, for graph_run's screen.
        self._variable_spans = np.array(
            [
                (
                    slot,
                    _static_bytes(self.program.buffers[self._slots[slot]]),
                    id(storage) in updated,
                )
                for slot, storage in self._variable_slots
            ],
            dtype=np.int64,
        ).reshape(-1)
        # Whether the table holds the Variables' addresses (their host arrays never move).
        self._variables_pointed = False
        self._temp_slots = np.array([slot for slot, _ in temps], dtype=np.intp)
        self._temp_names = [name for _, name in temps]
        # Where each output buffer's array comes from in out=: the first output it is.
        self._out_positions = [self.program.outputs.index(name) for _, name in self._output_slots]
        self._sources = _result_sources(self.program, self._output_slots, self.graph)

    def bind(self, bindings: Mapping[str, int], steps: int | None = None) -> Runner:
        """Return a function of (feeds, out) that runs the entry for these symbol sizes, or
        `steps` steps per call over arrays stacked along a leading steps dim, with what the
        sizes decide (output shapes, intermediates' places) worked out once."""
        key = (tuple(sorted(bindings.items())), steps)
        runner = self._bound_calls.recall(key)
        if runner is None:
            runner = self._bound_calls.remember(
                key,
                functools.partial(
                    self._run_bound, _BoundCall(self.program, self.graph, bindings, steps)
                ),
            )
        return runner

    def _run_bound(
        self,
        call: _BoundCall,
        feeds: Sequence[np.ndarray],
        out: Sequence[np.ndarray] | None,
        screen: bool = False,
    ) -> list[np.ndarray] | None:
        """Run a call; with `screen`, first let the entry point look for arrays that may share
        memory, returning None (nothing has run) if it finds any."""
        with self._lock:
            if call is not self._installed or call.generation != self._planner.generation:
                self._install(call)
            # The host arrays never move: only a device value to copy in (or device copies to
            # mark stale) asks for more than the first call's addresses.
            storages = self._variable_storages
            if storages and (not self._variables_pointed or any(map(_ON_DEVICE, storages))):
                self._point_at_variables()
            if self._packed:
                self._mark_stale_packs()
            if out is None:
                arrays = [np.empty(shape, dtype) for shape, dtype in call.outputs]
            elif self._sources is None:
                arrays = out if type(out) is list else list(out)
            else:
                arrays = [out[position] for position in self._out_positions]
            if self._workspace_bytes:
                address = WORKSPACES.get(self._workspace_bytes).address
                if address != self._workspace_address:
                    self._table[self._workspace_slot] = self._workspace_address = address
            # The entry reads the arrays' addresses from the objects.
            handed = (*feeds, *arrays)
            try:
                if call.steps is None:
                    status = self._enter[screen](handed)
                    if status == SHARED:
                        return None
                    if status:
                        self._raise_on_error("")
                elif self._run_steps(call.steps, handed, screen) == SHARED:
                    return None
            finally:
                for storage in self._written_storages:
                    storage.mark_host_written()
            if self._sources is None:
                return arrays  # the output buffers' arrays, out's own when it was given
            results = self._collect(arrays, feeds, call.steps)
            if out is None:
                return results
            for target, result in zip(out, results, strict=True):
                if target is not result:
                    np.copyto(target, result)
            return list(out)

    def _enter_by_ctypes(self, screen: bool, handed: tuple) -> int:
        """Run graph_run through ctypes, where native code cannot read CPython's objects:
        write the addresses of the call's arrays (fed, then outputs) into their table slots
        here. Where it cannot read them, it cannot screen them either (screens_memory)."""
        for slot, array in zip(self._array_slots, handed, strict=True):
            if slot >= 0:
                self._table[slot] = data_address(array)
        return self._run_entry(self._frame.ctypes.data)

    def _mark_stale_packs(self) -> None:
        """Set the packing word of each packed weight whose Variable changed since it was
        packed (the entry point packs it again and clears the word)."""
        versions = self._packed_versions
        base = len(self.program.symbols)
        for index, storage in enumerate(self._packed_storages):
            if storage.version != versions[index]:
                self._sizes[base + index] = 1
                versions[index] = storage.version

    def _point_at_variables(self) -> None:
        """Write the addresses of the arrays the variables hold now into the table."""
        arrays = [storage.value for storage in self._written_storages]
        arrays += [storage.current_host() for storage in self._read_storages]
        for (slot, _), array in zip(self._variable_slots, arrays, strict=True):
            self._table[slot] = data_address(array)
        self._variables_pointed = True

    def _install(self, call: _BoundCall) -> None:
        """Write the call's symbol sizes and its intermediates' addresses into the table,
        placing them in the arena again if it was reallocated since they were placed."""
        if call.generation != self._planner.generation:
            offsets, arena = self._planner.plan(call.bindings)
            base = arena.ctypes.data if arena is not None else 0
            call.temp_addresses = np.array(
                [base + offsets[name] for name in self._temp_names], np.uint64
            )
            call.arena_bytes = self._planner.arena_bytes
            call.generation = self._planner.generation
        self._planner.arena_bytes = call.arena_bytes
        self._sizes[: len(call.sizes)] = call.sizes
        self._frame[FRAME.index("steps")] = call.steps or 1
        self._frame[FRAME.index("array_bytes")] = call.array_bytes.ctypes.data
        self._table[self._temp_slots] = call.temp_addresses
        self._installed = call

    def _run_steps(self, steps: int, handed: tuple, screen: bool) -> int:
        """Run the steps entry on the call's arrays and return its status; a step that fails
        gives the Variables back the values they had before the call, and raises."""
        with undone_on_error(self._updated):
            status = self._enter[screen](handed)
            if status == SHARED:
                return status
            if status:
                self._raise_on_error(f" (at step {self._error[STEP_FIELD]} of 0..{steps - 1})")
        return status

    def _raise_on_error(self, where: str) -> None:
        """Raise IndexingError for the bad gather index the entry recorded."""
        _, value, size, axis = (int(v) for v in self._error[:STEP_FIELD])
        raise IndexingError(
            located(f"index {value} is out of bounds for dim {axis} with size {size}{where}", None)
        )

    def _collect(
        self, arrays: list[np.ndarray], feeds: Sequence[np.ndarray], steps: int | None
    ) -> list[np.ndarray]:
        """Return the outputs from the output buffers' arrays, constants and fed arrays."""
        results = []
        for kind, source in self._sources or ():
            if kind == "array":
                results.append(arrays[source])
            elif kind == "copy":
                results.append(arrays[source].copy())
            elif kind == "input":
                results.append(np.array(feeds[source]))
            else:
                constant = self._constants[source]
                results.append(
                    np.array(constant)
                    if steps is None
                    else np.repeat(constant[np.newaxis], steps, axis=0)
                )
        return results


class _BoundCall:
    """What a call with given symbol sizes (and steps per call) needs besides its arrays: the
    sizes to pass, each output buffer's shape and dtype, and the intermediates' addresses
    in the arena, placed when the call is first installed and again when the arena moves."""

    __slots__ = (
        "arena_bytes",
        "array_bytes",
        "bindings",
        "generation",
        "outputs",
        "sizes",
        "steps",
        "temp_addresses",
    )

    def __init__(
        self,
        program: KernelProgram,
        graph: Graph,
        bindings: Mapping[str, int],
        steps: int | None,
    ):
        self.bindings = dict(bindings)
        self.steps = steps
        self.sizes = np.array([bindings[symbol] for symbol in program.symbols], np.int64)
        lead = () if steps is None else (steps,)
        self.outputs = [
            ((*lead, *evaluate_shape(spec.shape, bindings)), np.dtype(spec.dtype.numpy))
            for spec in program.buffers.values()
            if spec.role == "output"
        ]
        inputs = [
            ((*lead, *evaluate_shape(node.type.shape, bindings)), np.dtype(node.type.dtype.numpy))
            for node in graph.inputs
        ]
        # The bytes of each array the call hands over (fed, then outputs), for the screen.
        self.array_bytes = np.array(
            [math.prod(shape) * dtype.itemsize for shape, dtype in (*inputs, *self.outputs)],
            np.int64,
        )
        self.generation = -1  # not placed in any arena yet
        self.temp_addresses = np.zeros(0, np.uint64)
        self.arena_bytes = 0


def _result_sources(
    program: KernelProgram, output_slots: Sequence[tuple[int, str]], graph: Graph
) -> list[tuple[str, Any]] | None:
    """Return where each output comes from: ("array", i) the i-th output buffer's array,
    ("copy", i) a copy of it (an output listed twice), ("input", position) a copy of a fed
    array, ("constant", name); None when the outputs are the output buffers in order."""
    index = {name: position for position, (_, name) in enumerate(output_slots)}
    feeds = {f"in_{node.name}": position for position, node in enumerate(graph.inputs)}
    sources: list[tuple[str, Any]] = []
    seen = set()
    for name in program.outputs:
        role = program.buffers[name].role
        if role == "output":
            sources.append(("copy" if name in seen else "array", index[name]))
            seen.add(name)
        elif role == "input":
            sources.append(("input", feeds[name]))
        else:
            sources.append(("constant", name))
    if sources == [("array", position) for position in range(len(output_slots))]:
        return None
    return sources


def _static_bytes(spec) -> int:
    """Return the bytes of a buffer whose shape has no symbol (a Variable's)."""
    return math.prod(evaluate_shape(spec.shape, {})) * np.dtype(spec.dtype.numpy).itemsize


def _dump(program: KernelProgram, text: Callable[[], str], compiled) -> None:
    """Write the module's IR, optimised IR and assembly to GRAPHC_DUMP, if it names a folder."""
    folder = os.environ.get("GRAPHC_DUMP")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, "graph_" + module_key(text())[:12])
    with open(stem + ".ll", "w") as stream:
        stream.write(text())
    with open(stem + ".opt.ll", "w") as stream:
        stream.write(compiled.optimized_ir)
    with open(stem + ".s", "w") as stream:
        stream.write(compiled.assembly())
    with open(stem + ".kernels.txt", "w") as stream:
        stream.write("\n".join(kernel.name for kernel in program.kernels) + "\n")
