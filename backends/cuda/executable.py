"""CudaExecutable: a graph compiled to a module of CUDA kernels, run through a driver.

Per call: the inputs and the frame (error record, symbol sizes, buffer table) are copied to
the device, every kernel is launched in order (each does nothing once an earlier one has
recorded an index error; a loop's body once per step: scan.py; a large matmul may go to cuBLAS
instead, chosen for the call's sizes: cublas.py), then the error record is read back, which
waits for the kernels.
On an error the call raises IndexingError and no Variable changes: the copies of update
values into the Variables are kernels too, and they skip as well. Otherwise the outputs are
copied out. The Variables stay in device memory (variables.py): uploaded when the device copy
is not current (the first call, or after the host or another executable changed the value),
downloaded only when something reads them on the host.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graphc.backends.calls import LaunchGeometry, Runner, RunsBound
from graphc.backends.cuda.cublas import GemmCall, plan_gemm
from graphc.backends.cuda.cublas import wanted as cublas_wanted
from graphc.backends.cuda.driver import Driver, selected_driver
from graphc.backends.cuda.launches import Launch, every_launch, run_order
from graphc.backends.cuda.memory import DeviceArena, arena_planner
from graphc.backends.cuda.program import cuda_program
from graphc.backends.cuda.ptx import PtxModule
from graphc.backends.cuda.variables import DeviceVariables
from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.inplace import can_fail
from graphc.backends.llvm.program import ERROR_FIELDS
from graphc.dims import evaluate_shape
from graphc.errors import IndexingError, located
from graphc.graph import Graph
from graphc.recent import RecentValues

# Bound calls kept per executable (one per recent set of symbol sizes).
CALLS_KEPT = 16


@dataclass(eq=False)  # the installed call is compared by identity
class _BoundCall:
    """What a call with given symbol sizes needs besides its arrays."""

    sizes: np.ndarray
    # In order: (function, grid, block) of a kernel launch, or a matmul handed to cuBLAS.
    launches: list[tuple[object, int, int] | GemmCall]
    offsets: dict[str, int]
    arena_bytes: int
    outputs: list[tuple[tuple[int, ...], np.dtype]]  # per output


class CudaExecutable(RunsBound):
    """A graph compiled to CUDA kernels, with its device memory."""

    def __init__(self, graph: Graph) -> None:
        self.driver: Driver = selected_driver()
        compiled = cuda_program(graph)
        self.graph, self.partition = compiled.graph, compiled.partition
        self.program: KernelProgram = compiled.program
        self._in_place = compiled.in_place
        self._can_fail = any(can_fail(kernel) for kernel in self.program.kernels)
        self._blas = self.driver.blas() if cublas_wanted() else None
        self._matmuls = {
            kernel.name: kernel
            for kernel in self.program.kernels
            if isinstance(kernel, k.MatmulKernel)
        }
        self._program = compiled
        module, self._schedule = compiled.module(self.driver.dialect, self._blas is not None)
        self._launches = list(every_launch(self._schedule))
        self._module = self.driver.load(module)
        self._functions = {
            launch.symbol: self._module.function(launch.symbol) for launch in self._launches
        }
        self._ptx: dict[str, PtxModule] = {}
        self._lock = threading.Lock()
        self._allocations: list[int] = []
        self._layout_frame()
        self._place_fixed_buffers(self.graph)
        self._planner = arena_planner(self.program, set(self._in_place))
        self._arena = DeviceArena(self.driver)
        self._installed: tuple[_BoundCall, int] | None = None
        self._calls: RecentValues[_BoundCall] = RecentValues(CALLS_KEPT)

    def _layout_frame(self) -> None:
        """Lay out the frame, [error record | sizes | buffer table] in int64s, and the
        kernels' argument array pointing at its three parts."""
        self._names = list(self.program.buffers)
        self._sizes_at = ERROR_FIELDS
        self._table_at = ERROR_FIELDS + max(1, len(self.program.symbols))
        self._frame = np.zeros(self._table_at + len(self._names), np.int64)
        self._error = np.zeros(ERROR_FIELDS, np.int64)
        self._frame_address = self._alloc(self._frame.nbytes)
        word = self._frame.itemsize
        self._arguments = (ctypes.c_uint64 * 3)(
            self._frame_address + word * self._table_at,
            self._frame_address + word * self._sizes_at,
            self._frame_address,
        )
        base = ctypes.addressof(self._arguments)
        self._params = (ctypes.c_void_p * 3)(*(base + 8 * i for i in range(3)))
        self._params_address = ctypes.addressof(self._params)

    def _alloc(self, nbytes: int) -> int:
        address = self.driver.alloc(nbytes)
        self._allocations.append(address)
        return address

    def _place_fixed_buffers(self, graph: Graph) -> None:
        """Upload the constants once, give every Variable device memory of its own, and note
        where each input goes and each output comes from."""
        self._slots = {name: slot for slot, name in enumerate(self._names)}
        table = self._frame[self._table_at :]
        self._constants: dict[int, np.ndarray] = {}  # by slot
        addresses: dict[str, int] = {}
        for slot, (name, spec) in enumerate(self.program.buffers.items()):
            if spec.role == "constant":
                constant = np.array(spec.node.attrs["value"], dtype=spec.dtype.numpy, order="C")
                self._constants[slot] = constant
                addresses[name] = table[slot] = self._alloc(constant.nbytes)
                self.driver.upload(addresses[name], constant)
        updated = {variable.id for variable, _ in graph.updates}
        variables = [
            (name, spec) for name, spec in self.program.buffers.items() if spec.role == "variable"
        ]
        self._variables = DeviceVariables(
            self.driver,
            [(spec.node.attrs["storage"], spec.node.id in updated) for _, spec in variables],
        )
        for (name, _), (_, copy) in zip(variables, self._variables.copies, strict=True):
            addresses[name] = table[self._slots[name]] = copy.address
        for value_buffer, variable in self._in_place.items():
            table[self._slots[value_buffer]] = addresses[variable]
        feeds = {f"in_{node.name}": i for i, node in enumerate(graph.inputs)}
        self._input_slots = [
            (self._slots[name], position) for name, position in feeds.items() if name in self._slots
        ]
        # Per output: ("device", slot) copied out, ("input", position) a copy of a fed array,
        # ("constant", slot) a copy of a constant.
        self._sources: list[tuple[str, int]] = []
        for name in self.program.outputs:
            role = self.program.buffers[name].role
            if role == "input":
                self._sources.append(("input", feeds[name]))
            else:
                self._sources.append(
                    ("device" if role == "output" else "constant", self._slots[name])
                )

    @property
    def compiled(self) -> PtxModule:
        """Return the module compiled for the driver's architecture (for Function.asm())."""
        return self.ptx_module(self.driver.arch())

    def ptx_module(self, arch: str) -> PtxModule:
        """Return the program's kernels compiled to PTX for an architecture such as sm_90."""
        if arch not in self._ptx:
            self._ptx[arch] = self._program.ptx(arch, self._blas is not None)
        return self._ptx[arch]

    def ptx(self, arch: str | None = None) -> str:
        """Return the program's PTX for arch (default: the device's)."""
        return self.ptx_module(arch or self.driver.arch()).ptx

    def launches(self) -> list[Launch]:
        """Return the kernel launches of a call, in order, each once (a loop's step launches
        run once per step)."""
        return list(self._launches)

    def launch_geometry(self) -> dict[str, tuple[LaunchGeometry, ...]]:
        """Return, per kernel name, how its kernel functions are launched (for
        Function.kernels(); a loop's are all its own and its body's; the copies of update
        values, `commit_*`, are launches too)."""
        geometry: dict[str, tuple[LaunchGeometry, ...]] = {}
        for item in self._schedule:
            for launch in every_launch([item]):
                grid = launch.grid_text(self.driver.max_blocks)
                entry = LaunchGeometry(launch.symbol, grid, launch.block, launch.shared_bytes)
                geometry[item.kernel] = (*geometry.get(item.kernel, ()), entry)
        return geometry

    def memory_stats(self) -> dict[str, int]:
        """Return the device arena's size in bytes (inputs, outputs and intermediates)."""
        return {"arena_bytes": self._arena.nbytes}

    def bind(self, bindings: Mapping[str, int], steps: int | None = None) -> Runner:
        """Return a function of (feeds, out) running a call for these symbol sizes, or
        `steps` steps per call over arrays stacked along a leading steps dim."""
        key = tuple(sorted(bindings.items()))
        call = self._calls.recall(key)
        if call is None:
            call = self._calls.remember(key, self._bound_call(bindings))
        if steps is None:
            return functools.partial(self._run_call, call)
        return functools.partial(self._run_steps, call, steps)

    def _bound_call(self, bindings: Mapping[str, int]) -> _BoundCall:
        offsets, arena_bytes = self._planner.place(bindings)
        handed: set[str] = set()  # the matmuls cuBLAS computes in this call
        # Per symbol, what its launch does in this call (None: nothing); a loop's step
        # launches come once per step.
        chosen: dict[str, tuple[object, int, int] | GemmCall | None] = {}
        for launch in every_launch(self._schedule):
            if launch.after_cublas and launch.kernel not in handed:
                chosen[launch.symbol] = None
                continue
            gemm = None if launch.after_cublas else self._cublas_gemm(launch.kernel, bindings)
            if gemm is not None:
                handed.add(launch.kernel)
                chosen[launch.symbol] = gemm
            else:
                grid = launch.grid(bindings, self.driver.max_blocks)
                chosen[launch.symbol] = (self._functions[launch.symbol], grid, launch.block)
        launches = [
            action
            for action in (chosen[launch.symbol] for launch in run_order(self._schedule, bindings))
            if action is not None
        ]
        outputs = [
            (evaluate_shape(spec.shape, bindings), np.dtype(spec.dtype.numpy))
            for spec in (self.program.buffers[name] for name in self.program.outputs)
        ]
        sizes = np.array([bindings[s] for s in self.program.symbols], np.int64)
        return _BoundCall(sizes, launches, offsets, arena_bytes, outputs)

    def _cublas_gemm(self, kernel: str, bindings: Mapping[str, int]) -> GemmCall | None:
        """Return the cuBLAS call that computes a matmul kernel for these sizes, or None to
        launch the kernel itself (no cuBLAS, not a matmul, or not one cuBLAS should do)."""
        matmul = self._matmuls.get(kernel)
        if self._blas is None or matmul is None:
            return None
        return plan_gemm(matmul, bindings, aliased=matmul.out in self._in_place)

    def _run_cublas(self, gemm: GemmCall) -> None:
        """Run a cuBLAS GEMM on the installed call's buffers."""
        table = self._frame[self._table_at :]
        buffers = (gemm.first, gemm.second, gemm.out)
        assert self._blas is not None
        self._blas.gemm(gemm, {name: int(table[self._slots[name]]) for name in buffers})

    def _install(self, call: _BoundCall) -> None:
        """Write the call's sizes and its buffers' addresses into the frame, growing the
        arena if it needs more."""
        self._arena.reserve(max(self._arena.nbytes, call.arena_bytes))
        self._frame[self._sizes_at : self._sizes_at + len(call.sizes)] = call.sizes
        table = self._frame[self._table_at :]
        for name, offset in call.offsets.items():
            table[self._slots[name]] = self._arena.address + offset
        self._installed = (call, self._arena.generation)

    def _run_call(
        self, call: _BoundCall, feeds: Sequence[np.ndarray], out: Sequence[np.ndarray] | None
    ) -> list[np.ndarray]:
        with self._lock:
            self.driver.activate()
            self._variables.upload_stale()
            results = self._step(call, feeds, out, "")
            self._variables.written()
        return results

    def _run_steps(
        self,
        call: _BoundCall,
        steps: int,
        feeds: Sequence[np.ndarray],
        out: Sequence[np.ndarray] | None,
    ) -> list[np.ndarray]:
        """Run `steps` steps over the stacked arrays. A step that fails raises, and the
        Variables keep the values they had before the call: a program that can fail has its
        updated Variables' device values copied aside first and put back."""
        if out is None:
            results = [np.empty((steps, *shape), dtype) for shape, dtype in call.outputs]
        else:
            results = list(out)
        with self._lock:
            self.driver.activate()
            self._variables.upload_stale()
            if self._can_fail:
                self._variables.save_updated()
            try:
                for step in range(steps):
                    where = f" (at step {step} of 0..{steps - 1})"
                    self._step(
                        call, [f[step, ...] for f in feeds], [r[step, ...] for r in results], where
                    )
            except IndexingError:
                self._variables.restore_updated()
                raise
            self._variables.written()
        return results

    def _step(
        self,
        call: _BoundCall,
        feeds: Sequence[np.ndarray],
        out: Sequence[np.ndarray] | None,
        where: str,
    ) -> list[np.ndarray]:
        """Run the kernels once (the lock held): copy the inputs in, launch, check the error
        record, copy the outputs out."""
        driver = self.driver
        if self._installed != (call, self._arena.generation):
            self._install(call)
        table = self._frame[self._table_at :]
        self._frame[:ERROR_FIELDS] = 0
        driver.upload(self._frame_address, self._frame)
        for slot, position in self._input_slots:
            driver.upload(int(table[slot]), feeds[position])
        for launch in call.launches:
            if isinstance(launch, GemmCall):
                self._run_cublas(launch)
            else:
                driver.launch(*launch, self._params_address)
        driver.download(self._error, self._frame_address)
        if self._error[0]:
            _, value, size, axis = (int(v) for v in self._error[:4])
            message = f"index {value} is out of bounds for dim {axis} with size {size}{where}"
            raise IndexingError(located(message, None))
        results = []
        for position, (kind, source) in enumerate(self._sources):
            target = None if out is None else out[position]
            if kind == "device":
                shape, dtype = call.outputs[position]
                array = target if target is not None else np.empty(shape, dtype)
                driver.download(array, int(table[source]))
            else:
                known = feeds[source] if kind == "input" else self._constants[source]
                array = np.array(known) if target is None else target
                if target is not None:
                    np.copyto(target, known)
            results.append(array)
        return results

    def __del__(self, _finalizing=sys.is_finalizing) -> None:
        if _finalizing():
            return  # the driver frees everything with the process
        arena = getattr(self, "_arena", None)
        if arena is not None:
            arena.release()
        for address in getattr(self, "_allocations", ()):
            self.driver.free(address)
        variables = getattr(self, "_variables", None)
        if variables is not None:
            variables.release()
