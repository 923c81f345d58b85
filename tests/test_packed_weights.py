"""An LLVM Function that only reads a weight multiplies by a copy packed for the GEMM once, not
at every call: whoever changes the Variable (assign, a training step on any backend, a loaded
state dict, another thread) makes the next call pack it again."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda.driver import DRIVER_VARIABLE
from graphc.backends.llvm.gemm import gemm_plan
from graphc.backends.llvm.gemm_dot import DOT_MAX_SIDE
from graphc.backends.llvm.prepacked import packed_kernels
from graphc.errors import IndexingError

# Large enough for the GEMM's packed path (the skinny paths read B where it lies).
BATCH, FEATURES, UNITS = 64, 40, 48


def _predict(w: gc.Variable, transposed: bool = True) -> gc.Function:
    x = gc.input("x", ("B", FEATURES))
    return gc.compile([x], [x @ w.T if transposed else x @ w], backend="llvm")


def _sgd(w: gc.Variable, backend: str) -> gc.Function:
    """A least-squares step on w (UNITS x FEATURES), used as x @ w.T."""
    x = gc.input("x", ("B", FEATURES))
    y = gc.input("y", ("B", UNITS))
    loss = ((x @ w.T - y) ** 2).mean()
    (g,) = gc.grad(loss, [w])
    return gc.compile([x, y], [loss], {w: w - 0.1 * g}, backend=backend)


def _packed(f: gc.Function) -> int:
    return len(packed_kernels(f._executable.program))


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
    y = rng.standard_normal((BATCH, UNITS)).astype(np.float32)
    return x, y


def _weight(rng: np.random.Generator) -> gc.Variable:
    return gc.Variable(rng.standard_normal((UNITS, FEATURES)).astype(np.float32), name="w")


def _check(predict: gc.Function, w: gc.Variable, x: np.ndarray) -> None:
    got = predict(x)
    np.testing.assert_allclose(got, x @ w.numpy().T, rtol=1e-5, atol=1e-5)


def test_only_the_weights_a_function_reads_are_packed(rng):
    w = _weight(rng)
    predict = _predict(w)
    assert _packed(predict) == 1
    nr = gemm_plan("f32").nr
    columns = -(-UNITS // nr) * nr
    assert predict.memory_stats()["packed_weight_bytes"] == FEATURES * columns * 4
    assert _packed(_predict(gc.Variable(w.numpy().T.copy()), transposed=False)) == 1
    # A step that writes w packs it at every call, inside the GEMM.
    assert _packed(_sgd(w, "llvm")) == 0
    # A product of at most DOT_MAX_SIDE columns always takes a skinny path, which reads B
    # where it lies.
    few = gc.Variable(np.ones((DOT_MAX_SIDE, FEATURES), np.float32))
    assert _packed(_predict(few)) == 0


@pytest.mark.parametrize("writer", ["assign", "llvm", "reference", "cuda", "state_dict"])
def test_a_changed_weight_is_packed_again(rng, data, writer, monkeypatch):
    monkeypatch.setenv(DRIVER_VARIABLE, "emulate")
    layer = gc.nn.Linear(FEATURES, UNITS, bias=False)
    w = layer.weight
    predict = _predict(w)
    x, y = data
    _check(predict, w, x)
    for _ in range(3):
        value = rng.standard_normal(w.storage.shape).astype(np.float32)
        if writer == "assign":
            w.assign(value)
        elif writer == "state_dict":
            layer.load_state_dict({"weight": value})
        else:
            _sgd(w, writer)(x, y)
        _check(predict, w, x)
        _check(predict, w, x)


def test_a_weight_read_through_views_and_by_two_products(rng, data):
    w = _weight(rng)
    x = gc.input("x", ("B", FEATURES))
    left = x @ w[:, :].T
    f = gc.compile([x], [left, x[:, :20] @ w[:20, :20].T], backend="llvm")
    inputs, _ = data
    for _ in range(2):
        first, second = f(inputs)
        np.testing.assert_allclose(first, inputs @ w.numpy().T, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            second, inputs[:, :20] @ w.numpy()[:20, :20].T, rtol=1e-5, atol=1e-5
        )
        w.assign(rng.standard_normal(w.storage.shape))


def test_steps_and_a_failed_call_leave_the_packed_copy_right(rng, data):
    w = _weight(rng)
    table = gc.Variable(np.arange(4.0, dtype=np.float32), name="table")
    x = gc.input("x", ("B", FEATURES))
    index = gc.input("index", (2,), gc.int64)
    f = gc.compile([x, index], [x @ w.T + table[index].sum()], backend="llvm")
    inputs, _ = data
    w.assign(rng.standard_normal(w.storage.shape))
    with pytest.raises(IndexingError, match="index 7 is out of bounds"):
        f(inputs, np.array([0, 7]))
    got = f(inputs, np.array([1, 2]))
    np.testing.assert_allclose(got, inputs @ w.numpy().T + 3.0, rtol=1e-5, atol=1e-5)
    w.assign(rng.standard_normal(w.storage.shape))
    stacked = f.repeat(3)(np.stack([inputs] * 3), np.array([[0, 1]] * 3))
    for step in stacked:
        np.testing.assert_allclose(step, inputs @ w.numpy().T + 1.0, rtol=1e-5, atol=1e-5)


def test_a_function_reading_a_weight_another_thread_trains(rng, data):
    w = _weight(rng)
    predict, train = _predict(w), _sgd(w, "llvm")
    x, y = data
    predict(x)
    stop = threading.Event()

    def keep_predicting() -> None:
        while not stop.is_set():
            predict(x)

    reader = threading.Thread(target=keep_predicting)
    reader.start()
    try:
        for _ in range(200):
            train(x, y)
    finally:
        stop.set()
        reader.join()
    # Whatever the reader packed while a step was writing w, the step's end made it stale.
    _check(predict, w, x)


def test_a_float64_weight_without_a_transpose(rng):
    w = gc.Variable(rng.standard_normal((FEATURES, UNITS)), name="w")  # float64
    x = gc.input("x", ("B", FEATURES), gc.float64)
    f = gc.compile([x], [x @ w], backend="llvm")
    assert _packed(f) == 1
    inputs = rng.standard_normal((BATCH, FEATURES))
    for _ in range(2):
        np.testing.assert_allclose(f(inputs), inputs @ w.numpy(), rtol=1e-12, atol=1e-12)
        w.assign(rng.standard_normal((FEATURES, UNITS)))
