"""The emulated CUDA driver: device memory is host memory, and a module is the kernel
generators' host dialect (dialect.EmulatedDialect) compiled for this CPU, whose kernels run
the grid's blocks one after another, each phase as a loop over a block's threads."""

from __future__ import annotations

import ctypes
import threading
from collections import Counter

import numpy as np
from llvmlite import ir

from graphc.backends.cuda.dialect import EmulatedDialect
from graphc.backends.llvm.jit import CompiledModule, compile_module
from graphc.backends.llvm.memory import ALIGNMENT, data_address

_LAUNCHER = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)


class EmulatedModule:
    """Host code of a module's kernels; each kernel launches through `<name>.launch`."""

    def __init__(self, compiled: CompiledModule) -> None:
        self._compiled = compiled  # keeps the code alive

    def function(self, symbol: str) -> object:
        return _LAUNCHER(self._compiled.address(symbol))


class EmulatedDriver:
    """A driver whose device is this CPU."""

    dialect = EmulatedDialect
    # A few blocks, so kernels run their grid-stride loops over several block indices.
    max_blocks = 3

    def __init__(self) -> None:
        self._memory: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        # Copies in and out, by the host address of the array (what tests count transfers of a
        # Variable's value by).
        self.uploads: Counter[int] = Counter()
        self.downloads: Counter[int] = Counter()

    def device_name(self) -> str:
        return "graphc CUDA emulator (CPU)"

    def arch(self) -> str:
        return "sm_80"

    def activate(self) -> None:
        """Nothing to do: the host is always current."""

    def load(self, module: ir.Module) -> EmulatedModule:
        return EmulatedModule(compile_module(module))

    def alloc(self, nbytes: int) -> int:
        # Fresh memory holds NaN bytes, as reading what no kernel wrote should show.
        storage = np.full(nbytes + ALIGNMENT, 0xFF, dtype=np.uint8)
        address = data_address(storage)
        address += (-address) % ALIGNMENT
        with self._lock:
            self._memory[address] = storage
        return address

    def free(self, address: int) -> None:
        with self._lock:
            del self._memory[address]

    def upload(self, address: int, array: np.ndarray) -> None:
        host = data_address(array)
        self.uploads[host] += 1
        ctypes.memmove(address, host, array.nbytes)

    def download(self, array: np.ndarray, address: int) -> None:
        host = data_address(array)
        self.downloads[host] += 1
        ctypes.memmove(host, address, array.nbytes)

    def copy(self, target: int, source: int, nbytes: int) -> None:
        ctypes.memmove(target, source, nbytes)

    def launch(self, function: object, grid: int, block: int, params: int) -> None:
        function(grid, params)  # type: ignore[operator]

    def blas(self) -> None:
        """There is no cuBLAS here: every matmul runs the own GEMM kernel."""
        return None
