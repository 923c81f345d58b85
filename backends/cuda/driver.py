"""The driver interface the CUDA executable runs on, and the choice of driver.

A driver owns device memory (integer addresses), copies arrays in and out, loads a module of
kernels and launches them on one stream. Two implement it: the CUDA driver API through ctypes
(libcuda.py) and the emulator (emulator.py), which runs the same kernel generators' host
dialect on the CPU over host memory. GRAPHC_CUDA_DRIVER=emulate selects the emulator; otherwise
the CUDA driver is used if libcuda loads and finds a device.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np
from llvmlite import ir

from graphc.backends.cuda.dialect import KernelDialect
from graphc.errors import CompileError

if TYPE_CHECKING:
    from graphc.backends.cuda.cublas import Cublas

DRIVER_VARIABLE = "GRAPHC_CUDA_DRIVER"


class LoadedModule(Protocol):
    """A module of kernels loaded on a device."""

    def function(self, symbol: str) -> object:
        """Return the launchable handle of a kernel."""
        ...


class Driver(Protocol):
    """What the CUDA executable needs from a device."""

    # The most blocks a launch gets (kernels loop over the rest of their work).
    max_blocks: int

    @property
    def dialect(self) -> type[KernelDialect]:
        """Return the dialect its modules are generated in."""
        ...

    def device_name(self) -> str:
        """Return the device's name."""
        ...

    def arch(self) -> str:
        """Return the architecture PTX is generated for, such as sm_80."""
        ...

    def activate(self) -> None:
        """Make the device current for the calling thread."""
        ...

    def load(self, module: ir.Module) -> LoadedModule:
        """Compile and load a module of kernels in this driver's dialect."""
        ...

    def alloc(self, nbytes: int) -> int:
        """Return the address of `nbytes` of new device memory."""
        ...

    def free(self, address: int) -> None:
        """Release memory from alloc()."""
        ...

    def upload(self, address: int, array: np.ndarray) -> None:
        """Copy a C-contiguous array to device memory."""
        ...

    def download(self, array: np.ndarray, address: int) -> None:
        """Copy device memory into a C-contiguous array, after every launch before it."""
        ...

    def copy(self, target: int, source: int, nbytes: int) -> None:
        """Copy device memory to device memory, after every launch before it."""
        ...

    def launch(self, function: object, grid: int, block: int, params: int) -> None:
        """Launch a kernel; params is the address of its argument array (void*[])."""
        ...

    def blas(self) -> Cublas | None:
        """Return cuBLAS on this device, or None where there is none (always under the
        emulator, which checks the backend's own kernels)."""
        ...


_lock = threading.Lock()
_drivers: dict[str, Driver] = {}


def selected_driver() -> Driver:
    """Return this process's driver for the current GRAPHC_CUDA_DRIVER, creating it once, or
    raise CompileError saying why the CUDA backend cannot run here."""
    choice = os.environ.get(DRIVER_VARIABLE, "").strip().lower() or "cuda"
    with _lock:
        if choice not in _drivers:
            _drivers[choice] = _create(choice)
        return _drivers[choice]


def _create(choice: str) -> Driver:
    if choice == "emulate":
        from graphc.backends.cuda.emulator import EmulatedDriver

        return EmulatedDriver()
    if choice != "cuda":
        raise CompileError(f"{DRIVER_VARIABLE}={choice!r}: expected 'cuda' or 'emulate'")
    from graphc.backends.cuda.libcuda import CudaDriver, DriverUnavailable

    try:
        return CudaDriver()
    except DriverUnavailable as why:
        raise CompileError(
            f"the CUDA backend cannot run here: {why}. Set {DRIVER_VARIABLE}=emulate to run "
            "its kernels on the CPU emulator"
        ) from None
