"""The LLVM backend's packed GEMM kernel, JIT-compiled for every target the host can run (its own,
AVX-512, AVX2, SSE2), in both plans (the usual tile and the narrow one for few columns), and
called through ctypes, against numpy."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

llvmlite = pytest.importorskip("llvmlite")
llvm = pytest.importorskip("llvmlite.binding")
ir = pytest.importorskip("llvmlite.ir")

from graphc.backends.llvm import gemm  # noqa: E402
from graphc.backends.llvm.gemm_dot import DOT_MAX_SIDE  # noqa: E402
from graphc.backends.llvm.target import (  # noqa: E402
    CpuTarget,
    can_execute,
    cpu_target,
    host_target,
)
from graphc.errors import DTypeError  # noqa: E402

# The host's own target, then one per ISA family: every plan the host can run is tested.
TARGETS = ["host", "avx512", "avx2", "sse2"]


def target_named(name: str) -> CpuTarget:
    """Return the host's target for 'host', else the target of a GRAPHC_CPU value."""
    return host_target() if name == "host" else cpu_target(name)


_SIGNATURE = ctypes.CFUNCTYPE(
    None,
    *(ctypes.c_int64,) * 3,
    *(ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64) * 2,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int32,
    ctypes.c_void_p,
    *(ctypes.c_int64,) * 7,
)
_NUMPY = {"f32": np.float32, "f64": np.float64}
# Bound on |C - A @ B| relative to |A| @ |B| (the magnitude the rounding error scales with).
_RTOL = {"f32": 2e-6, "f64": 1e-14}


class JitGemm:
    """Both dtypes' GEMMs of one plan (narrow or not) compiled once for a target; call(...)
    runs one on numpy arrays."""

    def __init__(self, target: CpuTarget, narrow: bool = False) -> None:
        self.target = target
        self.narrow = narrow
        module = ir.Module(name="gemm_test")
        module.triple = target.triple
        names = {dtype: gemm.gemm_function(module, dtype, target, narrow).name for dtype in _NUMPY}
        self.ir_text = str(module)
        machine = target.target_machine(opt=3)
        parsed = llvm.parse_assembly(self.ir_text)
        parsed.verify()
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
        builder.getModulePassManager().run(parsed, builder)
        self.engine = llvm.create_mcjit_compiler(parsed, machine)
        self.engine.finalize_object()
        self.functions = {
            dtype: _SIGNATURE(self.engine.get_function_address(name))
            for dtype, name in names.items()
        }

    def plan(self, dtype: str) -> gemm.GemmPlan:
        """Return the plan the dtype's GEMM was compiled with."""
        return gemm.gemm_plan(dtype, self.target, self.narrow)

    def call(
        self,
        dtype: str,
        a: np.ndarray,
        b: np.ndarray,
        c: np.ndarray,
        accumulate: bool = False,
        workspace: np.ndarray | None = None,
        skinny: bool = False,
        packed: tuple[np.ndarray, int, int] | None = None,
        runs: tuple[int, int] | None = None,
        row_runs: tuple[int, int, int, int] | None = None,
    ) -> None:
        """Run C (+)= A @ B in place; A and B may be any strided views, C has unit column stride.
        skinny lets the GEMM take its dot-product path where A and B are laid out for it;
        packed = (buffer, columns, first column) reads B from a buffer packed by pack(); runs =
        (run length, run stride) reads A's depth in runs, a then being the first run; row_runs =
        (M, run length, run stride, first row) reads M rows of A in runs, a then being the first
        run's first row."""
        m, (k, n) = a.shape[0], b.shape
        run_length, run_stride = runs if runs else (k, 0)
        m, *rows = row_runs if row_runs else (m, 0, 0, 0)
        item = c.itemsize
        assert c.shape == (m, n) and (m == 0 or n <= 1 or c.strides[1] == item)
        if workspace is None:
            workspace = aligned_workspace(dtype, self.target)
        self.functions[dtype](
            m,
            n,
            k,
            a.ctypes.data,
            a.strides[0] // item,
            a.strides[1] // item,
            b.ctypes.data,
            b.strides[0] // item,
            b.strides[1] // item,
            c.ctypes.data,
            c.strides[0] // item,
            workspace.ctypes.data,
            (gemm.ACCUMULATE if accumulate else 0)
            | (gemm.SKINNY if skinny else 0)
            | (gemm.PACKED_B if packed else 0),
            *((packed[0].ctypes.data, packed[1], packed[2]) if packed else (None, 0, 0)),
            run_length,
            run_stride,
            *rows,
        )

    def pack(self, dtype: str, b: np.ndarray, packed: np.ndarray) -> None:
        """Pack all of B (any strided view) into packed, as a loop does before its first step."""
        (k, n), item = b.shape, b.itemsize
        args = (0, n, k, None, 0, 0, b.ctypes.data, b.strides[0] // item, b.strides[1] // item)
        packing = (gemm.PACK_B, packed.ctypes.data, 0, 0, k, 0, 0, 0, 0)
        self.functions[dtype](*args, None, 0, None, *packing)


def aligned_workspace(dtype: str, target: CpuTarget) -> np.ndarray:
    """Return a 64-byte aligned scratch buffer of workspace_bytes(dtype, target) bytes."""
    return aligned_bytes(gemm.workspace_bytes(dtype, target))


def aligned_bytes(size: int) -> np.ndarray:
    """Return size bytes starting at a 64-byte boundary, as the arena places every buffer."""
    raw = np.empty(size + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size]


@pytest.fixture(
    scope="module",
    params=[(name, narrow) for name in TARGETS for narrow in (False, True)],
    ids=lambda param: f"{param[0]}-{'narrow' if param[1] else 'usual'}",
)
def jit(request: pytest.FixtureRequest) -> JitGemm:
    """Return the GEMMs of both plans compiled for each target in TARGETS that this host can
    run."""
    name, narrow = request.param
    target = target_named(name)
    if not can_execute(target):
        pytest.skip(f"this host cannot run {target.cpu} code (tests/test_targets.py emits it)")
    return JitGemm(target, narrow)


def assert_gemm_close(dtype: str, got: np.ndarray, a: np.ndarray, b: np.ndarray, c0=None) -> None:
    """Check got == c0 + a @ b within a tolerance scaled by |a| @ |b| (computed in float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 @ b64 if c0 is None else c0.astype(np.float64) + a64 @ b64
    scale = np.abs(a64) @ np.abs(b64) + (0.0 if c0 is None else np.abs(c0))
    error = np.abs(got.astype(np.float64) - want)
    assert np.all(error <= _RTOL[dtype] * scale + 1e-30), f"max error {error.max()}"


# M, N, K: edge cases, tile remainders of every plan's NR (64, 32, 16, 8, 4), skinny shapes, and
# blocks crossing MC (120 f32, 60 f64 on Zen 4's caches), KC (512) and NC (2048 f32, 1024 f64).
SHAPES = [
    (1, 1, 1),
    (2, 3, 4),
    (6, 64, 8),
    (7, 65, 9),
    (6, 16, 4),
    (11, 17, 13),
    (12, 9, 31),
    (5, 3, 2),
    (5, 63, 1),
    (1, 300, 70),
    (300, 1, 70),
    (1, 1, 600),
    (13, 17, 600),
    (121, 130, 33),
    (250, 70, 270),
    (3, 2100, 5),
    # Rows of B longer than gemm.IN_PLACE_ROW_BYTES in every plan: A packed.
    (50, 300, 40),
    (61, 530, 20),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_numpy(jit: JitGemm, dtype: str, shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a = rng.standard_normal((m, k)).astype(_NUMPY[dtype])
    b = rng.standard_normal((k, n)).astype(_NUMPY[dtype])
    c = np.full((m, n), np.nan, dtype=_NUMPY[dtype])  # accumulate=0 must never read C
    jit.call(dtype, a, b, c)
    assert_gemm_close(dtype, c, a, b)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_random_shapes_up_to_130(jit: JitGemm, dtype: str) -> None:
    # Edge tiles in every combination: M, N, K drawn from 1..130, both operands possibly
    # transposed, C overwritten or accumulated into.
    rng = np.random.default_rng(2024)
    for _ in range(25):
        m, n, k = (int(v) for v in rng.integers(1, 131, size=3))
        transpose_a, transpose_b = rng.random(2) < 0.5
        # astype keeps a transposed view's layout, so A and B are read through their strides.
        a = rng.standard_normal((k, m)).T if transpose_a else rng.standard_normal((m, k))
        b = rng.standard_normal((n, k)).T if transpose_b else rng.standard_normal((k, n))
        a, b = a.astype(_NUMPY[dtype]), b.astype(_NUMPY[dtype])
        c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
        accumulate = bool(rng.random() < 0.5)
        c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype=_NUMPY[dtype])
        jit.call(dtype, a, b, c, accumulate=accumulate)
        assert_gemm_close(dtype, c, a, b, c0 if accumulate else None)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_transposed_operands_through_strides(
    jit: JitGemm, dtype: str, transpose_a: bool, transpose_b: bool
) -> None:
    m, n, k = 37, 150, 530
    rng = np.random.default_rng(7)
    x = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(_NUMPY[dtype])
    y = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(_NUMPY[dtype])
    a = x.T if transpose_a else x
    b = y.T if transpose_b else y
    c = np.empty((m, n), dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, c)
    assert_gemm_close(dtype, c, a, b)


def test_arbitrary_strided_views(jit: JitGemm) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 90)).astype(np.float32)[::2, ::3]  # 20 x 30, strides 180 and 3
    b = rng.standard_normal((60, 100)).astype(np.float32)[::2, 1::2]  # 30 x 50
    c = np.empty((20, 50), dtype=np.float32)
    jit.call("f32", a, b, c)
    assert_gemm_close("f32", c, a, b)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (9, 70, 3), (130, 67, 600)])
def test_accumulate_adds_to_c(jit: JitGemm, dtype: str, shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    rng = np.random.default_rng(11)
    a = rng.standard_normal((m, k)).astype(_NUMPY[dtype])
    b = rng.standard_normal((k, n)).astype(_NUMPY[dtype])
    c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
    c = c0.copy()
    jit.call(dtype, a, b, c, accumulate=True)
    assert_gemm_close(dtype, c, a, b, c0)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_zero_depth_writes_zeros_or_keeps_c(jit: JitGemm, dtype: str) -> None:
    a = np.empty((5, 0), dtype=_NUMPY[dtype])
    b = np.empty((0, 70), dtype=_NUMPY[dtype])
    c = np.full((5, 70), np.nan, dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, c)
    assert np.array_equal(c, np.zeros((5, 70)))
    c[:] = 2.5
    jit.call(dtype, a, b, c, accumulate=True)
    assert np.all(c == 2.5)


# M, N, a run's length (None: one more than the plan's KC), runs, A's row and column strides.
RUNS = {
    "windows": (50, 32, 48, 3, 16, 1),  # a window_matmul's: rows overlap, runs in one block
    "taps": (37, 16, 3, 3, 1, 1),  # a single channel's 3x3 windows: runs shorter than unroll
    "many_blocks": (20, 70, 200, 7, 9, 1),  # more runs than one depth block of KC holds
    "longer_than_kc": (9, 40, None, 2, 3, 1),  # each run split into depth blocks
    "strided": (13, 24, 5, 4, 40, 3),  # columns 3 apart: the strided micro-kernel
    "one_run": (11, 20, 30, 1, 30, 1),
}


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case", sorted(RUNS))
def test_depth_in_runs(jit: JitGemm, dtype: str, case: str, accumulate: bool) -> None:
    """A[i, k] at i * row stride + (k % L) * column stride + (k / L) * run stride: whatever
    the flags ask (skinny here), every run is multiplied and added, and nothing else."""
    m, n, length, runs, row_stride, column_stride = RUNS[case]
    length = length or jit.plan(dtype).kc + 1
    run_stride = (length - 1) * column_stride + 7
    rng = np.random.default_rng(runs * 1009 + length)
    size = (m - 1) * row_stride + (length - 1) * column_stride + (runs - 1) * run_stride + 1
    flat = rng.standard_normal(size).astype(_NUMPY[dtype])
    k = np.arange(length * runs)
    at = np.arange(m)[:, None] * row_stride + (k % length) * column_stride
    a = flat[at + (k // length) * run_stride]
    first_run = np.lib.stride_tricks.as_strided(
        flat, (m, length), (row_stride * flat.itemsize, column_stride * flat.itemsize)
    )
    b = rng.standard_normal((length * runs, n)).astype(_NUMPY[dtype])
    c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
    c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype=_NUMPY[dtype])
    jit.call(dtype, first_run, b, c, accumulate, skinny=True, runs=(length, run_stride))
    assert_gemm_close(dtype, c, a, b, c0 if accumulate else None)


# M, N, rows per run (None: the plan's MR), first row, depth runs (length, count), A's column
# stride. A's rows are 5 x its column stride apart, runs of rows 3 rows and 1 element more.
ROW_RUNS = {
    "image_rows": (196, 32, 14, 0, (48, 1), 1),  # MNIST's second layer, one image
    "thread_block": (98, 16, 14, 103, (48, 1), 1),  # a second thread's rows: phase 5
    "tile_rows": (33, 20, None, 5, (9, 1), 1),  # a run of one tile's rows
    "many_row_blocks": (700, 8, 29, 3, (7, 1), 1),  # blocks of MC rows start mid-run
    "window": (60, 24, 13, 0, (12, 3), 1),  # depth in runs too
    "strided": (40, 20, 12, 7, (10, 1), 3),  # columns 3 apart: the strided micro-kernel
}


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case", sorted(ROW_RUNS))
def test_rows_in_runs(jit: JitGemm, dtype: str, case: str, accumulate: bool) -> None:
    """Row i of A is row r = first + i of runs of L rows: at (r % L) * row stride + (r / L) *
    run stride. Every row is read from its run, whatever the flags ask (skinny here), and C's
    rows stay contiguous."""
    m, n, length, first, (depth_length, depth_runs), column_stride = ROW_RUNS[case]
    length = length or jit.plan(dtype).mr
    row_stride = 5 * column_stride
    run_stride = (length + 3) * row_stride + 1
    depth_stride = (depth_length - 1) * column_stride + 2
    last_row = first + m - 1
    rows = np.arange(first, first + m)
    row_at = (rows % length) * row_stride + (rows // length) * run_stride
    k = np.arange(depth_length * depth_runs)
    column_at = (k % depth_length) * column_stride + (k // depth_length) * depth_stride
    size = int(row_at.max() + column_at.max()) + 1
    assert row_at.max() == (last_row % length) * row_stride + (last_row // length) * run_stride
    rng = np.random.default_rng(m * 31 + n)
    flat = rng.standard_normal(size).astype(_NUMPY[dtype])
    a = flat[row_at[:, None] + column_at]
    first_row = np.lib.stride_tricks.as_strided(
        flat, (1, depth_length), (row_stride * flat.itemsize, column_stride * flat.itemsize)
    )
    b = rng.standard_normal((k.size, n)).astype(_NUMPY[dtype])
    c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
    c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype=_NUMPY[dtype])
    jit.call(
        dtype,
        first_row,
        b,
        c,
        accumulate,
        skinny=True,
        runs=(depth_length, depth_stride),
        row_runs=(m, length, run_stride, first),
    )
    assert_gemm_close(dtype, c, a, b, c0 if accumulate else None)


@pytest.mark.parametrize("skinny", [False, True], ids=["packed", "skinny"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("shape", [(48, 64, 40), (12, 96, 9), (53, 70, 21)])
def test_whole_and_edge_tiles_overwrite_c(
    jit: JitGemm, skinny: bool, transpose_a: bool, shape: tuple[int, int, int]
) -> None:
    # Whole tiles store without masks and edge tiles with them: either way C's old contents,
    # NaN here, must neither leak into an overwrite nor be skipped by an accumulation.
    m, n, k = shape
    rng = np.random.default_rng(29)
    x = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    a = x.T if transpose_a else x
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, dtype=np.float32)
    jit.call("f32", a, b, c, skinny=skinny)
    assert_gemm_close("f32", c, a, b)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c[:] = c0
    jit.call("f32", a, b, c, accumulate=True, skinny=skinny)
    assert_gemm_close("f32", c, a, b, c0)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_column_output_with_and_without_transposition(jit: JitGemm, dtype: str) -> None:
    # A contiguous C[M, 1] is computed as C.T = B.T @ A.T; a strided column cannot be.
    rng = np.random.default_rng(17)
    a = rng.standard_normal((130, 530)).astype(_NUMPY[dtype])
    b = rng.standard_normal((530, 1)).astype(_NUMPY[dtype])
    contiguous = np.empty((130, 1), dtype=_NUMPY[dtype])
    strided = np.empty((130, 5), dtype=_NUMPY[dtype])[:, 2:3]
    jit.call(dtype, a, b, contiguous)
    jit.call(dtype, a, b, strided)
    assert_gemm_close(dtype, contiguous, a, b)
    assert np.array_equal(contiguous, strided)


def test_empty_output_is_a_no_op(jit: JitGemm) -> None:
    a = np.ones((4, 4), dtype=np.float32)
    jit.call("f32", a[:0], a, np.empty((0, 4), dtype=np.float32))  # M = 0
    c = np.full((4, 4), 7.0, dtype=np.float32)
    jit.call("f32", a, a[:, :0], c[:, :0])  # N = 0
    assert np.all(c == 7.0)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_writes_only_inside_c(jit: JitGemm, dtype: str) -> None:
    # C is a window of a larger buffer (row stride 80): masked edge tiles must not touch the rest.
    rng = np.random.default_rng(5)
    a = rng.standard_normal((11, 20)).astype(_NUMPY[dtype])
    b = rng.standard_normal((20, 67)).astype(_NUMPY[dtype])
    buffer = np.full((13, 80), -7.0, dtype=_NUMPY[dtype])
    c = buffer[1:12, 3:70]
    jit.call(dtype, a, b, c)
    assert_gemm_close(dtype, c, a, b)
    outside = np.ones(buffer.shape, dtype=bool)
    outside[1:12, 3:70] = False
    assert np.all(buffer[outside] == -7.0)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("split", [64, 100])
def test_disjoint_column_blocks_on_two_threads(jit: JitGemm, dtype: str, split: int) -> None:
    m, n, k = 70, 200, 300
    rng = np.random.default_rng(13)
    a = rng.standard_normal((m, k)).astype(_NUMPY[dtype])
    b = rng.standard_normal((k, n)).astype(_NUMPY[dtype])
    whole = np.empty((m, n), dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, whole)
    halves = np.empty((m, n), dtype=_NUMPY[dtype])
    blocks = [slice(0, split), slice(split, n)]
    threads = [
        threading.Thread(
            target=jit.call,
            args=(dtype, a, b[:, cols], halves[:, cols]),
            kwargs={"workspace": aligned_workspace(dtype, jit.target)},
        )
        for cols in blocks
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each element sums over k in the same order whichever block it is in: bitwise equal.
    assert np.array_equal(whole, halves)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("transposed", [False, True], ids=["b", "b_T"])
def test_prepacked_b_matches_packing_per_call(jit: JitGemm, dtype: str, transposed: bool) -> None:
    """B packed once (two depth blocks, a padded last panel) and read by calls over column
    blocks, at a panel's start or not (which packs per call), gives the per-call results."""
    m, n, k = 30, 150, jit.plan(dtype).kc + 37
    nr = jit.plan(dtype).nr
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k)).astype(_NUMPY[dtype])
    b = rng.standard_normal((n, k)).astype(_NUMPY[dtype]).T if transposed else None
    b = rng.standard_normal((k, n)).astype(_NUMPY[dtype]) if b is None else b
    packed = aligned_bytes(k * (n + nr) * b.itemsize).view(_NUMPY[dtype])
    packed[:] = np.nan
    jit.pack(dtype, b, packed)
    want = np.empty((m, n), dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, want)
    got = np.full((m, n), np.nan, dtype=_NUMPY[dtype])
    for cols in (slice(0, nr), slice(nr, nr + 5), slice(nr + 5, n)):
        jit.call(dtype, a, b[:, cols], got[:, cols], packed=(packed, n, cols.start))
    assert np.array_equal(got, want)


def test_function_is_cached_and_ir_is_readable() -> None:
    target = cpu_target("avx2")
    module = ir.Module(name="names")
    first = gemm.gemm_function(module, "float32", target)
    assert gemm.gemm_function(module, "f32", target) is first
    assert first.name == "graphc_gemm_f32_6x16"
    text = str(module)
    for name in ("graphc_gemm_f32_6x16_micro_kernel", "graphc_gemm_f32_6x16_pack_b"):
        assert name in text
    assert '%"c_row_stride"' in text


def test_plans_of_different_targets_share_a_module() -> None:
    # Functions are named after their plan: one module can hold every plan side by side.
    module = ir.Module(name="plans")
    names = {
        gemm.gemm_function(module, dtype, cpu_target(name)).name
        for name in ("avx512", "avx2", "sse2")
        for dtype in _NUMPY
    }
    assert names == {
        "graphc_gemm_f32_6x64",
        "graphc_gemm_f64_6x32",
        "graphc_gemm_f32_6x16",
        "graphc_gemm_f64_6x8",
        "graphc_gemm_f32_6x8",
        "graphc_gemm_f64_6x4",
    }
    llvm.parse_assembly(str(module)).verify()


def test_narrow_plans_have_twice_the_rows_and_the_same_registers() -> None:
    module = ir.Module(name="narrow")
    names = set()
    for name in ("avx512", "avx2", "sse2"):
        target = cpu_target(name)
        for dtype in _NUMPY:
            usual, narrow = (gemm.gemm_plan(dtype, target, n) for n in (False, True))
            assert (narrow.mr, narrow.nr) == (2 * usual.mr, usual.nr // 2)
            assert narrow.mr * narrow.vectors == usual.mr * usual.vectors
            names.add(gemm.gemm_function(module, dtype, target, narrow=True).name)
    assert names == {
        "graphc_gemm_f32_12x32",
        "graphc_gemm_f64_12x16",
        "graphc_gemm_f32_12x8",
        "graphc_gemm_f64_12x4",
        "graphc_gemm_f32_12x4",
        "graphc_gemm_f64_12x2",
    }
    llvm.parse_assembly(str(module)).verify()


@pytest.mark.parametrize("name", TARGETS)
def test_workspace_and_dtype_errors(name: str) -> None:
    target = target_named(name)
    sizes = [
        (plan.kc * plan.nc + plan.mc * plan.kc) * 4
        for plan in (gemm.gemm_plan("f32", target, narrow) for narrow in (False, True))
    ]
    assert gemm.workspace_bytes("f32", target) == -(-max(sizes) // 64) * 64
    assert gemm.workspace_bytes("float64", target) % 64 == 0
    with pytest.raises(DTypeError, match="int32"):
        gemm.workspace_bytes("int32", target)


# The dot path: A's rows and B's columns contiguous (x @ W.T). K around one vector of every
# plan (4 .. 16 lanes), M and N around its blocks (3 and 4) and the skinny limit.
DOT_SHAPES = [
    (1, 1, 1),
    (1, 10, 33),
    (3, 3, 4),
    (4, 4, 16),
    (5, 7, 17),
    (9, 13, 15),
    (16, 256, 784),
    (24, 33, 8),
    (6, 5, 40),
    (300, 2, 70),
    (2, 300, 0),
]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", DOT_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dot_path_matches_numpy(
    jit: JitGemm, dtype: str, accumulate: bool, shape: tuple[int, int, int]
) -> None:
    m, n, k = shape
    rng = np.random.default_rng(m * 31 + n * 7 + k)
    a = rng.standard_normal((m, k)).astype(_NUMPY[dtype])
    b = rng.standard_normal((n, k)).astype(_NUMPY[dtype]).T  # columns contiguous along K
    c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
    c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, c, accumulate=accumulate, skinny=True)
    assert_gemm_close(dtype, c, a, b, c0 if accumulate else None)


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_skinny_products_in_every_layout(jit: JitGemm, transpose_a: bool, transpose_b: bool):
    # Only one layout suits the dot path; the others must take the packed path, also correct.
    rng = np.random.default_rng(23)
    m, n, k = 7, 90, 45
    x = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    y = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    a, b = (x.T if transpose_a else x), (y.T if transpose_b else y)
    c = np.full((m, n), np.nan, dtype=np.float32)
    jit.call("f32", a, b, c, skinny=True)
    assert_gemm_close("f32", c, a, b)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_dot_path_writes_only_inside_c(jit: JitGemm, dtype: str) -> None:
    rng = np.random.default_rng(29)
    a = rng.standard_normal((6, 21)).astype(_NUMPY[dtype])
    b = rng.standard_normal((11, 21)).astype(_NUMPY[dtype]).T
    buffer = np.full((9, 30), -7.0, dtype=_NUMPY[dtype])
    c = buffer[2:8, 5:16]
    jit.call(dtype, a, b, c, skinny=True)
    assert_gemm_close(dtype, c, a, b)
    outside = np.ones(buffer.shape, dtype=bool)
    outside[2:8, 5:16] = False
    assert np.all(buffer[outside] == -7.0)


# The row path: B's rows contiguous, A read through both strides. M around the plan's MR (6),
# N around every plan's NR (64, 32, 16, 8), K from 0.
ROW_SHAPES = [(1, 1, 1), (5, 3, 2), (6, 64, 8), (7, 65, 9), (13, 17, 4), (24, 130, 25), (4, 9, 0)]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_path_matches_numpy(
    jit: JitGemm, dtype: str, accumulate: bool, transpose_a: bool, shape: tuple[int, int, int]
) -> None:
    m, n, k = shape
    rng = np.random.default_rng(m * 17 + n * 5 + k)
    x = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(_NUMPY[dtype])
    a = x.T if transpose_a else x
    b = rng.standard_normal((k, n)).astype(_NUMPY[dtype])
    c0 = rng.standard_normal((m, n)).astype(_NUMPY[dtype])
    c = c0.copy() if accumulate else np.full((m, n), np.nan, dtype=_NUMPY[dtype])
    jit.call(dtype, a, b, c, accumulate=accumulate, skinny=True)
    assert_gemm_close(dtype, c, a, b, c0 if accumulate else None)


def test_row_path_writes_only_inside_c(jit: JitGemm) -> None:
    rng = np.random.default_rng(31)
    a = rng.standard_normal((7, 5)).astype(np.float32)
    b = rng.standard_normal((5, 70)).astype(np.float32)
    buffer = np.full((10, 90), -7.0, dtype=np.float32)
    c = buffer[1:8, 4:74]
    jit.call("f32", a, b, c, skinny=True)
    assert_gemm_close("f32", c, a, b)
    outside = np.ones(buffer.shape, dtype=bool)
    outside[1:8, 4:74] = False
    assert np.all(buffer[outside] == -7.0)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("columns", [32, 33, 8])
def test_compiled_matmuls_with_few_columns_call_the_narrow_plan(
    monkeypatch: pytest.MonkeyPatch, threads: str, columns: int
) -> None:
    """A batched product of constant N within the narrow tile (attention's heads) calls the
    narrow GEMM, transposed operands and row blocks split over threads included; wider N, or
    N for the skinny paths, does not. Both match numpy."""
    import graphc as gc

    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    narrow = gemm.gemm_plan("f32", narrow=True)
    rng = np.random.default_rng(columns)
    a = gc.input("a", ("B", 150, 530), gc.float32)
    b = gc.input("b", ("B", columns, 530), gc.float32)
    function = gc.compile(
        [a, b], [a @ b.transpose(1, 2), a.transpose(1, 2) @ (a @ b.transpose(1, 2))]
    )
    x = rng.standard_normal((3, 150, 530)).astype(np.float32)
    y = rng.standard_normal((3, columns, 530)).astype(np.float32)
    scores, back = function(x, y)
    want = x.astype(np.float64) @ y.astype(np.float64).transpose(0, 2, 1)
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(back, x.transpose(0, 2, 1) @ want, rtol=1e-4, atol=2e-2)
    fits = DOT_MAX_SIDE < columns <= narrow.nr
    uses_narrow = narrow != gemm.gemm_plan("f32") and fits
    assert (narrow.name in function.llvm_ir()) == uses_narrow
