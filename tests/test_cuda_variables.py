"""Variables on the CUDA backend live in device memory between calls: uploaded once, read back
only when the host reads them, correct when Functions on other backends share them, and
unchanged by a call that fails."""

from __future__ import annotations

import numpy as np
import pytest
from test_cuda_backend import DRIVERS

import graphc as gc
from graphc.backends.cuda.driver import DRIVER_VARIABLE, selected_driver
from graphc.backends.llvm.memory import data_address
from graphc.errors import IndexingError


@pytest.fixture(params=DRIVERS, autouse=True)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on the emulator, and on the GPU where there is one."""
    monkeypatch.setenv(DRIVER_VARIABLE, request.param)
    return request.param


def _sgd(w: gc.Variable, backend: str) -> gc.Function:
    """Return a step of least squares by gradient descent on w, returning the loss."""
    x = gc.input("x", ("B", 4))
    y = gc.input("y", ("B", 3))
    loss = ((x @ w - y) ** 2).mean()
    (g,) = gc.grad(loss, [w])
    return gc.compile([x, y], [loss], {w: w - 0.05 * g}, backend=backend)


def _numpy_sgd(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    residual = x @ w - y
    gradient = 2.0 * x.T @ residual / residual.size
    return float((residual**2).mean()), w - 0.05 * gradient


def _batches(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (
            rng.standard_normal((8, 4)).astype(np.float32),
            rng.standard_normal((8, 3)).astype(np.float32),
        )
        for _ in range(count)
    ]


def test_a_variable_is_uploaded_once_and_downloaded_only_when_read(rng, driver):
    if driver != "emulate":
        pytest.skip("counts the emulated driver's copies")
    start = rng.standard_normal((4, 3)).astype(np.float32)
    w = gc.Variable(start, name="w")
    step = _sgd(w, "cuda")
    counted = selected_driver()
    host = data_address(w.storage.host)
    uploads, downloads = counted.uploads[host], counted.downloads[host]
    expected = start.astype(np.float64)
    for x, y in _batches(rng, 20):
        loss, expected = _numpy_sgd(expected, x, y)
        np.testing.assert_allclose(step(x, y), loss, rtol=1e-4)
    assert counted.uploads[host] - uploads == 1
    assert counted.downloads[host] == downloads
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(w.value, expected, rtol=1e-4, atol=1e-6)
    assert counted.downloads[host] - downloads == 1
    # Reading left the device copy current: the next step uploads nothing.
    step(*_batches(rng, 1)[0])
    assert counted.uploads[host] - uploads == 1
    # A host write makes it stale: the next step uploads what was assigned, and uses it.
    w.assign(start)
    x, y = _batches(rng, 1)[0]
    np.testing.assert_allclose(step(x, y), _numpy_sgd(start, x, y)[0], rtol=1e-5)
    assert counted.uploads[host] - uploads == 2


def test_cpu_and_cuda_functions_sharing_variables_alternate(rng):
    w = gc.Variable(rng.standard_normal((4, 3)).astype(np.float32), name="w")
    expected = w.numpy().astype(np.float64)
    steps = {"cuda": _sgd(w, "cuda"), "llvm": _sgd(w, "llvm"), "reference": _sgd(w, "reference")}
    order = ["cuda", "cuda", "llvm", "cuda", "reference", "llvm", "llvm", "cuda", "cuda"]
    for backend, (x, y) in zip(order, _batches(rng, len(order)), strict=True):
        loss, expected = _numpy_sgd(expected, x, y)
        np.testing.assert_allclose(steps[backend](x, y), loss, rtol=1e-4)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_two_cuda_functions_see_each_others_updates(rng):
    w = gc.Variable(rng.standard_normal((4, 3)).astype(np.float32), name="w")
    train = _sgd(w, "cuda")
    x = gc.input("x", ("B", 4))
    predict = gc.compile([x], [x @ w], backend="cuda")
    expected = w.numpy().astype(np.float64)
    for x_batch, y_batch in _batches(rng, 3):
        _, expected = _numpy_sgd(expected, x_batch, y_batch)
        train(x_batch, y_batch)
        np.testing.assert_allclose(predict(x_batch), x_batch @ expected, rtol=1e-4, atol=1e-5)


def test_state_dict_save_and_load_see_the_device_value(rng, tmp_path):
    model = gc.nn.Linear(4, 3)
    x = gc.input("x", ("B", 4))
    y = gc.input("y", ("B", 3))
    loss = ((model(x) - y) ** 2).mean()
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    step = gc.compile([x, y], [loss], opt.minimize(loss), backend="cuda")
    before = model.state_dict()
    batches = _batches(rng, 3)
    for batch in batches:
        step(*batch)
    trained = model.state_dict()
    assert not np.allclose(trained["weight"], before["weight"])
    gc.save(model.state_dict(), tmp_path / "model.npz")
    np.testing.assert_array_equal(gc.load(tmp_path / "model.npz")["weight"], trained["weight"])
    # Loading the old state on the host is what the next device call starts from.
    model.load_state_dict(before)
    first = step(*batches[0])
    model.load_state_dict(before)
    check = gc.compile([x, y], [loss], backend="llvm")
    np.testing.assert_allclose(first, check(*batches[0]), rtol=1e-5)


def test_a_variable_outlives_the_function_that_last_updated_it(rng):
    w = gc.Variable(rng.standard_normal((4, 3)).astype(np.float32), name="w")
    step = _sgd(w, "cuda")
    x, y = _batches(rng, 1)[0]
    _, expected = _numpy_sgd(w.numpy().astype(np.float64), x, y)
    step(x, y)
    del step
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-4, atol=1e-6)


def _gather_step(w: gc.Variable, count: gc.Variable) -> gc.Function:
    index = gc.input("index", ("N",), gc.int64)
    picked = w[index].sum()
    return gc.compile([index], [picked], {w: w * 2.0, count: count + 1}, backend="cuda")


def test_a_failed_call_changes_no_variable_held_on_the_device():
    w = gc.Variable(np.arange(6.0, dtype=np.float32), name="w")
    count = gc.Variable(np.zeros((), np.int64), name="count")
    step = _gather_step(w, count)
    step(np.array([0, 1]))
    step(np.array([2]))  # the device holds w * 4 now; the host has not read it
    with pytest.raises(IndexingError, match="index 9 is out of bounds"):
        step(np.array([1, 9]))
    np.testing.assert_array_equal(w.numpy(), np.arange(6.0) * 4)
    assert count.numpy() == 2
    assert step(np.array([5])) == 20.0
    np.testing.assert_array_equal(w.numpy(), np.arange(6.0) * 8)


def test_a_failed_call_of_several_steps_leaves_the_device_values_as_they_were(driver):
    w = gc.Variable(np.arange(6.0, dtype=np.float32), name="w")
    count = gc.Variable(np.zeros((), np.int64), name="count")
    steps = _gather_step(w, count).repeat(3)
    steps(np.array([[0], [1], [2]]))  # w * 8 on the device
    host = data_address(w.storage.host)
    counted = selected_driver()
    transfers = lambda: (counted.uploads[host], counted.downloads[host])  # noqa: E731
    before = transfers() if driver == "emulate" else None
    with pytest.raises(IndexingError, match=r"at step 2 of 0\.\.2"):
        steps(np.array([[0], [1], [6]]))
    if driver == "emulate":  # the values were put back on the device, not through the host
        assert transfers() == before
    np.testing.assert_array_equal(w.numpy(), np.arange(6.0) * 8)
    assert count.numpy() == 3
    np.testing.assert_array_equal(steps(np.array([[1], [1], [1]])), [8.0, 16.0, 32.0])
    np.testing.assert_array_equal(w.numpy(), np.arange(6.0) * 64)
    assert count.numpy() == 6
