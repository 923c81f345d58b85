"""Coalesce a loop kernel's adjacent domain dims that every access walks contiguously, so the
innermost loop is as long as it can be.

A kernel over (165, 25), such as an SGD update of an embedding table, runs 165 inner loops of
25 elements: too short for the vectoriser's main loop (64 floats at 16 lanes, unrolled 4x), so
every element runs in the scalar remainder. When every index the kernel computes reads dims d
and d + 1 together as `c * (E * i_d + i_{d+1})` (E the extent of dim d + 1), the two dims are
one dim of their extents' product: i_{d+1} stands for the merged index and i_d becomes 0.
Stores always walk the domain row-major, so they agree with any merge. A dim read any other
way (a broadcast operand that ignores one of the two, a comparison of a loop index, a row
reduction's body) keeps the nest as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from graphc.backends.kernel.index_ranges import linear_terms, simplify_indices
from graphc.backends.kernel.ir import (
    IBin,
    IConst,
    IndexCheck,
    IndexValue,
    IntExpr,
    Load,
    LoopKernel,
    MatmulKernel,
    Philox,
    Reduce,
    ValueIndex,
    Var,
    children,
    ibin,
    imul,
    transformed,
)
from graphc.dims import dim_mul, dims_equal

# Index expressions are integer trees; these fields of value expressions hold one.
_INDEX_FIELDS = {Load: "offset", IndexValue: "index", IndexCheck: "size", Philox: "counter"}


def coalesce_kernels(kernels: list[Any]) -> list[Any]:
    """Return the kernels with every loop kernel's index arithmetic simplified
    (`index_ranges.py`) and its domain coalesced, epilogues included (a loop's body is a
    program of its own, built and coalesced as one)."""
    result = []
    for kernel in kernels:
        if isinstance(kernel, LoopKernel):
            kernel = coalesce(simplify_indices(kernel))
        elif isinstance(kernel, MatmulKernel) and kernel.epilogue is not None:
            kernel = replace(kernel, epilogue=coalesce(simplify_indices(kernel.epilogue)))
        result.append(kernel)
    return result


def coalesce(kernel: LoopKernel) -> LoopKernel:
    """Return the kernel with each mergeable pair of adjacent dims merged, innermost first."""
    roots = list(_index_roots(kernel))
    d = len(kernel.domain) - 2
    while d >= 0:
        inner = kernel.domain[d + 1]
        outer_var, inner_var = kernel.vars[d], kernel.vars[d + 1]
        if isinstance(inner, IConst) and all(
            _walks_together(root, outer_var, inner_var, inner.value) for root in roots
        ):
            kernel = _merged(kernel, d)
            roots = list(_index_roots(kernel))
        d -= 1
    return kernel


def _merged(kernel: LoopKernel, d: int) -> LoopKernel:
    """Return the kernel with dims d and d + 1 as one: i_{d+1} the merged index, i_d 0."""
    zero = {kernel.vars[d]: IConst(0)}
    stores = tuple(replace(store, value=_folded(store.value, zero)) for store in kernel.stores)
    domain = (
        *kernel.domain[:d],
        imul(kernel.domain[d], kernel.domain[d + 1]),
        *kernel.domain[d + 2 :],
    )
    return replace(
        kernel, domain=domain, vars=kernel.vars[:d] + kernel.vars[d + 1 :], stores=stores
    )


def _folded(expr: Any, mapping: Mapping[Var, IntExpr]) -> Any:
    """Return expr with the vars in mapping replaced, integer arithmetic folded again."""

    def change(node: Any) -> Any:
        if isinstance(node, Var):
            return mapping.get(node, node)
        if isinstance(node, IBin):
            return ibin(node.op, node.a, node.b)
        return node

    return transformed(expr, change)


def _index_roots(kernel: LoopKernel) -> Iterator[IntExpr]:
    """Yield every index expression of the kernel's values, and those of the values a
    gather index reads (the gathered value itself counts as a term free of loop vars)."""
    for store in kernel.stores:
        yield from _roots_in(store.value)


def _roots_in(expr: Any) -> Iterator[IntExpr]:
    """Yield the index expressions in a value expression."""
    if isinstance(expr, Reduce):
        yield from expr.extents
        yield from _roots_in(expr.body)
        return
    field = _INDEX_FIELDS.get(type(expr))
    for child in children(expr):
        if field is not None and child is getattr(expr, field):
            yield child
            yield from _gathered(child)
        else:
            yield from _roots_in(child)


def _gathered(index: Any) -> Iterator[IntExpr]:
    """Yield the index expressions of the values an index expression gathers."""
    if isinstance(index, ValueIndex):
        yield from _roots_in(index.value)
        return
    for child in children(index):
        yield from _gathered(child)


def _walks_together(root: IntExpr, outer: Var, inner: Var, extent: int) -> bool:
    """Return True when root reads outer and inner only as c * (extent * outer + inner) (a
    gather index read from data counts as a term free of them: its own index expressions are
    looked at separately)."""
    terms = linear_terms(root)
    if any(not isinstance(t, Var) and t is not None and _reads(t, (outer, inner)) for t in terms):
        return False
    return dims_equal(terms.get(outer, 0), dim_mul(extent, terms.get(inner, 0)))


def _reads(expr: Any, names: tuple[Var, Var]) -> bool:
    """Return True when an index expression reads either var outside a gathered value."""
    if isinstance(expr, Var):
        return expr in names
    if isinstance(expr, ValueIndex):
        return False
    return any(_reads(child, names) for child in children(expr))
