"""The CUDA backend's PTX: what LLVM may not see, and ptxas assembling the kernels of the op
table and of a training step for sm_80 and sm_90 (a representative part of the table by
default, all of it with --cuda-full). No GPU or emulator is needed."""

from __future__ import annotations

import re

import pytest
from cuda_cases import selected
from llvmlite import ir
from op_table import OP_TABLE, OpCase

import graphc as gc
from graphc import nn
from graphc.backends.cuda.program import cuda_program
from graphc.backends.cuda.ptx import assemble, check_ptx, compile_ptx, find_ptxas
from graphc.backends.kernel import ir as k
from graphc.compiler import build_graph
from graphc.errors import CompileError
from graphc.passes import optimize

ARCHS = ("sm_80", "sm_90")
# The most static shared memory a block may use without opting in to more.
SHARED_LIMIT = 48 * 1024


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        chosen = selected(OP_TABLE, metafunc.config.getoption("--cuda-full"))
        metafunc.parametrize("case", chosen, ids=[case.id for case in chosen])


@pytest.fixture(scope="module")
def ptxas() -> str:
    path = find_ptxas()
    if path is None:
        pytest.skip("no ptxas: install the test extra (nvidia-cuda-nvcc-cu12)")
    return path


def _declaring(name: str) -> ir.Module:
    module = ir.Module(name="probe")
    f32 = ir.FloatType()
    kernel = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer()]), "probe")
    kernel.calling_convention = "ptx_kernel"
    b = ir.IRBuilder(kernel.append_basic_block("entry"))
    callee = ir.Function(module, ir.FunctionType(f32, [f32]), name)
    b.store(b.call(callee, [b.load(kernel.args[0])]), kernel.args[0])
    b.ret_void()
    return module


@pytest.mark.parametrize("name", ["llvm.exp.f32", "llvm.tanh.f64", "llvm.nvvm.misspelled", "expf"])
def test_a_call_the_device_cannot_make_is_an_error_not_an_abort(name):
    """LLVM would abort the process on llvm.exp or llvm.tanh for NVPTX; the check comes first."""
    with pytest.raises(CompileError, match=re.escape(repr(name))):
        compile_ptx(_declaring(name))


def test_an_undefined_function_left_in_the_ptx_is_an_error():
    ptx = compile_ptx(_declaring("llvm.fabs.f32")).ptx
    check_ptx(ptx)
    with pytest.raises(CompileError, match="__nv_expf"):
        check_ptx(ptx + "\n.extern .func  (.param .b32 r) __nv_expf\n(\n.param .b32 x\n);\n")


def _assembled(graph, ptxas: str, cublas_epilogues: bool = False) -> int:
    """Assemble graph's kernels (with the matmul epilogues cuBLAS calls use, if asked) for
    every arch; return how many kernels there are."""
    program = cuda_program(graph)
    kernels = 0
    for arch in ARCHS:
        ptx = program.ptx(arch, cublas_epilogues)
        assert ".extern" not in ptx.ptx
        report = assemble(ptx.ptx, arch, ptxas)
        shared = [int(n) for n in re.findall(r"(\d+) bytes smem", report)]
        assert all(n <= SHARED_LIMIT for n in shared), report
        kernels = ptx.ptx.count(".entry")
        assert len(re.findall(r"Compiling entry function", report)) == kernels, report
    return kernels


def test_op_table_kernels_assemble(case: OpCase, ptxas: str) -> None:
    inputs = case.make_inputs()
    outputs = case.fn(*inputs)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    assert _assembled(optimize(build_graph(inputs, outputs)), ptxas) >= 1


def test_a_training_step_assembles(ptxas: str) -> None:
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 5))
    x, y = gc.input("x", ("B", 20)), gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = gc.optim.Adam(model.parameters(), lr=1e-3)
    graph = optimize(build_graph([x, y], [loss], opt.minimize(loss)))
    plain = _assembled(graph, ptxas)
    assert plain > 5
    # The forward Linear + ReLU matmul's epilogue, as a kernel of its own for cuBLAS calls.
    assert _assembled(graph, ptxas, cublas_epilogues=True) > plain


def _loop_names(program) -> list[str]:
    return [
        kernel.name
        for kernel in k.nested_kernels(program.kernels)
        if isinstance(kernel, k.ScanKernel)
    ]


def test_loop_kernels_assemble(ptxas: str) -> None:
    """An LSTM training step (its forward and backward loops) and nested loops: each loop's
    body kernels, carry copies and the one-thread kernels moving its buffers."""
    model = nn.LSTM(3, 8, num_layers=2, bidirectional=True)
    x = gc.input("x", ("T", "B", 3))
    out, _ = model(x)
    loss = (out * out).mean()
    training = build_graph([x], [loss], gc.optim.Adam(model.parameters()).minimize(loss))

    def row(total, values):
        inner, _ = gc.scan(lambda c, v: (c * 0.5 + v, None), gc.zeros(2), values)
        return total + inner, inner

    grid = gc.input("grid", ("R", "C", 2))
    nested = build_graph([grid], list(gc.scan(row, gc.zeros(2), grid)))
    for graph, loops in ((training, 8), (nested, 2)):
        graph = optimize(graph)
        program = cuda_program(graph)
        names = _loop_names(program.program)
        assert len(names) == loops
        assert _assembled(graph, ptxas) > 4 * loops
        ptx = program.ptx("sm_90").ptx
        for name in names:
            for own in ("init0", "start", "advance"):
                assert f".entry {name.replace('.', '$')}${own}(" in ptx
