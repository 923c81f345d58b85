"""Helpers shared by gradient rules. Rules receive and return Tensors and build nodes with the
public Tensor API, so a rule reads like the math it implements."""

from __future__ import annotations

from typing import Any

from graphc.dims import dims_equal


def frontend() -> Any:
    """Return the graphc package (imported when a rule runs, after everything is loaded)."""
    import graphc

    return graphc


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
    return frontend().zeros_like(x)


def apply_op(op: str, inputs: list, attrs: dict) -> Any:
    """Return the Tensor of a primitive applied to Tensors (for ops the Tensor API hides)."""
    from graphc.ops.registry import make_node

    return frontend().Tensor(make_node(op, [t.node for t in inputs], attrs))
