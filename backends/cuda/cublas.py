"""cuBLAS through ctypes, for large float matmuls on a GPU when the library is installed.

cuBLAS is never required: it is looked for where CUDA installs put it (the loader's search
path, then the nvidia-cublas wheels' `nvidia/*/lib` folders), and without it, under the
emulator, or with GRAPHC_CUBLAS=0, every matmul runs the backend's own GEMM kernel. With it,
each call chooses (`plan_gemm`): a float matmul whose output is not a Variable's memory, with
at least LARGE multiply-adds and operands cuBLAS can address (each matrix with one unit
stride, batch dims that collapse to one stride) goes to cuBLAS, every other to the own
kernel. A fused epilogue (bias, activation) then runs as an elementwise kernel of its own over
cuBLAS's product, which the module holds besides the fused GEMM kernel when cuBLAS is there.

cuBLAS is column-major and graphc row-major: the row-major C = A @ B is the column-major
C^T = B^T A^T, so B is cuBLAS's first operand and A its second, and a row-major matrix is a
column-major one transposed (its row stride is the leading dimension). One strided-batched
call covers the whole batch, in the primary context current on the calling thread, on the
legacy default stream the kernels run on, with TF32 off (the default math mode), so f32
results have f32 rounding as the own kernel's do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
from collections.abc import Mapping, Sequence
from ctypes import POINTER, byref, c_double, c_float, c_int, c_int64, c_void_p
from dataclasses import dataclass
from typing import Any

from graphc.backends.cuda.launches import evaluate
from graphc.backends.kernel import ir as k
from graphc.dtypes import float32, float64
from graphc.errors import CompileError

USE_VARIABLE = "GRAPHC_CUBLAS"
# The multiply-adds (M * N * K * batch) from which a matmul goes to cuBLAS: 256^3, where the
# own kernel's 64x64 tiles already fill a large GPU. Not measured on a GPU yet.
LARGE = 1 << 24
_OP_N, _OP_T = 0, 1  # cublasOperation_t

_GEMM_ARGS = [
    c_void_p,  # handle
    c_int,  # transa
    c_int,  # transb
    c_int,  # m
    c_int,  # n
    c_int,  # k
    c_void_p,  # alpha (host pointer)
    c_void_p,  # A
    c_int,  # lda
    c_int64,  # strideA
    c_void_p,  # B
    c_int,  # ldb
    c_int64,  # strideB
    c_void_p,  # beta
    c_void_p,  # C
    c_int,  # ldc
    c_int64,  # strideC
    c_int,  # batchCount
]
_SIGNATURES: dict[str, list[Any]] = {
    "cublasCreate_v2": [POINTER(c_void_p)],
    "cublasDestroy_v2": [c_void_p],
    "cublasSgemmStridedBatched": _GEMM_ARGS,
    "cublasDgemmStridedBatched": _GEMM_ARGS,
}


@dataclass(frozen=True)
class GemmCall:
    """One cuBLAS strided-batched GEMM in cuBLAS's (column-major) terms: `first` and `second`
    name the buffers of its A and B operands (graphc's B and A), `*_offset` their first
    elements, `out` the buffer of C."""

    dtype: str  # "f32" or "f64"
    transa: int
    transb: int
    m: int
    n: int
    k: int
    first: str
    first_offset: int
    lda: int
    stride_a: int
    second: str
    second_offset: int
    ldb: int
    stride_b: int
    out: str
    ldc: int
    stride_c: int
    batch: int


def plan_gemm(
    kernel: k.MatmulKernel, bindings: Mapping[str, int], aliased: bool
) -> GemmCall | None:
    """Return the cuBLAS call computing a matmul kernel's product (its epilogue aside) for
    these symbol sizes, or None if the own kernel should: small, integers, a layout cuBLAS
    cannot address (A's depth or rows in runs), or a product in a Variable's memory (`aliased`),
    which cuBLAS would write even after a failed kernel, where the own kernel does nothing."""
    in_runs = kernel.a_depth_runs is not None or kernel.a_row_runs is not None
    if aliased or kernel.dtype not in (float32, float64) or in_runs:
        return None
    m, n, depth = (evaluate(x, bindings) for x in (kernel.m, kernel.n, kernel.k))
    extents = [evaluate(x, bindings) for x in kernel.batch]
    batch = 1
    for extent in extents:
        batch *= extent
    if m * n * depth * batch < LARGE or min(m, n, depth) < 2:
        return None
    a = _matrix(kernel.a, extents, bindings, rows=m, columns=depth)
    b = _matrix(kernel.b, extents, bindings, rows=depth, columns=n)
    if a is None or b is None:
        return None
    # C^T (n x m, column-major) = op(B^T) (n x k) @ op(A^T) (k x m).
    (a_op, a_ld, a_stride, a_offset), (b_op, b_ld, b_stride, b_offset) = a, b
    return GemmCall(
        kernel.dtype.short,
        b_op,
        a_op,
        n,
        m,
        depth,
        kernel.b.buffer,
        b_offset,
        b_ld,
        b_stride,
        kernel.a.buffer,
        a_offset,
        a_ld,
        a_stride,
        kernel.out,
        n,
        m * n,
        batch,
    )


def _matrix(
    operand: k.Operand, extents: Sequence[int], bindings: Mapping[str, int], rows: int, columns: int
) -> tuple[int, int, int, int] | None:
    """Return (cuBLAS op, leading dim, batch stride, offset) of a row-major operand seen
    column-major as its transpose, or None if cuBLAS cannot address it."""
    strides = [evaluate(s, bindings) for s in operand.strides]
    row_stride, column_stride = strides[-2:]
    if column_stride == 1 and row_stride >= columns:
        op, leading = _OP_N, row_stride  # the transpose, column-major, as stored
    elif row_stride == 1 and column_stride >= rows:
        op, leading = _OP_T, column_stride  # stored column-major: cuBLAS transposes it
    else:
        return None
    batch_stride = _collapsed_stride(extents, strides[:-2])
    if batch_stride is None:
        return None
    return op, leading, batch_stride, evaluate(operand.offset, bindings)


def _collapsed_stride(extents: Sequence[int], strides: Sequence[int]) -> int | None:
    """Return s such that matrix f of the flattened batch starts f * s elements in, or None
    if the batch dims' strides are not of that form (dims of extent 1 do not count)."""
    stride, inner = None, 1
    for extent, step in zip(reversed(extents), reversed(strides), strict=True):
        if extent == 1:
            continue
        if stride is None:
            stride = step  # the innermost dim that moves
        if step != stride * inner:
            return None
        inner *= extent
    return 0 if stride is None else stride


class Cublas:
    """A cuBLAS handle in the current context, and its GEMMs."""

    def __init__(self, library: Any) -> None:
        for name, arguments in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes = arguments
            function.restype = c_int
        self._lib = library
        handle = c_void_p()
        self._check(library.cublasCreate_v2(byref(handle)), "cublasCreate")
        self._handle = handle
        self._scalars = {"f32": (c_float(1.0), c_float(0.0)), "f64": (c_double(1.0), c_double(0.0))}

    def gemm(self, call: GemmCall, addresses: Mapping[str, int]) -> None:
        """Run a planned GEMM on the buffers at these device addresses."""
        itemsize = 4 if call.dtype == "f32" else 8
        alpha, beta = self._scalars[call.dtype]
        function = (
            self._lib.cublasSgemmStridedBatched
            if call.dtype == "f32"
            else self._lib.cublasDgemmStridedBatched
        )
        result = function(
            self._handle,
            call.transa,
            call.transb,
            call.m,
            call.n,
            call.k,
            ctypes.addressof(alpha),
            addresses[call.first] + itemsize * call.first_offset,
            call.lda,
            call.stride_a,
            addresses[call.second] + itemsize * call.second_offset,
            call.ldb,
            call.stride_b,
            ctypes.addressof(beta),
            addresses[call.out],
            call.ldc,
            call.stride_c,
            call.batch,
        )
        self._check(result, "cublasGemmStridedBatched")

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CompileError(f"{what} failed with cuBLAS status {status}")


def wanted() -> bool:
    """Return whether cuBLAS may be used (GRAPHC_CUBLAS=0 turns it off)."""
    return os.environ.get(USE_VARIABLE, "").strip() != "0"


def load_library() -> ctypes.CDLL | None:
    """Return libcublas loaded from the first place it is found, or None."""
    for candidate in _library_candidates():
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    return None


def _library_candidates() -> list[str]:
    """Return where libcublas may be: the loader's search path, then the nvidia wheels."""
    candidates = [name for name in (ctypes.util.find_library("cublas"),) if name]
    candidates += ["libcublas.so.13", "libcublas.so.12"]
    spec = importlib.util.find_spec("nvidia")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(folder, "*", "lib", "libcublas.so*")))
    return candidates
