"""Helpers shared by gradient rules.

Rules receive and return operands (`operand.Value` when the autodiff pass calls them) and
build nodes with their operators and methods, so a rule reads like the math it implements.
The helpers here wrap each result like the operand they are given, so this module needs
neither the Tensor API nor `operand` (which binds its methods from the ops defined beside
these rules).
"""

from __future__ import annotations

from typing import Any

from graphc.dims import dims_equal
from graphc.ops import promotion
from graphc.ops.registry import make_node


def sum_to(g: Any, shape: tuple) -> Any:
    """Return g summed over the dims that broadcasting added to reach g's shape from shape."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(dim=tuple(range(extra)))
    ones = tuple(
        i
        for i, (d, gd) in enumerate(zip(shape, g.shape, strict=True))
        if isinstance(d, int) and d == 1 and not (isinstance(gd, int) and gd == 1)
    )
    if ones:
        g = g.sum(dim=ones, keepdim=True)
    assert all(map(dims_equal, g.shape, shape)), (g.shape, shape)
    return g


def zeros_like(x: Any) -> Any:
    """Return zeros of x's shape and dtype (the gradient of a piecewise-constant function)."""
    zero = promotion.constant(0, x.dtype)
    if not x.shape:
        return x._wrap(zero)
    return x._wrap(make_node("broadcast_to", [zero], {"shape": x.shape}))


def where(condition: Any, a: Any, b: Any) -> Any:
    """Return a where condition holds, else b: broadcast, and promoted together."""
    return condition._wrap(promotion.where(condition.node, _node_of(a), _node_of(b)))


def apply_op(op: str, inputs: list, attrs: dict) -> Any:
    """Return a primitive applied to operands, wrapped like the first (for ops without a
    method of their own: convolutions, pooling, pad, gather)."""
    return inputs[0]._wrap(make_node(op, [x.node for x in inputs], attrs))


def _node_of(value: Any) -> Any:
    return getattr(value, "node", value)
