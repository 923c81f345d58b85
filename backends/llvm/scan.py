"""Emit a loop (`ScanKernel`): a native loop that calls the body's kernels once per step.

The body's kernels are emitted like the entry point's, into a function of their own,
`<loop>.body(table, sizes, error, threads)`; the loop function `<loop>(table, sizes, error,
threads)` copies the initial carries into the body's carry buffers, then per step points the
body's step buffers in the pointer table at step t of each sequence and each stacked result,
calls the body, stops if it failed, and swaps the addresses of the carry it read and the one
it wrote. Every kernel loads its buffers' addresses from the table when it starts, so moving
an address in the table is all a step costs; no value is copied but the carries at the start
and at the end. Before the first step the loop packs the B of each body matmul that reads one
packed (`packed_b`: the same B at every step), so the steps do not.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I8, I64, Scope
from graphc.backends.llvm.kernels import FunctionEmitter, KernelContext, emit_packing

# emit_body(emitter, failed): emit the body's kernels into emitter's function, branching to
# the block `failed` after one that fails.
BodyEmitter = Callable[[FunctionEmitter, ir.Block], None]
_ARGS = ("table", "sizes", "error", "threads")


def _unoptimised(function: ir.Function) -> None:
    """Leave a function of the loop's bookkeeping to LLVM's quick code generator: per step it
    moves a few table entries and calls the body's kernels, whose code is what takes the
    time, and optimising it took about 7% of a 2-layer bidirectional LSTM's compile."""
    function.attributes.add("noinline")
    function.attributes.add("optnone")


def emit_scan_kernel(
    ctx: KernelContext, caller: FunctionEmitter, kernel: k.ScanKernel, emit_body: BodyEmitter
) -> ir.Function:
    """Return the function running the loop, of the type of the caller (the entry point or an
    outer loop's body), which calls it with its own table, sizes, error and threads."""
    function_type = caller.function.function_type
    body = FunctionEmitter(ctx, f"{kernel.name}.body", function_type, _ARGS)
    body.function.linkage = "internal"
    _unoptimised(body.function)
    body_failed = body.function.append_basic_block("failed")
    emit_body(body, body_failed)
    body.builder.ret_void()
    body.builder.position_at_end(body_failed)
    body.builder.ret_void()

    fe = FunctionEmitter(ctx, kernel.name, function_type, _ARGS)
    _unoptimised(fe.function)
    b = fe.builder
    table, sizes, error, threads = fe.function.args
    scope = Scope()
    memcpy = ctx.module.declare_intrinsic("llvm.memcpy", [I8.as_pointer(), I8.as_pointer(), I64])

    def entry(name: str) -> ir.Value:
        """Return the table entry holding a buffer's address."""
        return b.gep(table, [ir.Constant(I64, ctx.slots[ctx.canonical(name)])])

    def copy(target: ir.Value, source: ir.Value, nbytes: k.IntExpr) -> None:
        size = fe.expr.index(nbytes, scope)
        b.call(memcpy, [target, source, size, ir.Constant(ir.IntType(1), 0)])

    for source, carry, nbytes in zip(kernel.init, kernel.carry_in, kernel.carry_bytes, strict=True):
        copy(b.load(entry(carry)), b.load(entry(source)), nbytes)
    for inner in kernel.body:
        if isinstance(inner, k.MatmulKernel) and inner.packed_b is not None:
            emit_packing(ctx, fe, inner)
    length = fe.expr.index(kernel.length, scope)
    moved = [
        (entry(slot), b.load(entry(stacked)), fe.expr.index(nbytes, scope))
        for stacked, slot, nbytes in (
            *zip(kernel.xs, kernel.x_slots, kernel.x_bytes, strict=True),
            *zip(kernel.ys, kernel.y_slots, kernel.y_bytes, strict=True),
        )
        if stacked is not None
    ]

    before = b.block
    head = fe.function.append_basic_block("step.head")
    step_block = fe.function.append_basic_block("step.body")
    advance = fe.function.append_basic_block("step.advance")
    done = fe.function.append_basic_block("step.done")
    stop = fe.function.append_basic_block("failed")
    b.branch(head)
    b.position_at_end(head)
    t = b.phi(I64, name="t")
    t.add_incoming(ir.Constant(I64, 0), before)
    b.cbranch(b.icmp_signed("<", t, length), step_block, done)

    b.position_at_end(step_block)
    last = b.sub(length, ir.Constant(I64, 1))
    index = b.sub(last, t, name="step") if kernel.reverse else t
    for slot, base, nbytes in moved:
        b.store(b.gep(base, [b.mul(index, nbytes)]), slot)
    b.call(body.function, [table, sizes, error, threads])
    b.cbranch(b.icmp_signed("!=", b.load(error), ir.Constant(I64, 0)), stop, advance)

    b.position_at_end(advance)
    for carry_in, carry_out in zip(kernel.carry_in, kernel.carry_out, strict=True):
        read, written = entry(carry_in), entry(carry_out)
        old = b.load(read)
        b.store(b.load(written), read)
        b.store(old, written)
    t.add_incoming(b.add(t, ir.Constant(I64, 1)), advance)
    b.branch(head)

    b.position_at_end(done)
    for carry, final, nbytes in zip(kernel.carry_in, kernel.final, kernel.carry_bytes, strict=True):
        if final is not None:
            copy(b.load(entry(final)), b.load(entry(carry)), nbytes)
    b.ret_void()
    b.position_at_end(stop)
    b.ret_void()
    return fe.function
