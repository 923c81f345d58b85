"""Build the LLVM module of a kernel program: one function per kernel and one entry point,
`void graph_main(i8** table, i64* sizes, i64* error, i64 threads)`, that runs every kernel in
order (splitting large ones over graphc's thread pool), stops at the first run-time error,
and only then copies update values into the variables and source outputs into place. sizes
holds the symbols' sizes, then a word per packed weight (`prepacked.py`).

Python calls graph_run (entry_point.py), which runs `graph_steps`: graph_main once per step,
over inputs and outputs stacked along a leading steps dim. After each step it moves every
input and output pointer in the table on by one step's bytes, so step i+1 reads its own
inputs and sees the Variables as step i left them; a plain call is one step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index import dim_expr
from graphc.backends.llvm.collectives import emit_collective_kernel
from graphc.backends.llvm.entry_point import STEPS_ARGS, emit_run_function
from graphc.backends.llvm.expressions import I8, I64, Scope
from graphc.backends.llvm.kernels import (
    FunctionEmitter,
    KernelContext,
    emit_loop_kernel,
    emit_matmul_kernel,
    emit_scatter_kernel,
    emit_sparse_update,
    loop_split,
    loop_work,
    matmul_work,
)
from graphc.backends.llvm.parallel import CHUNK_GRAIN, Work, emit_run
from graphc.backends.llvm.prepacked import emit_packing_when_stale, packed_kernels
from graphc.backends.llvm.scan import emit_scan_kernel
from graphc.backends.llvm.sharing import SharedBodies
from graphc.backends.llvm.target import selected_target
from graphc.dtypes import float32

ENTRY_NAME = "graph_main"
ENTRY_TYPE = ir.FunctionType(
    ir.VoidType(), [I8.as_pointer().as_pointer(), I64.as_pointer(), I64.as_pointer(), I64]
)
STEPS_TYPE = ir.FunctionType(ir.VoidType(), [*ENTRY_TYPE.args, I64])
# The error record: [failed, value, size, axis] written by a failing kernel, then the step.
ERROR_FIELDS = 5
STEP_FIELD = 4


def slot_names(program: KernelProgram) -> list[str]:
    """Return the pointer-table layout: every buffer, then the GEMM workspace."""
    return [*program.buffers, "workspace"]


def build_module(
    program: KernelProgram,
    math: Callable[[ir.Module, str, str], ir.Function],
    gemm: Callable[[ir.Module, str, bool], ir.Function] | None,
    workspace_bytes: int,
    parallel: bool,
    aliases: dict[str, str] | None = None,
) -> ir.Module:
    """Return the LLVM module computing program; `aliases` maps buffers that share another's
    memory (updates computed in place) to that buffer."""
    module = ir.Module(name="graphc")
    slots = {name: position for position, name in enumerate(slot_names(program))}
    dtypes = {name: spec.dtype for name, spec in program.buffers.items()}
    dtypes["workspace"] = float32
    isa = selected_target().isa
    ctx = KernelContext(
        module,
        slots,
        dtypes,
        program.symbols,
        math,
        gemm,
        workspace_bytes,
        dict(aliases or {}),
        window_extrema_by_selects=isa in ("avx2", "sse2"),
        masked_tails=isa == "avx512",
    )
    entry = FunctionEmitter(ctx, ENTRY_NAME, ENTRY_TYPE, ("table", "sizes", "error", "threads"))
    b = entry.builder
    table, sizes, error, threads = entry.function.args
    done = entry.function.append_basic_block("failed")
    # The weights whose packed copies are stale (words after the symbol sizes say which).
    for word, (kernel, _) in enumerate(packed_kernels(program), start=len(program.symbols)):
        emit_packing_when_stale(ctx, entry, kernel, word)
    _emit_kernels(ctx, entry, program.kernels, parallel, done, SharedBodies(ctx))
    _commit(entry, program)
    b.ret_void()
    b.position_at_end(done)
    b.ret_void()
    emit_run_function(module, _steps_function(ctx, program, entry.function))
    return module


def _emit_kernels(
    ctx: KernelContext,
    caller: FunctionEmitter,
    kernels,
    parallel: bool,
    done: ir.Block,
    shared: SharedBodies,
    in_loop: bool = False,
) -> None:
    """Emit calls of kernels, in order, into caller (the entry point or, `in_loop`, a loop's
    body, whose arguments are table, sizes, error and threads), branching to done after one
    that fails; kernels equal but for their buffers share one body (`sharing.py`)."""
    for kernel in kernels:
        if isinstance(kernel, k.ScanKernel):

            def body(emitter: FunctionEmitter, failed: ir.Block, inner=kernel.body) -> None:
                _emit_kernels(ctx, emitter, inner, parallel, failed, shared, in_loop=True)

            loop = emit_scan_kernel(ctx, caller, kernel, body)
            calls: list[tuple[ir.Function, Work | None]] = [(loop, None)]
        elif isinstance(kernel, k.CollectiveKernel):  # one MPI call, on this thread
            calls = [(emit_collective_kernel(ctx, caller, kernel), None)]
        elif isinstance(kernel, k.SparseUpdateKernel):
            _emit_sparse_update(ctx, caller, kernel, (parallel, in_loop), done, shared)
            continue
        else:
            calls = list(_kernel_functions(ctx, caller, kernel, shared))
        _emit_calls(caller, calls, (parallel, in_loop), done)


def _emit_calls(
    caller: FunctionEmitter,
    calls: Sequence[tuple[ir.Function, Work | None]],
    split: tuple[bool, bool],
    done: ir.Block,
) -> None:
    """Emit the calls of kernel functions, each split over threads by its work (None: on
    this thread) where `split` (parallel, in a loop's body) allows, branching to done after
    one that fails."""
    b = caller.builder
    table, sizes, error, threads = caller.function.args
    parallel, in_loop = split
    for function, work in calls:
        if work is None:  # a loop runs its steps on this thread; its body's kernels split
            b.call(function, [table, sizes, error, threads])
        else:
            pool = threads if parallel else None
            emit_run(caller, function, work, pool, table, sizes, error, in_loop)
        failed = b.icmp_signed("!=", b.load(error), ir.Constant(I64, 0))
        next_block = caller.function.append_basic_block(f"after_{function.name}")
        b.cbranch(failed, done, next_block)
        b.position_at_end(next_block)


def _emit_sparse_update(
    ctx: KernelContext,
    caller: FunctionEmitter,
    kernel: k.SparseUpdateKernel,
    split: tuple[bool, bool],
    done: ir.Block,
    shared: SharedBodies,
) -> None:
    """Emit a sparse update: its sparse path where that gives the bits of the dense one (the
    scale times zero is the zero that leaves every element alone, and the source has no more
    elements than the scatter's output), else the scatter and the update as usual."""
    b = caller.builder
    scope = Scope()
    scale = caller.expr.value(kernel.scale, scope)
    width = 64 if isinstance(scale.type, ir.DoubleType) else 32
    product = b.bitcast(b.fmul(scale, ir.Constant(scale.type, 0.0)), ir.IntType(width))
    identity = 0 if kernel.subtract else 1 << (width - 1)  # +0.0 to subtract, -0.0 to add
    leaves_alone = b.icmp_unsigned("==", product, ir.Constant(ir.IntType(width), identity))
    source = ir.Constant(I64, 1)
    for extent in kernel.scatter.domain:
        source = b.mul(source, caller.expr.index(extent, scope))
    few = b.icmp_signed("<=", source, caller.expr.index(kernel.scatter.out_size, scope))
    with b.if_else(b.and_(leaves_alone, few, name="sparse")) as (sparse, dense):
        with sparse:
            function = shared.function(kernel, emit_sparse_update)
            _emit_calls(caller, [(function, Work(ir.Constant(I64, 1), 0))], split, done)
        with dense:
            calls = [
                call
                for part in (kernel.scatter, kernel.update)
                for call in _kernel_functions(ctx, caller, part, shared)
            ]
            _emit_calls(caller, calls, split, done)


def _steps_function(ctx: KernelContext, program: KernelProgram, main: ir.Function) -> ir.Function:
    """Emit graph_steps: call main once per step, recording the step's index in the error
    record before it (so a failure names it) and stopping at the first failure."""
    emitter = FunctionEmitter(ctx, "graph_steps", STEPS_TYPE, STEPS_ARGS)
    emitter.function.linkage = "internal"
    b = emitter.builder
    table, sizes, error, threads, steps = emitter.function.args
    scope = Scope()
    strides = [
        (ctx.slots[name], _byte_size(emitter, spec, scope))
        for name, spec in program.buffers.items()
        if spec.role in ("input", "output")
    ]
    failed = emitter.function.append_basic_block("failed")
    step_field = b.gep(error, [ir.Constant(I64, STEP_FIELD)])

    def step(index: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        b.store(index, step_field)
        b.call(main, [table, sizes, error, threads])
        go_on = emitter.function.append_basic_block("advance")
        b.cbranch(b.icmp_signed("!=", b.load(error), ir.Constant(I64, 0)), failed, go_on)
        b.position_at_end(go_on)
        for slot, nbytes in strides:
            pointer = b.gep(table, [ir.Constant(I64, slot)])
            b.store(b.gep(b.load(pointer), [nbytes]), pointer)
        return []

    emitter.counted(ir.Constant(I64, 0), steps, [], step, "step")
    b.ret_void()
    b.position_at_end(failed)
    b.ret_void()
    return emitter.function


def _byte_size(emitter: FunctionEmitter, spec, scope: Scope) -> ir.Value:
    """Return the bytes of a buffer for the call's symbol sizes."""
    b = emitter.builder
    count = ir.Constant(I64, 1)
    for d in spec.shape:
        count = b.mul(count, emitter.expr.index(dim_expr(d), scope))
    return b.mul(count, ir.Constant(I64, max(1, spec.dtype.itemsize)))


# A kernel's function and its work.
KernelCall = tuple[ir.Function, Work]


def _kernel_functions(
    ctx, entry: FunctionEmitter, kernel, shared: SharedBodies
) -> list[KernelCall]:
    scope = Scope()
    if isinstance(kernel, k.LoopKernel):
        return [_loop_call(entry, kernel, shared.function(kernel, emit_loop_kernel))]
    if isinstance(kernel, k.MatmulKernel):
        if ctx.gemm is None:
            raise NotImplementedError("matmul needs the GEMM micro-kernel")
        functions: list[KernelCall] = [
            (
                shared.function(kernel, emit_matmul_kernel),
                Work(*matmul_work(entry, kernel, scope), True),
            )
        ]
        if kernel.epilogue is not None:
            epilogue = kernel.epilogue
            functions.append(
                _loop_call(entry, epilogue, shared.function(epilogue, emit_loop_kernel))
            )
        return functions
    function = shared.function(kernel, emit_scatter_kernel)
    return [(function, Work(ir.Constant(I64, 1), 0))]


def _loop_call(entry: FunctionEmitter, kernel: k.LoopKernel, function: ir.Function) -> KernelCall:
    """Return a loop kernel's call: its work range, its cost per element (reductions at their
    length) and the grain of its chunks (see loop_split: 16 channels' sums over a batch of
    images split over threads, rather than as one chunk of 64)."""
    scope = Scope()
    cost, grain = loop_split(entry, kernel, scope)
    total = loop_work(entry, kernel, scope)
    return function, Work(total, cost, grain=CHUNK_GRAIN if grain is None else grain)


def _commit(entry: FunctionEmitter, program: KernelProgram) -> None:
    """Copy each update value into its variable, after every kernel has succeeded."""
    b = entry.builder
    memcpy = entry.ctx.module.declare_intrinsic(
        "llvm.memcpy", [I8.as_pointer(), I8.as_pointer(), I64]
    )
    scope = Scope()
    for target, source in program.updates:
        size = _byte_size(entry, program.buffers[source], scope)
        dst = b.bitcast(entry.pointer(target), I8.as_pointer())
        src = b.bitcast(entry.pointer(source), I8.as_pointer())
        b.call(memcpy, [dst, src, size, ir.Constant(ir.IntType(1), 0)])
