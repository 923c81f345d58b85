"""Elementwise primitives: unary math, binary arithmetic and comparisons, where, cast.

Each unary or binary op is one `unary_op` / `binary_op` call: its numpy reference, the dtype
categories it accepts, how its operands are promoted, its PyTorch name (`gc.<name>` and
`Tensor.<name>`), a one-line doc and its gradient rule, written with the operators and methods
of the values the autodiff pass hands it (`operand.Value`). The kernel lowering of such an op
is the kernel IR's Unary or Binary node of its name; a compiled backend gives that node its
code (backends/llvm/expressions.py and mathlib.py).

Binary ops take inputs of one dtype: `promotion.elementwise` inserts casts by PyTorch's
promotion rules first, so backends never promote.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.dtypes import DType, as_dtype, bool_
from graphc.errors import DTypeError
from graphc.ops.grad_helpers import sum_to, where, zeros_like
from graphc.ops.registry import OpDef, define_op, grad_rule
from graphc.ops.shape_rules import broadcast_shapes, require_dtype, same_dtype
from graphc.types import TensorType

# rule(x, out, g) -> the gradient for x; rule(a, b, out, g) -> gradients of a and b at the
# result's shape (binary_op sums them back to each operand's shape).
UnaryGrad = Callable[[Any, Any, Any], Any]
BinaryGrad = Callable[[Any, Any, Any, Any], tuple[Any, Any]]

# The names of the ops defined here by unary_op and binary_op, in definition order.
UNARY: list[str] = []
BINARY: list[str] = []


def _unary_infer(accepts: str, bool_result: bool):
    def infer(types, attrs):
        (x,) = types
        require_dtype(x, accepts, "the input")
        return TensorType(x.shape, bool_ if bool_result else x.dtype)

    return infer


def _binary_infer(accepts: str, bool_result: bool):
    def infer(types, attrs):
        a, b = types
        dtype = same_dtype(types, "both operands")
        require_dtype(a, accepts, "the operands")
        shape = broadcast_shapes(a.shape, b.shape)
        return TensorType(shape, bool_ if bool_result else dtype)

    return infer


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Return the reference implementation of fn: IEEE results (inf, NaN) without warnings."""

    def reference(args, attrs, env):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(*args)

    return reference


def _elementwise_op(
    name: str, arity: int, infer: Callable, reference: Callable, rule: Callable | None, **facts
) -> OpDef:
    """Define an elementwise op of `arity` operands with its gradient rule (None: none)."""
    api = facts.pop("api")
    op = define_op(
        name,
        "elementwise",
        infer,
        _quiet(reference),
        differentiable=rule is not None,
        api=name if api == "" else api,
        arity=arity,
        **facts,
    )
    if rule is not None:
        op.grad = rule
    return op


def unary_op(
    name: str,
    reference: Callable[[np.ndarray], np.ndarray],
    accepts: str,
    *,
    promotion: str,
    doc: str,
    grad: UnaryGrad | None = None,
    api: str | None = "",
    bool_result: bool = False,
    **facts: Any,
) -> OpDef:
    """Register an elementwise op of one operand, exposed as gc.<api> and Tensor.<api> (api
    defaults to name; None hides it), and return its definition."""
    rule = None if grad is None else (lambda xs, out, g, attrs: [grad(xs[0], out, g)])
    infer = _unary_infer(accepts, bool_result)
    op = _elementwise_op(
        name, 1, infer, reference, rule, promotion=promotion, doc=doc, api=api, **facts
    )
    UNARY.append(name)
    return op


def binary_op(
    name: str,
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray],
    accepts: str,
    *,
    promotion: str,
    doc: str,
    grad: BinaryGrad | None = None,
    api: str | None = "",
    bool_result: bool = False,
    **facts: Any,
) -> OpDef:
    """Register a broadcasting elementwise op of two operands, exposed as gc.<api>(a, b) and
    Tensor.<api>(other) (api defaults to name; None hides it), and return its definition."""
    rule = None
    if grad is not None:

        def rule(xs, out, g, attrs):
            a, b = xs
            da, db = grad(a, b, out, g)
            return [sum_to(da, a.shape), sum_to(db, b.shape)]

    infer = _binary_infer(accepts, bool_result)
    op = _elementwise_op(
        name, 2, infer, reference, rule, promotion=promotion, doc=doc, api=api, **facts
    )
    BINARY.append(name)
    return op


# -- numpy references that numpy does not have under one name --------------------------------
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


def _zero_gradient(x, out, g):
    # A piecewise-constant function: its gradient is zero everywhere it exists.
    return zeros_like(x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# -- unary ------------------------------------------------------------------------------------
unary_op(
    "neg",
    np.negative,
    "float,int",
    promotion="arithmetic",
    doc="Return -x elementwise.",
    grad=lambda x, out, g: -g,
)
unary_op(
    "abs",
    np.abs,
    "float,int",
    promotion="arithmetic",
    doc="Return |x| elementwise.",
    grad=lambda x, out, g: g * x.sign(),
)
unary_op(
    "sign",
    _sign,
    "float,int",
    promotion="arithmetic",
    doc="Return -1, 0 or 1 by the sign of x (0 for NaN, as in PyTorch).",
    grad=_zero_gradient,
)
unary_op(
    "exp",
    np.exp,
    "float",
    promotion="float",
    doc="Return e ** x elementwise.",
    grad=lambda x, out, g: g * out,
)
unary_op(
    "expm1",
    np.expm1,
    "float",
    promotion="float",
    doc="Return e ** x - 1 elementwise, accurate for x near 0.",
    grad=lambda x, out, g: g * x.exp(),  # not out + 1, which loses exp(x) << 1
)
unary_op(
    "log",
    np.log,
    "float",
    promotion="float",
    doc="Return the natural logarithm elementwise.",
    grad=lambda x, out, g: g / x,
)
unary_op(
    "log1p",
    np.log1p,
    "float",
    promotion="float",
    doc="Return log(1 + x) elementwise, accurate for x near 0.",
    grad=lambda x, out, g: g / (x + 1),
)
unary_op(
    "sqrt",
    np.sqrt,
    "float",
    promotion="float",
    doc="Return the square root elementwise.",
    grad=lambda x, out, g: g / (out * 2),
)
unary_op(
    "rsqrt",
    lambda x: 1 / np.sqrt(x),
    "float",
    promotion="float",
    doc="Return 1 / sqrt(x) elementwise.",
    grad=lambda x, out, g: g * out * out * out * -0.5,
)
unary_op(
    "sin",
    np.sin,
    "float",
    promotion="float",
    doc="Return the sine elementwise.",
    grad=lambda x, out, g: g * x.cos(),
)
unary_op(
    "cos",
    np.cos,
    "float",
    promotion="float",
    doc="Return the cosine elementwise.",
    grad=lambda x, out, g: -(g * x.sin()),
)
unary_op(
    "tanh",
    np.tanh,
    "float",
    promotion="float",
    doc="Return the hyperbolic tangent.",
    grad=lambda x, out, g: g * (1 - out * out),
)
unary_op(
    "sigmoid",
    _sigmoid,
    "float",
    promotion="float",
    doc="Return 1 / (1 + exp(-x)).",
    grad=lambda x, out, g: g * (out * (1 - out)),
)
unary_op(
    "erf",
    _erf,
    "float",
    promotion="float",
    doc="Return the error function elementwise.",
    grad=lambda x, out, g: g * (-(x * x)).exp() * _TWO_OVER_SQRT_PI,
)
unary_op(
    "floor",
    np.floor,
    "float",
    promotion="integral",
    doc="Return the largest integer <= x.",
    grad=_zero_gradient,
)
unary_op(
    "ceil",
    np.ceil,
    "float",
    promotion="integral",
    doc="Return the smallest integer >= x.",
    grad=_zero_gradient,
)
unary_op(
    "round",
    np.round,
    "float",
    promotion="integral",
    doc="Return x rounded to the nearest integer, halves to even.",
    grad=_zero_gradient,
)
unary_op(
    "logical_not",
    np.logical_not,
    "bool",
    promotion="logical",
    bool_result=True,
    doc="Return the elementwise logical negation (nonzero counts as True).",
)


# -- binary -----------------------------------------------------------------------------------
def _extremum_grad(a, b, g, winner_is_first):
    # Ties split the gradient evenly between both operands, as in PyTorch.
    share_a = where(winner_is_first, 1.0, where(a == b, 0.5, 0.0)).to(g.dtype)
    return g * share_a, g * (1 - share_a)


def _pow_grad(base, exponent, out, g):
    d_base = g * exponent * base ** (exponent - 1)
    # As in PyTorch, a zero base contributes no gradient to the exponent (0 * log 0 = 0).
    return d_base, g * where(base == 0, 0.0, out * base.log())


def _atan2_grad(y, x, out, g):
    # As in PyTorch: at (0, 0) both are NaN.
    scale = g / (x * x + y * y)
    return scale * x, -(scale * y)


binary_op(
    "add",
    np.add,
    "float,int",
    promotion="arithmetic",
    doc="Return a + b, broadcasting.",
    grad=lambda a, b, out, g: (g, g),
)
binary_op(
    "sub",
    np.subtract,
    "float,int",
    promotion="arithmetic",
    doc="Return a - b, broadcasting.",
    grad=lambda a, b, out, g: (g, -g),
)
binary_op(
    "mul",
    np.multiply,
    "float,int",
    promotion="arithmetic",
    doc="Return a * b, broadcasting.",
    grad=lambda a, b, out, g: (g * b, g * a),
)
binary_op(
    "div",
    np.true_divide,
    "float",
    promotion="float",
    doc="Return a / b, broadcasting (integers divide to float32).",
    grad=lambda a, b, out, g: (g / b, -(g * out) / b),
)
binary_op(
    "floordiv",
    np.floor_divide,
    "float,int",
    promotion="arithmetic",
    api="floor_divide",
    doc="Return floor(a / b), broadcasting.",
    grad=lambda a, b, out, g: (zeros_like(a), zeros_like(b)),
)
binary_op(
    "mod",
    np.mod,
    "float,int",
    promotion="arithmetic",
    api="remainder",
    doc="Return a - floor(a / b) * b (the sign of b), broadcasting.",
    grad=lambda a, b, out, g: (g, -(g * (a // b))),
)
binary_op(
    "pow",
    _power,
    "float,int",
    promotion="power",
    doc="Return a ** b, broadcasting.",
    grad=_pow_grad,
)
binary_op(
    "maximum",
    np.maximum,
    "float,int",
    promotion="arithmetic",
    doc="Return the elementwise maximum (NaN propagates).",
    grad=lambda a, b, out, g: _extremum_grad(a, b, g, a > b),
)
binary_op(
    "minimum",
    np.minimum,
    "float,int",
    promotion="arithmetic",
    doc="Return the elementwise minimum (NaN propagates).",
    grad=lambda a, b, out, g: _extremum_grad(a, b, g, a < b),
)
binary_op(
    "atan2",
    np.arctan2,
    "float",
    promotion="float",
    doc="Return the angle of the point (other, input) in (-pi, pi], by quadrant.",
    grad=_atan2_grad,
)
for _name, _fn, _sign_text in (
    ("eq", np.equal, "=="),
    ("ne", np.not_equal, "!="),
    ("lt", np.less, "<"),
    ("le", np.less_equal, "<="),
    ("gt", np.greater, ">"),
    ("ge", np.greater_equal, ">="),
):
    binary_op(
        _name,
        _fn,
        "float,int" if _name not in ("eq", "ne") else "float,int,bool",
        promotion="compare",
        bool_result=True,
        doc=f"Return a {_sign_text} b, broadcasting.",
    )
binary_op(
    "logical_and",
    np.logical_and,
    "bool",
    promotion="logical",
    bool_result=True,
    doc="Return a and b elementwise (nonzero counts as True).",
)
binary_op(
    "logical_or",
    np.logical_or,
    "bool",
    promotion="logical",
    bool_result=True,
    doc="Return a or b elementwise (nonzero counts as True).",
)


# -- where, cast, stop_gradient ---------------------------------------------------------------
def _where_infer(types, attrs):
    cond, a, b = types
    if not cond.dtype.is_bool:
        raise DTypeError(f"the condition must be bool, got {cond}")
    dtype = same_dtype([a, b], "both branches")
    return TensorType(broadcast_shapes(cond.shape, a.shape, b.shape), dtype)


define_op("where", "elementwise", _where_infer, lambda args, attrs, env: np.where(*args))


@grad_rule("where")
def _where_grad(xs, out, g, attrs):
    condition, a, b = xs
    zero = zeros_like(g)
    return [
        None,
        sum_to(where(condition, g, zero), a.shape),
        sum_to(where(condition, zero, g), b.shape),
    ]


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


# A cast is index arithmetic to fusion: it is inlined into every consumer.
define_op("cast", "elementwise", _cast_infer, _cast_reference, fusion="inline")


@grad_rule("cast")
def _cast_grad(xs, out, g, attrs):
    (x,) = xs
    return [g.to(x.dtype) if x.dtype.is_float else None]


# The identity with a zero gradient: marks a shift that cancels out of the derivative (the
# maximum subtracted in softmax and logsumexp), so the gradient graph does not carry it.
define_op(
    "stop_gradient",
    "elementwise",
    lambda types, attrs: types[0],
    lambda args, attrs, env: args[0],
    differentiable=False,
    fusion="inline",
)
