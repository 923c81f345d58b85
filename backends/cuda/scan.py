"""A loop (`ScanKernel`) on the GPU: its body's kernels launched once per step, with the
loop's buffers moved on the device between steps.

Every kernel loads its buffers' addresses from the pointer table in device memory when it
starts, so a step is the body's launches and one single-thread kernel, `<loop>.advance`,
that swaps the table entries of the carry read and the carry written and moves the step
buffers' entries on to the next step of each sequence and each stacked result. Before the
first step, copy kernels put the initial carries into the body's carry buffers and
`<loop>.start` points the step buffers at the first step (the last one when reverse); after
the last, copy kernels put the carries into the final-carry buffers. The host only launches:
no copy of a sequence, no transfer and no wait between steps. A call's frame upload puts the
table back as the host planned it, so every call starts from the same entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from llvmlite import ir

from graphc.backends.cuda.dialect import KernelDialect
from graphc.backends.cuda.kernel_function import KernelFunction
from graphc.backends.cuda.launches import Launch, Launches, LoopLaunches, finish_launch
from graphc.backends.kernel import BufferSpec
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index import Index, dim_expr
from graphc.backends.llvm.expressions import I64, Scope
from graphc.backends.llvm.kernels import KernelContext

# emit(kernels): the launches of kernels, emitted as the program's are.
KernelsEmitter = Callable[[Sequence[k.Kernel]], Launches]


def copy_kernel(name: str, target: str, source: str, spec: BufferSpec) -> k.LoopKernel:
    """Return a kernel copying buffer source into target, both of spec's shape and dtype."""
    domain = tuple(dim_expr(d) for d in spec.shape)
    variables = tuple(k.Var(f"i{position}") for position in range(len(domain)))
    offset = Index(spec.shape, dims=variables).linear()
    store = k.Store(target, k.Load(source, offset, spec.dtype))
    return k.LoopKernel(name, domain, variables, (store,))


def emit_scan(
    ctx: KernelContext,
    kernel: k.ScanKernel,
    dialect: type[KernelDialect],
    buffers: Mapping[str, BufferSpec],
    emit: KernelsEmitter,
) -> LoopLaunches:
    """Return the launches of a loop, its kernels emitted into ctx's module."""
    carries = zip(kernel.init, kernel.carry_in, kernel.final, strict=True)
    init, final = [], []
    for position, (source, carry, result) in enumerate(carries):
        init.append(copy_kernel(f"{kernel.name}.init{position}", carry, source, buffers[carry]))
        if result is not None:
            name = f"{kernel.name}.final{position}"
            final.append(copy_kernel(name, result, carry, buffers[carry]))
    start = _pointer_kernel(ctx, kernel, dialect, first=True)
    advance = _pointer_kernel(ctx, kernel, dialect, first=False)
    return LoopLaunches(
        kernel.name,
        kernel.length,
        (*_plain(emit(init)), start),
        (*emit(kernel.body), advance),
        _plain(emit(final)),
    )


def _plain(items: Launches) -> tuple[Launch, ...]:
    """Return launches that hold no loop (those of copy kernels)."""
    launches = tuple(item for item in items if isinstance(item, Launch))
    assert len(launches) == len(items)
    return launches


def _pointer_kernel(
    ctx: KernelContext, kernel: k.ScanKernel, dialect: type[KernelDialect], first: bool
) -> Launch:
    """Return the launch of one thread moving the loop's table entries: to the first step
    (`<loop>.start`), or on from one step to the next (`<loop>.advance`)."""
    name = f"{kernel.name}.{'start' if first else 'advance'}"
    kf = KernelFunction(ctx, name, [], dialect, 1)
    b, table, scope = kf.builder, kf.emitter.table, Scope()

    def entry(buffer: str) -> ir.Value:
        """Return the table entry holding a buffer's address."""
        return b.gep(table, [ir.Constant(I64, ctx.slots[ctx.canonical(buffer)])])

    def move(target: str, source: str, steps: ir.Value, nbytes: k.IntExpr) -> None:
        """Point target `steps` steps of nbytes past where source points."""
        offset = b.mul(steps, kf.expr.index(nbytes, scope))
        b.store(b.gep(b.load(entry(source)), [offset]), entry(target))

    moved = [
        (slot, stacked, nbytes)
        for stacked, slot, nbytes in (
            *zip(kernel.xs, kernel.x_slots, kernel.x_bytes, strict=True),
            *zip(kernel.ys, kernel.y_slots, kernel.y_bytes, strict=True),
        )
        if stacked is not None
    ]
    if first:
        last = b.sub(kf.expr.index(kernel.length, scope), ir.Constant(I64, 1))
        steps = last if kernel.reverse else ir.Constant(I64, 0)
        for slot, stacked, nbytes in moved:
            move(slot, stacked, steps, nbytes)
    else:
        for carry_in, carry_out in zip(kernel.carry_in, kernel.carry_out, strict=True):
            read, written = entry(carry_in), entry(carry_out)
            old = b.load(read)
            b.store(b.load(written), read)
            b.store(old, written)
        steps = ir.Constant(I64, -1 if kernel.reverse else 1)
        for slot, _, nbytes in moved:
            move(slot, slot, steps, nbytes)
    return finish_launch(kernel.name, kf, k.IConst(1), 1)
