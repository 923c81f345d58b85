"""How a backend can compute a kernel's reductions in fewer passes over memory.

- Reductions with equal extents that do not use each other share one loop nest, with one
  accumulator each (`reduction_groups`): BatchNorm's and LayerNorm's backward sums read their
  input once.
- A float argmax or argmin is a max (min) and then a min over the indices that hold it
  (`first_extremum`): two loops that vectorise instead of one that carries a pair.
- A row reduction whose body also appears, at the row's element, in a value the kernel stores
  can keep that body in the stored buffer while it reduces (`row_cache`): softmax stores
  exp(x - max) during the sum and then scales it, evaluating exp once per element.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from graphc.backends.kernel.index import row_major_offset
from graphc.backends.kernel.index_ranges import linear_terms
from graphc.backends.kernel.ir import (
    Binary,
    Cast,
    Const,
    Expr,
    IConst,
    IndexValue,
    IntExpr,
    Load,
    LoopKernel,
    Reduce,
    Select,
    Var,
    children,
    free_vars,
    imul,
    loads,
    subexpressions,
    transformed,
)
from graphc.dtypes import DType, bool_, int32, int64


def outermost_reductions(exprs: Iterable[Any]) -> list[Reduce]:
    """Return the Reduce nodes of expressions that are not inside another Reduce, in order of
    first appearance, each once."""
    found: list[Reduce] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, Reduce):
            if expr not in found:
                found.append(expr)
            return
        for child in children(expr):
            visit(child)

    for expr in exprs:
        visit(expr)
    return found


def used_reductions(reduction: Reduce) -> list[Reduce]:
    """Return the reductions a reduction's loop needs computed before it: the outermost ones in
    its body and extents that do not read its own vars."""
    own = set(reduction.vars)
    inner = outermost_reductions([reduction.body, *reduction.extents])
    return [r for r in inner if not free_vars(r) & own]


def reduction_groups(reductions: Sequence[Reduce], done: Container[Any] = ()) -> list[list[Reduce]]:
    """Return the given reductions and those they use, except those `done` holds, grouped
    into loop nests: each group's members have equal extents, and every group comes after
    the groups of the reductions its members use (softmax's sum after its max; LayerNorm's
    variance after its mean)."""
    ordered: list[Reduce] = []

    def add(reduction: Reduce) -> None:
        if reduction in ordered or reduction in done:
            return
        for used in used_reductions(reduction):
            add(used)
        ordered.append(reduction)

    for reduction in reductions:
        add(reduction)
    groups: list[list[Reduce]] = []
    group_of: dict[Reduce, int] = {}
    for reduction in ordered:
        after = max((group_of.get(used, -1) for used in used_reductions(reduction)), default=-1)
        position = next(
            (
                p
                for p in range(after + 1, len(groups))
                if groups[p][0].extents == reduction.extents
                and len(groups[p][0].vars) == len(reduction.vars)
            ),
            None,
        )
        if position is None:
            groups.append([reduction])
            position = len(groups) - 1
        else:
            groups[position].append(reduction)
        group_of[reduction] = position
    return groups


def substitute(expr: Any, mapping: dict[Var, Any]) -> Any:
    """Return an IR expression with the loop variables in mapping replaced."""
    return transformed(expr, lambda e: mapping.get(e, e) if isinstance(e, Var) else e)


def first_extremum(reduction: Reduce) -> Expr:
    """Return a float argmax or argmin as two reductions a vectoriser can run, where the
    one-pass form carries a (value, index) pair it cannot: the extremum (NaN if the range
    holds one), then the least flat index that holds it (or a NaN, when it is NaN). Both give
    the first extremum or the first NaN, and 0 over an empty range."""
    body, flat = reduction.body, row_major_offset(reduction.vars, reduction.extents)
    extreme = Reduce(reduction.op[3:], reduction.vars, reduction.extents, body, body.dtype)
    total = _count(reduction)
    # 32-bit indices where they fit: twice the lanes of 64-bit ones in the second loop.
    narrow = isinstance(total, IConst) and total.value < 2**31
    index_dtype = int32 if narrow else int64
    count = IndexValue(total, index_dtype)
    is_nan = Binary("ne", extreme, extreme, bool_)
    match = Binary(
        "logical_or",
        Binary("eq", body, extreme, bool_),
        Binary("logical_and", is_nan, Binary("ne", body, body, bool_), bool_),
        bool_,
    )
    index = Select(match, IndexValue(flat, index_dtype), count, index_dtype)
    first = Reduce("min", reduction.vars, reduction.extents, index, index_dtype)
    found = Select(Binary("lt", first, count, bool_), first, Const(0, index_dtype), index_dtype)
    return found if reduction.dtype == index_dtype else Cast(found, reduction.dtype)


def _count(reduction: Reduce) -> IntExpr:
    total: IntExpr = IConst(1)
    for extent in reduction.extents:
        total = imul(total, extent)
    return total


@dataclass(frozen=True)
class RowCache:
    """A row reduction's body kept in a stored buffer: while reducing over the row, element r
    of `buffer` gets `body` at r; afterwards `element` (the body at the element being computed)
    is read back from there instead of being evaluated again."""

    buffer: str
    element: Expr


def row_cache(
    kernel: LoopKernel,
    reduction: Reduce,
    dtypes: dict[str, DType],
    canonical: Callable[[str], str],
) -> RowCache | None:
    """Return how a row reduction of kernel (one that reads no innermost domain variable) can
    keep its body in a stored buffer, or None. It can when it is a sum, product, max or min
    (an argmax may run as two loops) over the innermost dim, its body (at the row's element)
    is more than a load and appears in a store's value outside any reduction, and that
    store's buffer has the body's dtype and is no buffer the kernel reads (an update computed
    in its variable's memory would overwrite what is still to be read)."""
    if (
        reduction.op not in ("sum", "prod", "max", "min")
        or len(reduction.vars) != 1
        or reduction.extents[0] != kernel.domain[-1]
    ):
        return None
    element = substitute(reduction.body, {reduction.vars[0]: kernel.vars[-1]})
    if isinstance(element, (Load, Const)):
        return None
    read = {canonical(load.buffer) for store in kernel.stores for load in loads(store.value)}
    for store in kernel.stores:
        if (
            dtypes[store.buffer] == element.dtype
            and canonical(store.buffer) not in read
            and _appears(element, store.value)
        ):
            return RowCache(store.buffer, element)
    return None


def _appears(part: Expr, expr: Any) -> bool:
    """Return whether part is a subexpression of expr outside every Reduce."""
    if expr == part:
        return True
    if isinstance(expr, Reduce):
        return False
    return any(_appears(part, child) for child in children(expr))


def column_reductions(kernel: LoopKernel) -> list[Reduce]:
    """Return the outermost reductions of a kernel that are better run with the loops swapped:
    each reads the innermost domain variable only at unit stride (a bias gradient summing a
    (rows, columns) matrix over its rows, for every column), so for a block of columns the
    rows can be added up as vectors, where the reduction's own loop would read down a column.
    Sums, products, maxima and minima whose bodies hold no other reduction qualify."""
    inner = kernel.vars[-1]
    found = outermost_reductions(store.value for store in kernel.stores)
    return [r for r in found if _walks_columns(r, inner)]


def _walks_columns(reduction: Reduce, inner: Var) -> bool:
    if reduction.op not in ("sum", "prod", "max", "min") or used_reductions(reduction):
        return False
    if any(isinstance(e, Reduce) for e in subexpressions(reduction.body)):
        return False
    reading = [load for load in loads(reduction.body) if inner in free_vars(load.offset)]
    if not reading:
        return False
    for load in reading:
        terms = linear_terms(load.offset)
        if terms.get(inner) != 1:
            return False
        if any(t != inner and t is not None and inner in free_vars(t) for t in terms):
            return False
    return True
