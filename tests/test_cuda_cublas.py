"""cuBLAS through ctypes: which matmuls go to it, and the arguments the binding passes, checked
on the emulator against a stand-in library that computes what cuBLAS computes (column-major,
strided batched) on the emulator's device memory, which is host memory. What this cannot show
is that the real libcublas agrees: scripts/gpu_check.sh runs these graphs on a GPU."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import cublas
from graphc.backends.cuda.cublas import Cublas, GemmCall, plan_gemm
from graphc.backends.cuda.driver import DRIVER_VARIABLE, selected_driver
from graphc.backends.cuda.emulator import EmulatedDriver
from graphc.backends.kernel import ir as k


@pytest.fixture(autouse=True)
def emulate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DRIVER_VARIABLE, "emulate")
    monkeypatch.delenv(cublas.USE_VARIABLE, raising=False)


def _column_major(address: int, dtype, op: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """Return op(X) (rows x cols) of the column-major matrix at a device address, as cuBLAS
    reads it: op N reads X[i + j * ld], op T reads X[j + i * ld]."""
    size = np.dtype(dtype).itemsize
    extent = (cols - 1) * ld + rows if op == 0 else (rows - 1) * ld + cols
    memory = (ctypes.c_char * (extent * size)).from_address(address)
    flat = np.ndarray((extent,), dtype, buffer=memory)
    strides = (size, ld * size) if op == 0 else (ld * size, size)
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), strides, writeable=True)


def _fake_library() -> SimpleNamespace:
    """Return a stand-in for libcublas: its GEMMs compute on host memory and are recorded."""
    calls: list[tuple] = []

    def create(handle) -> int:
        handle._obj.value = 1
        return 0

    def gemm(dtype):
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double

        def run(
            handle, ta, tb, m, n, depth, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count
        ):
            calls.append((ta, tb, m, n, depth, lda, sa, ldb, sb, ldc, sc, count))
            size = np.dtype(dtype).itemsize
            for f in range(count):
                left = _column_major(a + f * sa * size, dtype, ta, m, depth, lda)
                right = _column_major(b + f * sb * size, dtype, tb, depth, n, ldb)
                out = _column_major(c + f * sc * size, dtype, 0, m, n, ldc)
                product = scalar.from_address(alpha).value * (left.astype(np.float64) @ right)
                keep = scalar.from_address(beta).value
                out[...] = product if keep == 0 else product + keep * out  # BLAS: C unread
            return 0

        return run

    return SimpleNamespace(
        calls=calls,
        cublasCreate_v2=create,
        cublasDestroy_v2=lambda handle: 0,
        cublasSgemmStridedBatched=gemm(np.float32),
        cublasDgemmStridedBatched=gemm(np.float64),
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Give the emulated driver a cuBLAS backed by the stand-in library."""
    library = _fake_library()
    handle = Cublas(library)
    monkeypatch.setattr(EmulatedDriver, "blas", lambda self: handle)
    return library


def test_a_large_matmul_goes_to_cublas_with_row_major_operands_swapped(rng, fake):
    x = gc.input("x", ("M", 256))
    w = gc.Variable(rng.standard_normal((256, 192)).astype(np.float32), name="w")
    f = gc.compile([x], [x @ w], backend="cuda")
    data = rng.standard_normal((384, 256)).astype(np.float32)
    np.testing.assert_allclose(f(data), data @ w.numpy(), rtol=1e-4, atol=1e-4)
    # C^T (192 x 384) = W^T @ X^T: both stored row-major, so neither is transposed.
    assert fake.calls == [(0, 0, 192, 384, 256, 192, 0, 256, 0, 192, 192 * 384, 1)]
    # A small call of the same Function runs the own kernel.
    small = data[:4]
    np.testing.assert_allclose(f(small), small @ w.numpy(), rtol=1e-5, atol=1e-5)
    assert len(fake.calls) == 1


def test_a_fused_epilogue_runs_as_a_kernel_of_its_own_after_cublas(rng, fake):
    x = gc.input("x", ("M", 256))
    w = gc.Variable(rng.standard_normal((256, 192)).astype(np.float32), name="w")
    bias = gc.Variable(rng.standard_normal(192).astype(np.float32), name="bias")
    f = gc.compile([x], [gc.relu(x @ w + bias) * 2.0], backend="cuda")
    (info,) = f.kernels()
    assert [launch.symbol.split(".")[0] for launch in info.launches] == [
        info.name,
        f"{info.name}_epilogue",
    ]
    for rows, calls in ((384, 1), (4, 1)):  # the small call runs the fused own kernel
        data = rng.standard_normal((rows, 256)).astype(np.float32)
        want = np.maximum(data @ w.numpy() + bias.numpy(), 0.0) * 2.0
        np.testing.assert_allclose(f(data), want, rtol=1e-4, atol=1e-4)
        assert len(fake.calls) == calls


def test_transposed_and_batched_operands(rng, fake):
    a = gc.input("a", (4, 300, 256), gc.float64)
    b = gc.input("b", (256, 128), gc.float64)
    c = gc.input("c", (4, 128, 300), gc.float64)
    f = gc.compile([a, b, c], [a @ b, (a.transpose(1, 2) @ c.transpose(1, 2))], backend="cuda")
    arrays = [
        rng.standard_normal((4, 300, 256)),
        rng.standard_normal((256, 128)),
        rng.standard_normal((4, 128, 300)),
    ]
    product, gram = f(*arrays)
    np.testing.assert_allclose(product, arrays[0] @ arrays[1], rtol=1e-10)
    want = arrays[0].transpose(0, 2, 1) @ arrays[2].transpose(0, 2, 1)
    np.testing.assert_allclose(gram, want, rtol=1e-10)
    assert len(fake.calls) == 2
    by_shape = {call[2:5]: call for call in fake.calls}
    # a @ b: b is shared by the batch (stride 0), a moves a whole matrix per batch entry.
    assert by_shape[(128, 300, 256)][:2] == (0, 0)
    assert by_shape[(128, 300, 256)][6:9] == (0, 256, 300 * 256)
    # a^T @ c^T: both operands are stored transposed, so cuBLAS transposes both.
    assert by_shape[(128, 256, 300)][:2] == (1, 1)
    assert by_shape[(128, 256, 300)][-1] == 4


def _matmul(function: gc.Function) -> k.MatmulKernel:
    (matmul,) = [
        kn for kn in function._executable.program.kernels if isinstance(kn, k.MatmulKernel)
    ]
    return matmul


def test_what_stays_with_the_own_kernel():
    x = gc.input("x", ("M", 512))
    w = gc.Variable(np.ones((512, 512), np.float32), name="w")
    plain = _matmul(gc.compile([x], [x @ w], backend="cuda"))
    assert isinstance(plan_gemm(plain, {"M": 512}, aliased=False), GemmCall)
    assert plan_gemm(plain, {"M": 32}, aliased=False) is None  # small
    assert plan_gemm(plain, {"M": 512}, aliased=True) is None  # writes a Variable


def test_gemm_marshals_every_argument_in_order():
    library = _fake_library()
    seen = []
    library.cublasDgemmStridedBatched = lambda *args: seen.append(args) or 0
    handle = Cublas(library)
    call = GemmCall("f64", 1, 0, 3, 5, 7, "b", 2, 9, 63, "a", 4, 7, 21, "out", 3, 15, 6)
    handle.gemm(call, {"a": 1000, "b": 5000, "out": 9000})
    (args,) = seen
    assert args[1:6] == (1, 0, 3, 5, 7)
    assert ctypes.c_double.from_address(args[6]).value == 1.0
    assert args[7:10] == (5000 + 8 * 2, 9, 63)
    assert args[10:13] == (1000 + 8 * 4, 7, 21)
    assert ctypes.c_double.from_address(args[13]).value == 0.0
    assert args[14:] == (9000, 3, 15, 6)


def test_gpu_settings_keep_cublas_off(monkeypatch):
    monkeypatch.setenv(cublas.USE_VARIABLE, "0")
    assert not cublas.wanted()
    monkeypatch.delenv(cublas.USE_VARIABLE)
    assert cublas.wanted()
    assert EmulatedDriver().blas() is None


def _gpu_cublas() -> bool:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DRIVER_VARIABLE, "cuda")
        return gc.cuda.is_available() and selected_driver().blas() is not None


@pytest.mark.skipif(not _gpu_cublas(), reason="needs a GPU and libcublas")
def test_cublas_on_the_gpu_agrees_with_the_own_kernel(rng, monkeypatch):
    monkeypatch.setenv(DRIVER_VARIABLE, "cuda")
    calls = []
    gemm = Cublas.gemm
    monkeypatch.setattr(Cublas, "gemm", lambda self, *args: calls.append(args) or gemm(self, *args))
    a = gc.input("a", (3, 320, 256))
    b = gc.input("b", (256, 384))
    c = gc.input("c", (3, 300, 320), gc.float64)
    d = gc.input("d", (3, 300, 320), gc.float64)
    arrays = [
        rng.standard_normal((3, 320, 256)).astype(np.float32),
        rng.standard_normal((256, 384)).astype(np.float32),
        rng.standard_normal((3, 300, 320)),
        rng.standard_normal((3, 300, 320)),
    ]
    outputs = [a @ b, c.transpose(1, 2) @ d]
    results = {}
    for use in ("1", "0"):
        monkeypatch.setenv(cublas.USE_VARIABLE, use)
        results[use] = gc.compile([a, b, c, d], outputs, backend="cuda")(*arrays)
    assert len(calls) == 2  # both products went to cuBLAS when it was allowed
    want = [arrays[0].astype(np.float64) @ arrays[1], arrays[2].transpose(0, 2, 1) @ arrays[3]]
    for use, (single, double) in results.items():
        np.testing.assert_allclose(single, want[0], rtol=1e-4, atol=1e-3, err_msg=use)
        np.testing.assert_allclose(double, want[1], rtol=1e-10, atol=1e-10, err_msg=use)
