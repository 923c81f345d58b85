"""Elementwise primitives: unary math, binary arithmetic and comparisons, where, cast.

Binary ops take inputs of one dtype: the Tensor API inserts casts by PyTorch's promotion
rules first, so backends never promote.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphc.dtypes import DType, as_dtype, bool_
from graphc.errors import DTypeError
from graphc.ops.registry import define_op
from graphc.ops.shape_rules import broadcast_shapes, require_dtype, same_dtype
from graphc.types import TensorType

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) stays finite for large |x| in either direction.
    return np.exp(-np.logaddexp(0, -x))


# name -> (numpy function, accepted categories, result: "same" | "float" | "bool")
UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, str]] = {
    "neg": (np.negative, "float,int", "same"),
    "abs": (np.abs, "float,int", "same"),
    "sign": (np.sign, "float,int", "same"),
    "exp": (np.exp, "float", "float"),
    "log": (np.log, "float", "float"),
    "sqrt": (np.sqrt, "float", "float"),
    "rsqrt": (lambda x: 1 / np.sqrt(x), "float", "float"),
    "sin": (np.sin, "float", "float"),
    "cos": (np.cos, "float", "float"),
    "tanh": (np.tanh, "float", "float"),
    "sigmoid": (_sigmoid, "float", "float"),
    "erf": (_erf, "float", "float"),
    "floor": (np.floor, "float", "same"),
    "ceil": (np.ceil, "float", "same"),
    "round": (np.round, "float", "same"),
    "logical_not": (np.logical_not, "bool", "bool"),
}

# name -> (numpy function, accepted categories, result: "same" | "bool")
BINARY: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str, str]] = {
    "add": (np.add, "float,int", "same"),
    "sub": (np.subtract, "float,int", "same"),
    "mul": (np.multiply, "float,int", "same"),
    "div": (np.true_divide, "float", "same"),
    "floordiv": (np.floor_divide, "float,int", "same"),
    "mod": (np.mod, "float,int", "same"),
    "pow": (np.power, "float,int", "same"),
    "maximum": (np.maximum, "float,int", "same"),
    "minimum": (np.minimum, "float,int", "same"),
    "eq": (np.equal, "float,int,bool", "bool"),
    "ne": (np.not_equal, "float,int,bool", "bool"),
    "lt": (np.less, "float,int", "bool"),
    "le": (np.less_equal, "float,int", "bool"),
    "gt": (np.greater, "float,int", "bool"),
    "ge": (np.greater_equal, "float,int", "bool"),
    "logical_and": (np.logical_and, "bool", "bool"),
    "logical_or": (np.logical_or, "bool", "bool"),
}

# Ops whose value is piecewise constant: their gradient is zero everywhere it exists.
PIECEWISE_CONSTANT = frozenset({"sign", "floor", "ceil", "round"})


def _unary_infer(allowed: str, result: str):
    def infer(types, attrs):
        (x,) = types
        require_dtype(x, allowed, "the input")
        return TensorType(x.shape, bool_ if result == "bool" else x.dtype)

    return infer


def _binary_infer(allowed: str, result: str):
    def infer(types, attrs):
        a, b = types
        dtype = same_dtype(types, "both operands")
        require_dtype(a, allowed, "the operands")
        shape = broadcast_shapes(a.shape, b.shape)
        return TensorType(shape, bool_ if result == "bool" else dtype)

    return infer


def _unary_reference(fn):
    return lambda args, attrs, env: fn(args[0])


def _binary_reference(fn):
    def reference(args, attrs, env):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(args[0], args[1])

    return reference


for _name, (_fn, _allowed, _result) in UNARY.items():
    define_op(
        _name,
        "elementwise",
        _unary_infer(_allowed, _result),
        _unary_reference(_fn),
        differentiable=_result != "bool",
    )

for _name, (_fn, _allowed, _result) in BINARY.items():
    define_op(
        _name,
        "elementwise",
        _binary_infer(_allowed, _result),
        _binary_reference(_fn),
        differentiable=_result != "bool",
    )


def _where_infer(types, attrs):
    cond, a, b = types
    if not cond.dtype.is_bool:
        raise DTypeError(f"the condition must be bool, got {cond}")
    dtype = same_dtype([a, b], "both branches")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dtype)


define_op("where", "elementwise", _where_infer, lambda args, attrs, env: np.where(*args))


def _cast_infer(types, attrs):
    dtype: DType = as_dtype(attrs["dtype"])
    return TensorType(types[0].shape, dtype)


def _cast_reference(args, attrs, env):
    (x,) = args
    dtype = as_dtype(attrs["dtype"])
    if dtype.is_int and x.dtype.kind == "f":
        # Float to int truncates toward zero, as in PyTorch; NaN/inf give an unspecified value.
        with np.errstate(invalid="ignore"):
            return np.trunc(x).astype(dtype.numpy)
    return x.astype(dtype.numpy)


define_op("cast", "elementwise", _cast_infer, _cast_reference)
