"""gc.scan: the loop op against Python loops in numpy, finite differences and torch, on every
backend; its type errors, its listing, its gradient's shape (one forward loop), and the
LLVM backend's native loop (one compiled Function for every length)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, GraphError, IndexingError, ShapeError
from graphc.testing import check_grad

torch = pytest.importorskip("torch")


def _rnn(h0, xs, w, u, b, reverse=False):
    """A tanh RNN cell over xs; returns (last h, every h)."""

    def cell(h, x):
        h = gc.tanh(h @ w + x @ u + b)
        return h, h

    return gc.scan(cell, h0, xs, reverse=reverse)


def _numpy_rnn(h0, xs, w, u, b, reverse=False):
    h, hs = h0, np.zeros((len(xs), *h0.shape), h0.dtype)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        h = np.tanh(h @ w + xs[t] @ u + b)
        hs[t] = h
    return h, hs


@pytest.mark.parametrize("reverse", [False, True])
def test_one_function_serves_every_length(backend, rng, reverse):
    w = rng.standard_normal((4, 4)).astype(np.float32) * 0.5
    u = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    weights = [gc.Variable(a) for a in (w, u, b)]
    xs = gc.input("xs", ("T", "B", 3))
    h0 = gc.input("h0", ("B", 4))
    h, hs = _rnn(h0, xs, *weights, reverse=reverse)
    assert hs.shape[0] == xs.shape[0]
    f = gc.compile([xs, h0], [h, hs], backend=backend)
    for length in (5, 17, 1, 0):
        x = rng.standard_normal((length, 2, 3)).astype(np.float32)
        start = rng.standard_normal((2, 4)).astype(np.float32)
        got_h, got_hs = f(x, start)
        want_h, want_hs = _numpy_rnn(start, x, w, u, b, reverse)
        np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_hs, want_hs, rtol=1e-5, atol=1e-6)


def test_carries_and_steps_may_be_trees(backend, rng):
    xs = rng.standard_normal((6, 3)).astype(np.float32)
    scales = rng.standard_normal(6).astype(np.float32)

    def step(carry, x):
        (total, count), history = carry
        value, scale = x
        total = total + value * scale
        return ((total, count + 1), [history[0] * 0.5 + total]), (total.sum(), count)

    init = ((gc.zeros(3), gc.tensor(0)), [gc.ones(3)])
    ((total, count), [history]), (sums, counts) = gc.scan(
        step, init, [gc.tensor(xs), gc.tensor(scales)]
    )
    f = gc.compile([], [total, count, history, sums, counts], backend=backend)
    got = f()
    want_total, want_history, want_sums = np.zeros(3, np.float32), np.ones(3, np.float32), []
    for value, scale in zip(xs, scales, strict=True):
        want_total = want_total + value * scale
        want_history = want_history * 0.5 + want_total
        want_sums.append(want_total.sum())
    np.testing.assert_allclose(got[0], want_total, rtol=1e-5)
    assert got[1] == 6 and got[1].dtype == np.int64
    np.testing.assert_allclose(got[2], want_history, rtol=1e-5)
    np.testing.assert_allclose(got[3], want_sums, rtol=1e-5)
    np.testing.assert_array_equal(got[4], np.arange(6))


def test_length_without_xs_and_no_ys(backend):
    def double(carry, x):
        assert x is None
        return carry * 2, None

    final, ys = gc.scan(double, gc.tensor([1.0, 3.0]), length=5)
    assert ys is None
    np.testing.assert_array_equal(gc.compile([], [final], backend=backend)(), [32.0, 96.0])


def test_body_reads_outside_values_as_inputs(backend, rng):
    """Closures over fed inputs and computed tensors become the scan node's inputs."""
    x = gc.input("x", ("T", 2))
    scale = gc.input("scale", (2,))
    shift = (scale * 3).exp()

    def step(carry, value):
        return carry + value * scale - shift, carry

    final, ys = gc.scan(step, gc.zeros(2), x)
    node = final.node.inputs[0]
    assert node.op == "scan" and len(node.inputs) == 1 + 1 + 2
    f = gc.compile([x, scale], [final, ys], backend=backend)
    xv, sv = rng.standard_normal((4, 2)).astype(np.float32), np.float32([0.5, -1.0])
    got_final, got_ys = f(xv, sv)
    carry, want_ys = np.zeros(2, np.float32), []
    for value in xv:
        want_ys.append(carry)
        carry = carry + value * sv - np.exp(sv * 3)
    np.testing.assert_allclose(got_final, carry, rtol=1e-5)
    np.testing.assert_allclose(got_ys, np.stack(want_ys), rtol=1e-5)


def test_nested_scans(backend, rng):
    grid = rng.standard_normal((3, 4, 2)).astype(np.float32)

    def row(total, values):
        inner, _ = gc.scan(lambda c, v: (c * 0.5 + v, None), gc.zeros(2), values)
        return total + inner, inner

    total, inners = gc.scan(row, gc.zeros(2), gc.tensor(grid))
    got_total, got_inners = gc.compile([], [total, inners], backend=backend)()
    want = []
    for values in grid:
        c = np.zeros(2, np.float32)
        for v in values:
            c = c * 0.5 + v
        want.append(c)
    np.testing.assert_allclose(got_inners, np.stack(want), rtol=1e-5)
    np.testing.assert_allclose(got_total, np.sum(want, axis=0), rtol=1e-5)


def test_kernels_reading_a_loops_results_run_after_it(backend, rng):
    """A reduction of a loop's result may not join a kernel that runs before the loop."""
    a = gc.input("a", (4, 3, 5))
    before = a.sum(dim=(0, 1))
    _, ys = gc.scan(lambda c, x: (c + x, c + x), gc.zeros(5), a.reshape(12, 5))
    f = gc.compile([a], [before, ys.sum(dim=0)], backend=backend)
    values = rng.standard_normal((4, 3, 5)).astype(np.float32)
    got_before, got_after = f(values)
    np.testing.assert_allclose(got_before, values.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    want = np.cumsum(values.reshape(12, 5), axis=0).sum(axis=0)
    np.testing.assert_allclose(got_after, want, rtol=1e-5, atol=1e-5)


# -- type errors ------------------------------------------------------------------------------


def test_a_carry_that_changes_shape_names_it_and_the_line():
    with pytest.raises(ShapeError) as error:
        gc.scan(
            lambda c, x: ((c[0], c[1].sum(dim=0)), x),
            (gc.zeros(2), gc.zeros((3, 2))),
            gc.zeros((4, 1)),
        )
    message = str(error.value)
    assert "carry[1]" in message and "f32[3,2]" in message and "f32[2]" in message
    assert "test_scan.py:" in message


def test_a_carry_that_changes_dtype_is_a_dtype_error():
    with pytest.raises(DTypeError) as error:
        gc.scan(lambda c, x: (c + x, c), gc.zeros(2), gc.zeros((4, 2), dtype=gc.float64))
    assert "carry" in str(error.value) and "f64[2]" in str(error.value)


def test_structure_and_length_errors():
    with pytest.raises(GraphError, match="structure"):
        gc.scan(lambda c, x: ((c, c), x), gc.zeros(2), gc.zeros((4, 2)))
    with pytest.raises(ShapeError, match="same leading dim"):
        gc.scan(lambda c, x: (c, None), gc.zeros(2), (gc.zeros((4, 2)), gc.zeros((5, 2))))
    with pytest.raises(GraphError, match="length"):
        gc.scan(lambda c, x: (c, None), gc.zeros(2))
    with pytest.raises(GraphError, match=r"\(carry, y\)"):
        gc.scan(lambda c, x: c, gc.zeros(2), gc.zeros((4, 2)))


def test_listing_shows_the_body_nested():
    xs = gc.input("xs", ("T", "B", 3))
    w = gc.Variable(np.zeros((3, 3), np.float32))
    h0 = gc.input("h0", ("B", 3))
    final, _ = gc.scan(lambda h, x: (gc.tanh(h @ w + x), h), h0, xs)
    text = str(gc.subgraph(final))
    assert "scan(" in text and ": (f32[B,3], f32[T,B,3])" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "body(")
    assert lines[start].startswith("    body(")
    body = lines[start : lines.index("    }", start) + 1]
    assert "      %carry0 : f32[B,3]," in body and "      %x0 : f32[B,3]," in body
    assert any("tanh(" in line and ": f32[B,3]" in line for line in body)
    assert lines[lines.index("    }", start) + 1].lstrip().startswith("%")


# -- gradients --------------------------------------------------------------------------------


def _rnn_loss(h0, xs, w, u, b):
    h, hs = _rnn(h0, xs, w, u, b)
    return (h * h).sum() + (hs * gc.tensor(np.linspace(-1, 1, 4))).sum()


def _two_carries(h0, xs, w):
    def cell(carry, x):
        a, c = carry
        a = a * gc.sigmoid(x @ w) + c
        return (a, c * 0.9 + x), a.sum(dim=1)

    (a, c), ys = gc.scan(cell, (h0, h0 * 2), xs, reverse=True)
    return a * c + ys.sum(dim=0, keepdim=True).T


def _nested(w, xs):
    def row(total, values):
        inner, _ = gc.scan(
            lambda c, v: (gc.tanh(c * w + v), None), gc.zeros(2, dtype=gc.float64), values
        )
        return total + inner, inner

    total, inners = gc.scan(row, gc.zeros(2, dtype=gc.float64), xs)
    return total * 2 + inners.sum(dim=0)


@pytest.mark.parametrize(
    "fn, shapes",
    [
        (_rnn_loss, [(3, 4), (5, 3, 2), (4, 4), (2, 4), (4,)]),
        (_two_carries, [(3, 4), (6, 3, 4), (4, 4)]),
        (_nested, [(2,), (3, 4, 2)]),
    ],
    ids=["tanh_rnn", "two_carries_reverse", "nested"],
)
def test_gradients_match_finite_differences(backend, rng, fn, shapes):
    arrays = [rng.standard_normal(shape) * 0.5 for shape in shapes]
    assert check_grad(fn, arrays, backend=backend) < 1e-6


def test_second_derivative_through_scan(backend, rng):
    def directional(h0, xs, w):
        loss = _rnn_loss(
            h0, xs, w, gc.ones((2, 4), dtype=gc.float64), gc.zeros(4, dtype=gc.float64)
        )
        g = gc.grad(loss, w)
        return (g * gc.tensor(np.linspace(0, 1, 16).reshape(4, 4))).sum()

    arrays = [rng.standard_normal(shape) * 0.5 for shape in [(3, 4), (4, 3, 2), (4, 4)]]
    assert check_grad(directional, arrays, backend=backend) < 1e-5


def test_training_gradient_runs_the_forward_loop_once(rng):
    xs = gc.input("xs", ("T", 2, 3))
    weights = [
        gc.Variable(rng.standard_normal(s).astype(np.float32)) for s in [(4, 4), (3, 4), (4,)]
    ]
    h, hs = _rnn(gc.zeros((2, 4)), xs, *weights)
    loss = (hs * hs).mean()
    f = gc.compile([xs], [loss, *gc.grad(loss, weights)], backend="reference")
    loops = [n for n in f.graph.nodes if n.op == "scan"]
    assert len(loops) == 2  # the forward, storing its carries, and the backward
    assert {loop.attrs["reverse"] for loop in loops} == {False, True}


def test_backward_loop_reuses_products_and_sums_weight_gradients_after(rng):
    """The backward loop computes one product per step for each gradient it carries or steps
    (h's and x's): h @ W.T comes stored from the forward, W's and U's gradients are each one
    product over every step after the loop, and W is read untransposed."""
    xs = gc.input("xs", ("T", 2, 3))
    w = gc.Variable(rng.standard_normal((4, 4)).astype(np.float32))
    u = gc.Variable(rng.standard_normal((3, 4)).astype(np.float32))
    _, hs = gc.scan(lambda h, x: (gc.tanh(h @ w.T + x @ u),) * 2, gc.zeros((2, 4)), xs)
    loss = (hs * hs).mean()
    f = gc.compile([xs], [loss, *gc.grad(loss, [w, u])], backend="reference")
    (backward,) = [n for n in f.graph.nodes if n.op == "scan" and n.attrs["reverse"]]
    products = [n for n in backward.attrs["body"].nodes if n.op == "matmul"]
    assert len(products) == 2
    (recurrent,) = [n for n in products if n.inputs[1].type.shape == (4, 4)]
    assert recurrent.inputs[1].op == "input"  # W itself, not the transpose of W.T
    outside = [n for n in f.graph.nodes if n.op == "matmul"]
    assert len(outside) == 2
    assert {str(n.inputs[0].type.shape[-1]) for n in outside} == {str(xs.shape[0] * 2)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("transposed", [False, True], ids=["x_w", "x_wT"])
def test_a_weight_read_at_every_step_is_packed_once(monkeypatch, rng, transposed, threads, dtype):
    """A loop's matmul by the same weight at every step reads it packed before the loop: over
    two depth blocks, with a zero-padded last panel, from either layout, in both float dtypes
    and with the columns split over threads, the products are numpy's."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    batch, depth, width, length = 30, 600, 200, 3
    w0 = rng.standard_normal((width, depth) if transposed else (depth, width)).astype(dtype)
    xs0 = rng.standard_normal((length, batch, depth)).astype(dtype)
    w, xs = gc.input("w", w0.shape, dtype), gc.input("xs", ("T", batch, depth), dtype)
    weight = w.T if transposed else w
    total, ys = gc.scan(lambda c, x: (c + x[0, 0], x @ weight), gc.zeros((), dtype=dtype), xs)
    f = gc.compile([w, xs], [total, ys])
    matmuls = [kernel for kernel in _nested_kernels(f) if type(kernel).__name__ == "MatmulKernel"]
    assert [kernel.packed_b is not None for kernel in matmuls] == [True]
    got = f(w0, xs0)[1]
    want = xs0.astype(np.float64) @ (w0.T if transposed else w0).astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def _nested_kernels(f):
    """Return every kernel of a compiled Function, inside loops too."""
    from graphc.backends.kernel.ir import nested_kernels

    return list(nested_kernels(f._executable.program.kernels))


@pytest.mark.parametrize("transposed", [False, True], ids=["h_w", "h_wT"])
def test_gradients_match_torch_rnn(backend, rng, transposed):
    """A tanh RNN cell unrolled in torch against gc.scan: the loss and every gradient (the
    weight read as is, and transposed as nn.RNN reads it)."""
    batch, inputs, hidden, length = 3, 5, 6, 7
    arrays = {
        "w": rng.standard_normal((hidden, hidden)) * 0.3,
        "u": rng.standard_normal((inputs, hidden)) * 0.3,
        "b": rng.standard_normal(hidden) * 0.1,
        "h0": rng.standard_normal((batch, hidden)),
        "xs": rng.standard_normal((length, batch, inputs)),
    }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    feeds = {k: gc.input(k, v.shape) for k, v in arrays.items()}
    w = feeds["w"].T if transposed else feeds["w"]
    h, hs = _rnn(feeds["h0"], feeds["xs"], w, feeds["u"], feeds["b"])
    loss = (hs.sum(dim=2) ** 2).mean() + h.sum()
    f = gc.compile(
        list(feeds.values()), [loss, *gc.grad(loss, list(feeds.values()))], backend=backend
    )
    got = f(*arrays.values())

    t = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    state, steps = t["h0"], []
    for x in t["xs"]:
        w = t["w"].T if transposed else t["w"]
        state = torch.tanh(state @ w + x @ t["u"] + t["b"])
        steps.append(state)
    want = (torch.stack(steps).sum(dim=2) ** 2).mean() + state.sum()
    want.backward()
    np.testing.assert_allclose(got[0], want.item(), rtol=1e-5)
    for value, name in zip(got[1:], arrays, strict=True):
        np.testing.assert_allclose(value, t[name].grad.numpy(), rtol=1e-4, atol=1e-5)


def test_training_step_updates_the_weights_the_loop_reads(backend, rng):
    """Weights read inside the body and updated by the step: the same numbers as the
    reference backend over several steps."""
    w0 = rng.standard_normal((4, 4)).astype(np.float32) * 0.4
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    results = {}
    for name in ("reference", backend):
        w = gc.Variable(w0.copy())
        xs = gc.input("xs", ("T", 2, 4))
        _, hs = gc.scan(lambda h, v, w=w: (gc.tanh(h @ w + v), h), gc.zeros((2, 4)), xs)
        loss = (hs * hs).sum()
        step = gc.compile([xs], [loss], updates={w: w - 0.05 * gc.grad(loss, w)}, backend=name)
        losses = [step(x) for _ in range(4)]
        results[name] = (np.array(losses), w.numpy())
    np.testing.assert_allclose(results[backend][0], results["reference"][0], rtol=1e-5)
    np.testing.assert_allclose(results[backend][1], results["reference"][1], rtol=1e-5, atol=1e-6)


def test_repeated_steps_and_bad_indices_inside_the_body(backend, rng):
    table = gc.Variable(rng.standard_normal((5, 3)).astype(np.float32))
    ids = gc.input("ids", ("T",), gc.int64)
    final, _ = gc.scan(lambda c, i: (c + table[i], None), gc.zeros(3), ids)
    f = gc.compile([ids], [final], updates={table: table * 2}, backend=backend)
    before = table.numpy().copy()
    np.testing.assert_allclose(f(np.array([0, 4, 4])), before[[0, 4, 4]].sum(axis=0), rtol=1e-6)
    with pytest.raises(IndexingError):
        f(np.array([1, 7]))
    np.testing.assert_array_equal(table.numpy(), before * 2)  # the failed call changed nothing
    stepped = f.repeat(2)(np.array([[0, 1], [2, 3]]))
    np.testing.assert_allclose(stepped[0], before[[0, 1]].sum(axis=0) * 2, rtol=1e-6)
    np.testing.assert_allclose(stepped[1], before[[2, 3]].sum(axis=0) * 4, rtol=1e-6)


# -- nn.RNN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_layers": 2, "bidirectional": True, "batch_first": True},
        {"nonlinearity": "relu", "num_layers": 2},
        {"bias": False, "bidirectional": True},
    ],
    ids=[
        "tanh",
        "two_layers_bidirectional_batch_first",
        "relu_two_layers",
        "no_bias_bidirectional",
    ],
)
def test_rnn_matches_torch_with_its_state_dict(backend, rng, options):
    reference = torch.nn.RNN(3, 5, **options).double()
    model = gc.nn.RNN(3, 5, **options)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in reference.state_dict().items()}
    model.load_state_dict(state)
    assert [name for name, _ in model.named_parameters()] == list(state)
    batch_first = options.get("batch_first", False)
    states = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x_array = rng.standard_normal((4, 6, 3) if batch_first else (6, 4, 3))
    h_array = rng.standard_normal((states, 4, 5))
    x = gc.input("x", ("N", "T", 3) if batch_first else ("T", "N", 3))
    h0 = gc.input("h0", (states, "N", 5))
    out, h_n = model(x, h0)
    loss = (out * out).sum() + h_n.sum()
    params = list(model.parameters())
    f = gc.compile([x, h0], [out, h_n, *gc.grad(loss, [x, h0, *params])], backend=backend)
    got = f(x_array.astype(np.float32), h_array.astype(np.float32))

    tx = torch.tensor(x_array, requires_grad=True)
    th = torch.tensor(h_array, requires_grad=True)
    t_out, t_h_n = reference(tx, th)
    ((t_out * t_out).sum() + t_h_n.sum()).backward()
    want = [t_out, t_h_n, tx.grad, th.grad, *(p.grad for p in reference.parameters())]
    for value, expected in zip(got, want, strict=True):
        expected = expected.detach().numpy()
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_rnn_unbatched_input_and_default_state(rng):
    reference = torch.nn.RNN(2, 3).double()
    model = gc.nn.RNN(2, 3)
    model.load_state_dict(
        {k: v.detach().numpy().astype(np.float32) for k, v in reference.state_dict().items()}
    )
    x_array = rng.standard_normal((5, 2))
    out, h_n = model(gc.tensor(x_array.astype(np.float32)))
    assert out.shape == (5, 3) and h_n.shape == (1, 3)
    t_out, t_h_n = reference(torch.tensor(x_array))
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n.numpy(), t_h_n.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="expects an input"):
        model(gc.zeros((5, 4, 7)))
