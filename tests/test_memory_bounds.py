"""What compiled Functions keep in memory stays bounded: GEMM workspaces only where a graph
has a matmul (one per calling thread, shared), a few arena plans per Function, a bounded
cache of compiled modules and of `.numpy()` Functions, and RSS over many compiles."""

from __future__ import annotations

import gc as python_gc
import os
import subprocess
import sys
import threading
import weakref

import numpy as np

import graphc as gc
from graphc import evaluation
from graphc.backends.llvm import jit
from graphc.backends.llvm.memory import PLANS_KEPT, WORKSPACES


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _on_new_thread(work):
    """Return work()'s result, run on a thread of its own (so it starts without a workspace)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def test_no_workspace_without_a_matmul_and_one_shared_with_one():
    rng = np.random.default_rng(3)
    x = gc.input("x", ("B", 8))
    w1, w2 = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(2))
    elementwise = gc.compile([x], [(x * 2.0).tanh()], backend="llvm")
    first = gc.compile([x], [x @ gc.tensor(w1)], backend="llvm")
    second = gc.compile([x], [(x @ gc.tensor(w2)).relu()], backend="llvm")
    data = rng.standard_normal((5, 8)).astype(np.float32)
    assert elementwise.memory_stats()["workspace_bytes"] == 0
    assert first.memory_stats()["workspace_bytes"] > 0

    def without_matmul():
        np.testing.assert_allclose(elementwise(data), np.tanh(data * 2.0), rtol=1e-5)
        return WORKSPACES.current_bytes()

    assert _on_new_thread(without_matmul) == 0

    def with_two_matmuls():
        created = WORKSPACES.created
        for _ in range(3):
            np.testing.assert_allclose(first(data), data @ w1, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(second(data), np.maximum(data @ w2, 0), rtol=1e-5, atol=1e-5)
        return WORKSPACES.created - created, WORKSPACES.current_bytes()

    created, held = _on_new_thread(with_two_matmuls)
    assert created == 1  # both Functions use the thread's one workspace
    assert held >= first.memory_stats()["workspace_bytes"]


def test_arena_plans_and_pointer_tables_are_bounded():
    x = gc.input("x", ("B", 4))
    e = x.exp()
    f = gc.compile([x], [e / e.sum(0)], backend="llvm")
    executable = f._executable

    def check(batch: int) -> None:
        data = np.linspace(-1.0, 1.0, batch * 4, dtype=np.float32).reshape(batch, 4)
        np.testing.assert_allclose(f(data), np.exp(data) / np.exp(data).sum(0), rtol=1e-5)

    for batch in range(1, 3 * PLANS_KEPT + 40):
        check(batch)
        assert len(executable._planner._plans) <= PLANS_KEPT
        assert len(executable._bound_calls) <= PLANS_KEPT
    check(1)  # planned again after it was dropped
    check(2 * PLANS_KEPT)


def test_compiled_modules_are_freed_once_unused(monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    monkeypatch.setattr(jit, "RECENT_MODULES", 4)
    jit.clear_memory_cache()
    x = gc.input("x", (3,))
    data = np.array([1.0, 2.0, 3.0], np.float32)
    kept = gc.compile([x], [x * 7.0 - 0.25], backend="llvm")
    dropped = gc.compile([x], [x * 9.0 - 0.25], backend="llvm")
    dropped_module = weakref.ref(dropped._executable.compiled)
    del dropped
    for i in range(12):
        f = gc.compile([x], [x * (11.0 + i) - 0.25], backend="llvm")
        np.testing.assert_allclose(f(data), data * (11.0 + i) - 0.25)
        assert jit.memory_cache_sizes()["recent"] <= 4
    del f
    python_gc.collect()
    assert dropped_module() is None
    # A module still used by a Function survives its eviction from the cache.
    np.testing.assert_allclose(kept(data), data * 7.0 - 0.25)


def test_evaluation_cache_is_bounded_by_count_and_bytes(monkeypatch):
    monkeypatch.setattr(evaluation, "CACHE_FUNCTIONS", 6)
    monkeypatch.setattr(evaluation, "CACHE_BYTES", 4 << 20)
    monkeypatch.setattr(evaluation, "FUNCTION_OVERHEAD_BYTES", 1 << 10)
    assert evaluation.CACHE_FUNCTIONS <= 64
    base = np.arange(4, dtype=np.float32)
    for i in range(15):
        value = (gc.tensor(base) * float(i) + 1.0).numpy()
        np.testing.assert_array_equal(value, base * i + 1.0)
        count, _ = evaluation.cache_footprint()
        assert count <= 6
    large = np.ones(1 << 18, np.float32)  # 1 MiB, above the constant-folding limit
    for i in range(8):
        assert (gc.tensor(large) * float(i)).sum().item() == float(i) * large.size
        count, held = evaluation.cache_footprint()
        assert held <= 4 << 20 and count <= 6
    huge = np.ones(1 << 21, np.float32)  # 8 MiB: more than the whole bound, never cached
    before = evaluation.cache_footprint()
    assert (gc.tensor(huge) + 1.0).sum().item() == 2.0 * huge.size
    assert evaluation.cache_footprint() == before


def test_rss_stays_flat_over_many_compiles_of_distinct_graphs(monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    monkeypatch.setattr(jit, "RECENT_MODULES", 8)
    x = gc.input("x", ("B", 4))
    data = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)

    def compile_and_run(i: int) -> None:
        f = gc.compile([x], [(x * (1.0 + i) + 0.5).tanh()], backend="llvm")
        np.testing.assert_allclose(f(data), np.tanh(data * (1.0 + i) + 0.5), rtol=1e-5)

    for i in range(24):  # fill the caches: what follows is the steady state
        compile_and_run(i)
    python_gc.collect()
    before = _rss_bytes()
    for i in range(24, 174):
        compile_and_run(i)
    python_gc.collect()
    grown = _rss_bytes() - before
    # Each Function used to keep ~1 MB for good (140 MB here). What remains, about 80 kB per
    # compile, is held inside llvmlite's O3 pass pipeline.
    assert grown < 40 << 20, f"RSS grew by {grown / 2**20:.0f} MiB over 150 compiles"


# Functions held only by reference cycles, freed by the cyclic garbage collector: the engine,
# module and LLVM context must still be freed in order (a crash here kills the interpreter,
# hence the fresh one).
CYCLES = """
import gc
import numpy as np
import graphc as gc_
from graphc.backends.llvm import jit

class Holder:
    pass

for i in range(120):
    x = gc_.input("x", (4,))
    f = gc_.compile([x], [x * float(i) + 1.0], backend="llvm")
    assert f(np.ones(4, np.float32))[0] == float(i) + 1.0
    holder = Holder()
    holder.function, holder.itself = f, holder
    del f, holder, x
    if i % 20 == 0:
        jit.clear_memory_cache()
        gc.collect()
jit.clear_memory_cache()
gc.collect()
print("freed")
"""


def test_functions_in_reference_cycles_are_freed_safely():
    environment = dict(os.environ, GRAPHC_CACHE="0")
    done = subprocess.run(
        [sys.executable, "-c", CYCLES], env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "freed" in done.stdout, (done.returncode, done.stderr[-2000:])
