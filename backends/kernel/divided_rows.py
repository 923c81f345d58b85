"""Rows whose reads divide the position along the row by a small constant k: a 2x2 max pool's
gradient reads its window's gradient and argmax at column i // 2 and compares i % 2, a row
repeated k times (a reshape of a broadcast) reads column i // k. A vectoriser gathers such
reads, or leaves the loop scalar, where x86 without AVX-512 turns each select into a branch
that mispredicts on data (the MNIST CNN's training step at batch 128 spent a third of its
time in two such kernels). Taken k elements at a time, element k * j + r for r = 0 .. k - 1
in one trip, the divisions vanish (`index_ranges.simplify_indices`): the reads at i // k step
with j and the others are interleaved by k, which vectorises as wide loads and shuffles."""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphc.backends.kernel.index import row_major_offset
from graphc.backends.kernel.index_ranges import simplify_indices
from graphc.backends.kernel.ir import (
    IBin,
    IConst,
    IntExpr,
    LoopKernel,
    Reduce,
    Store,
    Var,
    free_vars,
    subexpressions,
    transformed,
)

# The most elements a trip takes: each is a copy of the kernel's body.
MOST_ELEMENTS = 4


@dataclass(frozen=True)
class DividedRow:
    """A kernel's row taken `size` elements at a time in `trips` trips: trip `var` computes
    element size * var + r with `stores[r]`, whose row-major index is `elements[r]`."""

    size: int
    trips: int
    var: Var
    stores: tuple[tuple[Store, ...], ...]
    elements: tuple[IntExpr, ...]


def divided_row(kernel: LoopKernel) -> DividedRow | None:
    """Return the kernel's rows taken k elements at a time, where every division or remainder
    of an index by a constant that reads the row's variable is by the same k (2 to
    MOST_ELEMENTS), k divides the row's constant length, and with the row's variable written
    k * j + r every such division goes away; None otherwise (and for kernels that reduce)."""
    if not kernel.vars or not isinstance(kernel.domain[-1], IConst):
        return None
    inner, length = kernel.vars[-1], kernel.domain[-1].value
    divisors = set()
    for store in kernel.stores:
        for e in subexpressions(store.value):
            if isinstance(e, Reduce):
                return None
            if isinstance(e, IBin) and e.op in ("div", "mod") and inner in free_vars(e.a):
                divisors.add(e.b.value if isinstance(e.b, IConst) else None)
    if len(divisors) != 1:
        return None
    (size,) = divisors
    if size is None or not 2 <= size <= MOST_ELEMENTS or length % size:
        return None
    group = Var(f"{inner.name}_group")
    domain = (*kernel.domain[:-1], IConst(length // size))
    element = row_major_offset(kernel.vars, kernel.domain)
    stores, elements = [], []
    for r in range(size):
        position = IBin("add", IBin("mul", group, IConst(size)), IConst(r))

        def at_position(e: object, position: IBin = position) -> object:
            return position if e == inner else e

        split = LoopKernel(
            kernel.name,
            domain,
            (*kernel.vars[:-1], group),
            tuple(replace(s, value=transformed(s.value, at_position)) for s in kernel.stores),
        )
        simplified = simplify_indices(split)
        for s in simplified.stores:
            for e in subexpressions(s.value):
                if isinstance(e, IBin) and e.op in ("div", "mod") and group in free_vars(e):
                    return None
        stores.append(simplified.stores)
        elements.append(transformed(element, at_position))
    return DividedRow(size, length // size, group, tuple(stores), tuple(elements))


def merged_short_rows(kernel: LoopKernel) -> LoopKernel | None:
    """Return the kernel with its innermost dim, of 2 to MOST_ELEMENTS, merged into the dim
    above it (the two read back as v // k and v % k), where divided_row then takes the
    merged rows k elements a trip; None otherwise. A short row is an iteration of loop
    bookkeeping per k elements: an RGB image's NCHW -> NHWC copy, rows of 3 channels."""
    if len(kernel.vars) < 2:
        return None
    (outer, inner), (above, last) = kernel.vars[-2:], kernel.domain[-2:]
    if not isinstance(above, IConst) or not isinstance(last, IConst):
        return None
    rows, size = above.value, last.value
    if not 2 <= size <= MOST_ELEMENTS:
        return None
    flat = Var(f"{outer.name}_{inner.name}")
    parts = {outer: IBin("div", flat, IConst(size)), inner: IBin("mod", flat, IConst(size))}

    def split(e: object) -> object:
        return parts.get(e, e) if isinstance(e, Var) else e

    merged = LoopKernel(
        kernel.name,
        (*kernel.domain[:-2], IConst(rows * size)),
        (*kernel.vars[:-2], flat),
        tuple(replace(s, value=transformed(s.value, split)) for s in kernel.stores),
        kernel.covers,
    )
    return merged if divided_row(merged) is not None else None
