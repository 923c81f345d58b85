"""Wide reductions in two passes. The CUDA backend gives each output element of a reduction
one block of threads: the sum of a 4096 x 4096 matrix has one output element, so one block
(of an H200's 132 multiprocessors) would read all 64 MB.

A kernel whose few output elements each reduce many elements becomes two: the first splits
the reduced elements into equal chunks, each chunk's reduction one element of a partials
buffer (enough blocks to fill the device); the second is the kernel as it was, its reduction
now over the partials. Only reductions whose partial results combine with the same op qualify
(sum, max, min, prod: not argmax or argmin, whose partials would need their indices), over
constant extents (the chunks divide the leading reduced dims exactly, so no chunk reads past
the end) that read memory contiguously (so each chunk gets a block too), in kernels outside
loops. A sum's rounding then differs from one pass's in the last bits, as it does between
any two summation orders.
"""

from __future__ import annotations

import math
from dataclasses import replace

from graphc.backends.cuda.reduction import block_reductions
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import BufferSpec, KernelProgram
from graphc.backends.kernel.index import row_major_offset

COMBINING_OPS = frozenset({"sum", "max", "min", "prod"})
MIN_ELEMENTS = 1 << 16  # fewer, and one block per output element reads them about as fast
MAX_OUTPUTS = 64  # more output elements, and their blocks keep the device busy already
TARGET_BLOCKS = 1024  # partials in all: several blocks per multiprocessor on current GPUs
MIN_CHUNK = 2048  # elements per partial at least, so a block's threads each fold several


def split_wide_reductions(program: KernelProgram) -> KernelProgram:
    """Return program with each qualifying kernel as a partials kernel and the kernel over
    the partials, and the partials buffers among its temporaries."""
    buffers = dict(program.buffers)
    kernels: list[k.Kernel] = []
    for kernel in program.kernels:
        split = _split(kernel, buffers) if isinstance(kernel, k.LoopKernel) else None
        kernels.extend(split or [kernel])
    return replace(program, kernels=kernels, buffers=buffers)


def _split(kernel: k.LoopKernel, buffers: dict[str, BufferSpec]) -> list[k.Kernel] | None:
    """Return a partials kernel per qualifying reduction of kernel, then kernel reducing
    their partials instead (adding the partials buffers to buffers); None where no reduction
    qualifies."""
    outputs = _constant_product(kernel.domain)
    if outputs is None or outputs > MAX_OUTPUTS:
        return None
    kernels: list[k.Kernel] = []
    replacements: list[tuple[k.Reduce, k.Reduce]] = []
    for reduction in _reductions(kernel):
        name = f"{kernel.name}_partials" + (f"_{len(kernels)}" if kernels else "")
        split = _partials(kernel, reduction, outputs, name)
        if split is None:
            continue
        partials, over_partials = split
        kernels.append(partials)
        replacements.append((reduction, over_partials))
        node = buffers[kernel.stores[0].buffer].node
        shape = tuple(e.value for e in partials.domain if isinstance(e, k.IConst))
        buffers[name] = BufferSpec(name, node, shape, reduction.dtype, "temp")
    if not kernels:
        return None

    def replaced(e: object) -> object:
        if isinstance(e, k.Reduce):
            return next((new for old, new in replacements if old == e), e)
        return e

    stores = tuple(k.Store(s.buffer, k.transformed(s.value, replaced)) for s in kernel.stores)
    return [*kernels, replace(kernel, stores=stores)]


def _partials(
    kernel: k.LoopKernel, reduction: k.Reduce, outputs: int, name: str
) -> tuple[k.LoopKernel, k.Reduce] | None:
    """Return the kernel storing the chunks' partial results of reduction into buffer
    `name`, and the reduction over them that replaces it; None where it does not qualify."""
    extents = [e.value for e in reduction.extents if isinstance(e, k.IConst)]
    nested = any(isinstance(e, k.Reduce) for e in k.subexpressions(reduction.body))
    if (
        nested
        or reduction.op not in COMBINING_OPS
        or reduction.dtype != reduction.body.dtype
        or len(extents) != len(reduction.extents)
        or math.prod(extents) < MIN_ELEMENTS
    ):
        return None
    wanted = max(1, min(TARGET_BLOCKS // outputs, math.prod(extents) // MIN_CHUNK))
    leading, chunks = _chunking(extents, wanted)
    if chunks < 8:
        return None
    chunk, in_chunk, partial = (k.Var(f"{name}_{role}") for role in ("chunk", "at", "each"))
    per_chunk = k.IConst(math.prod(extents[:leading]) // chunks)
    flat = k.iadd(k.imul(chunk, per_chunk), in_chunk)
    indices = _unflatten(flat, extents[:leading])
    position = dict(zip(reduction.vars[:leading], indices, strict=True))
    body = k.transformed(
        reduction.body, lambda e: position.get(e, e) if isinstance(e, k.Var) else e
    )
    first = k.Reduce(
        reduction.op,
        (in_chunk, *reduction.vars[leading:]),
        (per_chunk, *reduction.extents[leading:]),
        body,
        reduction.dtype,
    )
    domain = (*kernel.domain, k.IConst(chunks))
    partials = k.LoopKernel(
        name, domain, (*kernel.vars, chunk), (k.Store(name, first),), kernel.covers
    )
    if not block_reductions(partials)[1]:
        return None  # the chunks' reductions would not each get a block
    offset = row_major_offset((*kernel.vars, partial), domain)
    load = k.Load(name, offset, reduction.dtype)
    return partials, k.Reduce(reduction.op, (partial,), (k.IConst(chunks),), load, reduction.dtype)


def _constant_product(extents: tuple[k.IntExpr, ...]) -> int | None:
    """Return the product of extents, or None if one is not a constant."""
    values = [e.value for e in extents if isinstance(e, k.IConst)]
    return math.prod(values) if len(values) == len(extents) else None


def _reductions(kernel: k.LoopKernel) -> list[k.Reduce]:
    """Return the kernel's distinct reductions, in the order they first appear."""
    found: list[k.Reduce] = []
    for store in kernel.stores:
        for e in k.subexpressions(store.value):
            if isinstance(e, k.Reduce) and e not in found:
                found.append(e)
    return found


def _chunking(extents: list[int], wanted: int) -> tuple[int, int]:
    """Return how many leading reduced dims to split and into how many equal chunks: the
    fewest leading dims whose product has a divisor near `wanted`, the largest divisor up to
    it (a chunk then never crosses the end)."""
    best = (1, 1)
    for leading in range(1, len(extents) + 1):
        size = math.prod(extents[:leading])
        chunks = max(c for c in range(1, min(wanted, size) + 1) if size % c == 0)
        if chunks > best[1]:
            best = (leading, chunks)
        if 2 * chunks >= wanted:
            break
    return best


def _unflatten(flat: k.IntExpr, extents: list[int]) -> list[k.IntExpr]:
    """Return the row-major indices over extents of a flat position below their product."""
    indices = []
    stride = math.prod(extents)
    for position, extent in enumerate(extents):
        stride //= extent
        index = k.ibin("div", flat, k.IConst(stride))
        indices.append(index if position == 0 else k.ibin("mod", index, k.IConst(extent)))
    return indices
