"""Helper processes that compile modules side by side with this one: the same object code as
compiling here, and any failure of theirs only sends the work back here."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.llvm import codegen, compile_helpers, gemm, jit
from graphc.backends.llvm.target import selected_target
from graphc.errors import CompileError


def _scaling_module(scale: float) -> ir.Module:
    """A module of one function, x -> x * scale + 1 over n doubles, unique to scale (a fresh
    module for both caches) and worth vectorising (the standard pipeline has work to do)."""
    module = ir.Module(name=f"scaling_{uuid.uuid4().hex}")
    double, i64 = ir.DoubleType(), ir.IntType(64)
    function = ir.Function(
        module, ir.FunctionType(ir.VoidType(), [double.as_pointer(), i64]), "scale_all"
    )
    data, count = function.args
    entry, loop, done = (function.append_basic_block(n) for n in ("entry", "loop", "done"))
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", count, i64(0)), loop, done)
    builder.position_at_end(loop)
    index = builder.phi(i64)
    index.add_incoming(i64(0), entry)
    address = builder.gep(data, [index])
    value = builder.fadd(builder.fmul(builder.load(address), double(scale)), double(1.0))
    builder.store(value, address)
    following = builder.add(index, i64(1))
    index.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
    builder.position_at_end(done)
    builder.ret_void()
    return module


def _run_scaling(compiled: jit.CompiledModule, scale: float) -> None:
    values = np.arange(37, dtype=np.float64)
    function = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(
        compiled.address("scale_all")
    )
    function(values.ctypes.data, values.size)
    np.testing.assert_array_equal(values, np.arange(37, dtype=np.float64) * scale + 1.0)


def _gemm_text() -> str:
    target = selected_target()
    module = ir.Module(name="gemm")
    gemm.gemm_function(module, "f32", target, False)
    module.triple = target.triple
    module.data_layout = str(jit.target_machine(target).target_data)
    return str(module)


@pytest.mark.parametrize("pipeline", ["vectorised", "standard"])
def test_a_helper_emits_the_same_object_code_and_ir_as_this_process(pipeline):
    target = selected_target()
    machine = jit.target_machine(target)
    if pipeline == "vectorised":
        text = _gemm_text()
    else:
        module = _scaling_module(3.0)
        module.triple, module.data_layout = target.triple, str(machine.target_data)
        text = str(module)
    spec = target.machine_spec(codegen.OPT_LEVEL)
    (from_helper,) = compile_helpers.HelperBatch(
        [codegen.request(spec, pipeline, text)], 1
    ).results()
    assert from_helper is not None
    here = codegen.object_code(text, machine, pipeline)
    assert from_helper[0] == here[0]
    assert from_helper[1] == here[1]


def test_a_helper_answers_each_request_and_marks_the_failed_one():
    target = selected_target()
    spec = target.machine_spec(codegen.OPT_LEVEL)
    good = _scaling_module(2.0)
    good.triple = target.triple
    requests = [
        codegen.request(spec, "standard", str(good)),
        codegen.request(spec, "standard", "this is not LLVM IR"),
        codegen.request(spec, "no such pipeline", str(good)),
        codegen.request(spec, "standard", str(good)),
    ]
    results = compile_helpers.HelperBatch(requests, 1).results()
    assert [result is None for result in results] == [False, True, True, False]
    assert results[0] == results[3]


@pytest.mark.parametrize("cut", [0, 1, 20, -1])
def test_replies_cut_short_count_as_failed(cut):
    target = selected_target()
    module = _scaling_module(5.0)
    module.triple = target.triple
    spec = target.machine_spec(codegen.OPT_LEVEL)
    done = subprocess.run(
        [sys.executable, "-c", _SERVE, codegen.__file__],
        input=codegen.request(spec, "standard", str(module)) * 2,
        capture_output=True,
        check=True,
    )
    whole = codegen.replies(done.stdout, 2)
    assert all(result is not None for result in whole)
    kept = done.stdout[: len(done.stdout) // 2 + cut] if cut >= 0 else done.stdout[:-1]
    assert codegen.replies(kept, 2)[1] is None
    assert codegen.replies(b"{not json\n" + done.stdout, 1) == [None]
    assert codegen.replies(json.dumps({"object": "x"}).encode() + b"\n", 1) == [None]


_SERVE = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("codegen", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.serve(sys.stdin.buffer, sys.stdout.buffer)
    """
)


@pytest.mark.parametrize("executable", ["works", "missing", "fails"])
def test_modules_compiled_beside_helpers_run_whatever_the_helper_did(
    monkeypatch, tmp_path, executable
):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", "2")
    if executable == "missing":
        monkeypatch.setattr(compile_helpers.sys, "executable", str(tmp_path / "python-gone"))
    elif executable == "fails":
        monkeypatch.setattr(compile_helpers, "_LAUNCH", "import sys; sys.exit(3)")
    scales = [1.5, 2.5, 3.5]
    assert compile_helpers.helper_count(len(scales)) == 2  # helpers are tried, whatever they do
    before = jit.compile_counts()["compiled"]
    prepared = jit.prepare_modules([_scaling_module(scale) for scale in scales])
    assert [entry.outcome for entry in prepared] == ["compiled"] * 3
    for entry, scale in zip(prepared, scales, strict=True):
        _run_scaling(entry.load(), scale)
    assert jit.compile_counts()["compiled"] == before + 3
    assert len(list(tmp_path.glob("*.o"))) == 3


def test_helper_count_leaves_one_module_here_and_follows_the_setting(monkeypatch):
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", "3")
    assert [compile_helpers.helper_count(n) for n in (0, 1, 2, 5)] == [0, 0, 1, 3]
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", "0")
    assert compile_helpers.helper_count(5) == 0
    monkeypatch.delenv("GRAPHC_COMPILE_HELPERS")
    monkeypatch.setattr(compile_helpers.os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert compile_helpers.helper_count(5) == 0


@pytest.mark.parametrize("setting", ["many", "-1", "1.5", ""])
def test_a_helper_setting_that_is_no_count_is_named_in_the_error(monkeypatch, setting):
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", setting)
    with pytest.raises(CompileError, match="GRAPHC_COMPILE_HELPERS must be a whole number"):
        compile_helpers.helper_count(3)


@pytest.mark.parametrize("executable", ["", "/usr/bin/uwsgi", "/opt/app/MyApp.exe"])
def test_no_helpers_where_the_executable_is_not_python(monkeypatch, executable):
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", "3")
    assert compile_helpers.helper_count(5) == 3
    monkeypatch.setattr(compile_helpers.sys, "executable", executable)
    assert compile_helpers.helper_count(5) == 0


def test_no_helpers_in_a_frozen_application(monkeypatch):
    monkeypatch.setenv("GRAPHC_COMPILE_HELPERS", "3")
    monkeypatch.setattr(compile_helpers.sys, "frozen", True, raising=False)
    assert compile_helpers.helper_count(5) == 0


# A cold compile of an MLP Adam step in a fresh process: the GEMM library and the step's
# module compile side by side (helpers on) or one after the other (off); the loss is the same.
_COLD_STEP = textwrap.dedent(
    """
    import json
    import numpy as np
    import graphc as gc
    from graphc import nn, optim
    from graphc.backends.llvm import jit

    gc.manual_seed(0)
    x = gc.input("x", ("B", 20))
    y = gc.input("y", ("B",), "int64")
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    loss = nn.CrossEntropyLoss()(model(x), y)
    step = gc.compile([x, y], loss, updates=optim.Adam(model.parameters()).minimize(loss))
    rng = np.random.default_rng(1)
    feeds = rng.standard_normal((8, 20)).astype(np.float32), rng.integers(0, 5, 8)
    losses = [float(step(*feeds)) for _ in range(3)]
    print(json.dumps({"losses": losses, "counts": jit.compile_counts()}))
    """
)


def test_a_cold_training_step_compiled_beside_a_helper_equals_one_compiled_alone(tmp_path):
    outcomes = {
        helpers: _fresh_process(
            _COLD_STEP,
            GRAPHC_CACHE_DIR=str(tmp_path / helpers),
            GRAPHC_COMPILE_HELPERS=helpers,
            GRAPHC_NUM_THREADS="1",
        )
        for helpers in ("1", "0")
    }
    assert outcomes["1"]["losses"] == outcomes["0"]["losses"]
    for outcome in outcomes.values():
        assert outcome["counts"]["compiled"] >= 2  # the GEMM library and the step
    assert sorted(p.read_bytes() for p in (tmp_path / "1").glob("*.o")) == sorted(
        p.read_bytes() for p in (tmp_path / "0").glob("*.o")
    )


def test_each_module_asked_for_counts_once_by_how_it_came(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    module = _scaling_module(7.0)

    def counted(ask) -> dict[str, int]:
        before = jit.compile_counts()
        kept = ask()
        _run_scaling(kept, 7.0)
        return {name: jit.compile_counts()[name] - before[name] for name in before}

    assert counted(lambda: jit.compile_module(module)) == {"compiled": 1, "loaded": 0, "reused": 0}
    assert counted(lambda: jit.compile_module(module)) == {"compiled": 0, "loaded": 0, "reused": 1}
    jit.clear_memory_cache()
    assert counted(lambda: jit.compile_module(module)) == {"compiled": 0, "loaded": 1, "reused": 0}


# Threads that each compile a cold program with matmuls of their own at once: the library
# modules they share are compiled (beside some graph's module) and registered once, and
# every program runs right.
_COLD_THREADS = textwrap.dedent(
    """
    import json, threading
    import numpy as np
    import graphc as gc
    from graphc.backends.llvm import jit, runtime_library

    failures = []

    def work(seed):
        rng = np.random.default_rng(seed)
        dtype = ("float32", "float64")[seed % 2]
        m, k, n = (int(v) for v in rng.integers(3, 40, 3))
        a, b = gc.input("a", (m, k), dtype), gc.input("b", (k, n), dtype)
        f = gc.compile([a, b], (a @ b).tanh() + seed)
        x = rng.standard_normal((m, k)).astype(dtype)
        y = rng.standard_normal((k, n)).astype(dtype)
        want = np.tanh(x.astype(np.float64) @ y.astype(np.float64)) + seed
        if not np.allclose(f(x, y), want, rtol=1e-4, atol=1e-4):
            failures.append(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    library = len(runtime_library._registered)
    print(json.dumps({"failures": failures, "counts": jit.compile_counts(), "library": library}))
    """
)


def test_threads_compiling_cold_programs_at_once_share_the_library(tmp_path):
    outcome = _fresh_process(
        _COLD_THREADS,
        GRAPHC_CACHE_DIR=str(tmp_path),
        GRAPHC_COMPILE_HELPERS="2",
        GRAPHC_NUM_THREADS="2",
    )
    assert outcome["failures"] == []
    # 6 graph modules, the library modules (the f32 and f64 GEMMs, the thread pool, maybe a
    # narrow GEMM) and the Python entry (python_entry.py), each compiled once.
    assert outcome["library"] >= 3
    assert outcome["counts"]["compiled"] == 6 + outcome["library"] + 1


def _fresh_process(script: str, **variables: str) -> dict:
    """Return the JSON object that script prints last, run by a fresh interpreter with these
    environment variables set."""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env={**os.environ, **variables}, capture_output=True, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])
