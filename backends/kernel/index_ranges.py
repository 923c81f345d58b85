"""Simplify a loop kernel's integer divisions and remainders with the ranges of its loop
variables.

A reshape reads its source by splitting a flat offset again: the word-window model's
embedding lookup, viewed as (N, 5 * 25), reads row (i1 * 25 + i2) // 25 and column
(i1 * 25 + i2) % 25 of its (N * 5, 25) gather for every element, two divisions that also keep
the vectoriser out. Where the dividend is c * H + L with H any integer expression and L
known to lie in [0, c) (loop variables have the ranges of their extents), the quotient is H
and the remainder L: here i1 and i2.

Divisors and coefficients may be symbolic sizes (a Transformer's heads split and merged over
a sequence of T positions divides by 128 * T): they are polynomials over the symbols
(`graphc.dims`), and a bound holds when the difference it needs is a polynomial whose terms
are all non-negative (sizes are never negative).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from graphc.backends.kernel.index import dim_expr
from graphc.backends.kernel.ir import (
    IBin,
    IConst,
    IntExpr,
    LoopKernel,
    Reduce,
    SymSize,
    Var,
    iadd,
    imul,
    subexpressions,
    transformed,
)
from graphc.dims import Dim, Sym, dim_add, dim_div, dim_mul
from graphc.errors import ShapeError

# A linear form: coefficient per term (a Var or an opaque expression); the constant under None.
Terms = dict[Any, Dim]


def simplify_indices(kernel: LoopKernel) -> LoopKernel:
    """Return the kernel with the divisions and remainders its ranges decide removed."""
    ranges = _ranges(kernel.vars, kernel.domain)
    for store in kernel.stores:
        for e in subexpressions(store.value):  # reductions' vars are named apart
            if isinstance(e, Reduce):
                ranges.update(_ranges(e.vars, e.extents))

    def change(node: Any) -> Any:
        if isinstance(node, IBin) and node.op in ("div", "mod"):
            return _divided(node, ranges)
        return node

    stores = tuple(replace(s, value=transformed(s.value, change)) for s in kernel.stores)
    return replace(kernel, stores=stores)


def _ranges(variables, extents) -> dict[Var, Dim]:
    """Return {var: extent} for the vars whose extent is a size (constant or symbolic)."""
    ranges: dict[Var, Dim] = {}
    for var, extent in zip(variables, extents, strict=True):
        size = constant(extent)
        if size is not None and (not isinstance(size, int) or size > 0):
            ranges[var] = size
    return ranges


def constant(expr: IntExpr) -> Dim | None:
    """Return an index expression of constants and symbolic sizes as a Dim, else None."""
    if isinstance(expr, IConst):
        return expr.value
    if isinstance(expr, SymSize):
        return Sym.named(expr.symbol)
    if isinstance(expr, IBin) and expr.op in ("add", "sub", "mul"):
        a, b = constant(expr.a), constant(expr.b)
        if a is None or b is None:
            return None
        if expr.op == "mul":
            return dim_mul(a, b)
        return dim_add(a, b if expr.op == "add" else dim_mul(b, -1))
    return None


def _nonnegative(d: Dim) -> bool:
    """Return True when d is at least 0 for every size of its symbols."""
    if isinstance(d, int):
        return d >= 0
    return all(coefficient >= 0 for _, coefficient in d.terms)


def _divided(expr: IBin, ranges: dict[Var, Dim]) -> IntExpr:
    """Return a div or mod by a positive size without the division where the dividend's
    part not divisible by the divisor stays in [0, divisor)."""
    divisor = constant(expr.b)
    # A symbolic divisor is a product of sizes: were one of them 0, the tensor it splits would
    # be empty and the kernel would run no element.
    if divisor is None or divisor == 0 or not _nonnegative(divisor):
        return expr
    terms = linear_terms(expr.a)
    high: Terms = {}
    low: Terms = {}
    for term, coefficient in terms.items():
        quotient = _exact(coefficient, divisor) if term is not None else None
        if quotient is not None:
            high[term] = quotient
        else:
            low[term] = coefficient
    constant_part = low.pop(None, 0)
    carried = 0
    if isinstance(divisor, int) and isinstance(constant_part, int):
        carried, constant_part = divmod(constant_part, divisor)
    least, most = constant_part, constant_part
    for term, coefficient in low.items():
        bounds = _term_bounds(term, coefficient, ranges)
        if bounds is None:
            return expr
        least, most = dim_add(least, bounds[0]), dim_add(most, bounds[1])
    if not (_nonnegative(least) and _nonnegative(dim_add(dim_add(divisor, -1), dim_mul(most, -1)))):
        return expr
    if expr.op == "mod":
        return _expression({**low, None: constant_part})
    return _expression({**high, None: carried})


def _exact(coefficient: Dim, divisor: Dim) -> Dim | None:
    try:
        return dim_div(coefficient, divisor)
    except ShapeError:
        return None


def _term_bounds(term: Any, coefficient: Dim, ranges: dict[Var, Dim]) -> tuple[Dim, Dim] | None:
    """Return (least, most) of coefficient * term, or None when not known."""
    if isinstance(term, Var) and term in ranges and _nonnegative(coefficient):
        return 0, dim_mul(coefficient, dim_add(ranges[term], -1))
    interval = _interval(term, ranges)
    if interval is None or not isinstance(coefficient, int):
        return None
    low, high = (coefficient * bound for bound in interval)
    return min(low, high), max(low, high)


def _interval(expr: IntExpr, ranges: dict[Var, Dim]) -> tuple[int, int] | None:
    """Return the constant bounds of an index expression over the loop ranges, or None."""
    if isinstance(expr, IConst):
        return expr.value, expr.value
    if isinstance(expr, Var):
        extent = ranges.get(expr)
        return (0, extent - 1) if isinstance(extent, int) else None
    if not isinstance(expr, IBin):
        return None
    a, b = _interval(expr.a, ranges), _interval(expr.b, ranges)
    if a is None or b is None:
        return None
    if expr.op == "add":
        return a[0] + b[0], a[1] + b[1]
    if expr.op == "sub":
        return a[0] - b[1], a[1] - b[0]
    if expr.op in ("max", "min"):
        pick = max if expr.op == "max" else min
        return pick(a[0], b[0]), pick(a[1], b[1])
    if expr.op == "mul":
        products = [x * y for x in a for y in b]
        return min(products), max(products)
    return None


def linear_terms(expr: IntExpr) -> Terms:
    """Return expr as a linear form over vars and opaque sub-expressions, with coefficients
    that are constants or symbolic sizes."""
    value = constant(expr)
    if value is not None:
        return {None: value}
    if isinstance(expr, IBin) and expr.op in ("add", "sub"):
        terms = dict(linear_terms(expr.a))
        for term, coefficient in linear_terms(expr.b).items():
            signed = coefficient if expr.op == "add" else dim_mul(coefficient, -1)
            terms[term] = dim_add(terms.get(term, 0), signed)
        return {t: c for t, c in terms.items() if c != 0}
    if isinstance(expr, IBin) and expr.op == "mul":
        for factor, other in ((expr.a, expr.b), (expr.b, expr.a)):
            scale = constant(factor)
            if scale is not None:
                scaled = {t: dim_mul(c, scale) for t, c in linear_terms(other).items()}
                return {t: c for t, c in scaled.items() if c != 0}
    return {expr: 1}


def _expression(terms: Terms) -> IntExpr:
    """Return the integer expression of a linear form."""
    result: IntExpr = dim_expr(terms.get(None, 0))
    for term, coefficient in terms.items():
        if term is not None:
            result = iadd(result, imul(dim_expr(coefficient), term))
    return result
