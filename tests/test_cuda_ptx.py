"""The CUDA backend's PTX: what LLVM may not see, and ptxas assembling the kernels of the op
table and of training steps for sm_80 and sm_90 (a representative part of the table by
default, all of it with --cuda-full), each kernel within the registers and shared memory its
launch may use. No GPU or emulator is needed."""

from __future__ import annotations

import re

import pytest
from cuda_cases import selected
from llvmlite import ir
from op_table import OP_TABLE, OpCase

import graphc as gc
from graphc import nn
from graphc.backends.cuda.dialect import DeviceDialect
from graphc.backends.cuda.launches import every_launch
from graphc.backends.cuda.program import CudaProgram, cuda_program
from graphc.backends.cuda.ptx import assemble, check_ptx, compile_ptx, find_ptxas
from graphc.backends.kernel import ir as k
from graphc.compiler import build_graph
from graphc.errors import CompileError
from graphc.passes import optimize

ARCHS = ("sm_80", "sm_90")
# The most static shared memory a block may use without opting in to more.
SHARED_LIMIT = 48 * 1024
# The most registers a thread may have, and a block's threads together (sm_80 and sm_90).
THREAD_REGISTERS = 255
BLOCK_REGISTERS = 65536


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


def _block_sizes(program: CudaProgram, cublas_epilogues: bool) -> dict[str, int]:
    """Return the threads per block each kernel of the program is launched with, by symbol."""
    _, launches = program.module(DeviceDialect, cublas_epilogues)
    return {launch.symbol: launch.block for launch in every_launch(launches)}


def _resources(report: str) -> dict[str, tuple[int, int]]:
    """Return (registers per thread, bytes of shared memory) of each entry in ptxas's -v
    report, by name. Spill stores and loads are allowed: they cost speed, not correctness."""
    pieces = re.split(r"Compiling entry function '([^']+)'", report)
    used = {}
    for name, section in zip(pieces[1::2], pieces[2::2], strict=True):
        registers = re.search(r"Used (\d+) registers", section)
        assert registers is not None, section
        shared = re.search(r"(\d+) bytes smem", section)
        used[name] = (int(registers[1]), int(shared[1]) if shared else 0)
    return used


def _assembled(graph, ptxas: str, cublas_epilogues: bool = False) -> int:
    """Assemble graph's kernels (with the matmul epilogues cuBLAS calls use, if asked) for
    every arch, checking that ptxas compiled exactly the kernels the program launches, each
    within the registers and shared memory of its launch; return how many there are."""
    program = cuda_program(graph)
    blocks = _block_sizes(program, cublas_epilogues)
    for arch in ARCHS:
        ptx = program.ptx(arch, cublas_epilogues).ptx
        assert ".extern" not in ptx
        report = assemble(ptx, arch, ptxas)
        used = _resources(report)
        assert used.keys() == blocks.keys(), report
        for symbol, (registers, shared) in used.items():
            assert registers <= THREAD_REGISTERS, f"{symbol} on {arch}: {registers} registers"
            assert registers * blocks[symbol] <= BLOCK_REGISTERS, (
                f"{symbol} on {arch}: {registers} registers x {blocks[symbol]} threads"
            )
            assert shared <= SHARED_LIMIT, f"{symbol} on {arch}: {shared} bytes of shared memory"
    return len(blocks)


def test_op_table_kernels_assemble(case: OpCase, ptxas: str) -> None:
    """ptxas compiles exactly the kernels the entry's program launches, however many: some
    entries optimise to none at all (a cast to the same dtype, floor of an int, a constant
    second derivative), and then the module it assembles is empty."""
    inputs = case.make_inputs()
    outputs = case.fn(*inputs)
    outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
    _assembled(optimize(build_graph(inputs, outputs)), ptxas)


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


def test_the_parity_models_training_steps_assemble(ptxas: str) -> None:
    """The Adam steps of the models test_training_parity.py trains against PyTorch: an MLP,
    the word-window classifier, a CNN with BatchNorm and a decoder with ConvTranspose2d."""
    parity = pytest.importorskip("test_training_parity")  # needs torch for its twin models
    for name, case in parity.CASES.items():
        model = case.build(nn)
        x = gc.input("x", case.x_shape, case.x_dtype)
        y = gc.input("y", case.y_shape, case.y_dtype)
        loss = case.graphc_loss(model(x), y)
        opt = parity.OPTIMIZERS["adam"][0](model.parameters())
        graph = optimize(build_graph([x, y], [loss], opt.minimize(loss)))
        assert _assembled(graph, ptxas) > 5, name


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
