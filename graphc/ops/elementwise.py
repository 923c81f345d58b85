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
from graphc.ops.grad_helpers import frontend, sum_to, zeros_like
from graphc.ops.registry import define_op, grad_rule
from graphc.ops.shape_rules import broadcast_shapes, require_dtype, same_dtype
from graphc.types import TensorType

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))) stays finite for large |x| in either direction.
    return np.exp(-np.logaddexp(0, -x))


def _sign(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "f":
        return np.sign(x)
    # PyTorch: sign(NaN) is 0 (numpy gives NaN).
    return np.where(np.isnan(x), x.dtype.type(0), np.sign(x))


def _power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Return base ** exponent; for integers PyTorch's answer to a negative exponent (numpy
    raises): 1 for base 1, -1 or 1 for base -1 by the exponent's parity, 0 for the rest."""
    if base.dtype.kind == "f":
        return np.power(base, exponent)
    negative = exponent < 0
    power = np.power(base, np.where(negative, 0, exponent).astype(exponent.dtype))
    odd = (exponent % 2) != 0
    reciprocal = np.where(base == 1, 1, np.where(base == -1, np.where(odd, -1, 1), 0))
    return np.where(negative, reciprocal, power).astype(base.dtype)


# name -> (numpy function, accepted categories, result: "same" | "float" | "bool")
UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, str]] = {
    "neg": (np.negative, "float,int", "same"),
    "abs": (np.abs, "float,int", "same"),
    "sign": (_sign, "float,int", "same"),
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
    "pow": (_power, "float,int", "same"),
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
        # Float to int truncates toward zero, as in PyTorch. NaN, infinities and finite values
        # out of range give the type's minimum, as x86's cvttss2si/cvttsd2si (and so PyTorch
        # on x86) do; numpy leaves them to the platform.
        limit = 2.0 ** (dtype.bits - 1)  # a power of two: exact in every float format
        inside = (x >= -limit) & (x < limit)
        truncated = np.trunc(np.where(inside, x, 0)).astype(dtype.numpy)
        return np.where(inside, truncated, np.iinfo(dtype.numpy).min).astype(dtype.numpy)
    return x.astype(dtype.numpy)


define_op("cast", "elementwise", _cast_infer, _cast_reference)

# The identity with a zero gradient: marks a shift that cancels out of the derivative (the
# maximum subtracted in softmax and logsumexp), so the gradient graph does not carry it.
define_op(
    "stop_gradient",
    "elementwise",
    lambda types, attrs: types[0],
    lambda args, attrs, env: args[0],
    differentiable=False,
)


# -- gradients: rule(inputs, output, output gradient, attrs) -> one gradient per input -------
def _rule(name: str, fn) -> None:
    grad_rule(name)(fn)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_rule("neg", lambda xs, out, g, attrs: [-g])
_rule("abs", lambda xs, out, g, attrs: [g * xs[0].sign()])
for _name in PIECEWISE_CONSTANT:
    _rule(_name, lambda xs, out, g, attrs: [zeros_like(xs[0])])
_rule("exp", lambda xs, out, g, attrs: [g * out])
_rule("log", lambda xs, out, g, attrs: [g / xs[0]])
_rule("sqrt", lambda xs, out, g, attrs: [g / (out * 2)])
_rule("rsqrt", lambda xs, out, g, attrs: [g * out * out * out * -0.5])
_rule("sin", lambda xs, out, g, attrs: [g * xs[0].cos()])
_rule("cos", lambda xs, out, g, attrs: [-(g * xs[0].sin())])
_rule("tanh", lambda xs, out, g, attrs: [g * (1 - out * out)])
_rule("sigmoid", lambda xs, out, g, attrs: [g * (out * (1 - out))])
_rule("erf", lambda xs, out, g, attrs: [g * (-(xs[0] * xs[0])).exp() * _TWO_OVER_SQRT_PI])
_rule("add", lambda xs, out, g, attrs: [sum_to(g, xs[0].shape), sum_to(g, xs[1].shape)])
_rule("sub", lambda xs, out, g, attrs: [sum_to(g, xs[0].shape), sum_to(-g, xs[1].shape)])
_rule(
    "mul",
    lambda xs, out, g, attrs: [sum_to(g * xs[1], xs[0].shape), sum_to(g * xs[0], xs[1].shape)],
)
_rule(
    "div",
    lambda xs, out, g, attrs: [
        sum_to(g / xs[1], xs[0].shape),
        sum_to(-(g * out) / xs[1], xs[1].shape),
    ],
)
_rule("floordiv", lambda xs, out, g, attrs: [zeros_like(xs[0]), zeros_like(xs[1])])
_rule(
    "mod",
    lambda xs, out, g, attrs: [
        sum_to(g, xs[0].shape),
        sum_to(-(g * (xs[0] // xs[1])), xs[1].shape),
    ],
)


@grad_rule("pow")
def _pow_grad(xs, out, g, attrs):
    base, exponent = xs
    gc = frontend()
    d_base = g * exponent * base ** (exponent - 1)
    # As in PyTorch, a zero base contributes no gradient to the exponent (0 * log 0 = 0).
    d_exponent = g * gc.where(base == 0, 0.0, out * base.log())
    return [sum_to(d_base, base.shape), sum_to(d_exponent, exponent.shape)]


def _extremum_grad(xs, out, g, winner_is_first):
    # Ties split the gradient evenly between both operands, as in PyTorch.
    gc = frontend()
    a, b = xs
    share_a = gc.where(winner_is_first, 1.0, gc.where(a == b, 0.5, 0.0)).to(g.dtype)
    return [sum_to(g * share_a, a.shape), sum_to(g * (1 - share_a), b.shape)]


_rule("maximum", lambda xs, out, g, attrs: _extremum_grad(xs, out, g, xs[0] > xs[1]))
_rule("minimum", lambda xs, out, g, attrs: _extremum_grad(xs, out, g, xs[0] < xs[1]))


@grad_rule("where")
def _where_grad(xs, out, g, attrs):
    gc = frontend()
    condition, a, b = xs
    zero = gc.zeros_like(g)
    return [
        None,
        sum_to(gc.where(condition, g, zero), a.shape),
        sum_to(gc.where(condition, zero, g), b.shape),
    ]


@grad_rule("cast")
def _cast_grad(xs, out, g, attrs):
    (x,) = xs
    return [g.to(x.dtype) if x.dtype.is_float else None]
