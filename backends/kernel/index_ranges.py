"""Simplify a loop kernel's integer divisions and remainders with the ranges of its loop
variables.

A reshape reads its source by splitting a flat offset again: the word-window model's
embedding lookup, viewed as (N, 5 * 25), reads row (i1 * 25 + i2) // 25 and column
(i1 * 25 + i2) % 25 of its (N * 5, 25) gather for every element, two divisions that also keep
the vectoriser out. Where the dividend is c * H + L with H any integer expression and L
known to lie in [0, c) (loop variables have the ranges of their extents), the quotient is H
and the remainder L: here i1 and i2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from graphc.backends.kernel.ir import (
    IBin,
    IConst,
    IntExpr,
    LoopKernel,
    Reduce,
    Var,
    children,
    iadd,
    imul,
    transformed,
)

# A linear form: coefficient per term (a Var or an opaque expression); the constant under None.
Terms = dict[Any, int]


def simplify_indices(kernel: LoopKernel) -> LoopKernel:
    """Return the kernel with the divisions and remainders its ranges decide removed."""
    ranges = _ranges(kernel.vars, kernel.domain)
    for store in kernel.stores:
        for reduction in _reductions(store.value):  # their vars are named apart
            ranges.update(_ranges(reduction.vars, reduction.extents))

    def change(node: Any) -> Any:
        if isinstance(node, IBin) and node.op in ("div", "mod"):
            return _divided(node, ranges)
        return node

    stores = tuple(replace(s, value=transformed(s.value, change)) for s in kernel.stores)
    return replace(kernel, stores=stores)


def _ranges(variables, extents) -> dict[Var, int]:
    """Return {var: extent} for the vars whose extent is a positive constant."""
    return {
        var: extent.value
        for var, extent in zip(variables, extents, strict=True)
        if isinstance(extent, IConst) and extent.value > 0
    }


def _reductions(expr: Any) -> Iterator[Reduce]:
    if isinstance(expr, Reduce):
        yield expr
    for child in children(expr):
        yield from _reductions(child)


def _divided(expr: IBin, ranges: dict[Var, int]) -> IntExpr:
    """Return a div or mod by a positive constant without the division where the dividend's
    part below the divisor stays in [0, divisor)."""
    if not isinstance(expr.b, IConst) or expr.b.value <= 0:
        return expr
    divisor = expr.b.value
    terms = linear_terms(expr.a)
    high = {t: c for t, c in terms.items() if t is not None and c % divisor == 0}
    low = {t: c for t, c in terms.items() if t not in high}
    constant = low.pop(None, 0)
    high_constant, constant = divmod(constant, divisor)
    least, most = constant, constant
    for term, coefficient in low.items():
        if term not in ranges:
            return expr
        span = coefficient * (ranges[term] - 1)
        least, most = least + min(0, span), most + max(0, span)
    if least < 0 or most >= divisor:
        return expr
    if expr.op == "mod":
        return _expression({**low, None: constant})
    quotient = {t: c // divisor for t, c in high.items()}
    return _expression({**quotient, None: high_constant})


def linear_terms(expr: IntExpr) -> Terms:
    """Return expr as a linear form over vars and opaque sub-expressions."""
    if isinstance(expr, IConst):
        return {None: expr.value}
    if isinstance(expr, IBin) and expr.op in ("add", "sub"):
        sign = 1 if expr.op == "add" else -1
        terms = dict(linear_terms(expr.a))
        for term, coefficient in linear_terms(expr.b).items():
            terms[term] = terms.get(term, 0) + sign * coefficient
        return {t: c for t, c in terms.items() if c != 0}
    if isinstance(expr, IBin) and expr.op == "mul":
        for factor, other in ((expr.a, expr.b), (expr.b, expr.a)):
            if isinstance(factor, IConst):
                return {
                    t: c * factor.value for t, c in linear_terms(other).items() if c * factor.value
                }
    return {expr: 1}


def _expression(terms: Terms) -> IntExpr:
    """Return the integer expression of a linear form."""
    result: IntExpr = IConst(terms.get(None, 0))
    for term, coefficient in terms.items():
        if term is not None:
            result = iadd(result, imul(IConst(coefficient), term))
    return result
