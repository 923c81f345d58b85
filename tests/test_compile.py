"""gc.compile(): inputs, outputs and updates, symbolic batch dims, and Function.graph."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compiler import build_graph
from graphc.passes import optimize, verify

RNG = np.random.default_rng(11)


def test_reference_backend_is_available():
    assert "reference" in gc.available_backends()
    x = gc.input("x", (2,))
    f = gc.compile([x], [x + 1], backend="reference")
    assert f.backend == "reference"
    np.testing.assert_array_equal(f(np.array([1.0, 2.0], np.float32)), [2.0, 3.0])


def test_one_output_returns_an_array():
    x = gc.input("x", ("B", 3))
    f = gc.compile([x], [x.sum(dim=1)])
    data = RNG.standard_normal((4, 3)).astype(np.float32)
    result = f(data)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, data.sum(axis=1), rtol=1e-6)


def test_a_bare_tensor_output_returns_an_array():
    x = gc.input("x", (3,))
    f = gc.compile([x], x * 2)
    result = f(np.array([1.0, 2.0, 3.0], np.float32))
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, [2.0, 4.0, 6.0])


def test_several_outputs_return_a_tuple_in_order():
    x = gc.input("x", ("B", 3))
    f = gc.compile([x], [x.max(), x.argmin(dim=1), x * 2])
    data = RNG.standard_normal((5, 3)).astype(np.float32)
    result = f(data)
    assert isinstance(result, tuple)
    assert len(result) == 3
    np.testing.assert_array_equal(result[0], data.max())
    np.testing.assert_array_equal(result[1], data.argmin(axis=1))
    assert result[1].dtype == np.int64
    np.testing.assert_array_equal(result[2], data * 2)


def test_inputs_are_fed_in_the_listed_order():
    a = gc.input("a", (2,))
    b = gc.input("b", (2,))
    f = gc.compile([b, a], [a - b])
    result = f(np.array([10.0, 20.0], np.float32), np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(result, [-9.0, -18.0])


def test_outputs_that_need_no_input():
    w = gc.Variable(np.array([1.0, 2.0], np.float32), name="w")
    f = gc.compile([], [w * 3, gc.tensor([4, 5]).sum()])
    scaled, total = f()
    np.testing.assert_array_equal(scaled, [3.0, 6.0])
    assert total == 9


def test_python_lists_and_non_contiguous_arrays_are_accepted():
    x = gc.input("x", (2, 3))
    f = gc.compile([x], [x * 1])
    np.testing.assert_array_equal(f([[1, 2, 3], [4, 5, 6]]), [[1, 2, 3], [4, 5, 6]])
    data = np.arange(6, dtype=np.float32).reshape(3, 2).T
    assert not data.flags.c_contiguous
    np.testing.assert_array_equal(f(data), data)


def test_returned_arrays_are_not_the_variable_storage():
    w = gc.Variable(np.array([1.0, 2.0], np.float32), name="w")
    f = gc.compile([], [w])
    value = f()
    value[0] = 100.0
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(f(), [1.0, 2.0])


# -- updates ----------------------------------------------------------------------------------


def test_updates_are_applied_after_outputs_are_computed():
    w = gc.Variable(np.array([1.0, 2.0], np.float32), name="w")
    x = gc.input("x", (2,))
    f = gc.compile([x], [(w * x).sum(), w * 1], updates={w: w + x})
    data = np.array([10.0, 100.0], np.float32)
    total, seen = f(data)
    # the outputs saw the old value
    np.testing.assert_allclose(total, 1.0 * 10 + 2.0 * 100)
    np.testing.assert_array_equal(seen, [1.0, 2.0])
    np.testing.assert_array_equal(w.numpy(), [11.0, 102.0])
    total, seen = f(data)
    np.testing.assert_allclose(total, 11.0 * 10 + 102.0 * 100)
    np.testing.assert_array_equal(seen, [11.0, 102.0])
    np.testing.assert_array_equal(w.numpy(), [21.0, 202.0])


def test_updates_all_read_the_old_values():
    a = gc.Variable(np.array([1.0], np.float32), name="a")
    b = gc.Variable(np.array([2.0], np.float32), name="b")
    swap = gc.compile([], [], updates={a: b, b: a})
    assert swap() is None
    np.testing.assert_array_equal(a.numpy(), [2.0])
    np.testing.assert_array_equal(b.numpy(), [1.0])
    swap()
    np.testing.assert_array_equal(a.numpy(), [1.0])
    np.testing.assert_array_equal(b.numpy(), [2.0])


def test_update_chain_reads_old_values():
    a = gc.Variable(np.array(1.0, np.float32), name="a")
    b = gc.Variable(np.array(10.0, np.float32), name="b")
    f = gc.compile([], [a + b], updates={a: a + 1, b: a * 100})
    np.testing.assert_allclose(f(), 11.0)
    assert a.numpy() == 2.0
    assert b.numpy() == 100.0  # computed from the old a, not the new one


def test_counter_variable_accumulates():
    steps = gc.Variable(np.array(0, np.int64), name="steps")
    tick = gc.compile([], [steps * 1], updates={steps: steps + 1})
    seen = [int(tick()) for _ in range(4)]
    assert seen == [0, 1, 2, 3]
    assert steps.numpy() == 4
    assert steps.numpy().dtype == np.int64


def test_update_value_is_cast_to_the_variable_dtype():
    w = gc.Variable(np.array([1.5, 2.5], np.float32), name="w")
    f = gc.compile([], [], updates={w: w.double() * 2})
    f()
    assert w.dtype == gc.float32
    assert w.numpy().dtype == np.float32
    np.testing.assert_array_equal(w.numpy(), [3.0, 5.0])


def test_updates_as_a_list_of_pairs():
    w = gc.Variable(np.zeros(2, np.float32), name="w")
    f = gc.compile([], [], updates=[(w, w + 2)])
    f()
    np.testing.assert_array_equal(w.numpy(), [2.0, 2.0])


def test_variable_assign_between_calls_is_seen():
    w = gc.Variable(np.array([1.0, 1.0], np.float32), name="w")
    x = gc.input("x", ("B", 2))
    f = gc.compile([x], [x @ w])
    data = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(f(data), [3.0, 7.0])
    w.assign(np.array([0.0, 1.0], np.float32))
    np.testing.assert_array_equal(f(data), [2.0, 4.0])


def test_sgd_step_with_a_variable():
    w = gc.Variable(np.array([0.0, 0.0], np.float32), name="w")
    x = gc.input("x", ("B", 2))
    y = gc.input("y", ("B",))
    prediction = x @ w
    error = prediction - y
    loss = (error * error).mean()
    grad_w = (x * error.unsqueeze(1)).mean(dim=0) * 2  # written by hand against numpy below
    step = gc.compile([x, y], [loss], updates={w: w - 0.1 * grad_w})
    xa = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    ya = np.array([1.0, 2.0, 3.0], np.float32)
    w_np = np.zeros(2, np.float32)
    for _ in range(5):
        err = xa @ w_np - ya
        expected_loss = (err**2).mean()
        np.testing.assert_allclose(step(xa, ya), expected_loss, rtol=1e-5)
        w_np = w_np - 0.1 * 2 * (xa * err[:, None]).mean(axis=0)
        np.testing.assert_allclose(w.numpy(), w_np, rtol=1e-5)


# -- symbolic batch dims ------------------------------------------------------------------------


def test_one_function_serves_many_batch_sizes():
    x = gc.input("x", ("B", 4))
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    logits = x @ gc.tensor(w)
    probs = logits.softmax(dim=1)
    mean_row = x.mean(dim=0)
    flat = x.reshape(-1)
    f = gc.compile([x], [probs, mean_row, flat, x.sum(dim=1)])
    executable = f._executable
    for batch in (1, 3, 17):
        data = RNG.standard_normal((batch, 4)).astype(np.float32)
        got_probs, got_mean, got_flat, got_sums = f(data)
        z = data @ w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        np.testing.assert_allclose(got_probs, e / e.sum(axis=1, keepdims=True), rtol=1e-5)
        np.testing.assert_allclose(got_mean, data.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got_flat, data.reshape(-1))
        np.testing.assert_allclose(got_sums, data.sum(axis=1), rtol=1e-5, atol=1e-6)
        assert got_probs.shape == (batch, 3)
        assert got_flat.shape == (batch * 4,)
    assert f._executable is executable


def test_symbolic_batch_with_two_inputs_and_a_variable_update():
    x = gc.input("x", ("B", 3))
    y = gc.input("y", ("B",), gc.int64)
    total = gc.Variable(np.array(0.0, np.float32), name="total")
    picked = x[:, 0] + y.float()
    f = gc.compile([x, y], [picked], updates={total: total + picked.sum()})
    running = 0.0
    for batch in (1, 3, 17):
        xa = RNG.standard_normal((batch, 3)).astype(np.float32)
        ya = RNG.integers(0, 5, batch).astype(np.int64)
        expected = xa[:, 0] + ya
        np.testing.assert_allclose(f(xa, ya), expected, rtol=1e-6)
        running += float(expected.sum())
        np.testing.assert_allclose(total.numpy(), running, rtol=1e-5)


def test_symbolic_mean_divides_by_the_fed_batch_size():
    x = gc.input("x", ("B",))
    f = gc.compile([x], [x.mean(), x.var()])
    for batch in (2, 3, 17):
        data = RNG.standard_normal(batch).astype(np.float32)
        mean, var = f(data)
        np.testing.assert_allclose(mean, data.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, data.astype(np.float64).var(ddof=1), rtol=1e-5)


# -- Function.graph -----------------------------------------------------------------------------


def _redundant():
    x = gc.input("x", ("B", 3))
    c = gc.tensor([1.0, 2.0, 3.0])
    y = (x * (c * 2)).sum(dim=1) + (x * (c * 2)).sum(dim=1)
    return x, y


def test_function_graph_is_the_optimized_graph():
    x, y = _redundant()
    f = gc.compile([x], [y])
    raw = build_graph([x], [y])
    assert len(f.graph.nodes) < len(raw.nodes)
    expected = optimize(raw)
    assert [n.op for n in f.graph.nodes] == [n.op for n in expected.nodes]
    assert [n.op for n in f.graph.nodes].count("reduce_sum") == 1
    assert [n.op for n in f.graph.nodes].count("mul") == 1
    assert verify(f.graph) is f.graph
    assert [n.name for n in f.graph.inputs] == ["x"]


def test_function_graph_without_optimization_keeps_every_node():
    x, y = _redundant()
    f = gc.compile([x], [y], optimize=False)
    assert [n.op for n in f.graph.nodes].count("reduce_sum") == 2
    data = RNG.standard_normal((3, 3)).astype(np.float32)
    expected = 2 * (data * np.array([2.0, 4.0, 6.0], np.float32)).sum(axis=1)
    np.testing.assert_allclose(f(data), expected, rtol=1e-5)
    np.testing.assert_allclose(gc.compile([x], [y])(data), expected, rtol=1e-5)


def test_function_repr_names_inputs_and_backend():
    x = gc.input("pixels", ("B", 2))
    f = gc.compile([x], [x * 2])
    text = repr(f)
    assert "pixels" in text
    assert gc.default_backend() in text


def test_compile_rejects_non_tensors():
    x = gc.input("x", (2,))
    with pytest.raises(gc.errors.GraphError):
        gc.compile([np.zeros(2)], [x])


def test_compile_rejects_a_variable_updated_twice():
    w = gc.Variable(np.zeros(2, np.float32), name="w")
    with pytest.raises(gc.errors.GraphError, match="twice"):
        gc.compile([], [], updates=[(w, w + 1), (w, w + 2)])


# -- out= -------------------------------------------------------------------------------------


def test_out_receives_the_outputs_on_every_backend(backend):
    x = gc.input("x", ("B", 3))
    f = gc.compile([x], [x * 2, x.sum(dim=1)], backend=backend)
    data = RNG.standard_normal((4, 3)).astype(np.float32)
    doubled, sums = np.empty((4, 3), np.float32), np.empty(4, np.float32)
    result = f(data, out=(doubled, sums))
    assert result[0] is doubled and result[1] is sums
    np.testing.assert_array_equal(doubled, data * 2)
    np.testing.assert_allclose(sums, data.sum(axis=1), rtol=1e-6)
    with pytest.raises(gc.errors.InputError, match=r"out\[1\] .* of shape \[5\], got .* \[4\]"):
        f(np.ones((5, 3), np.float32), out=(np.empty((5, 3), np.float32), sums))


def test_out_overlapping_an_input_holds_what_a_fresh_array_would(backend):
    # x.T + x reads elements an in-place kernel would already have overwritten.
    x = gc.input("x", (6, 6))
    f = gc.compile([x], [x.T + x, x.sum(dim=0)], backend=backend)
    data = RNG.standard_normal((6, 6)).astype(np.float32)
    expected = (data.T + data, data.sum(axis=0))

    same = data.copy()
    sums = np.empty(6, np.float32)
    result = f(same, out=(same, sums))
    assert result[0] is same and result[1] is sums
    np.testing.assert_allclose(same, expected[0], rtol=1e-6)
    np.testing.assert_allclose(sums, expected[1], rtol=1e-5)

    # Partial overlap: the out array starts two rows into the fed array.
    buffer = np.zeros(48, np.float32)
    buffer[:36] = data.ravel()
    fed, target = buffer[:36].reshape(6, 6), buffer[12:].reshape(6, 6)
    f(fed, out=(target, sums))
    np.testing.assert_allclose(target, expected[0], rtol=1e-6)
    np.testing.assert_array_equal(buffer[:12], data.ravel()[:12])


def test_out_arrays_sharing_memory_are_rejected(backend):
    x = gc.input("x", (4,))
    f = gc.compile([x], [x * 2, x + 1], backend=backend)
    data = np.arange(4, dtype=np.float32)
    same = np.full(4, -1.0, np.float32)
    with pytest.raises(gc.errors.InputError, match=r"out\[1\] shares memory with out\[0\]"):
        f(data, out=(same, same))
    buffer = np.full(6, -1.0, np.float32)
    with pytest.raises(gc.errors.InputError, match=r"out\[1\] shares memory with out\[0\]"):
        f(data, out=(buffer[:4], buffer[2:]))
    np.testing.assert_array_equal(same, np.full(4, -1.0))
    np.testing.assert_array_equal(buffer, np.full(6, -1.0))
    # Disjoint parts of one buffer are separate arrays.
    rows = np.empty((2, 4), np.float32)
    f(data, out=(rows[0], rows[1]))
    np.testing.assert_array_equal(rows, [data * 2, data + 1])


@pytest.mark.parametrize("updated", [True, False], ids=["updated", "read-only"])
def test_out_sharing_a_variables_memory_is_rejected_and_changes_nothing(backend, updated):
    v = gc.Variable(np.arange(4, dtype=np.float32), name="v")
    x = gc.input("x", (4,))
    updates = {v: v * 3} if updated else None
    f = gc.compile([x], [x + v], updates=updates, backend=backend)
    data = np.ones(4, np.float32)
    # Variable.value is a read-only view; these are the writeable routes to the same memory.
    for target in (v.storage.value, v.value.base, v.storage.value.reshape(2, 2).reshape(4)):
        with pytest.raises(gc.errors.InputError, match=r"out\[0\].*Variable 'v'"):
            f(data, out=target)
        np.testing.assert_array_equal(v.numpy(), [0.0, 1.0, 2.0, 3.0])
    result = f(data, out=np.empty(4, np.float32))
    np.testing.assert_array_equal(result, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(v.numpy(), [0.0, 3.0, 6.0, 9.0] if updated else [0, 1, 2, 3])


def test_feeding_a_variables_own_value_reads_it_from_before_the_update(backend):
    start = np.arange(16, dtype=np.float32).reshape(4, 4)
    w = gc.Variable(start, name="w")
    x = gc.input("x", (4, 4))
    f = gc.compile([x], [x.sum()], updates={w: w * 2 + x.T}, backend=backend)
    total = f(w.value)
    np.testing.assert_allclose(total, start.sum())
    np.testing.assert_array_equal(w.numpy(), start * 2 + start.T)


def test_inputs_of_a_static_function_are_still_checked():
    x = gc.input("x", (2, 3))
    f = gc.compile([x], [x * 2])
    np.testing.assert_array_equal(f(np.ones((2, 3), np.float32)), np.full((2, 3), 2.0))
    with pytest.raises(gc.errors.InputError, match="'x'.*float64"):
        f(np.ones((2, 3)))
    with pytest.raises(gc.errors.InputError, match="'x'.*dim 1 should be 3, got 4"):
        f(np.ones((2, 4), np.float32))
