"""gc.grad semantics, gradient rules against finite differences and PyTorch, higher order,
numerical stability, and the size of gradient graphs."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import DTypeError, GraphError, ShapeError
from graphc.ops.grad_helpers import apply_op
from graphc.testing import GradientCheckError, check_grad

rng = np.random.default_rng(1234)


def _rand(*shape):
    return rng.standard_normal(shape)


def _positive(*shape):
    return rng.uniform(0.5, 2.0, shape)


# -- torch.autograd.grad semantics ------------------------------------------------------------
def test_single_tensor_in_gives_single_tensor_out():
    x = gc.input("x", (3,), gc.float64)
    g = gc.grad((x * x).sum(), x)
    assert isinstance(g, gc.Tensor) and g.shape == (3,) and g.dtype == gc.float64
    value = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(g.eval({x: value}), 2 * value)


def test_list_in_gives_list_with_wrt_shapes_and_dtypes():
    x = gc.input("x", ("B", 4), gc.float32)
    w = gc.Variable(np.ones((4, 2), np.float32), name="w")
    grads = gc.grad((x @ w).sum(), [x, w])
    assert [g.shape for g in grads] == [x.shape, w.shape]
    assert all(g.dtype == gc.float32 for g in grads)


def test_non_scalar_output_needs_grad_outputs():
    x = gc.input("x", (3,), gc.float64)
    with pytest.raises(ShapeError, match="not a scalar"):
        gc.grad(x * 2, x)
    seed = gc.tensor([1.0, 2.0, 3.0], dtype=gc.float64)
    g = gc.grad(x * x, x, grad_outputs=seed)
    value = np.array([1.0, 1.0, 2.0])
    np.testing.assert_allclose(g.eval({x: value}), 2 * value * np.array([1.0, 2.0, 3.0]))


def test_unused_wrt_is_an_error_none_or_zeros():
    x = gc.input("x", (3,), gc.float64)
    unused = gc.Variable(np.ones(2), name="unused", dtype=gc.float64)
    loss = x.sum()
    with pytest.raises(GraphError, match="does not depend on wrt\\[1\\]"):
        gc.grad(loss, [x, unused])
    assert gc.grad(loss, [x, unused], allow_unused=True)[1] is None
    zeros = gc.grad(loss, [x, unused], materialize_grads=True)[1]
    np.testing.assert_array_equal(zeros.numpy(), np.zeros(2))


def test_integer_wrt_is_an_error():
    i = gc.input("i", (3,), gc.int64)
    with pytest.raises(DTypeError, match="floating-point"):
        gc.grad(i.float().sum(), i)


def test_intermediate_wrt():
    x = gc.input("x", (3,), gc.float64)
    h = x * 3
    g = gc.grad((h * h).sum(), h)
    value = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(g.eval({x: value}), 2 * 3 * value)


def test_non_differentiable_paths_contribute_nothing():
    x = gc.input("x", (4,), gc.float64)
    index = x.argmax()
    mask = (x > 0).to(gc.float64)
    loss = (x * mask).sum() + x[index] + index.to(gc.float64)
    value = np.array([-1.0, 2.0, 0.5, 3.0])
    expected = (value > 0).astype(float) + np.eye(4)[3]
    np.testing.assert_allclose(gc.grad(loss, x).eval({x: value}), expected)


def test_tutorial_example_and_accumulation_counterpart():
    x = gc.tensor(2.0, dtype=gc.float64)
    y = 3 * x * x
    assert gc.grad(y, x).item() == pytest.approx(12.0)
    z = 3 * x * x
    assert gc.grad(y + z, x).item() == pytest.approx(24.0)


def test_value_and_grad():
    x = gc.input("x", (2,), gc.float64)
    value, g = gc.value_and_grad((x * x).sum(), x)
    f = gc.compile([x], [value, g])
    v, dv = f(np.array([3.0, 4.0]))
    assert v == pytest.approx(25.0)
    np.testing.assert_allclose(dv, [6.0, 8.0])


def test_gradient_names_in_listing():
    x = gc.input("x", ("B", 3))
    w1 = gc.Variable(np.ones((3, 2), np.float32), name="W1")
    loss = (x @ w1).sum().named("loss")
    g = gc.grad(loss, w1)
    text = str(gc.compile([x], [loss, g]).graph)
    assert "%(dloss/dW1) = matmul" in text


# -- rules against finite differences ---------------------------------------------------------
CONV = {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2}
POOL = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)}

COMPOSITES = {
    "softmax": (lambda a: a.softmax(1), [_rand(3, 5)]),
    "log_softmax": (lambda a: a.log_softmax(-1), [_rand(3, 5)]),
    "logsumexp": (lambda a: a.logsumexp((0, 1)), [_rand(3, 5)]),
    "std_var": (lambda a: a.std(0) + a.var(1, keepdim=True, correction=0), [_rand(4, 5)]),
    "cross_entropy": (
        lambda a: (
            -(a.log_softmax(1) * gc.tensor(np.eye(5)[[1, 0, 4, 2]], dtype=gc.float64)).sum(1).mean()
        ),
        [_rand(4, 5)],
    ),
    "layer_norm": (
        lambda a: (
            (a - a.mean(-1, keepdim=True)) / (a.var(-1, keepdim=True, correction=0) + 1e-5).sqrt()
        ),
        [_rand(3, 6)],
    ),
    "conv2d": (
        lambda x, w: apply_op("conv2d", [x, w], CONV),
        [_rand(2, 4, 7, 7), _rand(6, 2, 3, 3)],
    ),
    "conv2d_input_grad": (
        lambda g, w: apply_op("conv2d_input_grad", [g, w], {**CONV, "input_hw": (7, 9)}),
        [_rand(2, 6, 4, 5), _rand(6, 2, 3, 3)],
    ),
    "conv2d_weight_grad": (
        lambda x, g: apply_op("conv2d_weight_grad", [x, g], {**CONV, "kernel": (3, 3)}),
        [_rand(2, 4, 7, 7), _rand(2, 6, 4, 3)],
    ),
    "max_pool2d": (lambda x: apply_op("max_pool2d", [x], POOL), [_rand(2, 3, 7, 6)]),
    "avg_pool2d": (
        lambda x: apply_op("avg_pool2d", [x], {**POOL, "count_include_pad": False}),
        [_rand(2, 3, 7, 6)],
    ),
    "gather_indexing": (lambda a, i: a[i] * a[1:2, :], [_rand(5, 3), np.array([0, 2, 2, -1])]),
    "concat_split": (
        lambda a: gc.cat([a, a * 2], 1).split([3, 5], 1)[1].tanh(),
        [_rand(3, 4)],
    ),
    "stack_chunk": (lambda a: gc.stack(a.chunk(2, 1), 0).sigmoid(), [_rand(3, 4)]),
    "pad": (
        lambda a: apply_op("pad", [a], {"pads": ((1, 0), (2, 3)), "value": 0.0}).exp(),
        [_rand(3, 4)],
    ),
    "strided_slice": (lambda a: a[1:, ::2] * a[:2, 1::3].sum(), [_rand(3, 7)]),
    "where": (lambda a, b: gc.where(a > 0, a * b, b.exp()), [_rand(3, 4), _rand(4)]),
    "broadcast_matmul": (lambda a, b: a @ b, [_rand(2, 1, 3, 4), _rand(5, 4, 2)]),
    "matmul_vectors": (lambda a, v: (a @ v) + (v @ a.T).sum(), [_rand(3, 4), _rand(4)]),
    "prod_with_zeros": (lambda a: a.prod(1), [np.array([[1.0, 0, 2], [0, 0, 3], [1, 2, 3]])]),
    "max_min_reductions": (lambda a: a.max(1).values + a.min(), [_rand(3, 5)]),
    "pow_mod_maximum": (
        lambda a, b: a**b + a % 0.7 + gc.maximum(a, b) + gc.minimum(a, 1.0),
        [_positive(3, 4), _positive(3, 4)],
    ),
    "erf_rsqrt": (lambda a: a.erf() * a.rsqrt() + a.sqrt().log(), [_positive(5)]),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_gradients_match_finite_differences(name):
    fn, inputs = COMPOSITES[name]
    assert check_grad(fn, inputs, atol=1e-6, rtol=1e-6) < 1e-5


def test_broadcast_gradients_with_symbolic_batch():
    x = gc.input("x", ("B", 1, 3), gc.float64)
    b = gc.input("b", (4, 1), gc.float64)
    loss = ((x + b) * (x * b).tanh()).sum()
    gx, gb = gc.grad(loss, [x, b])
    assert gx.shape == x.shape and gb.shape == b.shape
    f = gc.compile([x, b], [gx, gb])
    for batch in (1, 3):
        xv, bv = _rand(batch, 1, 3), _rand(4, 1)
        gxv, gbv = f(xv, bv)
        s = xv + bv
        t = np.tanh(xv * bv)
        dt = (1 - t**2) * s
        np.testing.assert_allclose(gxv, (t + dt * bv).sum(1, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(gbv, (t + dt * xv).sum((0, 2))[:, None], rtol=1e-12)


def test_check_grad_reports_a_wrong_gradient():
    from graphc.ops import get_op

    op = get_op("sin")
    original = op.grad
    op.grad = lambda xs, out, g, attrs: [g * xs[0].sin()]  # wrong on purpose
    try:
        with pytest.raises(GradientCheckError, match="input 0"):
            check_grad(lambda a: a.sin(), [_rand(4)])
    finally:
        op.grad = original


# -- higher order ----------------------------------------------------------------------------
def _mlp_loss(x, w1, w2):
    return ((x @ w1).tanh() @ w2).sigmoid().sum()


def test_hessian_vector_product_of_small_mlp():
    direction = [_rand(3, 4), _rand(4, 2)]

    def grad_dot_direction(x, w1, w2):
        g1, g2 = gc.grad(_mlp_loss(x, w1, w2), [w1, w2])
        v1 = gc.tensor(direction[0], dtype=gc.float64)
        v2 = gc.tensor(direction[1], dtype=gc.float64)
        return (g1 * v1).sum() + (g2 * v2).sum()

    assert check_grad(grad_dot_direction, [_rand(5, 3), _rand(3, 4), _rand(4, 2)]) < 1e-6


@pytest.mark.parametrize(
    "fn",
    [
        lambda a: (a * a * a).exp().sum(),
        lambda a: a.softmax(1).max(),
        lambda a: a.reshape(6, 2).T.permute(1, 0)[1:, :].sum(),
        lambda a: (a @ a.T).logsumexp(0).sum(),
        lambda a: gc.cat([a, a.sqrt()], 0).prod(),
    ],
    ids=["elementwise", "softmax_max", "movement", "matmul_logsumexp", "concat_prod"],
)
def test_second_order(fn):
    def first_derivative(a):
        return gc.grad(fn(a), a)

    assert check_grad(first_derivative, [_positive(3, 4)], rtol=1e-5) < 1e-5


# -- stability -------------------------------------------------------------------------------
def test_log_of_softmax_is_rewritten_and_stays_finite():
    x = gc.input("x", (2, 3), gc.float32)
    loss = x.softmax(1).log().sum()
    g = gc.grad(loss, x)
    f = gc.compile([x], [loss, g])
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], np.float32)
    value, grad_value = f(logits)
    assert np.isfinite(value) and np.isfinite(grad_value).all()
    logs_of_div = [n for n in f.graph.nodes if n.op == "log" and n.inputs[0].op == "div"]
    assert not logs_of_div


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    logits = gc.input("logits", (3, 5), gc.float64)
    targets = np.array([3, 0, 4])
    one_hot = gc.tensor(np.eye(5)[targets], dtype=gc.float64)
    loss = -(logits.log_softmax(1) * one_hot).sum()
    value = _rand(3, 5) * 50
    g = gc.grad(loss, logits).eval({logits: value})
    softmax = np.exp(value - value.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(g, softmax - np.eye(5)[targets], atol=1e-12)


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "softmax", "log_softmax", "logsumexp"])
def test_no_nan_for_extreme_inputs(op):
    x = gc.input("x", (2, 3), gc.float32)
    y = {
        "softmax": lambda t: t.softmax(1),
        "log_softmax": lambda t: t.log_softmax(1),
        "logsumexp": lambda t: t.logsumexp(1),
    }.get(op, lambda t: getattr(t, op)())(x)
    g = gc.grad(
        (y * gc.tensor([[1.0, 2.0, 3.0][: y.shape[-1]]] if y.ndim == 2 else [1.0, 2.0])).sum(), x
    )
    values = np.array([[1e4, -1e4, 0.0], [-88.0, 90.0, 3.0]], np.float32)
    assert np.isfinite(g.eval({x: values})).all()


# -- simplification --------------------------------------------------------------------------
def test_gradient_graph_of_three_layer_mlp_is_at_most_three_times_the_forward():
    x = gc.input("x", ("B", 8))
    y = gc.input("y", ("B", 3))
    weights = [
        gc.Variable(_rand(a, b).astype(np.float32), name=f"W{i}")
        for i, (a, b) in enumerate([(8, 16), (16, 16), (16, 3)])
    ]
    biases = [gc.Variable(np.zeros(b, np.float32), name=f"b{i}") for i, b in enumerate([16, 16, 3])]
    h = x
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        if i < 2:
            h = h.relu()
    loss = ((h - y) * (h - y)).mean()
    forward = gc.compile([x, y], [loss]).graph
    full = gc.compile([x, y], [loss, *gc.grad(loss, weights + biases)]).graph
    forward_count = len(forward.nodes)
    gradient_count = len(full.nodes) - forward_count
    assert gradient_count <= 3 * forward_count, (gradient_count, forward_count)


# -- PyTorch as an oracle --------------------------------------------------------------------
def test_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    xs, w1, w2 = _rand(6, 4), _rand(4, 5), _rand(5, 3)
    targets = np.array([0, 2, 1, 1, 0, 2])

    x = gc.input("x", (6, 4), gc.float64)
    v1 = gc.Variable(w1, name="w1", dtype=gc.float64)
    v2 = gc.Variable(w2, name="w2", dtype=gc.float64)
    hidden = (x @ v1).sigmoid() * (x @ v1).erf()
    logits = hidden @ v2
    one_hot = gc.tensor(np.eye(3)[targets], dtype=gc.float64)
    loss = -(logits.log_softmax(1) * one_hot).sum(1).mean() + logits.std()
    grads = gc.compile([x], gc.grad(loss, [v1, v2]))(xs)

    tx = torch.tensor(xs)
    t1 = torch.tensor(w1, requires_grad=True)
    t2 = torch.tensor(w2, requires_grad=True)
    th = torch.sigmoid(tx @ t1) * torch.erf(tx @ t1)
    tl = th @ t2
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(targets)) + tl.std()
    expected = torch.autograd.grad(tloss, [t1, t2])
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)
