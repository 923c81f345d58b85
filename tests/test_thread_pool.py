"""The native thread pool runs every chunk of a job exactly once, on a thread number below the
job's thread count, also when several Python threads submit jobs at once and in a forked
child; a caller never waits for a worker that has not started. Kernels split over it give
what one thread gives, bit for bit."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm.jit import compile_module
from graphc.backends.llvm.runtime_library import parallel_address
from graphc.backends.llvm.thread_pool import LATE_CYCLES, MAX_STRIKES, PENALTY_JOBS

I64 = ir.IntType(64)
_PARALLEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


def _recording_task(worker_factor: int = 1) -> tuple[object, int]:
    """Compile `task(record, chunk, thread)` that adds 1 to record[1 + chunk], stores the
    thread number in record[1 + chunks + chunk] (chunks = record[0]) and then spins for
    record[1 + 2 * chunks] cycles (times worker_factor on a worker), so that workers get a
    share."""
    module = ir.Module(name=f"pool_test_task_{worker_factor}")
    fn = ir.Function(
        module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), I64, I64]), "task"
    )
    record, chunk, thread = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    words = b.bitcast(record, I64.as_pointer())
    chunks = b.load(words)
    one = ir.Constant(I64, 1)
    b.atomic_rmw("add", b.gep(words, [b.add(one, chunk)]), one, "monotonic")
    b.store(thread, b.gep(words, [b.add(b.add(one, chunks), chunk)]))
    cycles = b.load(b.gep(words, [b.add(one, b.mul(chunks, ir.Constant(I64, 2)))]))
    on_worker = b.icmp_signed("!=", thread, ir.Constant(I64, 0))
    cycles = b.select(on_worker, b.mul(cycles, ir.Constant(I64, worker_factor)), cycles)
    clock = ir.Function(module, ir.FunctionType(I64, []), "llvm.readcyclecounter")
    start = b.call(clock, [])
    spin = fn.append_basic_block("spin")
    done = fn.append_basic_block("done")
    b.branch(spin)
    b.position_at_end(spin)
    b.cbranch(b.icmp_unsigned("<", b.sub(b.call(clock, []), start), cycles), spin, done)
    b.position_at_end(done)
    b.ret_void()
    compiled = compile_module(module)
    return compiled, compiled.address("task")


def _pool_runner(worker_factor: int = 1):
    """Yield run(chunks, threads, cycles) -> (runs of each chunk, thread of each chunk)."""
    compiled, task = _recording_task(worker_factor)
    parallel = _PARALLEL(parallel_address())

    def run(chunks: int, threads: int, cycles: int = 0) -> tuple[np.ndarray, np.ndarray]:
        record = np.zeros(2 * chunks + 2, dtype=np.int64)
        record[0], record[-1] = chunks, cycles
        record[1 + chunks : 1 + 2 * chunks] = -1
        parallel(task, record.ctypes.data, chunks, threads)
        return record[1 : 1 + chunks], record[1 + chunks : 1 + 2 * chunks]

    yield run
    del compiled


@pytest.fixture(scope="module")
def pool():
    yield from _pool_runner()


@pytest.fixture(scope="module")
def slow_worker_pool():
    """A pool whose tasks spin four times longer on a worker than on the caller."""
    yield from _pool_runner(worker_factor=4)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("chunks", [0, 1, 2, 3, 7, 64, 1000])
def test_every_chunk_runs_once_on_a_valid_thread(pool, chunks, threads):
    counts, ran_on = pool(chunks, threads)
    np.testing.assert_array_equal(counts, np.ones(chunks, dtype=np.int64))
    assert ((ran_on >= 0) & (ran_on < threads)).all(), ran_on


def test_workers_take_a_share(pool):
    # After a job in which the caller waited long for a descheduled worker (likely on a busy
    # test machine), the pool runs up to 4096 jobs on the caller alone: quick jobs use that
    # up before each try with long chunks, which a worker has time to join.
    for _ in range(40):
        for _ in range(PENALTY_JOBS << MAX_STRIKES):
            pool(2, 2)
        if (pool(64, 2, cycles=1_000_000)[1] > 0).any():
            return
    pytest.fail("no worker ran a chunk of 40 jobs of 64 long chunks")


def test_a_woken_worker_that_runs_late_does_not_make_the_pool_back_off(slow_worker_pool):
    # Jobs X1 and X2: the worker sleeps when each is published (after 50 ms without jobs),
    # wakes, takes the second chunk and finishes it long after the caller's. Were those
    # strikes, the second would run the next 16 jobs on the caller alone, so job Y, published
    # right after X2, would have no worker chunk. Scheduling decides whether the worker joins
    # each job at all, so a few tries are allowed; the penalties Y earns are cleared first.
    # The caller's chunk (20 million cycles, some ms) leaves a woken worker time to claim the
    # other on a machine busy with other processes (2 million failed 20 tries there).
    for _ in range(20):
        for _ in range(PENALTY_JOBS << MAX_STRIKES):
            slow_worker_pool(2, 2)
        joined = []
        for pause in (0.05, 0.05, 0.0):
            time.sleep(pause)
            _, ran_on = slow_worker_pool(2, 2, cycles=20_000_000)
            joined.append(bool((ran_on > 0).any()))
        if all(joined):
            return
    pytest.fail("in no try did a woken worker join two jobs and then the next one")


@pytest.mark.parametrize("cycles", [20_000, 200_000])
def test_a_worker_late_by_less_than_a_time_slice_does_not_make_the_pool_back_off(
    slow_worker_pool, cycles
):
    # Jobs whose worker chunk takes four times the caller's cycles keep the caller waiting
    # three times as long as it worked, but for less than LATE_CYCLES: a hiccup or a core
    # still waking up (200,000 cycles: 60-80 us), not a descheduled worker. Were those
    # strikes, 50 of them in a row would run the next jobs on the caller alone, so job Y
    # right after them would have no worker chunk.
    assert 3 * cycles < LATE_CYCLES
    for _ in range(20):
        for _ in range(PENALTY_JOBS << MAX_STRIKES):
            slow_worker_pool(2, 2)
        for _ in range(50):
            slow_worker_pool(2, 2, cycles=cycles)
        _, ran_on = slow_worker_pool(2, 2, cycles=2_000_000)
        if (ran_on > 0).any():
            return
    pytest.fail("in no try did a worker join the job after 50 jobs it was a little late for")


def test_jobs_submitted_from_several_threads_at_once(pool):
    failures: list[str] = []

    def submit(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(200):
            chunks, threads = int(rng.integers(0, 40)), int(rng.integers(1, 5))
            counts, ran_on = pool(chunks, threads, cycles=int(rng.integers(0, 3000)))
            if not (counts == 1).all() or not ((ran_on >= 0) & (ran_on < threads)).all():
                failures.append(f"chunks={chunks} threads={threads}: {counts} {ran_on}")

    workers = [threading.Thread(target=submit, args=(seed,)) for seed in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures, failures[:3]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_jobs(pool):
    pool(64, 2)  # the parent's workers exist before the fork
    child = os.fork()
    if child == 0:
        good = False
        try:
            counts, ran_on = pool(64, 3, cycles=10_000)
            good = (counts == 1).all() and ((ran_on >= 0) & (ran_on < 3)).all()
        finally:
            os._exit(0 if good else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_pool_symbol_is_registered():
    assert llvm.address_of_symbol("graphc_parallel") == parallel_address()


@pytest.fixture
def flushing():
    """Flush denormals on this thread for the test, then restore IEEE behaviour."""
    import graphc as gc

    if not gc.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode graphc sets (x86 only)")
    yield gc
    gc.set_flush_denormal(False)


def test_flushed_denormals_are_zero_on_the_caller_and_on_workers(flushing, monkeypatch):
    # 2M elements: large enough that both threads run chunks of the kernel.
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "2")
    gc = flushing
    x = gc.input("x", (2048, 1024))
    f = gc.compile([x], [x * 1e-30], backend="llvm")
    tiny = np.full((2048, 1024), 1e-10, dtype=np.float32)  # 1e-40 is denormal in float32
    assert not f(tiny).any()
    gc.set_flush_denormal(False)
    kept = f(tiny)
    assert (kept > 0).all() and np.allclose(kept, np.float32(1e-40), rtol=1e-2)


def _compiled_on(threads: str, monkeypatch, build):
    """Return build()'s inputs and outputs compiled with GRAPHC_NUM_THREADS=threads."""
    import graphc as gc

    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    inputs, outputs = build(gc)
    return gc.compile(inputs, outputs, backend="llvm")


def _split_workloads(gc):
    """Kernels big enough to split over threads in the ways a split differs: a few channels'
    sums over a batch of images (chunks of one element), row softmax (chunks of whole rows),
    and matmuls split by columns (144 of them: four chunks per thread), by rows (one each),
    and 16 rows over a depth of 20000 (chunks of 8 rows)."""
    images = gc.input("images", ("B", 3, 28, 28))
    rows = gc.input("rows", (333, 1000))
    a = gc.input("a", (600, 700))
    b = gc.input("b", (700, 144))
    deep = gc.input("deep", (16, 20000))
    centred = images - images.mean(dim=(0, 2, 3), keepdim=True)
    outputs = [
        (centred * centred).sum(dim=(0, 2, 3)),
        images.sum(dim=(0, 2, 3)),
        gc.nn.functional.softmax(rows, dim=-1),
        a.T @ a[:, :144],
        a @ b,
        deep @ deep[:9].T,
    ]
    return [images, rows, a, b, deep], outputs


def test_kernels_split_over_threads_match_one_thread_bitwise(monkeypatch):
    # Splitting a kernel's elements over threads never changes an element's order of sums.
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal(shape).astype(np.float32)
        for shape in ((64, 3, 28, 28), (333, 1000), (600, 700), (700, 144), (16, 20000))
    ]
    one = _compiled_on("1", monkeypatch, _split_workloads)(*arrays)
    two = _compiled_on("2", monkeypatch, _split_workloads)(*arrays)
    for got, want in zip(two, one, strict=True):
        assert np.array_equal(got, want)
    images, rows, a, b, deep = (x.astype(np.float64) for x in arrays)
    np.testing.assert_allclose(two[1], images.sum(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(two[4], a @ b, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(two[5], deep @ deep[:9].T, rtol=1e-4, atol=1e-2)
