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
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from graphc.backends.kernel import KernelProgram, build_program
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.inplace import in_place_updates
from graphc.backends.llvm import gemm
from graphc.backends.llvm.jit import (
    ModuleSource,
    compile_module,
    module_key,
)
from graphc.backends.llvm.mathlib import math_function
from graphc.backends.llvm.memory import (
    PLANS_KEPT,
    WORKSPACES,
    ArenaPlanner,
    RecentValues,
)
from graphc.backends.llvm.module_source import module_source
from graphc.backends.llvm.program import ENTRY_NAME, build_module, slot_names
from graphc.backends.llvm.runtime_library import gemm_declaration, register_symbols
from graphc.dims import evaluate_shape
from graphc.errors import IndexingError, located
from graphc.graph import Graph
from graphc.ops.registry import make_node
from graphc.passes.fusion import is_buffer_source, partition

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def thread_count() -> int:
    """Return the threads kernels may use: GRAPHC_NUM_THREADS, else the usable cores."""
    configured = os.environ.get("GRAPHC_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
    )


class LLVMExecutable:
    """A graph compiled to one native entry point."""

    def __init__(self, graph: Graph) -> None:
        graph = _updates_from_kernels(graph)
        self.graph = graph
        self.partition = partition(graph)
        program = build_program(graph, self.partition)
        # Updates computed straight into their variable need no copy at the end of a call.
        self._in_place = in_place_updates(program)
        self.program: KernelProgram = replace(
            program,
            updates=[(v, u) for v, u in program.updates if u not in self._in_place],
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
        register_symbols(
            {
                kernel.dtype.name
                for kernel in self.program.kernels
                if isinstance(kernel, k.MatmulKernel)
            },
            parallel,
        )
        # Holding the compiled module keeps its engine, and so the entry's code, alive.
        self.compiled = compile_module(source)
        _dump(self.program, lambda: self.llvm_ir, self.compiled)
        self._entry = _ENTRY(self.compiled.address(ENTRY_NAME))
        self._lock = threading.Lock()
        self._threads = threads
        self._slots = slot_names(self.program)
        self._table = np.zeros(len(self._slots), dtype=np.uint64)
        self._sizes = np.zeros(max(1, len(self.program.symbols)), dtype=np.int64)
        self._error = np.zeros(4, dtype=np.int64)
        # Each pool thread packs into its own slice of the calling thread's workspace.
        uses_gemm = any(isinstance(kernel, k.MatmulKernel) for kernel in self.program.kernels)
        self._workspace_bytes = workspace * self._threads if uses_gemm else 0
        self._workspace_slot = self._slots.index("workspace")
        self._workspace_address = 0
        self._planner = ArenaPlanner(
            self.program, _buffer_lifetimes(self.program), exclude=set(self._in_place)
        )
        self._table_address = self._table.ctypes.data
        self._sizes_address = self._sizes.ctypes.data
        self._error_address = self._error.ctypes.data
        self._constants = {
            name: spec.node.attrs["value"]
            for name, spec in self.program.buffers.items()
            if spec.role == "constant"
        }
        self._classify_slots()

    @property
    def llvm_ir(self) -> str:
        """Return the module's IR before optimisation (built again if it came from a cache)."""
        return str(self._build())

    def memory_stats(self) -> dict[str, int]:
        """Return the arena size in bytes (intermediates) of the last call's shapes, the GEMM
        workspace a call needs from its thread's shared one (0 without a matmul), and how
        many updates are computed straight into their variables (the rest are copied)."""
        return {
            "arena_bytes": self._planner.arena_bytes,
            "workspace_bytes": self._workspace_bytes,
            "in_place_updates": len(self._in_place),
            "copied_updates": len(self.program.updates),
        }

    def _classify_slots(self) -> None:
        """Sort the pointer table's slots by where their address comes from, and write the
        ones that never change (constants) once."""
        (
            self._input_slots,
            self._variable_slots,
            self._output_slots,
            self._temp_slots,
        ) = (
            [],
            [],
            [],
            [],
        )
        feeds = {f"in_{node.name}": i for i, node in enumerate(self.graph.inputs)}
        for slot, name in enumerate(self._slots):
            if name == "workspace":
                continue
            spec = self.program.buffers[name]
            if spec.role == "input":
                self._input_slots.append((slot, feeds[name]))
            elif spec.role == "constant":
                self._table[slot] = self._constants[name].ctypes.data
            elif spec.role == "variable" or name in self._in_place:
                variable = (
                    spec if spec.role == "variable" else self.program.buffers[self._in_place[name]]
                )
                self._variable_slots.append((slot, variable.node.attrs["storage"]))
            elif spec.role == "output":
                self._output_slots.append((slot, name, spec))
            else:
                self._temp_slots.append((slot, name))
        self._variable_arrays: list[np.ndarray | None] = [None] * len(self._variable_slots)
        self._temp_tables: RecentValues[tuple[np.ndarray, np.ndarray]] = RecentValues(PLANS_KEPT)

    def _temp_addresses(self, bindings: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """Return (slots, addresses) of the intermediates in the arena for these sizes."""
        offsets, arena = self._planner.plan(bindings)
        base = arena.ctypes.data if arena is not None else 0
        key = (tuple(sorted(bindings.items())), base)
        found = self._temp_tables.get(key)
        if found is not None:
            self._temp_tables.move_to_end(key)
            return found
        slots = np.array([slot for slot, _ in self._temp_slots], dtype=np.intp)
        addresses = np.array([base + offsets[name] for _, name in self._temp_slots], np.uint64)
        return self._temp_tables.remember(key, (slots, addresses))

    def run(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Run the entry point; returns the outputs (updates are applied in native code).
        Safe to call from several threads: calls of this executable take turns."""
        with self._lock:
            for position, symbol in enumerate(self.program.symbols):
                self._sizes[position] = bindings[symbol]
            table = self._table
            for slot, position in self._input_slots:
                table[slot] = feeds[position].ctypes.data
            for position, (slot, storage) in enumerate(self._variable_slots):
                array = storage.value
                if array is not self._variable_arrays[position]:
                    self._variable_arrays[position] = array
                    table[slot] = array.ctypes.data
            outputs: dict[str, np.ndarray] = {}
            if out is not None:
                for name, array in zip(self.program.outputs, out, strict=True):
                    if self.program.buffers[name].role == "output":
                        outputs.setdefault(name, array)
            for slot, name, spec in self._output_slots:
                if name not in outputs:
                    outputs[name] = np.empty(evaluate_shape(spec.shape, bindings), spec.dtype.numpy)
                table[slot] = outputs[name].ctypes.data
            if self._temp_slots:
                slots, addresses = self._temp_addresses(bindings)
                table[slots] = addresses
            self._error[:] = 0
            if self._workspace_bytes:
                address = WORKSPACES.get(self._workspace_bytes).address
                if address != self._workspace_address:
                    table[self._workspace_slot] = self._workspace_address = address
            self._entry(
                self._table_address,
                self._sizes_address,
                self._error_address,
                self._threads,
            )
            if self._error[0]:
                _, value, size, axis = (int(v) for v in self._error)
                raise IndexingError(
                    located(
                        f"index {value} is out of bounds for dim {axis} with size {size}",
                        None,
                    )
                )
            fed = {
                f"in_{node.name}": array
                for node, array in zip(self.graph.inputs, feeds, strict=True)
            }
            results = self._collect(outputs, fed)
            if out is None:
                return results
            for target, result in zip(out, results, strict=True):
                if target is not result:
                    np.copyto(target, result)
            return list(out)

    def _collect(
        self, outputs: dict[str, np.ndarray], fed: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        results, seen = [], set()
        for name in self.program.outputs:
            spec = self.program.buffers[name]
            if spec.role == "output":
                array = outputs[name]
                results.append(array.copy() if name in seen else array)
                seen.add(name)
            elif spec.role == "variable":
                results.append(spec.node.attrs["storage"].value.copy())
            elif spec.role == "constant":
                results.append(np.array(self._constants[name]))
            else:
                results.append(np.array(fed[name]))
        return results


def _updates_from_kernels(graph: Graph) -> Graph:
    """Return graph with every update value and every variable output computed by a kernel:
    a copy taken before any variable changes, so `a <- b, b <- a` reads both old values and
    an output that is an updated variable shows its value from before the call."""

    def copied(node):
        return make_node("stop_gradient", [node], location=node.location)

    updates = tuple(
        (variable, copied(value) if is_buffer_source(value) else value)
        for variable, value in graph.updates
    )
    outputs = tuple(copied(n) if n.op == "variable" else n for n in graph.outputs)
    return Graph(graph.inputs, outputs, updates)


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


def _buffer_lifetimes(program: KernelProgram) -> dict[str, tuple[int, int]]:
    """Return, per buffer, the first and last kernel positions that touch it."""
    spans: dict[str, list[int]] = {}
    for position, kernel in enumerate(program.kernels):
        for name in k.buffers_used(kernel):
            span = spans.setdefault(name, [position, position])
            span[0], span[1] = min(span[0], position), max(span[1], position)
    end = len(program.kernels)
    for target, source in program.updates:
        for name in (target, source):
            spans.setdefault(name, [end, end])[1] = end
    return {name: (lo, hi) for name, (lo, hi) in spans.items()}
