"""The CUDA driver API through ctypes on libcuda.so.1, which comes with the NVIDIA driver (no
Python package is needed): one device (GRAPHC_CUDA_DEVICE, default 0) in its primary context,
shared with cuBLAS and PyTorch; PTX that the driver compiles for the device; launches on the
legacy default stream, with which every copy synchronises."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_uint, c_uint64, c_void_p

import numpy as np
from llvmlite import ir

from graphc.backends.cuda.cublas import Cublas, load_library
from graphc.backends.cuda.dialect import DeviceDialect
from graphc.backends.cuda.ptx import PtxModule, compile_ptx
from graphc.backends.llvm.memory import data_address
from graphc.errors import CompileError

_MULTIPROCESSORS = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
_MAJOR, _MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_MEMORY_CLOCK_KHZ = 36  # CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE
_MEMORY_BUS_BITS = 37  # CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH
_ERROR_LOG, _ERROR_LOG_SIZE = 5, 6  # CU_JIT_ERROR_LOG_BUFFER / _SIZE_BYTES
_LOG_BYTES = 16384
# Architectures LLVM's NVPTX target knows; a device gets the newest not above its own.
KNOWN_ARCHS = ((7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (10, 0), (12, 0))
# Resident blocks per multiprocessor a launch aims for (2048 threads / 256 per block).
_BLOCKS_PER_MULTIPROCESSOR = 8

_SIGNATURES = {
    "cuInit": [c_uint],
    "cuDeviceGet": [POINTER(c_int), c_int],
    "cuDeviceGetAttribute": [POINTER(c_int), c_int, c_int],
    "cuDeviceGetName": [c_char_p, c_int, c_int],
    "cuDevicePrimaryCtxRetain": [POINTER(c_void_p), c_int],
    "cuCtxSetCurrent": [c_void_p],
    "cuModuleLoadDataEx": [POINTER(c_void_p), c_char_p, c_uint, c_void_p, c_void_p],
    "cuModuleGetFunction": [POINTER(c_void_p), c_void_p, c_char_p],
    "cuModuleUnload": [c_void_p],
    "cuMemAlloc_v2": [POINTER(c_uint64), c_size_t],
    "cuMemFree_v2": [c_uint64],
    "cuMemcpyHtoD_v2": [c_uint64, c_void_p, c_size_t],
    "cuMemcpyDtoH_v2": [c_void_p, c_uint64, c_size_t],
    "cuMemcpyDtoD_v2": [c_uint64, c_uint64, c_size_t],
    "cuLaunchKernel": [c_void_p, *[c_uint] * 7, c_void_p, c_void_p, c_void_p],
    "cuGetErrorName": [c_int, POINTER(c_char_p)],
}


class DriverUnavailable(Exception):
    """libcuda cannot be loaded, or finds no usable device."""


def _library() -> ctypes.CDLL:
    try:
        library = ctypes.CDLL("libcuda.so.1")
    except OSError as error:
        raise DriverUnavailable(
            f"libcuda.so.1, which comes with the NVIDIA driver, could not be loaded ({error})"
        ) from None
    for name, arguments in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = arguments
        function.restype = c_int
    return library


class CudaModule:
    """A module the driver loaded from PTX."""

    def __init__(self, driver: CudaDriver, handle: c_void_p, ptx: PtxModule) -> None:
        self._driver = driver
        self._handle = handle
        self.ptx = ptx

    def function(self, symbol: str) -> object:
        function = c_void_p()
        self._driver.check(
            self._driver.lib.cuModuleGetFunction(byref(function), self._handle, symbol.encode()),
            f"cuModuleGetFunction({symbol})",
        )
        return function

    def __del__(self, _finalizing=sys.is_finalizing) -> None:
        if not _finalizing():
            self._driver.lib.cuModuleUnload(self._handle)


class CudaDriver:
    """A CUDA device through the driver API."""

    dialect = DeviceDialect

    def __init__(self) -> None:
        self.lib = _library()
        result = self.lib.cuInit(0)
        if result != 0:
            raise DriverUnavailable(f"cuInit failed with {self._name(result)}")
        ordinal = int(os.environ.get("GRAPHC_CUDA_DEVICE", "0"))
        device = c_int()
        result = self.lib.cuDeviceGet(byref(device), ordinal)
        if result != 0:
            raise DriverUnavailable(f"no CUDA device {ordinal} ({self._name(result)})")
        self._device = device.value
        self._capability = (self._attribute(_MAJOR), self._attribute(_MINOR))
        self.max_blocks = self._attribute(_MULTIPROCESSORS) * _BLOCKS_PER_MULTIPROCESSOR
        name = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(name, len(name), self._device), "cuDeviceGetName")
        self._device_name = name.value.decode(errors="replace")
        self._context = c_void_p()
        self.check(
            self.lib.cuDevicePrimaryCtxRetain(byref(self._context), self._device),
            "cuDevicePrimaryCtxRetain",
        )
        self.activate()
        self._blas: Cublas | None = None
        self._blas_looked_for = False
        self._blas_lock = threading.Lock()

    def _name(self, result: int) -> str:
        text = c_char_p()
        if self.lib.cuGetErrorName(result, byref(text)) != 0 or text.value is None:
            return f"CUDA error {result}"
        return text.value.decode()

    def check(self, result: int, what: str) -> None:
        """Raise CompileError naming the call if a driver call failed."""
        if result != 0:
            raise CompileError(f"{what} failed with {self._name(result)}")

    def _attribute(self, attribute: int) -> int:
        value = c_int()
        self.check(
            self.lib.cuDeviceGetAttribute(byref(value), attribute, self._device),
            "cuDeviceGetAttribute",
        )
        return value.value

    def device_name(self) -> str:
        return self._device_name

    def peak_bandwidth(self) -> float:
        """Return the device memory's peak bandwidth in bytes per second, from its clock and
        bus width (two transfers per clock, as for the DDR and HBM memories of GPUs)."""
        clock_hz = 1e3 * self._attribute(_MEMORY_CLOCK_KHZ)
        return 2 * clock_hz * self._attribute(_MEMORY_BUS_BITS) / 8

    def arch(self) -> str:
        usable = [arch for arch in KNOWN_ARCHS if arch <= self._capability]
        if not usable:
            raise CompileError(
                f"{self._device_name} (compute capability {self._capability[0]}."
                f"{self._capability[1]}) is older than sm_75, the oldest the backend targets"
            )
        major, minor = usable[-1]
        return f"sm_{major}{minor}"

    def activate(self) -> None:
        self.check(self.lib.cuCtxSetCurrent(self._context), "cuCtxSetCurrent")

    def load(self, module: ir.Module) -> CudaModule:
        ptx = compile_ptx(module, self.arch())
        log = ctypes.create_string_buffer(_LOG_BYTES)
        options = (c_int * 2)(_ERROR_LOG, _ERROR_LOG_SIZE)
        values = (c_void_p * 2)(ctypes.cast(log, c_void_p), c_void_p(_LOG_BYTES))
        handle = c_void_p()
        result = self.lib.cuModuleLoadDataEx(
            byref(handle), ptx.ptx.encode(), 2, ctypes.cast(options, c_void_p), values
        )
        if result != 0:
            raise CompileError(
                f"the CUDA driver rejected the PTX ({self._name(result)}):\n"
                f"{log.value.decode(errors='replace')}"
            )
        return CudaModule(self, handle, ptx)

    def alloc(self, nbytes: int) -> int:
        address = c_uint64()
        self.check(self.lib.cuMemAlloc_v2(byref(address), max(1, nbytes)), "cuMemAlloc")
        return address.value

    def free(self, address: int) -> None:
        self.check(self.lib.cuMemFree_v2(address), "cuMemFree")

    def upload(self, address: int, array: np.ndarray) -> None:
        if array.nbytes:
            result = self.lib.cuMemcpyHtoD_v2(address, data_address(array), array.nbytes)
            self.check(result, "cuMemcpyHtoD")

    def download(self, array: np.ndarray, address: int) -> None:
        if array.nbytes:
            result = self.lib.cuMemcpyDtoH_v2(data_address(array), address, array.nbytes)
            self.check(result, "cuMemcpyDtoH")

    def copy(self, target: int, source: int, nbytes: int) -> None:
        if nbytes:
            self.check(self.lib.cuMemcpyDtoD_v2(target, source, nbytes), "cuMemcpyDtoD")

    def launch(self, function: object, grid: int, block: int, params: int) -> None:
        result = self.lib.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0, None, params, None)
        self.check(result, "cuLaunchKernel")

    def blas(self) -> Cublas | None:
        """Return this process's cuBLAS handle in the device's context, or None if libcublas
        is not installed."""
        with self._blas_lock:
            if not self._blas_looked_for:
                library = load_library()
                self.activate()
                self._blas = Cublas(library) if library is not None else None
                self._blas_looked_for = True
            return self._blas
