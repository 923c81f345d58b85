"""The CUDA backend: kernels of every kind against numpy, index errors, Variables and the call
contract, on the CPU emulator and (where there is one) on the GPU; and the emulator noticing a
missing barrier."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda.dialect import EmulatedDialect
from graphc.backends.cuda.driver import DRIVER_VARIABLE, selected_driver
from graphc.errors import CompileError, GraphError, IndexingError


def _device_present() -> bool:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(DRIVER_VARIABLE, raising=False)
        return gc.cuda.is_available()


DRIVERS = ["emulate"] + (["cuda"] if _device_present() else [])


@pytest.fixture(params=DRIVERS, autouse=True)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on the emulator, and on the GPU where there is one."""
    monkeypatch.setenv(DRIVER_VARIABLE, request.param)
    return request.param


@pytest.fixture
def emulator(driver: str) -> None:
    """Run a test on the emulator only."""
    if driver != "emulate":
        pytest.skip("a test of the emulator")


def _softmax(rows: int, width: int):
    x = gc.input("x", ("B", width))
    return gc.compile([x], [gc.softmax(x, -1)], backend="cuda"), (rows, width)


def _numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("width", [1, 7, 300, 1000])
def test_softmax_rows_match_numpy(rng, width):
    f, _ = _softmax(5, width)
    for rows in (1, 5, 8):
        x = rng.standard_normal((rows, width)).astype(np.float32) * 4
        np.testing.assert_allclose(f(x), _numpy_softmax(x), rtol=2e-6, atol=1e-7)


def test_reductions_over_the_last_axis_take_a_block_per_row(rng):
    x = gc.input("x", (6, 700), gc.float64)
    f = gc.compile(
        [x],
        [x.sum(-1), gc.logsumexp(x, -1), x.amax(-1), x.argmax(-1), x.argmin(-1)],
        backend="cuda",
    )
    reductions = [launch for launch in f._executable.launches() if "reduce" in launch.kernel]
    assert reductions and all(launch.per_block == 1 for launch in reductions)
    a = rng.standard_normal((6, 700))
    a[2, 10] = a[2, 500] = 50.0  # a tie: the first index wins
    a[3, 600] = a[3, 100] = -50.0
    a[4, 300] = np.nan  # NaN is the maximum and the minimum
    sums, lse, amax, argmax, argmin = f(a)
    np.testing.assert_allclose(sums, a.sum(-1), rtol=1e-12)
    peak = a.max(-1, keepdims=True)
    np.testing.assert_allclose(lse, np.log(np.exp(a - peak).sum(-1)) + peak[:, 0], rtol=1e-12)
    np.testing.assert_array_equal(amax, a.max(-1))
    np.testing.assert_array_equal(argmax, np.argmax(a, -1))
    np.testing.assert_array_equal(argmin, np.argmin(a, -1))


def test_integer_and_leading_axis_reductions(rng):
    x = gc.input("x", ("N", 33), gc.int64)
    f = gc.compile([x], [x.sum(0), x.sum(-1), x.amax(0), x.argmax(-1)], backend="cuda")
    a = rng.integers(-1000, 1000, (517, 33))
    sum0, sum1, max0, argmax = f(a)
    np.testing.assert_array_equal(sum0, a.sum(0))
    np.testing.assert_array_equal(sum1, a.sum(-1))
    np.testing.assert_array_equal(max0, a.max(0))
    np.testing.assert_array_equal(argmax, a.argmax(-1))


def _launch_grids(f) -> dict[str, list[str]]:
    return {info.name: [launch.grid for launch in info.launches] for info in f.kernels()}


def test_wide_reductions_run_over_partials_on_many_blocks(rng):
    """A reduction of many elements into a few runs in two kernels: chunks of the elements
    into a partials buffer on many blocks, then the few outputs over the partials."""
    x = gc.input("x", (4096, 512))
    y = gc.input("y", (3, 70000), gc.float64)
    n = gc.input("n", (96, 1024), gc.int64)
    p = gc.input("p", (65536,))
    outputs = [x.sum(), x.amax(), x.amin(), gc.sqrt((x * x).mean()) + 1, y.sum(-1), n.sum()]
    f = gc.compile([x, y, n, p], [*outputs, p.prod(), p.sum(0, keepdim=True)], backend="cuda")
    grids = _launch_grids(f)
    partials = [name for name in grids if "_partials" in name]
    assert len(partials) == 8, grids
    if "emulator" not in gc.cuda.device_name():  # the emulator runs at most a few blocks
        assert all(int(grids[name][0]) >= 32 for name in partials), grids
    a = rng.standard_normal((4096, 512)).astype(np.float32)
    b = rng.standard_normal((3, 70000))
    c = rng.integers(-(1 << 40), 1 << 40, (96, 1024))
    d = (1 + 1e-3 * rng.standard_normal(65536)).astype(np.float32)
    got = f(a, b, c, d)
    wide = a.astype(np.float64)
    np.testing.assert_allclose(got[0], wide.sum(), rtol=1e-5)
    np.testing.assert_array_equal(got[1], a.max())
    np.testing.assert_array_equal(got[2], a.min())
    np.testing.assert_allclose(got[3], np.sqrt((wide * wide).mean()) + 1, rtol=1e-5)
    np.testing.assert_allclose(got[4], b.sum(-1), rtol=1e-12)
    np.testing.assert_array_equal(got[5], c.sum())
    np.testing.assert_allclose(got[6], np.prod(d.astype(np.float64)), rtol=1e-4)
    np.testing.assert_allclose(got[7], [d.astype(np.float64).sum()], rtol=1e-5)


def test_reductions_that_stay_in_one_pass(rng):
    """Few elements, extents with no divisor to chunk by, symbolic extents, many outputs and
    argmax keep one kernel, with the same results."""
    x = gc.input("x", (65537,))
    s = gc.input("s", ("B", 70000))
    f = gc.compile(
        [x, s], [x.sum(), x[:1000].sum(), s.sum(), s.sum(0), s.argmax(-1)], backend="cuda"
    )
    assert not [name for name in _launch_grids(f) if "_partials" in name]
    a = rng.standard_normal(65537).astype(np.float32)
    b = rng.standard_normal((2, 70000)).astype(np.float32)
    whole, head, total, columns, argmax = f(a, b)
    np.testing.assert_allclose(whole, a.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(head, a[:1000].astype(np.float64).sum(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total, b.astype(np.float64).sum(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(columns, b.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(argmax, b.argmax(-1))


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64])
def test_batched_matmul_with_strided_operands_and_epilogue(rng, dtype):
    a = gc.input("a", (3, "M", 70), dtype)
    b = gc.input("b", (3, 130, 70), dtype)
    c = gc.input("c", (130,), dtype)
    f = gc.compile([a, b, c], [gc.relu(a @ b.transpose(1, 2) + c)], backend="cuda")
    x = rng.standard_normal((3, 67, 70)).astype(dtype.numpy)
    y = rng.standard_normal((3, 130, 70)).astype(dtype.numpy)
    z = rng.standard_normal(130).astype(dtype.numpy)
    tolerance = 1e-5 if dtype == gc.float32 else 1e-12
    want = np.maximum(x @ y.transpose(0, 2, 1) + z, 0)
    np.testing.assert_allclose(f(x, y, z), want, rtol=tolerance, atol=tolerance)


def test_scatter_add_with_repeated_targets(rng):
    table = gc.Variable(rng.standard_normal((10, 4)).astype(np.float32), name="table")
    index = gc.input("index", ("N",), gc.int64)
    loss = (table[index] ** 2).sum()
    (grad,) = gc.grad(loss, [table])
    f = gc.compile([index], [grad], backend="cuda")
    picks = rng.integers(0, 10, 1000)
    want = np.zeros((10, 4), np.float32)
    np.add.at(want, picks, 2 * table.numpy()[picks])
    np.testing.assert_allclose(f(picks), want, rtol=1e-5, atol=1e-5)


def _barrier_count(build) -> int:
    """Return how many barriers building a Function emits (on a fresh compile)."""
    calls = []
    original = EmulatedDialect.barrier

    def counting(self):
        calls.append(self)
        original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmulatedDialect, "barrier", counting)
        build()
    return len(calls)


def _without_barrier(build, skipped: int):
    """Return build() with the skipped-th barrier of its kernels left out."""
    seen = []
    original = EmulatedDialect.barrier

    def skipping(self):
        seen.append(self)
        if len(seen) - 1 != skipped:
            original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EmulatedDialect, "barrier", skipping)
        return build()


def _softmax_case():
    x = gc.input("x", (9, 1000))
    return lambda: gc.compile([x], [gc.softmax(x, -1)], backend="cuda"), _numpy_softmax


def _matmul_case():
    a, b = gc.input("a", (100, 40)), gc.input("b", (40, 90))
    return lambda: gc.compile([a, b], [a @ b], backend="cuda"), np.matmul


@pytest.mark.parametrize("case", [_softmax_case, _matmul_case], ids=["softmax", "matmul"])
def test_the_emulator_fails_when_any_barrier_is_removed(rng, case, emulator):
    """Each barrier of the block reductions and of the GEMM is needed, and the emulator
    notices every one missing: its phases then run thread by thread, so a thread reads
    shared memory that others have not written yet."""
    build, reference = case()
    f = build()
    arrays = [rng.standard_normal(n.type.shape).astype(np.float32) for n in f.graph.inputs]
    np.testing.assert_allclose(f(*arrays), reference(*arrays), rtol=1e-5, atol=1e-6)
    count = _barrier_count(build)
    assert count >= 1
    for skipped in range(count):
        broken = _without_barrier(build, skipped)(*arrays)
        assert not np.allclose(broken, reference(*arrays)), f"barrier {skipped} of {count}"


def test_a_bad_gather_index_raises_the_cpu_error_and_changes_no_variable(rng):
    w = gc.Variable(np.arange(12.0, dtype=np.float32).reshape(6, 2), name="w")
    steps = gc.Variable(np.zeros((), np.int64), name="steps")
    index = gc.input("index", ("N",), gc.int64)
    picked = w[index]
    updates = {w: w * 2, steps: steps + 1}
    messages = []
    for backend in ("llvm", "cuda"):
        f = gc.compile([index], [picked.sum()], updates, backend=backend)
        with pytest.raises(IndexingError) as caught:
            f(np.array([0, 7, 1]))
        messages.append(str(caught.value))
        np.testing.assert_array_equal(w.numpy(), np.arange(12.0).reshape(6, 2))
        assert steps.numpy() == 0
    assert messages[0] == messages[1]
    assert "index 7 is out of bounds for dim 0 with size 6" in messages[1]


def test_updates_reach_the_variable_and_the_next_call(rng):
    w = gc.Variable(rng.standard_normal((4, 3)).astype(np.float32), name="w")
    momentum = gc.Variable(np.zeros((4, 3), np.float32), name="momentum")
    x = gc.input("x", ("B", 4))
    loss = ((x @ w) ** 2).mean()
    (g,) = gc.grad(loss, [w])
    updates = {momentum: 0.9 * momentum + g, w: w - 0.1 * (0.9 * momentum + g)}
    step = gc.compile([x], [loss], updates, backend="cuda")
    check = gc.compile([x], [loss], updates, backend="llvm")
    start = w.numpy()
    batches = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(3)]
    losses = [step(b) for b in batches]
    after = w.numpy(), momentum.numpy()
    w.assign(start)
    momentum.assign(np.zeros((4, 3), np.float32))
    expected = [check(b) for b in batches]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(after[0], w.numpy(), rtol=1e-5)
    np.testing.assert_allclose(after[1], momentum.numpy(), rtol=1e-5)
    # A value assigned between calls is what the next call reads.
    w.assign(np.ones((4, 3), np.float32))
    ones = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(step(ones), ((ones @ np.ones((4, 3))) ** 2).mean(), rtol=1e-6)


def test_repeat_runs_steps_and_undoes_them_all_on_a_failure():
    total = gc.Variable(np.zeros(3, np.float32), name="total")
    x = gc.input("x", (3,), gc.float32)
    i = gc.input("i", (), gc.int64)
    updates = {total: total + x * gc.gather(x, 0, i.reshape(1))}
    steps = gc.compile([x, i], [total + x], updates, backend="cuda").repeat(3)
    xs = np.arange(9, dtype=np.float32).reshape(3, 3)
    picks = np.array([0, 1, 2])
    want, running = [], np.zeros(3, np.float32)
    for x_step, pick in zip(xs, picks, strict=True):
        want.append(running + x_step)
        running = running + x_step * x_step[pick]
    np.testing.assert_array_equal(steps(xs, picks), np.stack(want))
    np.testing.assert_array_equal(total.numpy(), running)
    with pytest.raises(IndexingError, match=r"at step 1 of 0\.\.2"):
        steps(xs, np.array([0, 5, 1]))
    np.testing.assert_array_equal(total.numpy(), running)


def test_out_arrays_inputs_and_constants_as_outputs(rng):
    x = gc.input("x", ("N",), gc.float64)
    f = gc.compile([x], [x * 2, x, gc.tensor([1.0, 2.0])], backend="cuda")
    a = rng.standard_normal(5)
    targets = (np.empty(5), np.empty(5), np.empty(2, np.float32))
    returned = f(a, out=targets)
    assert all(r is t for r, t in zip(returned, targets, strict=True))
    np.testing.assert_array_equal(targets[0], a * 2)
    np.testing.assert_array_equal(targets[1], a)
    np.testing.assert_array_equal(targets[2], [1.0, 2.0])


def test_the_device_and_its_ptx(driver):
    assert gc.cuda.is_available()
    assert ("emulator" in gc.cuda.device_name()) == (driver == "emulate")
    x = gc.input("x", ("N",))
    f = gc.compile([x], [gc.tanh(x) * 3], backend="cuda")
    assert ".visible .entry fused_tanh_mul_0(" in f.asm()
    assert ".target sm_90" in f._executable.ptx("sm_90")
    assert "ptx_kernel" in f.llvm_ir()


def test_without_a_gpu_the_backend_says_why(monkeypatch, emulator):
    monkeypatch.delenv(DRIVER_VARIABLE)
    if gc.cuda.is_available():
        pytest.skip("a CUDA device is present")
    x = gc.input("x", (3,))
    with pytest.raises(CompileError, match="GRAPHC_CUDA_DRIVER=emulate"):
        gc.compile([x], [x + 1], backend="cuda")


@pytest.mark.parametrize(
    ("script", "arguments", "label"),
    [
        ("word_window.py", ["--epochs", "5"], "held-out word accuracy"),
        ("mlp.py", ["--epochs", "3"], "test accuracy"),
        ("cnn.py", ["--epochs", "1"], "test accuracy"),
    ],
)
def test_the_examples_train_on_cuda(driver, script, arguments, label):
    """The examples take --backend cuda and reach the accuracy they promise (as on llvm)."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    result = subprocess.run(
        [sys.executable, str(examples / script), *arguments, "--backend", "cuda"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, DRIVER_VARIABLE: driver},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(rf"{label}: ([0-9.]+)%", result.stdout)
    assert match is not None and float(match.group(1)) >= 90.0, result.stdout[-500:]


def test_function_ptx_names_each_kernel_for_the_asked_architecture(rng):
    x = gc.input("x", ("B", 64))
    f = gc.compile([x], [(x * 2.0 + 1.0).softmax(dim=1)], backend="cuda")
    np.testing.assert_allclose(
        f(rng.standard_normal((3, 64)).astype(np.float32)).sum(1), np.ones(3), rtol=1e-5
    )
    for arch in ("sm_80", "sm_90"):
        ptx = f.ptx(arch)
        assert f".target {arch}" in ptx
        assert all(f".entry {name}" in ptx for name, _ in f.kernels())
    cpu = gc.compile([x], [x + 1.0], backend="llvm")
    with pytest.raises(GraphError, match="'llvm' backend, which has no PTX"):
        cpu.ptx()


def test_kernels_show_their_launch_geometry_and_the_listing_names_them():
    x = gc.input("x", ("B", 300))
    w = gc.Variable(np.ones((300, 64), np.float32), name="w")
    t = gc.input("t", (1000,))
    f = gc.compile([x, t], [gc.softmax(x @ w, -1), t * 2.0], backend="cuda")
    cap = selected_driver().max_blocks
    by_op = {node.op: info for info in f.kernels() for node in info.nodes}
    geometry = {
        op: [(g.grid, g.block, g.shared_bytes) for g in by_op[op].launches]
        for op in ("matmul", "reduce_sum", "mul")
    }
    # A 64x64 tile per block, two shared buffers of 2 x 16 x 64 floats each.
    assert geometry["matmul"] == [(f"min((B + 63) // 64, {cap})", 256, 16384)]
    # A block per row; each reduction's warp partials (8 floats) and result, 16-byte aligned.
    assert geometry["reduce_sum"] == [(f"min(B, {cap})", 256, 96)]
    # One thread per element: 1000 elements need 4 blocks of 256.
    assert geometry["mul"] == [(str(min(4, cap)), 256, 0)]
    listing = str(f.graph)
    for info in f.kernels():
        name, nodes = info
        assert f"# {name}" in listing and nodes
        assert str(info).startswith(f"{name}: ") and "<<<" in str(info)
