"""Build the LLVM module of a kernel program: one function per kernel and one entry point,
`void graph_main(i8** table, i64* sizes, i64* error, i64 threads)`, that runs every kernel in
order (splitting large ones over graphc's thread pool), stops at the first run-time error,
and only then copies update values into the variables and source outputs into place.

Python calls `i64 graph_run(i64* frame, i64 arrays)`, which reads table, sizes, error,
threads and a number of steps from the frame (a call with few arguments crosses ctypes
fastest), writes the addresses of the call's arrays into the table (read from the array
objects `arrays` points at: cheaper here than in Python) and runs `graph_steps`:
graph_main once per step, over inputs and outputs stacked along a leading steps dim. After
each step it moves every input and output pointer in the table on by one step's bytes, so
step i+1 reads its own inputs and sees the Variables as step i left them; a plain call is
one step. It returns whether a kernel failed (the error record says how)."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index import dim_expr
from graphc.backends.llvm.expressions import I8, I64, Scope
from graphc.backends.llvm.kernels import (
    FunctionEmitter,
    KernelContext,
    emit_loop_kernel,
    emit_matmul_kernel,
    emit_scatter_kernel,
    loop_work,
    matmul_work,
)
from graphc.backends.llvm.parallel import emit_run
from graphc.dtypes import float32

ENTRY_NAME = "graph_main"
ENTRY_TYPE = ir.FunctionType(
    ir.VoidType(), [I8.as_pointer().as_pointer(), I64.as_pointer(), I64.as_pointer(), I64]
)
STEPS_TYPE = ir.FunctionType(ir.VoidType(), [*ENTRY_TYPE.args, I64])
RUN_NAME = "graph_run"
# graph_run's frame, in order: the addresses of the table, sizes and error record, the
# threads kernels may use, the number of steps, then how to read the call's arrays: the
# address of the table slot of each (-1: none), their number, and where an array object
# keeps the address of its elements.
STEPS_ARGS = ("table", "sizes", "error", "threads", "steps")
FRAME = (*STEPS_ARGS, "array_slots", "array_count", "data_offset")
# The error record: [failed, value, size, axis] written by a failing kernel, then the step.
ERROR_FIELDS = 5
STEP_FIELD = 4


def slot_names(program: KernelProgram) -> list[str]:
    """Return the pointer-table layout: every buffer, then the GEMM workspace."""
    return [*program.buffers, "workspace"]


def build_module(
    program: KernelProgram,
    math: Callable[[ir.Module, str, str], ir.Function],
    gemm: Callable[[ir.Module, str], ir.Function] | None,
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
    ctx = KernelContext(
        module, slots, dtypes, program.symbols, math, gemm, workspace_bytes, dict(aliases or {})
    )
    entry = FunctionEmitter(ctx, ENTRY_NAME, ENTRY_TYPE, ("table", "sizes", "error", "threads"))
    b = entry.builder
    table, sizes, error, threads = entry.function.args
    done = entry.function.append_basic_block("failed")
    for kernel in program.kernels:
        for function, work in _kernel_functions(ctx, entry, kernel):
            emit_run(entry, function, work, threads if parallel else None, table, sizes, error)
            failed = b.icmp_signed("!=", b.load(error), ir.Constant(I64, 0))
            next_block = entry.function.append_basic_block(f"after_{function.name}")
            b.cbranch(failed, done, next_block)
            b.position_at_end(next_block)
    _commit(entry, program)
    b.ret_void()
    b.position_at_end(done)
    b.ret_void()
    _run_function(module, _steps_function(ctx, program, entry.function))
    return module


def _run_function(module: ir.Module, steps: ir.Function) -> None:
    """Emit `i64 graph_run(i64* frame, i64 arrays)`: clear the error record, write the
    address of each array of the call into its table slot (`arrays` points at the array
    objects, 0 when Python wrote the table), call steps with the arguments the frame holds
    and return whether a kernel failed."""
    run_type = ir.FunctionType(I64, [I64.as_pointer(), I64])
    run = ir.Function(module, run_type, RUN_NAME)
    frame, arrays = run.args
    b = ir.IRBuilder(run.append_basic_block("entry"))
    field = {
        name: b.load(b.gep(frame, [ir.Constant(I64, i)]), name=name) for i, name in enumerate(FRAME)
    }
    table, sizes, error = (
        b.inttoptr(field[name], kind)
        for name, kind in zip(FRAME[:3], STEPS_TYPE.args[:3], strict=True)
    )
    b.store(ir.Constant(I64, 0), error)
    count = b.select(
        b.icmp_unsigned("==", arrays, ir.Constant(I64, 0)),
        ir.Constant(I64, 0),
        field["array_count"],
    )
    _write_array_addresses(b, table, arrays, count, field["array_slots"], field["data_offset"])
    b.call(steps, [table, sizes, error, field["threads"], field["steps"]])
    b.ret(b.load(error, name="failed"))


def _write_array_addresses(
    b: ir.IRBuilder,
    table: ir.Value,
    arrays: ir.Value,
    count: ir.Value,
    slots_address: ir.Value,
    data_offset: ir.Value,
) -> None:
    """Emit: for each of the `count` array objects at `arrays`, store the address of its
    elements (read at data_offset in the object) into its slot of table, if it has one."""
    objects = b.inttoptr(arrays, I64.as_pointer(), name="array_objects")
    slots = b.inttoptr(slots_address, I64.as_pointer(), name="array_slots")
    zero = ir.Constant(I64, 0)
    before = b.block
    header = b.append_basic_block("array")
    body = b.append_basic_block("array_address")
    store = b.append_basic_block("array_store")
    advance = b.append_basic_block("array_next")
    done = b.append_basic_block("arrays_done")
    b.branch(header)
    b.position_at_end(header)
    index = b.phi(I64, name="array_index")
    index.add_incoming(zero, before)
    b.cbranch(b.icmp_signed("<", index, count), body, done)
    b.position_at_end(body)
    slot = b.load(b.gep(slots, [index]), name="slot")
    b.cbranch(b.icmp_signed(">=", slot, zero), store, advance)
    b.position_at_end(store)
    address = b.add(b.load(b.gep(objects, [index]), name="array_object"), data_offset)
    data = b.load(b.inttoptr(address, I8.as_pointer().as_pointer()), name="array_data")
    b.store(data, b.gep(table, [slot]))
    b.branch(advance)
    b.position_at_end(advance)
    index.add_incoming(b.add(index, ir.Constant(I64, 1)), advance)
    b.branch(header)
    b.position_at_end(done)


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


# A kernel's function and its work: (the size of its work range, a per-element cost).
KernelCall = tuple[ir.Function, tuple[ir.Value, ir.Value | int]]


def _kernel_functions(ctx, entry: FunctionEmitter, kernel) -> list[KernelCall]:
    scope = Scope()
    if isinstance(kernel, k.LoopKernel):
        return [(emit_loop_kernel(ctx, kernel), (loop_work(entry, kernel, scope), _cost(kernel)))]
    if isinstance(kernel, k.MatmulKernel):
        if ctx.gemm is None:
            raise NotImplementedError("matmul needs the GEMM micro-kernel")
        functions: list[KernelCall] = [
            (emit_matmul_kernel(ctx, kernel), matmul_work(entry, kernel, scope))
        ]
        if kernel.epilogue is not None:
            epilogue = kernel.epilogue
            functions.append(
                (
                    emit_loop_kernel(ctx, epilogue),
                    (loop_work(entry, epilogue, scope), _cost(epilogue)),
                )
            )
        return functions
    return [(emit_scatter_kernel(ctx, kernel), (ir.Constant(I64, 1), 0))]


def _cost(kernel: k.LoopKernel) -> int:
    """Return a rough per-element cost: IR nodes, with each reduction counted 16 times."""

    def size(expr) -> int:
        own = 16 if isinstance(expr, k.Reduce) else 1
        return own + sum(size(child) for child in k.children(expr))

    return max(1, sum(size(store.value) for store in kernel.stores))


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
