"""The LLVM backend specifically: kernel counts of fusion, threads, symbolic dims, the arena,
run-time index errors, caching and the debugging views."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import IndexingError

rng = np.random.default_rng(7)


def _compile(inputs, outputs, **options):
    return gc.compile(inputs, outputs, backend="llvm", **options)


def test_elementwise_chain_is_one_kernel():
    x, w, b = (gc.input(name, (64,)) for name in "xwb")
    y = (x * w + b).sigmoid() * x.tanh() + 0.5 * x * x
    f = _compile([x, w, b], [y])
    assert len(f.kernels()) == 1
    xs = [rng.standard_normal(64).astype(np.float32) for _ in range(3)]
    x0, w0, b0 = xs
    expected = 1 / (1 + np.exp(-(x0 * w0 + b0))) * np.tanh(x0) + 0.5 * x0 * x0
    np.testing.assert_allclose(f(*xs), expected, rtol=1e-5, atol=1e-6)


def test_row_softmax_is_at_most_two_kernels():
    x = gc.input("x", ("B", 33))
    f = _compile([x], [x.softmax(1)])
    assert len(f.kernels()) <= 2
    value = rng.standard_normal((5, 33)).astype(np.float32) * 10
    e = np.exp(value - value.max(1, keepdims=True))
    np.testing.assert_allclose(f(value), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_linear_relu_is_one_kernel():
    x = gc.input("x", ("B", 16))
    w = gc.Variable(rng.standard_normal((16, 8)).astype(np.float32), name="w")
    b = gc.Variable(rng.standard_normal(8).astype(np.float32), name="b")
    f = _compile([x], [(x @ w + b).relu()])
    assert len(f.kernels()) == 1
    value = rng.standard_normal((3, 16)).astype(np.float32)
    expected = np.maximum(value @ w.numpy() + b.numpy(), 0)
    np.testing.assert_allclose(f(value), expected, rtol=1e-5, atol=1e-5)


def test_activations_and_their_gradient_are_matmul_epilogues():
    """The activations are elementwise composites: after a matmul they are its epilogue, and
    so is their whole gradient (log1p, expm1, atan2 included), before the matmul by w.T."""
    F = gc.nn.functional
    x = gc.input("x", ("B", 16), gc.float64)
    w = gc.Variable(rng.standard_normal((16, 8)), name="w")
    h = x @ w
    y = F.mish(h) + F.softplus(h, beta=2.0) + F.elu(h) + F.hardtanh(h) + F.silu(h) + F.gelu(h)
    y = y + gc.atan2(h, 1.5) + gc.log1p(h * h) + gc.expm1(-h * h)
    f = _compile([x], [y])
    assert len(f.kernels()) == 1
    value = rng.standard_normal((3, 16))
    reference = gc.compile([x], [y], backend="reference")(value)
    np.testing.assert_allclose(f(value), reference, rtol=1e-13, atol=1e-13)
    (g,) = gc.grad(y.sum(), [x])
    f_grad = _compile([x], [g])
    assert len(f_grad.kernels()) == 2
    expected = gc.compile([x], [g], backend="reference")(value)
    np.testing.assert_allclose(f_grad(value), expected, rtol=1e-12, atol=1e-12)


def test_kernels_equal_but_for_their_buffers_share_one_body():
    """Two kernels computing the same on other buffers keep a function each, named after
    them, calling one body; a kernel of another dtype has a body of its own."""
    a, b = gc.input("a", ("B", 64)), gc.input("b", ("B", 64))
    c = gc.input("c", ("B", 64), gc.float64)
    f = _compile([a, b, c], [(t * 2 + 1).tanh() for t in (a, b, c)])
    dtypes = {info.name: info.nodes[-1].type.dtype for info in f.kernels()}
    assert sorted(dtypes.values(), key=str) == [gc.float32, gc.float32, gc.float64]
    definitions = f.llvm_ir().split("\ndefine ")[1:]
    functions = {text.split("@", 1)[1].split("(", 1)[0]: text for text in definitions}
    (body,) = [name for name in functions if name.endswith(".body")]
    for name, dtype in dtypes.items():
        assert (f"@{body}(" in functions[name]) == (dtype == gc.float32), name
    values = [rng.standard_normal((5, 64)).astype(dtype) for dtype in ("f4", "f4", "f8")]
    for got, value in zip(f(*values), values, strict=True):
        np.testing.assert_allclose(got, np.tanh(value * 2 + 1), rtol=1e-6, atol=1e-6)


def test_graph_listing_names_kernels():
    x = gc.input("x", (4,))
    f = _compile([x], [(x * 2).exp()])
    name = f.kernels()[0][0]
    assert f"# {name}" in str(f.graph)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_results_do_not_depend_on_thread_count(monkeypatch, threads):
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", ("B", 300))
    w = gc.Variable(rng.standard_normal((300, 200)).astype(np.float32), name="w")
    f = _compile([x], [(x @ w).tanh().sum(1), (x * x).exp().mean(0)])
    value = rng.standard_normal((257, 300)).astype(np.float32) * 0.1
    rows, columns = f(value)
    np.testing.assert_allclose(rows, np.tanh(value @ w.numpy()).sum(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(columns, np.exp(value * value).mean(0), rtol=1e-5)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize(
    "batch, m, k, n, shared_b",
    [
        (5, 301, 40, 17, True),  # blocks of 768 or 512 rows end inside a matrix
        (7, 130, 50, 40, False),
        (3, 1000, 64, 8, True),
        (64, 20, 40, 30, False),  # many matrices to a block
        (4, 64, 256, 300, False),  # more columns than rows: each matrix's columns are split
        (3, 700, 1100, 70, True),  # B packed once, in three depth blocks
    ],
)
def test_batched_matmuls_split_the_rows_of_all_their_matrices(
    monkeypatch, threads, batch, m, k, n, shared_b
):
    """A batched matmul's work range is the rows of its matrices one after another, so a
    thread's block may end inside one matrix and the next start there: each part is its own
    GEMM call, and the product does not depend on where the blocks fall. A B the matrices
    share is packed once per block."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    a = gc.input("a", ("B", m, k))
    b = gc.input("b", (k, n) if shared_b else ("B", k, n))
    f = _compile([a, b], [a @ b])
    x = rng.standard_normal((batch, m, k)).astype(np.float32)
    y = rng.standard_normal((k, n) if shared_b else (batch, k, n)).astype(np.float32)
    want = x.astype(np.float64) @ y
    np.testing.assert_allclose(f(x, y), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_one_compilation_serves_every_batch_size():
    x = gc.input("x", ("B", 3))
    f = _compile([x], [(x * x).sum(1) + x[:, 0]])
    for batch in (1, 2, 17, 1000):
        value = rng.standard_normal((batch, 3)).astype(np.float32)
        np.testing.assert_allclose(f(value), (value * value).sum(1) + value[:, 0], rtol=1e-5)


def test_arena_is_reported_and_reused():
    x = gc.input("x", ("B", 64))
    h = (x * 2).exp()
    f = _compile([x], [(h * h.sum(1, keepdim=True)).sum()])
    f(np.ones((10, 64), np.float32))
    small = f.memory_stats()["arena_bytes"]
    f(np.ones((100, 64), np.float32))
    assert f.memory_stats()["arena_bytes"] >= small


def test_out_of_range_gather_raises_and_changes_nothing():
    table = gc.Variable(np.arange(5, dtype=np.float32), name="table")
    index = gc.input("index", (2,), gc.int64)
    f = _compile([index], [table[index]], updates={table: table * 2})
    np.testing.assert_array_equal(f(np.array([0, -1])), [0.0, 4.0])
    before = table.numpy()
    with pytest.raises(IndexingError, match="index 7 is out of bounds"):
        f(np.array([1, 7]))
    np.testing.assert_array_equal(table.numpy(), before)


def test_debug_views_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = gc.input("x", (8,))
    f = _compile([x], [x.exp() + 1])
    assert "define void @graph_main" in f.llvm_ir()
    assert "graph_main" in f.asm()
    assert list(tmp_path.glob("*.o"))


def test_dump_writes_ir_and_assembly(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DUMP", str(tmp_path))
    x = gc.input("x", (8,))
    _compile([x], [x.sqrt() * 3])
    suffixes = sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir())
    assert suffixes == ["kernels.txt", "ll", "opt.ll", "s"]


def test_preallocated_outputs_and_symbolic_slice_checks():
    x = gc.input("x", ("B", 4))
    f = _compile([x], [x[:5] * 2])
    out = np.empty((5, 4), np.float32)
    assert f(np.ones((6, 4), np.float32), out=out) is out
    np.testing.assert_array_equal(out, np.full((5, 4), 2.0))
    with pytest.raises(IndexingError, match="B=3"):
        f(np.ones((3, 4), np.float32))
    with pytest.raises(gc.errors.InputError, match="out"):
        f(np.ones((6, 4), np.float32), out=np.empty((4, 4), np.float32))


def test_non_contiguous_inputs_are_copied_not_misread():
    x = gc.input("x", (3, 4))
    f = _compile([x], [x + 0.5])
    base = np.arange(24, dtype=np.float32).reshape(6, 4)
    view = base[::2]
    np.testing.assert_array_equal(f(view), view + 0.5)


def test_updates_are_computed_in_place_when_nothing_can_see_it():
    w = gc.Variable(np.ones(4, np.float32), name="w")
    velocity = gc.Variable(np.zeros(4, np.float32), name="velocity")
    x = gc.input("x", (4,))
    loss = ((w * x) ** 2).sum()
    grad = gc.grad(loss, w)
    new_velocity = velocity * 0.9 + grad
    f = _compile([x], [loss], updates={velocity: new_velocity, w: w - 0.1 * new_velocity})
    stats = f.memory_stats()
    assert stats["in_place_updates"] == 2 and stats["copied_updates"] == 0
    data = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    w0, v0 = w.numpy(), velocity.numpy()
    f(data)
    v1 = v0 * 0.9 + 2 * w0 * data * data
    np.testing.assert_allclose(velocity.numpy(), v1, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), w0 - 0.1 * v1, rtol=1e-6)


def test_an_update_read_later_is_copied_at_the_end():
    a = gc.Variable(np.array([1.0, 2.0], np.float32), name="a")
    b = gc.Variable(np.array([10.0, 20.0], np.float32), name="b")
    # b's new value reads a's old value after a's update is computed: a must not change early.
    f = _compile([], [], updates={a: a * 2, b: b + a.sum()})
    f()
    np.testing.assert_array_equal(a.numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(b.numpy(), [13.0, 23.0])
