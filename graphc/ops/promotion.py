"""How elementwise ops type their operands: PyTorch's promotion, applied to Nodes.

Tensors, Python scalars and numpy arrays meet here as Nodes and values: `elementwise(op,
*operands)` promotes them by the op's `OpDef.promotion`, inserts the casts and constants, and
builds the node with `make_node`. Python scalars are weakly typed (f32 tensor * 2 stays f32);
numpy arrays and nodes are strongly typed. Primitives receive operands of one dtype, so no
backend ever promotes. The Tensor API and the gradient rules both build through these
functions.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from graphc import dtypes
from graphc.dtypes import DType, as_dtype, bool_
from graphc.errors import DTypeError, located, user_location
from graphc.graph import Node
from graphc.ops.registry import get_op, make_node


def is_scalar(value: Any) -> bool:
    """Return True for Python and numpy scalars (weakly typed operands)."""
    return isinstance(value, (numbers.Number, np.bool_))


def constant(value: Any, dtype: DType | None = None) -> Node:
    """Return a constant node holding value (an array-like), in dtype if given."""
    array = np.asarray(value)
    if dtype is None:
        if array.dtype.kind == "O":
            raise DTypeError(f"cannot make a tensor from {type(value).__name__} values")
        dtype = dtypes.from_numpy(array.dtype)
        if array.dtype.kind == "f" and not isinstance(value, (np.ndarray, np.generic)):
            dtype = dtypes.DEFAULT_FLOAT  # Python floats become float32, as in PyTorch.
    array = np.array(array, dtype=dtype.numpy, order="C")
    array.setflags(write=False)
    return make_node("constant", [], {"value": array})


def cast(node: Node, dtype: Any) -> Node:
    """Return node converted to dtype (node itself when it has that dtype already)."""
    dtype = as_dtype(dtype)
    if node.type.dtype == dtype:
        return node
    return make_node("cast", [node], {"dtype": dtype})


def as_node(value: Any, dtype: DType | None = None) -> Node:
    """Return value as a node of dtype (if given): nodes pass through or are cast, arrays and
    scalars become constants."""
    if isinstance(value, Node):
        return value if dtype is None else cast(value, dtype)
    if isinstance(value, (np.ndarray, np.generic)) and dtype is None:
        return constant(value, dtypes.from_numpy(value.dtype))
    return constant(value, dtype)


def result_dtype(*operands: Any) -> DType:
    """Return the dtype the operands (nodes, arrays, scalars) are promoted to, by PyTorch's
    rule: nodes with dims first, then 0-d nodes (a reduction's result), then weakly typed
    Python scalars."""
    if not any(isinstance(operand, Node) for operand in operands):
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
            node = as_node(operand)
            dtype, ndim = node.type.dtype, node.type.ndim
        (dimensioned if ndim else zero_dim).append(dtype)
    return dtypes.result_type(dimensioned, zero_dim, scalars)


def elementwise(op: str, *operands: Any) -> Node:
    """Return the node of an elementwise op applied to operands (nodes, arrays or scalars,
    broadcast), with the operand types its promotion policy gives (`OpDef.promotion`)."""
    promotion = get_op(op).promotion
    dtype = result_dtype(*operands)
    if promotion == "integral" and not dtype.is_float:
        return as_node(operands[0])  # integral already, as in PyTorch
    if promotion == "float":
        dtype = dtypes.float_result(dtype)
    elif promotion == "logical":
        dtype = bool_
    elif promotion in ("arithmetic", "power") and dtype.is_bool:
        if len(operands) == 1:
            x = as_node(operands[0])
            raise DTypeError(
                located(
                    f"{op}: not defined for bool tensors (Tensor({x.type}, {x.op})); "
                    "use ~x or .long()",
                    user_location(),
                )
            )
        dtype = dtypes.int64  # arithmetic on bool tensors counts in int64
    if promotion == "power" and not dtype.is_float:
        _check_integer_power(operands[1])
    return make_node(op, [as_node(operand, dtype) for operand in operands])


def where(condition: Any, a: Any, b: Any) -> Node:
    """Return the node of `a where condition holds, else b`, broadcasting all three; a and b
    are promoted together, the condition becomes bool."""
    condition = cast(as_node(condition), bool_)
    if not isinstance(a, Node) and not isinstance(b, Node):
        a = as_node(a)
    dtype = result_dtype(a, b)
    return make_node("where", [condition, as_node(a, dtype), as_node(b, dtype)])


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
