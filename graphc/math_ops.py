"""Elementwise functions of the Tensor API, with PyTorch's type promotion.

Python scalars are weakly typed (f32 tensor * 2 stays f32); numpy arrays and tensors are
strongly typed. The promotion itself is `graphc.ops.promotion`, shared with the gradient
rules; this module applies it to Tensors and defines the composites (where, relu, clamp).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphc.dtypes import DType
from graphc.errors import DTypeError, user_op
from graphc.ops import promotion
from graphc.ops.operand import node_of, public_op
from graphc.ops.registry import make_node
from graphc.tensor import Tensor


def constant(value: Any, dtype: DType | None = None) -> Tensor:
    """Return a constant tensor holding value (an array-like), in dtype if given."""
    return Tensor(promotion.constant(value, dtype))


def as_tensor(value: Any, dtype: DType | None = None) -> Tensor:
    """Return value as a Tensor: tensors pass through, arrays and scalars become constants."""
    if isinstance(value, Tensor) and (dtype is None or value.dtype == dtype):
        return value
    return Tensor(promotion.as_node(node_of(value), dtype))


@user_op
def cast(x: Tensor | Any, dtype: Any) -> Tensor:
    """Return x converted to dtype (float to int truncates toward zero)."""
    x = as_tensor(x)
    node = promotion.cast(x.node, dtype)
    return x if node is x.node else Tensor(node)


def result_dtype(*operands: Any) -> DType:
    """Return the dtype the operands are promoted to, by PyTorch's rule: tensors with dims
    first, then 0-d tensors (a reduction's result), then weakly typed Python scalars."""
    return promotion.result_dtype(*map(node_of, operands))


def elementwise(op: str, *operands: Any) -> Tensor:
    """Return the elementwise op applied to operands (Tensors, arrays or scalars, broadcast),
    with the operand types its promotion policy gives (`OpDef.promotion`)."""
    node = promotion.elementwise(op, *map(node_of, operands))
    first = operands[0]
    # An integral op of an integer tensor returns it unchanged, as in PyTorch.
    return first if isinstance(first, Tensor) and node is first.node else Tensor(node)


def binary(op: str, a: Any, b: Any) -> Tensor:
    """Return op(a, b) elementwise with broadcasting and PyTorch's type promotion."""
    return elementwise(op, a, b)


def unary(op: str, x: Any) -> Tensor:
    """Return op(x) elementwise (float functions of integer tensors give float32)."""
    return elementwise(op, x)


def unary_function(api: str) -> Callable[[Any], Tensor]:
    """Return gc.<api>(input) of a one-operand elementwise op, with the op's doc."""
    op = public_op(api)
    assert op.arity == 1, api

    def function(input: Any) -> Tensor:  # noqa: A002 - PyTorch's name
        return elementwise(op.name, input)

    function.__name__ = function.__qualname__ = api
    function.__doc__ = op.doc
    return function


def binary_function(api: str) -> Callable[[Any, Any], Tensor]:
    """Return gc.<api>(input, other) of a two-operand elementwise op, with the op's doc."""
    op = public_op(api)
    assert op.arity == 2, api

    def function(input: Any, other: Any) -> Tensor:  # noqa: A002 - PyTorch's name
        return elementwise(op.name, input, other)

    function.__name__ = function.__qualname__ = api
    function.__doc__ = op.doc
    return function


@user_op
def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Return a where condition holds, else b, broadcasting all three."""
    return Tensor(promotion.where(node_of(condition), node_of(a), node_of(b)))


def relu(x: Tensor) -> Tensor:
    """Return max(x, 0); NaN stays NaN and the gradient at 0 is 0, as in PyTorch."""
    return where(x <= 0, 0, x)


@user_op
def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """Return x limited to [min, max] (either bound may be None) as torch.clamp does: NaN stays
    NaN, max wins where min > max, and the gradient goes to x where min <= x <= max (bounds
    included), else to the bound taken (none at NaN)."""
    if min is None and max is None:
        raise DTypeError("clamp needs at least one of min and max")
    x = as_tensor(x)
    limited = Tensor(make_node("stop_gradient", [x.node]))
    inside = None
    for bound, outside, keep in ((min, "lt", "ge"), (max, "gt", "le")):
        if bound is None:
            continue
        limited = where(binary(outside, limited, bound), bound, limited)
        within = binary(keep, x, bound)
        inside = within if inside is None else binary("logical_and", inside, within)
    return where(inside, x, limited)
