"""Which updates can be computed directly into their variable's memory.

An update `variable <- value` is written in place (saving the copy at the end of a call) when
nothing can observe the difference: no kernel from the one computing the value onward can
fail (no run-time index check), no later kernel reads the variable, and the computing kernel
reads the variable only at the element it is writing, before it writes it.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import KernelProgram
from graphc.backends.kernel.index import row_major_offset


def _expressions(kernel) -> Iterator[tuple[str | None, object]]:
    """Yield (buffer stored, expression) for each store of a kernel, in order."""
    if isinstance(kernel, k.LoopKernel):
        for store in kernel.stores:
            yield store.buffer, store.value
    elif isinstance(kernel, k.MatmulKernel):
        yield kernel.out, None
        if kernel.epilogue is not None:
            yield from _expressions(kernel.epilogue)
    elif isinstance(kernel, k.ScanKernel):
        for inner in kernel.body:
            yield from _expressions(inner)
        for name in kernel.final + kernel.ys:
            yield name, None
    elif isinstance(kernel, k.CollectiveKernel):
        yield kernel.out, None
    else:
        yield kernel.out, kernel.value
        yield None, kernel.target


def _checks(expr) -> bool:
    return isinstance(expr, k.IndexCheck) or any(_checks(c) for c in k.children(expr))


def _reads(kernel) -> set[str]:
    """Return the buffers a kernel reads (a loop's and a collective's: every one it uses)."""
    if isinstance(kernel, k.ScanKernel | k.CollectiveKernel):
        return k.buffers_used(kernel)
    names = {load.buffer for _, expr in _expressions(kernel) for load in k.loads(expr)}
    if isinstance(kernel, k.MatmulKernel):
        names |= {kernel.a.buffer, kernel.b.buffer}
    return names


def can_fail(kernel: k.Kernel) -> bool:
    """Return whether a kernel can stop a call (it checks an index at run time)."""
    return any(_checks(expr) for _, expr in _expressions(kernel) if expr is not None)


def _safe_in_kernel(kernel, value: str, variable: str) -> bool:
    """Return True if the kernel reads `variable` only elementwise, before storing `value`."""
    loop = kernel.epilogue if isinstance(kernel, k.MatmulKernel) else kernel
    if (
        not isinstance(loop, k.LoopKernel)
        or isinstance(kernel, k.MatmulKernel)
        and (variable in (kernel.a.buffer, kernel.b.buffer))
    ):
        return False
    # The element being computed, as the kernel's loads write it (a root of another shape with
    # the same elements, a reduction's sibling, reads through a reshape of it).
    identity = row_major_offset(loop.vars, loop.domain)
    stored = False
    for store in loop.stores:
        for load in k.loads(store.value):
            if load.buffer == variable and (stored or load.offset != identity):
                return False
        stored = stored or store.buffer == value
    return stored


def in_place_updates(program: KernelProgram) -> dict[str, str]:
    """Return {value buffer: variable buffer} for the updates that can be computed in place."""
    producer: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for position, kernel in enumerate(program.kernels):
        for name, _ in _expressions(kernel):
            if name is not None:
                producer.setdefault(name, position)
        for name in _reads(kernel):
            last_read[name] = position
    # The first kernel from which on none can fail: each kernel is looked at once, not once
    # per update (a training step has an update per parameter and state).
    safe_from = len(program.kernels)
    while safe_from > 0 and not can_fail(program.kernels[safe_from - 1]):
        safe_from -= 1
    chosen = {}
    for variable, value in program.updates:
        spec = program.buffers[value]
        produced_at = producer.get(value)
        if spec.role != "temp" or produced_at is None or produced_at < safe_from:
            continue
        if last_read.get(variable, -1) > produced_at:
            continue
        if _safe_in_kernel(program.kernels[produced_at], value, variable):
            chosen[value] = variable
    return chosen
