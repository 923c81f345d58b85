"""The Graph -> Graph passes: verify, dce, cse, constant_fold and the optimize pipeline.

Each rewrite and the rewrite engine have their own tests in test_rewrites.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GraphcError, GraphError, ShapeError
from graphc.graph import Graph, Node
from graphc.passes import constant_fold, cse, dce, optimize, verify
from graphc.passes.constant_fold import MAX_FOLDED_ELEMENTS
from graphc.types import TensorType

RNG = np.random.default_rng(7)


def graph_of(inputs, outputs, updates=()) -> Graph:
    return Graph(
        tuple(t.node for t in inputs),
        tuple(t.node for t in outputs),
        tuple((v.node, value.node) for v, value in updates),
    )


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def run(graph: Graph, *arrays):
    """Run a graph on the reference backend, with no further optimisation."""
    from graphc.backends.reference import ReferenceExecutable
    from graphc.compiler import Function

    function = Function(graph, ReferenceExecutable(graph), "reference", len(graph.outputs) == 1)
    return function(*arrays)


# -- every pass is Graph -> Graph ------------------------------------------------------------


@pytest.mark.parametrize("graph_pass", [verify, dce, cse, constant_fold, optimize])
def test_pass_returns_a_graph_and_leaves_its_argument_alone(graph_pass):
    x = gc.input("x", ("B", 3))
    y = (x * (gc.tensor([1.0, 2.0, 3.0]) * 2) + x * (gc.tensor([1.0, 2.0, 3.0]) * 2)).sum(dim=1)
    graph = graph_of([x], [y])
    before = [(n.id, n.op, n.inputs) for n in graph.nodes]
    result = graph_pass(graph)
    assert isinstance(result, Graph)
    assert [(n.id, n.op, n.inputs) for n in graph.nodes] == before
    assert [n.id for n in result.inputs] == [n.id for n in graph.inputs]
    assert len(result.outputs) == 1
    assert result.outputs[0].type == graph.outputs[0].type
    data = RNG.standard_normal((4, 3)).astype(np.float32)
    expected = (2 * data * np.array([2.0, 4.0, 6.0], np.float32)).sum(axis=1)
    np.testing.assert_allclose(run(result, data), expected, rtol=1e-5)


# -- verify ---------------------------------------------------------------------------------


def test_verify_passes_good_graphs_unchanged():
    x = gc.input("x", ("B", 4))
    w = gc.Variable(np.ones((4, 2), np.float32), name="w")
    y = (x @ w).relu().sum(dim=1).mean()
    graph = graph_of([x], [y], [(w, w * 0.5)])
    assert verify(graph) is graph


def test_verify_catches_a_node_with_a_wrong_shape():
    a, b = gc.zeros(3), gc.ones(3)
    bad = Node("add", (a.node, b.node), {}, TensorType((5,), gc.float32), "test_passes.py:1")
    graph = Graph((), (bad,))
    with pytest.raises(GraphcError) as info:
        verify(graph)
    message = str(info.value)
    assert "add" in message
    assert "f32[5]" in message and "f32[3]" in message
    assert "test_passes.py:1" in message


def test_verify_catches_a_node_with_a_wrong_dtype():
    a, b = gc.zeros(3), gc.ones(3)
    bad = Node("mul", (a.node, b.node), {}, TensorType((3,), gc.int64), "test_passes.py:2")
    with pytest.raises(GraphError) as info:
        verify(Graph((), (bad,)))
    assert "mul" in str(info.value)
    assert "i64[3]" in str(info.value) and "f32[3]" in str(info.value)


def test_verify_catches_inputs_that_do_not_broadcast():
    a, b = gc.zeros(2), gc.ones(3)
    bad = Node("add", (a.node, b.node), {}, TensorType((3,), gc.float32), "test_passes.py:3")
    with pytest.raises(ShapeError) as info:
        verify(Graph((), (bad,)))
    message = str(info.value)
    assert "add" in message
    assert "[2]" in message and "[3]" in message
    assert "test_passes.py:3" in message


def test_verify_catches_a_wrong_node_deep_in_the_graph():
    x = gc.input("x", (3,))
    bad = Node("neg", (x.node,), {}, TensorType((3, 1), gc.float32), "test_passes.py:4")
    out = gc.Tensor(bad).sum()
    with pytest.raises(GraphcError, match="neg"):
        verify(Graph((x.node,), (out.node,)))


def test_verify_catches_a_non_placeholder_input():
    c = gc.tensor([1.0])
    with pytest.raises(GraphError):
        verify(Graph((c.node,), ((c * 2).node,)))


def test_verify_catches_an_update_of_the_wrong_type():
    w = gc.Variable(np.zeros(3, np.float32), name="w")
    graph = Graph((), (w.node,), ((w.node, gc.zeros(3, dtype=gc.float64).node),))
    with pytest.raises(GraphError, match="w"):
        verify(graph)


def test_compile_runs_verify():
    a, b = gc.zeros(3), gc.ones(3)
    bad = gc.Tensor(Node("add", (a.node, b.node), {}, TensorType((5,), gc.float32), None))
    with pytest.raises(GraphError):
        gc.compile([], [bad])


# -- dce ------------------------------------------------------------------------------------


def test_dce_keeps_only_what_outputs_and_updates_need():
    x = gc.input("x", (3,))
    w = gc.Variable(np.ones(3, np.float32), name="w")
    a = x * 2
    dead = a.exp() + 1
    out = a + 1
    graph = dce(graph_of([x], [out], [(w, w + 1)]))
    ids = {n.id for n in graph.nodes}
    assert dead.node.id not in ids
    assert dead.node.inputs[0].id not in ids
    assert {a.node.id, out.node.id, x.node.id, w.node.id} <= ids
    np.testing.assert_array_equal(run(graph, np.array([1, 2, 3], np.float32)), [3, 5, 7])


def test_dce_keeps_unused_inputs_in_the_signature():
    x = gc.input("x", (3,))
    unused = gc.input("unused", (2,))
    graph = dce(graph_of([x, unused], [x * 2]))
    assert [n.name for n in graph.inputs] == ["x", "unused"]


def test_dce_drops_updates_that_write_a_variable_back_unchanged():
    w = gc.Variable(np.ones(3, np.float32), name="w")
    v = gc.Variable(np.ones(3, np.float32), name="v")
    graph = dce(graph_of([], [w.sum()], [(w, w), (v, v * 2)]))
    assert [(var.name, value.op) for var, value in graph.updates] == [("v", "mul")]


def test_dce_after_cse_drops_the_duplicates():
    x = gc.input("x", (3,))
    first, second = x.exp(), x.exp()
    graph = dce(cse(graph_of([x], [first + second])))
    assert ops(graph).count("exp") == 1


def test_every_node_of_a_dce_graph_reaches_a_root():
    x = gc.input("x", ("B", 4))
    y = x.softmax(dim=1)
    graph = dce(graph_of([x], [y.max()]))
    users = graph.users()
    roots = {n.id for n in graph.outputs}
    for node in graph.nodes:
        assert node.id in roots or users[node.id] or node.op == "input"


# -- cse ------------------------------------------------------------------------------------


def test_cse_merges_equal_op_attrs_and_inputs():
    x = gc.input("x", ("B", 3))
    a = (x + 1).sum(dim=1)
    b = (x + 1).sum(dim=1)
    graph = cse(graph_of([x], [a, b]))
    assert graph.outputs[0] is graph.outputs[1]
    assert ops(graph).count("add") == 1
    assert ops(graph).count("reduce_sum") == 1
    assert ops(graph).count("constant") == 1  # the two equal constants 1 merged too
    data = RNG.standard_normal((2, 3)).astype(np.float32)
    first, second = run(graph, data)
    np.testing.assert_allclose(first, (data + 1).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(second, (data + 1).sum(axis=1), rtol=1e-6)


def test_cse_keeps_different_attrs_apart():
    x = gc.input("x", (2, 3))
    a, b = x.sum(dim=0), x.sum(dim=1)
    c, d = x.sum(dim=1, keepdim=True), x.sum(dim=1)
    graph = cse(graph_of([x], [a, b, c, d]))
    outs = graph.outputs
    assert outs[0] is not outs[1]
    assert outs[2] is not outs[3]
    assert outs[1] is outs[3]
    assert ops(graph).count("reduce_sum") == 3


def test_cse_keeps_different_inputs_apart():
    x = gc.input("x", (3,))
    y = gc.input("y", (3,))
    graph = cse(graph_of([x, y], [x * 2, y * 2]))
    assert graph.outputs[0] is not graph.outputs[1]
    assert ops(graph).count("mul") == 2
    first, second = run(graph, np.ones(3, np.float32), np.full(3, 5.0, np.float32))
    np.testing.assert_array_equal(first, [2, 2, 2])
    np.testing.assert_array_equal(second, [10, 10, 10])


def test_cse_keeps_different_variables_apart():
    v = gc.Variable(np.ones(3, np.float32), name="v")
    w = gc.Variable(np.ones(3, np.float32), name="w")
    graph = cse(graph_of([], [v * 2, w * 2]))
    assert graph.outputs[0] is not graph.outputs[1]
    assert ops(graph).count("variable") == 2
    w.assign(np.full(3, 4.0, np.float32))
    first, second = run(graph)
    np.testing.assert_array_equal(first, [2, 2, 2])
    np.testing.assert_array_equal(second, [8, 8, 8])


def test_cse_keeps_different_constants_apart():
    a, b = gc.tensor([1.0, 2.0]), gc.tensor([1.0, 3.0])
    graph = cse(graph_of([], [a.exp(), b.exp()]))
    assert graph.outputs[0] is not graph.outputs[1]
    first, second = run(graph)
    np.testing.assert_allclose(first, np.exp([1.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(second, np.exp([1.0, 3.0]), rtol=1e-6)


def test_cse_keeps_input_order_sensitive_ops_apart():
    x = gc.input("x", (3,))
    y = gc.input("y", (3,))
    graph = cse(graph_of([x, y], [x - y, y - x]))
    assert graph.outputs[0] is not graph.outputs[1]


def test_cse_keeps_different_casts_apart():
    x = gc.input("x", (3,))
    graph = cse(graph_of([x], [x.long(), x.int()]))
    assert graph.outputs[0] is not graph.outputs[1]
    assert graph.outputs[0].type.dtype == gc.int64
    assert graph.outputs[1].type.dtype == gc.int32


def test_cse_merges_a_named_copy_into_the_first_and_keeps_the_name():
    x = gc.input("x", (3,))
    e = x.exp()
    named = e.named("e")  # a second node computing the same value
    graph = cse(graph_of([x], [e + 1, named * 2]))
    assert ops(graph).count("exp") == 1
    (exp,) = [n for n in graph.nodes if n.op == "exp"]
    assert exp.name == "e"
    assert graph.outputs[0].inputs[0] is graph.outputs[1].inputs[0] is exp
    assert cse(graph) is graph


def test_cse_does_not_merge_separate_random_draws():
    a, b = gc.rand(4), gc.rand(4)
    graph = cse(graph_of([], [a, b]))
    first, second = run(graph)
    assert not np.array_equal(first, second)


# -- constant_fold --------------------------------------------------------------------------


def test_constant_fold_folds_a_small_constant_subgraph():
    t = (gc.tensor([1.0, 2.0, 3.0]) * 2 + 1).exp().sum()
    graph = constant_fold(graph_of([], [t]))
    assert ops(graph) == ["constant"]
    (node,) = graph.nodes
    assert node.type == t.node.type
    expected = np.exp(np.array([3.0, 5.0, 7.0])).sum()
    np.testing.assert_allclose(node.attrs["value"], expected, rtol=1e-6)
    np.testing.assert_allclose(run(graph), expected, rtol=1e-6)


def test_constant_fold_folds_the_constant_part_next_to_an_input():
    x = gc.input("x", ("B", 3))
    scale = gc.tensor([1.0, 2.0, 3.0]).reshape(1, 3) * 10
    y = x * scale
    graph = constant_fold(graph_of([x], [y]))
    assert sorted(ops(graph)) == ["constant", "input", "mul"]
    data = RNG.standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(run(graph, data), data * np.array([[10.0, 20.0, 30.0]]), rtol=1e-6)


def test_constant_fold_keeps_dtypes():
    t = gc.tensor([7, -7]) // 2
    graph = constant_fold(graph_of([], [t]))
    (node,) = graph.nodes
    assert node.attrs["value"].dtype == np.int64
    np.testing.assert_array_equal(node.attrs["value"], [3, -4])


def test_constant_fold_leaves_large_results_alone():
    big = gc.tensor(np.arange(MAX_FOLDED_ELEMENTS + 10, dtype=np.float32)) * 2
    graph = constant_fold(graph_of([], [big]))
    assert "mul" in ops(graph)
    np.testing.assert_array_equal(run(graph), np.arange(MAX_FOLDED_ELEMENTS + 10) * 2.0)


def test_constant_fold_leaves_large_broadcasts_alone():
    zeros = gc.zeros(100, 100)
    graph = constant_fold(graph_of([], [zeros]))
    assert "broadcast_to" in ops(graph)
    assert all(n.attrs["value"].size <= 1 for n in graph.nodes if n.op == "constant")


def test_constant_fold_threshold_is_a_parameter():
    t = gc.tensor(np.arange(20, dtype=np.float32)) + 1
    assert "add" in ops(constant_fold(graph_of([], [t]), max_elements=10))
    assert "add" not in ops(constant_fold(graph_of([], [t]), max_elements=100))


def test_constant_fold_leaves_random_alone():
    gc.manual_seed(3)
    r = gc.rand(4)
    t = r * 2
    graph = constant_fold(graph_of([], [t]))
    assert "random" in ops(graph)
    assert "mul" in ops(graph)


def test_constant_fold_leaves_symbolic_shapes_alone():
    x = gc.input("x", ("B", 2))
    ones = gc.ones_like(x)
    graph = constant_fold(graph_of([x], [ones + x]))
    assert "broadcast_to" in ops(graph)
    data = np.zeros((3, 2), np.float32)
    np.testing.assert_array_equal(run(graph, data), np.ones((3, 2)))


def test_constant_fold_leaves_variables_alone():
    w = gc.Variable(np.ones(2, np.float32), name="w")
    graph = constant_fold(graph_of([], [w * 2]))
    assert "mul" in ops(graph)
    w.assign(np.array([3.0, 4.0], np.float32))
    np.testing.assert_array_equal(run(graph), [6.0, 8.0])


# -- optimize -------------------------------------------------------------------------------


def test_optimize_shrinks_a_redundant_graph():
    x = gc.input("x", ("B", 3))
    c = gc.tensor([1.0, 2.0, 3.0])
    y = (x * (c * 2) + x * (c * 2)).sum(dim=1)
    _ = x.exp()  # built but never used
    graph = graph_of([x], [y])
    optimized = optimize(graph)
    assert len(optimized.nodes) < len(graph.nodes)
    assert ops(optimized).count("mul") == 1
    assert verify(optimized) is optimized


def _model():
    """Return (inputs, outputs, updates, numpy function) of a small model with a variable."""
    x = gc.input("x", ("B", 4))
    y = gc.input("y", ("B",), gc.int64)
    w0 = RNG.standard_normal((4, 3)).astype(np.float32)
    w = gc.Variable(w0, name="w")
    bias = gc.tensor([0.1, 0.2, 0.3]) * 2
    logits = x @ w + bias
    picked = logits[:, 0] + logits[:, 0]
    loss = -(logits.log_softmax(dim=1).max(dim=1).values).mean() + y.float().mean()
    outputs = [logits.softmax(dim=1), loss, picked, logits.argmax(dim=1)]

    def reference(xa, ya):
        z = xa @ w0 + np.array([0.2, 0.4, 0.6], np.float32)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        soft = e / e.sum(axis=1, keepdims=True)
        log_soft = np.log(soft)
        value = -log_soft.max(axis=1).mean() + ya.astype(np.float32).mean()
        return [soft, value, 2 * z[:, 0], z.argmax(axis=1)]

    return [x, y], outputs, {w: w * 0.9}, reference, w, w0


@pytest.mark.parametrize("batch", [1, 5])
def test_optimized_and_unoptimized_compute_the_same_values(batch):
    inputs, outputs, updates, reference, w, w0 = _model()
    fast = gc.compile(inputs, outputs, updates, optimize=True)
    slow = gc.compile(inputs, outputs, updates, optimize=False)
    assert len(fast.graph.nodes) < len(slow.graph.nodes)
    xa = RNG.standard_normal((batch, 4)).astype(np.float32)
    ya = RNG.integers(0, 3, batch).astype(np.int64)
    expected = reference(xa, ya)
    for function in (fast, slow):
        w.assign(w0)
        for got, want in zip(function(xa, ya), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.numpy(), w0 * 0.9, rtol=1e-6)
