"""Elementwise functions of the Tensor API, with PyTorch's type promotion.

Python scalars are weakly typed (f32 tensor * 2 stays f32); numpy arrays and tensors are
strongly typed. Primitives receive operands of one dtype: casts are inserted here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc import dtypes
from graphc.dtypes import DType, as_dtype, bool_
from graphc.errors import DTypeError, located, user_location, user_op
from graphc.ops.registry import OPS, OpDef, get_op, make_node
from graphc.tensor import Tensor


def is_scalar(value: Any) -> bool:
    """Return True for Python and numpy scalars (weakly typed operands)."""
    return isinstance(value, (numbers.Number, np.bool_)) and not isinstance(value, Tensor)


def constant(value: Any, dtype: DType | None = None) -> Tensor:
    """Return a constant tensor holding value (an array-like), in dtype if given."""
    array = np.asarray(value)
    if dtype is None:
        dtype = dtypes.from_numpy(array.dtype) if array.dtype.kind != "O" else None
        if dtype is None:
            raise DTypeError(f"cannot make a tensor from {type(value).__name__} values")
        if array.dtype.kind == "f" and not isinstance(value, (np.ndarray, np.generic)):
            dtype = dtypes.DEFAULT_FLOAT  # Python floats become float32, as in PyTorch.
    array = np.array(array, dtype=dtype.numpy, order="C")
    array.setflags(write=False)
    return Tensor(make_node("constant", [], {"value": array}))


def as_tensor(value: Any, dtype: DType | None = None) -> Tensor:
    """Return value as a Tensor: tensors pass through, arrays and scalars become constants."""
    if isinstance(value, Tensor):
        return value if dtype is None else cast(value, dtype)
    if isinstance(value, (np.ndarray, np.generic)) and dtype is None:
        return constant(value, dtypes.from_numpy(value.dtype))
    return constant(value, dtype)


@user_op
def cast(x: Tensor | Any, dtype: Any) -> Tensor:
    """Return x converted to dtype (float to int truncates toward zero)."""
    dtype = as_dtype(dtype)
    x = as_tensor(x)
    if x.dtype == dtype:
        return x
    return Tensor(make_node("cast", [x.node], {"dtype": dtype}))


def result_dtype(*operands: Any) -> DType:
    """Return the dtype the operands are promoted to, by PyTorch's rule: tensors with dims
    first, then 0-d tensors (a reduction's result), then weakly typed Python scalars."""
    if not any(isinstance(operand, Tensor) for operand in operands):
        raise DTypeError("at least one operand must be a Tensor")
    dimensioned: list[DType] = []
    zero_dim: list[DType] = []
    scalars: list[Any] = []
    for operand in operands:
        if is_scalar(operand):
            scalars.append(operand)
            continue
        if isinstance(operand, np.ndarray):
            dtype, ndim = dtypes.from_numpy(operand.dtype), operand.ndim
        else:
            tensor = as_tensor(operand)
            dtype, ndim = tensor.dtype, tensor.ndim
        (dimensioned if ndim else zero_dim).append(dtype)
    return dtypes.result_type(dimensioned, zero_dim, scalars)


def elementwise(op: str, *operands: Any) -> Tensor:
    """Return the elementwise op applied to operands (Tensors, arrays or scalars, broadcast),
    with the operand types its promotion policy gives (`OpDef.promotion`)."""
    promotion = get_op(op).promotion
    dtype = result_dtype(*operands)
    if promotion == "integral" and not dtype.is_float:
        return as_tensor(operands[0])  # integral already, as in PyTorch
    if promotion == "float":
        dtype = dtypes.float_result(dtype)
    elif promotion == "logical":
        dtype = bool_
    elif promotion in ("arithmetic", "power") and dtype.is_bool:
        if len(operands) == 1:
            x = as_tensor(operands[0])
            raise DTypeError(
                located(
                    f"{op}: not defined for bool tensors ({x!r}); use ~x or .long()",
                    user_location(),
                )
            )
        dtype = dtypes.int64  # arithmetic on bool tensors counts in int64
    if promotion == "power" and not dtype.is_float:
        _check_integer_power(operands[1])
    tensors = [as_tensor(operand, dtype) for operand in operands]
    return Tensor(make_node(op, [t.node for t in tensors]))


def binary(op: str, a: Any, b: Any) -> Tensor:
    """Return op(a, b) elementwise with broadcasting and PyTorch's type promotion."""
    return elementwise(op, a, b)


def unary(op: str, x: Any) -> Tensor:
    """Return op(x) elementwise (float functions of integer tensors give float32)."""
    return elementwise(op, x)


def _check_integer_power(exponent: Any) -> None:
    # PyTorch rejects an integer tensor to a negative Python int; a negative exponent tensor
    # gives 1, -1 or 0 per element instead (see the pow op).
    if is_scalar(exponent) and not isinstance(exponent, (bool, np.bool_)) and exponent < 0:
        raise DTypeError(
            located(
                f"pow: integers to negative integer powers are not allowed (exponent "
                f"{exponent}); use a float base, such as x.float() ** {exponent}",
                user_location(),
            )
        )


def _api_function(op: OpDef) -> Callable[..., Tensor]:
    """Return gc.<op.api>: the op applied to its operands, with the op's doc."""
    if op.arity == 1:

        def function(input: Any) -> Tensor:  # noqa: A002 - PyTorch's name
            return elementwise(op.name, input)

    else:

        def function(input: Any, other: Any) -> Tensor:  # noqa: A002 - PyTorch's name
            return elementwise(op.name, input, other)

    function.__name__ = function.__qualname__ = op.api
    function.__doc__ = op.doc
    return function


def _api_method(op: OpDef) -> Callable[..., Tensor]:
    """Return Tensor.<op.api>: the op applied to the tensor (and the other operand)."""
    if op.arity == 1:

        def method(self: Tensor) -> Tensor:
            return elementwise(op.name, self)

    else:

        def method(self: Tensor, other: Any) -> Tensor:
            return elementwise(op.name, self, other)

    method.__name__ = op.api
    method.__qualname__ = f"Tensor.{op.api}"
    method.__doc__ = op.doc
    return method


# The elementwise ops with a public name, as gc.* functions and as Tensor methods (tensor.py
# attaches them): derived from the op definitions, so a new op needs no code here.
_PUBLIC = [op for op in OPS.values() if op.api and op.promotion and op.arity]
FUNCTIONS: dict[str, Callable[..., Tensor]] = {op.api: _api_function(op) for op in _PUBLIC}
METHODS: dict[str, Callable[..., Tensor]] = {op.api: _api_method(op) for op in _PUBLIC}


def require_bool(*operands: Any, op: str) -> None:
    """Raise DTypeError unless every tensor operand is bool: graphc's &, |, ~ are logical."""
    for operand in operands:
        if isinstance(operand, Tensor) and not operand.dtype.is_bool:
            raise DTypeError(
                located(
                    f"{op}: only defined for bool tensors here, got {operand!r}; compare first "
                    "(x > 0) or use gc.where",
                    user_location(),
                )
            )


@user_op
def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Return a where condition holds, else b, broadcasting all three."""
    condition = cast(condition, bool_)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = as_tensor(a)
    dtype = result_dtype(a, b)
    a, b = as_tensor(a, dtype), as_tensor(b, dtype)
    return Tensor(make_node("where", [condition.node, a.node, b.node]))


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
