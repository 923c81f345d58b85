"""Converters of ONNX's elementwise ops, activations, casts and matrix products.

ONNX gives both operands of a binary op one element type, so graphc's PyTorch-style promotion
leaves them as they are. Where ONNX's integer semantics differ from graphc's (Div truncates,
Mod's sign), the converter composes the ONNX result from graphc's primitives.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import graphc as gc
from graphc.nn import functional as F
from graphc.onnx.common import dtype_of
from graphc.onnx.nodes import NodeContext, converter


def _unary(function: Callable[[gc.Tensor], gc.Tensor]) -> Callable[[NodeContext], gc.Tensor]:
    return lambda node: function(node.tensor(0))


# Past this size, asinh(x) = log(2x) and acosh(x) = log(2x) to well within float64's rounding
# (the next term is 1 / (4 x^2)), and x^2 may overflow; below it the forms are accurate.
_LARGE = 2.0**28


def _cathetus(x: gc.Tensor) -> gc.Tensor:
    """Return sqrt(1 - x^2), accurate near |x| = 1 (1 - x is exact there); NaN past 1."""
    return gc.sqrt((1.0 - x) * (1.0 + x))


def _odd(x: gc.Tensor, function: Callable[[gc.Tensor], gc.Tensor]) -> gc.Tensor:
    """Return an odd function from its values at |x| (where 1 - |x| is exact near 1)."""
    result = function(gc.abs(x))
    return gc.where(x < 0, -result, result)


def _asinh(a: gc.Tensor) -> gc.Tensor:
    """asinh(a) for a >= 0 as log1p(a + a^2 / (1 + sqrt(1 + a^2))): log1p keeps it accurate
    near 0, where log(a + sqrt(a^2 + 1)) loses every digit."""
    near = gc.log1p(a + a * a / (1.0 + gc.sqrt(1.0 + a * a)))
    return gc.where(a > _LARGE, gc.log(a) + math.log(2.0), near)


def _acosh(x: gc.Tensor) -> gc.Tensor:
    """acosh(x) = log1p(t + sqrt(t * (x + 1))) with t = x - 1 (exact near 1); NaN below 1."""
    t = x - 1.0
    near = gc.log1p(t + gc.sqrt(t * (x + 1.0)))
    return gc.where(x > _LARGE, gc.log(x) + math.log(2.0), near)


UNARY: dict[str, Callable[[gc.Tensor], gc.Tensor]] = {
    "Abs": gc.abs,
    "Neg": gc.neg,
    "Exp": gc.exp,
    "Log": gc.log,
    "Sqrt": gc.sqrt,
    "Sin": gc.sin,
    "Cos": gc.cos,
    "Tan": lambda x: gc.sin(x) / gc.cos(x),
    "Atan": lambda x: gc.atan2(x, gc.ones_like(x)),
    "Asin": lambda x: gc.atan2(x, _cathetus(x)),
    "Acos": lambda x: gc.atan2(_cathetus(x), x),
    "Asinh": lambda x: _odd(x, _asinh),
    "Acosh": _acosh,
    "Atanh": lambda x: _odd(x, lambda a: gc.log1p(2.0 * a / (1.0 - a)) * 0.5),
    "Sinh": lambda x: (gc.expm1(x) - gc.expm1(-x)) * 0.5,
    "Cosh": lambda x: (gc.exp(x) + gc.exp(-x)) * 0.5,
    "Tanh": gc.tanh,
    "Sigmoid": gc.sigmoid,
    "Erf": gc.erf,
    "Floor": gc.floor,
    "Ceil": gc.ceil,
    "Round": gc.round,
    "Sign": gc.sign,
    "Not": gc.logical_not,
    "Relu": gc.relu,
    "Reciprocal": lambda x: 1.0 / x,
    "Softsign": lambda x: x / (1.0 + gc.abs(x)),
    "Softplus": lambda x: F.softplus(x),
    "Mish": lambda x: F.mish(x),
    "IsNaN": lambda x: x != x,
    "Identity": lambda x: x,
}
for _op, _function in UNARY.items():
    converter(_op)(_unary(_function))


BINARY: dict[str, Callable[[gc.Tensor, gc.Tensor], gc.Tensor]] = {
    "Add": gc.add,
    "Sub": gc.sub,
    "Mul": gc.mul,
    "Equal": gc.eq,
    "Less": gc.lt,
    "LessOrEqual": gc.le,
    "Greater": gc.gt,
    "GreaterOrEqual": gc.ge,
    "And": gc.logical_and,
    "Or": gc.logical_or,
    "Xor": gc.ne,
}


def _binary(
    function: Callable[[gc.Tensor, gc.Tensor], gc.Tensor],
) -> Callable[[NodeContext], gc.Tensor]:
    return lambda node: function(node.tensor(0), node.tensor(1))


for _op, _binary_function in BINARY.items():
    converter(_op)(_binary(_binary_function))


@converter("Div")
def div(node: NodeContext) -> gc.Tensor:
    """Float division, or integer division truncating toward zero (C's, which ONNX follows)."""
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype.is_float:
        return a / b
    quotient = gc.floor_divide(a, b)
    inexact = (quotient * b) != a
    return gc.where(inexact & ((a < 0) != (b < 0)), quotient + 1, quotient)


@converter("Mod")
def mod(node: NodeContext) -> gc.Tensor:
    """fmod=0: the remainder with the divisor's sign (Python's %); fmod=1: with the
    dividend's sign, as C's fmod."""
    a, b = node.tensor(0), node.tensor(1)
    remainder = gc.remainder(a, b)
    if not node.require("fmod", (0, 1), 0, "0 or 1"):
        return remainder
    # remainder has b's sign; where that differs from a's and it is not zero, step back by b.
    flip = (remainder != 0) & ((remainder < 0) != (a < 0))
    return gc.where(flip, remainder - b, remainder)


@converter("Pow")
def power(node: NodeContext) -> gc.Tensor:
    """base ** exponent in the base's type (an integer base with a float exponent is computed
    in float64 and truncated, as ONNX's reference does)."""
    base, exponent = node.tensor(0), node.tensor(1)
    if base.dtype.is_int and exponent.dtype.is_float:
        return gc.pow(base.to(gc.float64), exponent.to(gc.float64)).to(base.dtype)
    return gc.pow(base, exponent.to(base.dtype)).to(base.dtype)


@converter("Max", "Min", "Sum", "Mean")
def variadic(node: NodeContext) -> gc.Tensor:
    """The elementwise max, min, sum or mean of any number of broadcast operands."""
    combine = {"Max": gc.maximum, "Min": gc.minimum, "Sum": gc.add, "Mean": gc.add}[node.op]
    operands = [node.tensor(i) for i in range(len(node)) if node.has(i)]
    result = operands[0]
    for operand in operands[1:]:
        result = combine(result, operand)
    return result / len(operands) if node.op == "Mean" else result


@converter("Where")
def where(node: NodeContext) -> gc.Tensor:
    """condition ? x : y, broadcast."""
    return gc.where(node.tensor(0), node.tensor(1), node.tensor(2))


@converter("Clip")
def clip(node: NodeContext) -> gc.Tensor:
    """x limited to [min, max] (either bound optional); NaN stays NaN."""
    x = node.tensor(0)
    low, high = node.optional(1), node.optional(2)
    if low is not None:
        x = gc.where(x < low, low.to(x.dtype), x)
    if high is not None:
        x = gc.where(x > high, high.to(x.dtype), x)
    return x


@converter("Cast")
def cast(node: NodeContext) -> gc.Tensor:
    """x converted to the `to` element type (float to int truncates, as ONNX)."""
    node.require("saturate", (1,), 1, "it applies to float8 types, which graphc does not have")
    node.require("round_mode", ("up",), "up", "it applies to float8 types")
    return node.tensor(0).to(dtype_of(node.attr("to"), f"Cast node {node.name!r}"))


@converter("CastLike")
def cast_like(node: NodeContext) -> gc.Tensor:
    """x converted to the element type of the second input."""
    node.require("saturate", (1,), 1, "it applies to float8 types, which graphc does not have")
    node.require("round_mode", ("up",), "up", "it applies to float8 types")
    return node.tensor(0).to(node.tensor(1).dtype)


# -- activations with attributes -------------------------------------------------------------
@converter("LeakyRelu")
def leaky_relu(node: NodeContext) -> gc.Tensor:
    """x where positive, alpha * x elsewhere."""
    return F.leaky_relu(node.tensor(0), node.attr("alpha", 0.01))


@converter("Elu")
def elu(node: NodeContext) -> gc.Tensor:
    """x where positive, alpha * (exp(x) - 1) elsewhere."""
    return F.elu(node.tensor(0), node.attr("alpha", 1.0))


@converter("Celu")
def celu(node: NodeContext) -> gc.Tensor:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    alpha = node.attr("alpha", 1.0)
    x = node.tensor(0)
    return gc.relu(x) + gc.minimum(gc.zeros_like(x), F.elu(x / alpha) * alpha)


@converter("Selu")
def selu(node: NodeContext) -> gc.Tensor:
    """gamma * elu(x, alpha), with ONNX's default alpha and gamma."""
    alpha = node.attr("alpha", 1.67326319217681884765625)
    gamma = node.attr("gamma", 1.05070102214813232421875)
    return F.elu(node.tensor(0), alpha) * gamma


@converter("ThresholdedRelu")
def thresholded_relu(node: NodeContext) -> gc.Tensor:
    """x where x > alpha, 0 elsewhere."""
    x = node.tensor(0)
    return gc.where(x > node.attr("alpha", 1.0), x, gc.zeros_like(x))


@converter("HardSigmoid")
def hard_sigmoid(node: NodeContext) -> gc.Tensor:
    """max(0, min(1, alpha * x + beta))."""
    x = node.tensor(0)
    return gc.clamp(x * node.attr("alpha", 0.2) + node.attr("beta", 0.5), 0.0, 1.0)


@converter("HardSwish")
def hard_swish(node: NodeContext) -> gc.Tensor:
    """x * max(0, min(1, x / 6 + 1 / 2))."""
    x = node.tensor(0)
    return x * gc.clamp(x * (1 / 6) + 0.5, 0.0, 1.0)


@converter("Swish")
def swish(node: NodeContext) -> gc.Tensor:
    """x * sigmoid(alpha * x)."""
    x = node.tensor(0)
    return x * gc.sigmoid(x * node.attr("alpha", 1.0))


@converter("Gelu")
def gelu(node: NodeContext) -> gc.Tensor:
    """x * Phi(x), exact (erf) or with the tanh approximation."""
    approximate = node.require("approximate", ("none", "tanh"), "none", "'none' or 'tanh'")
    return F.gelu(node.tensor(0), approximate)


@converter("PRelu")
def prelu(node: NodeContext) -> gc.Tensor:
    """x where non-negative, slope * x elsewhere (slope broadcast)."""
    x, slope = node.tensor(0), node.tensor(1)
    return gc.where(x < 0, x * slope, x)


@converter("Shrink")
def shrink(node: NodeContext) -> gc.Tensor:
    """x + bias below -lambd, x - bias above lambd, 0 between (an integer x is computed in
    float64 and truncated back, as ONNX's reference does)."""
    x = node.tensor(0)
    lambd, bias = node.attr("lambd", 0.5), node.attr("bias", 0.0)
    y = x if x.dtype.is_float else x.to(gc.float64)
    shrunk = gc.where(y < -lambd, y + bias, gc.where(y > lambd, y - bias, gc.zeros_like(y)))
    return shrunk.to(x.dtype)


@converter("IsInf")
def is_inf(node: NodeContext) -> gc.Tensor:
    """Whether x is +inf (detect_positive) or -inf (detect_negative)."""
    x = node.tensor(0)
    positive = (x == math.inf) if node.attr("detect_positive", 1) else gc.zeros_like(x, gc.bool_)
    negative = (x == -math.inf) if node.attr("detect_negative", 1) else gc.zeros_like(x, gc.bool_)
    return positive | negative


@converter("Dropout")
def dropout(node: NodeContext) -> list[gc.Tensor]:
    """Inference: the input unchanged and an all-true mask. Training mode is refused, since a
    mask drawn here would not be ONNX's."""
    node.attr("seed")
    training = node.static(2, "training_mode")
    if training is not None and bool(training):
        raise node.error("training_mode=True is not supported (graphc imports inference graphs)")
    x = node.tensor(0)
    return [x, gc.ones_like(x, gc.bool_)]


# -- matrix products -------------------------------------------------------------------------
@converter("MatMul")
def matmul(node: NodeContext) -> gc.Tensor:
    """The matrix product with numpy's broadcasting of batch dims."""
    return gc.matmul(node.tensor(0), node.tensor(1))


@converter("Gemm")
def gemm(node: NodeContext) -> gc.Tensor:
    """alpha * A' @ B' + beta * C, with A' and B' transposed where transA/transB say."""
    a, b, c = node.tensor(0), node.tensor(1), node.optional(2)
    if node.require("transA", (0, 1), 0, "0 or 1"):
        a = a.mT
    if node.require("transB", (0, 1), 0, "0 or 1"):
        b = b.mT
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else c * beta)
    return y
