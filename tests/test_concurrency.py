"""Calls of compiled Functions from several threads: every result equals numpy's, Variable
updates are never lost, and different Functions do not wait for each other."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import graphc as gc

THREADS = 8
CALLS = 200
BATCHES = (1, 2, 3, 5, 8, 13, 31, 64, 100, 257)


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    """Switch between Python threads every 10 us, so a call that is not serialised is
    interrupted mid-way often (the default 5 ms hides races in short calls)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def _run_threads(work, count: int = THREADS) -> list[BaseException]:
    """Run work(index) on count threads started together; return what they raised."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def body(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


@pytest.mark.parametrize("backend", ["llvm", "reference"])
def test_concurrent_calls_with_varying_batch_sizes_match_numpy(backend):
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((4, 6)).astype(np.float32)
    w2 = rng.standard_normal((4, 3)).astype(np.float32)
    x = gc.input("x", ("B", 4))
    e = x.exp()
    # A column sum read back by every row needs an intermediate buffer in the arena, and the
    # matmuls use the GEMM workspace; two Functions run at once share neither wrongly.
    columns = gc.compile([x], [e / e.sum(0), (x @ gc.tensor(w1)).tanh()], backend=backend)
    rows = gc.compile([x], [(x @ gc.tensor(w2)) * 2.0, (x * x).sum(1)], backend=backend)

    def work(index: int) -> None:
        local = np.random.default_rng(index)
        for call in range(CALLS):
            # Now and then a batch big enough that kernels split across the thread pool.
            batch = 40_000 if call % 40 == index else BATCHES[(index * 3 + call) % len(BATCHES)]
            data = local.standard_normal((batch, 4)).astype(np.float32)
            if call % 2:
                ex = np.exp(data)
                got = columns(data)
                want = (ex / ex.sum(0), np.tanh(data @ w1))
            else:
                got = rows(data)
                want = ((data @ w2) * 2.0, (data * data).sum(1))
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)

    failures = _run_threads(work)
    assert not failures, f"{len(failures)} threads failed, first: {failures[0]!r}"


@pytest.mark.parametrize("backend", ["llvm", "reference"])
def test_variable_increments_from_threads_are_never_lost(backend):
    counter = gc.Variable(np.zeros(3, np.int64), name="counter")
    step = gc.input("step", (), gc.int64)
    increment = gc.compile([step], [counter.sum()], {counter: counter + step}, backend=backend)
    per_thread = 2000 // THREADS

    def work(index: int) -> None:
        for _ in range(per_thread):
            increment(np.int64(1))

    failures = _run_threads(work)
    assert not failures, f"{len(failures)} threads failed, first: {failures[0]!r}"
    np.testing.assert_array_equal(counter.numpy(), [2000, 2000, 2000])


def test_a_running_function_does_not_block_another():
    x = gc.input("x", ("B", 4))
    first = gc.compile([x], [x + 1.0], backend="llvm")
    second = gc.compile([x], [x * 3.0], backend="llvm")
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    finished = threading.Event()
    result: list[np.ndarray] = []

    def call_second() -> None:
        result.append(second(data))
        finished.set()

    # While a call of `first` holds its executable, `second` still runs to completion.
    with first._executable._lock:
        thread = threading.Thread(target=call_second)
        thread.start()
        assert finished.wait(timeout=30)
    thread.join()
    np.testing.assert_array_equal(result[0], data * 3.0)
    np.testing.assert_array_equal(first(data), data + 1.0)


@pytest.mark.parametrize("steps", [None, 3], ids=["one step", "repeat(3)"])
def test_other_python_threads_run_while_a_call_computes(steps):
    """The native call releases the GIL while it computes, as a ctypes call does."""
    x = gc.input("x", (1 << 22,))
    function = gc.compile([x], [(x.sin() * x.cos()).sin().sum()], backend="llvm")
    if steps is not None:
        function = function.repeat(steps)
    data = np.linspace(-3.0, 3.0, 1 << 22, dtype=np.float32)
    feed = data if steps is None else np.stack([data] * steps)
    function(feed)
    ticks: list[float] = []
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())

    thread = threading.Thread(target=tick)
    thread.start()
    calls = []
    for _ in range(3):
        start = time.perf_counter()
        function(feed)
        calls.append((start, time.perf_counter()))
    done.set()
    thread.join()
    # The native part is nearly all of a call: look in the middle half of each.
    middles = [(start + (end - start) / 4, end - (end - start) / 4) for start, end in calls]
    during = [t for t in ticks for start, end in middles if start < t < end]
    assert during, f"no other thread ran during calls of {[e - s for s, e in calls]} s"
