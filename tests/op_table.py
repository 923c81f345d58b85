"""The op table: every primitive and composite op, with its numpy (or PyTorch) reference.

One entry (`OpCase`) says how to build the op from graphc input tensors, how numpy (or
PyTorch) computes the same thing from arrays, what the inputs look like (shapes with symbolic
dims such as "B", dtypes, value domains), and whether the op is differentiable (and to what
order). The generic tests in test_ops.py run every entry on every backend; test_grad_table.py
reuses the differentiable float64 entries (`differentiable_cases()`) with a finite-difference
checker, to the second derivative for entries whose `grad_order` is 2.

An entry's order is derived from the ops its graph differentiates through (`OpDef.grad_order`:
the lowest of them); `order=` states it where the finite-difference check cannot see the
higher derivative.

Conventions:
- An input whose dtype is `FLOAT` takes the entry's `float_dtype`; entries with such inputs
  come in a float32 and a float64 variant (ids end in `-f32` / `-f64`).
- `fn` returns a Tensor or a tuple of Tensors and `ref` returns an array or a tuple of arrays
  of the dtype the result must have; a differentiable entry returns one float Tensor and has
  no bool inputs (conditions are computed inside `fn` from float inputs).
- Value domains keep every differentiable entry away from kinks and poles.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

import graphc as gc
from graphc.dims import as_dim, evaluate_shape
from graphc.dtypes import DType, bool_, float32, float64, int32, int64
from graphc.graph import topological_nodes
from graphc.ops import get_op, make_node
from graphc.reductions import stop_gradient

FLOAT = "float"  # an input dtype placeholder: the entry's float_dtype
FLOAT_DTYPES = (float32, float64)

# The sizes symbolic dims are bound to; a compiled graph must run for each without recompiling.
# B = 1 checks that a symbol bound to 1 at run time behaves as the size it stands for.
SYMBOL_SIZES: tuple[Mapping[str, int], ...] = ({"B": 3}, {"B": 5}, {"B": 1})

DOMAINS = (
    "real",  # standard normal (floats), integers in [-5, 5] (ints)
    "positive",  # floats in [0.5, 2], integers in [1, 5]
    "nonzero",  # |x| in [0.5, 2] with either sign; integers in [-5, 5] without 0
    "near_one",  # floats in [0.6, 1.4]: products of many stay moderate
    "wide",  # normal times 30: saturates sigmoid/tanh, tests the max-shift of softmax
    "grid",  # integers in [-2, 2] (also as floats): ties for comparisons, argmax, sign(0)
    "halves",  # multiples of 0.5 in [-4.5, 4.5]: round's ties, truncation, zeros for bool
    "index",  # integers in [low, high), for indices
    "small",  # |x| from 1e-8 to 0.5 with either sign (log1p and expm1 near 0)
    "specials",  # SPECIAL_VALUES in order, repeated: infinities, NaN, signed zeros, thresholds
)

# Values where activations change branch, saturate or overflow, for comparisons with PyTorch.
SPECIAL_VALUES = (
    -math.inf, -1000.0, -50.0, -20.5, -20.0, -10.0, -2.0, -1.0, -0.5, -1e-10, -0.0,
    0.0, 1e-10, 0.5, 1.0, 19.9, 20.0, 20.01, 30.0, 1000.0, math.inf, math.nan,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Arg:
    """One input of an entry: its shape (ints and symbol names), dtype and value domain."""

    shape: tuple[int | str, ...]
    dtype: DType | str = FLOAT
    domain: str = "real"
    low: int = 0
    high: int = 0

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}")

    def concrete_dtype(self, float_dtype: DType | None) -> DType:
        """Return this input's dtype, resolving FLOAT to the entry's float dtype."""
        if self.dtype == FLOAT:
            assert float_dtype is not None
            return float_dtype
        return self.dtype

    def make_array(
        self, rng: np.random.Generator, float_dtype: DType | None, sizes: Mapping[str, int]
    ) -> np.ndarray:
        """Return random values for this input, with symbolic dims bound by sizes."""
        shape = evaluate_shape(tuple(as_dim(d) for d in self.shape), sizes)
        dtype = self.concrete_dtype(float_dtype)
        if dtype.is_bool:
            values = rng.random(shape) < 0.5
        elif dtype.is_int:
            values = _int_values(rng, shape, self.domain, self.low, self.high)
        else:
            values = _float_values(rng, shape, self.domain)
        # np.asarray: arithmetic on 0-d arrays gives numpy scalars, which are not arrays.
        return np.asarray(values, dtype=dtype.numpy)


def _int_values(rng, shape, domain, low, high) -> np.ndarray:
    if domain == "index":
        return rng.integers(low, high, shape)
    if domain == "positive":
        return rng.integers(1, 6, shape)
    if domain == "grid":
        return rng.integers(-2, 3, shape)
    values = rng.integers(-5, 6, shape)
    if domain == "nonzero":
        values = np.where(values == 0, 3, values)
    return values


def _float_values(rng, shape, domain) -> np.ndarray:
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    if domain == "near_one":
        return rng.uniform(0.6, 1.4, shape)
    if domain == "wide":
        return rng.standard_normal(shape) * 30
    if domain == "grid":
        return rng.integers(-2, 3, shape).astype(np.float64)
    if domain == "halves":
        return rng.integers(-9, 10, shape) / 2
    if domain == "small":
        return rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-8, math.log10(0.5), shape)
    if domain == "specials":
        return np.resize(np.array(SPECIAL_VALUES), shape)
    raise ValueError(f"domain {domain!r} has no float values")


@dataclass(frozen=True, slots=True)
class OpCase:
    """One op-table entry: a graphc function, its reference, its inputs and its calculus."""

    name: str
    fn: Callable[..., Any]
    ref: Callable[..., Any]
    args: tuple[Arg, ...]
    float_dtype: DType | None = None
    differentiable: bool = False
    grad_order: int = 1
    tol: float = 1.0  # scales the float tolerances of the comparison (sums of many terms)

    @property
    def id(self) -> str:
        return self.name if self.float_dtype is None else f"{self.name}-{self.float_dtype.short}"

    @property
    def symbolic(self) -> bool:
        """Return True when some input shape has a symbolic dim."""
        return any(isinstance(d, str) for a in self.args for d in a.shape)

    def dtypes(self) -> tuple[DType, ...]:
        """Return the concrete dtype of each input."""
        return tuple(a.concrete_dtype(self.float_dtype) for a in self.args)

    def make_inputs(self, prefix: str = "x") -> list[gc.Tensor]:
        """Return one gc.input placeholder per argument."""
        return [
            gc.input(f"{prefix}{i}", a.shape, dtype)
            for i, (a, dtype) in enumerate(zip(self.args, self.dtypes(), strict=True))
        ]

    def make_arrays(
        self, rng: np.random.Generator, sizes: Mapping[str, int] = SYMBOL_SIZES[0]
    ) -> list[np.ndarray]:
        """Return random input arrays, symbolic dims bound by sizes."""
        return [a.make_array(rng, self.float_dtype, sizes) for a in self.args]

    def with_float_dtype(self, dtype: DType) -> OpCase:
        """Return this entry with its FLOAT inputs in dtype."""
        return replace(self, float_dtype=dtype)


def _cases(
    name: str,
    fn: Callable[..., Any],
    ref: Callable[..., Any],
    *args: Arg,
    diff: bool = False,
    order: int | None = None,
    floats: tuple[DType, ...] = FLOAT_DTYPES,
    tol: float = 1.0,
) -> list[OpCase]:
    """Return the entry once per float dtype if it has FLOAT inputs, else once. A
    differentiable entry's order is `order`, or else derived from its ops."""
    base = OpCase(name, fn, ref, tuple(args), None, diff, 1, tol)
    if diff:
        order = derived_grad_order(base) if order is None else order
        if not 1 <= order <= 2:
            raise ValueError(f"{name}: grad_order must be 1 or 2, got {order}")
        base = replace(base, grad_order=order)
    if not any(a.dtype == FLOAT for a in args):
        return [base]
    return [base.with_float_dtype(f) for f in floats]


def derived_grad_order(case: OpCase) -> int:
    """Return the lowest `OpDef.grad_order` of the differentiable ops between the entry's float
    inputs and its output (at most 2): the derivatives graphc's rules promise for it."""
    inputs = case.with_float_dtype(float64).make_inputs()
    out = case.fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    reached = {t.node.id for t in inputs if t.dtype.is_float}
    order = 2
    for node in topological_nodes([out.node]):
        if node.id in reached or not any(n.id in reached for n in node.inputs):
            continue
        reached.add(node.id)
        op = get_op(node.op)
        if op.differentiable:
            order = min(order, op.grad_order)
    return order


def F(*shape: int | str, domain: str = "real") -> Arg:  # noqa: N802 - reads like a type
    """Return a float input (the entry's float dtype)."""
    return Arg(tuple(shape), FLOAT, domain)


def T(dtype: DType, *shape: int | str, domain: str = "real", low=0, high=0) -> Arg:  # noqa: N802
    """Return an input of a fixed dtype."""
    return Arg(tuple(shape), dtype, domain, low, high)


def I(*shape: int | str, low: int, high: int, dtype: DType = int64) -> Arg:  # noqa: N802, E743
    """Return an int64 index input with values in [low, high)."""
    return Arg(tuple(shape), dtype, "index", low, high)


TABLE: list[OpCase] = []


def add(*args, **kwargs) -> None:
    """Append the entries made by _cases to the table."""
    TABLE.extend(_cases(*args, **kwargs))


# -- numpy references that numpy does not have under one name ---------------------------------
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _logsumexp(x: np.ndarray, axis, keepdims: bool = False) -> np.ndarray:
    shift = np.max(x, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(shift), shift, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv2d_loops(x, w, stride, padding, dilation, groups) -> np.ndarray:
    """Return the convolution by its definition, one output element at a time."""
    n, c, h, wd = x.shape
    o, per_group, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = _out_size(h, kh, sh, ph, dh), _out_size(wd, kw, sw, pw, dw)
    out = np.zeros((n, o, oh, ow), dtype=np.float64)
    outs_per_group = o // groups
    for b in range(n):
        for oc in range(o):
            g = oc // outs_per_group
            channels = slice(g * per_group, (g + 1) * per_group)
            for i in range(oh):
                for j in range(ow):
                    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
                    cols = slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)
                    out[b, oc, i, j] = np.sum(xp[b, channels, rows, cols] * w[oc])
    return out.astype(x.dtype)


def _scatter_add_loops(idx, src, shape, axis) -> np.ndarray:
    """Return zeros(shape) with src[p] added at p with dim `axis` replaced by idx[p]."""
    out = np.zeros(shape, dtype=src.dtype)
    idx = np.broadcast_to(idx, src.shape)
    for position in np.ndindex(*src.shape):
        target = list(position)
        target[axis] = idx[position]
        out[tuple(target)] += src[position]
    return out


def _torch():
    return pytest.importorskip("torch")


def _torch_grad(forward, inputs, wrt: int, gy: np.ndarray) -> np.ndarray:
    """Return d(sum(forward(*inputs) * gy)) / d inputs[wrt], by PyTorch's autograd."""
    torch = _torch()
    tensors = [torch.from_numpy(np.array(a)) for a in inputs]
    tensors[wrt].requires_grad_(True)
    out = forward(*tensors)
    assert tuple(out.shape) == gy.shape, (tuple(out.shape), gy.shape)
    out.backward(torch.from_numpy(gy))
    return tensors[wrt].grad.numpy()


# -- graphc helpers for primitives without a Tensor method -------------------------------------
def _prim(op: str, inputs: list[gc.Tensor], **attrs: Any) -> gc.Tensor:
    return gc.Tensor(make_node(op, [t.node for t in inputs], attrs))


def _pairs(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


# == elementwise unary ========================================================================
UNARY_FLOAT = {
    # name: (graphc function, numpy reference, domain, differentiable)
    "neg": (gc.neg, np.negative, "real", True),
    "abs": (gc.abs, np.abs, "nonzero", True),
    "sign": (gc.sign, np.sign, "grid", False),
    "exp": (gc.exp, np.exp, "real", True),
    "expm1": (gc.expm1, np.expm1, "small", True),
    "log": (gc.log, np.log, "positive", True),
    "log1p": (gc.log1p, np.log1p, "small", True),
    "sqrt": (gc.sqrt, np.sqrt, "positive", True),
    "rsqrt": (gc.rsqrt, lambda x: (1 / np.sqrt(x)).astype(x.dtype), "positive", True),
    "sin": (gc.sin, np.sin, "real", True),
    "cos": (gc.cos, np.cos, "real", True),
    "tanh": (gc.tanh, np.tanh, "real", True),
    "sigmoid": (gc.sigmoid, _sigmoid, "real", True),
    "erf": (gc.erf, _erf, "real", True),
    "floor": (gc.floor, np.floor, "halves", False),
    "ceil": (gc.ceil, np.ceil, "halves", False),
    "round": (gc.round, np.round, "halves", False),  # half to even, as torch.round
}
for _name, (_fn, _ref, _domain, _diff) in UNARY_FLOAT.items():
    add(_name, _fn, _ref, F(2, 3, domain=_domain), diff=_diff)
    add(f"{_name}_symbolic", _fn, _ref, F("B", 2, domain=_domain), diff=_diff)

add("exp_0d", gc.exp, np.exp, F(), diff=True)
add("sqrt_0d", lambda x: x.sqrt(), np.sqrt, F(domain="positive"), diff=True)
add("tanh_wide", lambda x: x.tanh(), np.tanh, F(3, 4, domain="wide"), diff=False)
add("sigmoid_wide", lambda x: x.sigmoid(), _sigmoid, F(3, 4, domain="wide"), diff=False)
add("floor_real", lambda x: x.floor(), np.floor, F(3, 4, domain="wide"))
add("ceil_real", lambda x: x.ceil(), np.ceil, F(3, 4, domain="wide"))
add("round_real", lambda x: x.round(), np.round, F(3, 4, domain="wide"))
add("abs_method", lambda x: abs(x), np.abs, F(2, 3, domain="nonzero"), diff=True)
add("expm1_method", lambda x: x.expm1(), np.expm1, F(3, 4), diff=True)
add("log1p_method", lambda x: x.log1p(), np.log1p, F(3, 4, domain="positive"), diff=True)
add("expm1_wide", gc.expm1, np.expm1, F(3, 4, domain="wide"))
add("log1p_of_minus_one_and_below", gc.log1p, np.log1p, F(3, 4, domain="grid"))
add("neg_operator", lambda x: -x, np.negative, F(2, 3), diff=True)
add("square", lambda x: x.square(), np.square, F(2, 3), diff=True)
# Forward it is the identity; its gradient is zero on purpose, so it is not checked against
# finite differences.
add("stop_gradient", lambda x: stop_gradient(x) * 2, lambda x: x * 2, F(2, 3))
# In the one-process world the tests run in, an all_reduce is its input (tests/test_distributed.py
# checks two and three processes under mpiexec).
for _op in ("sum", "max", "min"):
    add(
        f"all_reduce_{_op}",
        lambda x, o=_op: gc.Tensor(make_node("all_reduce", [x.node], {"op": o})) * 2,
        lambda x: x * 2,
        F("B", 3),
        diff=True,
    )
add(
    "all_reduce_int",
    lambda x: gc.Tensor(make_node("all_reduce", [x.node], {"op": "sum"})),
    lambda x: x,
    Arg((2, 3), int64),
)

for _dtype in (int32, int64):
    for _name, _fn, _ref in (
        ("neg", gc.neg, np.negative),
        ("abs", gc.abs, np.abs),
        ("sign", gc.sign, np.sign),
        ("floor", gc.floor, lambda x: x),  # integral already: the same ints back
        ("round", gc.round, lambda x: x),
    ):
        add(f"{_name}_{_dtype.name}", _fn, _ref, T(_dtype, 2, 3, domain="grid"))

add("logical_not", lambda x: x.logical_not(), np.logical_not, T(bool_, 3, 4))
add("invert_bool", lambda x: ~x, np.logical_not, T(bool_, 3, 4))
add("logical_not_float", lambda x: x.logical_not(), np.logical_not, F(3, 4, domain="grid"))
add("logical_not_int", lambda x: x.logical_not(), np.logical_not, T(int64, 3, 4, domain="grid"))

# == elementwise binary, with broadcasting ====================================================
BINARY = {
    # name: (graphc function, numpy reference, float domains, differentiable)
    "add": (operator.add, np.add, ("real", "real"), True),
    "sub": (operator.sub, np.subtract, ("real", "real"), True),
    "mul": (operator.mul, np.multiply, ("real", "real"), True),
    "div": (operator.truediv, np.true_divide, ("real", "nonzero"), True),
    "floordiv": (operator.floordiv, np.floor_divide, ("wide", "nonzero"), False),
    "mod": (operator.mod, np.mod, ("wide", "nonzero"), True),
    "pow": (operator.pow, np.power, ("positive", "real"), True),
    "maximum": (gc.maximum, np.maximum, ("real", "real"), True),
    "minimum": (gc.minimum, np.minimum, ("real", "real"), True),
    "atan2": (gc.atan2, np.arctan2, ("real", "real"), True),
    "eq": (operator.eq, np.equal, ("grid", "grid"), False),
    "ne": (operator.ne, np.not_equal, ("grid", "grid"), False),
    "lt": (operator.lt, np.less, ("grid", "grid"), False),
    "le": (operator.le, np.less_equal, ("grid", "grid"), False),
    "gt": (operator.gt, np.greater, ("grid", "grid"), False),
    "ge": (operator.ge, np.greater_equal, ("grid", "grid"), False),
}
# Integer forms: div and atan2 are left out (their integers give float32: see the promotion
# entries).
INT_DOMAINS = {
    "floordiv": ("real", "nonzero"),
    "mod": ("real", "nonzero"),
    "pow": ("grid", "grid"),  # made non-negative below: ints to negative powers are an error
}
BROADCAST_PAIRS = (
    ((2, 3), (2, 3)),
    ((3, 1), (1, 4)),
)
# Also run for float64 (what the autodiff tests check) and for add in float32.
MORE_BROADCAST_PAIRS = (
    ((2, 3, 4), (4,)),
    ((), (2, 3)),
    ((2, 1, 3), (4, 1)),
    (("B", 3), (3,)),
    (("B", 1), (1, "B")),
    ((3,), ("B", 1, 3)),
)


def _shape_id(a, b) -> str:
    return "x".join("(" + ",".join(map(str, s)) + ")" for s in (a, b))


for _name, (_fn, _ref, (_da, _db), _diff) in BINARY.items():
    for _sa, _sb in BROADCAST_PAIRS:
        add(
            f"{_name}{_shape_id(_sa, _sb)}",
            _fn,
            _ref,
            F(*_sa, domain=_da),
            F(*_sb, domain=_db),
            diff=_diff,
        )
    for _sa, _sb in MORE_BROADCAST_PAIRS:
        add(
            f"{_name}{_shape_id(_sa, _sb)}",
            _fn,
            _ref,
            F(*_sa, domain=_da),
            F(*_sb, domain=_db),
            diff=_diff,
            floats=(float32, float64) if _name == "add" else (float64,),
        )
    if _name in ("div", "atan2"):
        continue
    _ia, _ib = INT_DOMAINS.get(_name, ("grid", "grid") if _da == "grid" else ("real", "real"))
    for _dtype in (int64, int32):
        if _name == "pow":
            _fn_int, _ref_int = (
                (lambda a, b: abs(a) ** abs(b)),
                (lambda a, b: np.abs(a) ** np.abs(b)),
            )
        else:
            _fn_int, _ref_int = _fn, _ref
        add(
            f"{_name}_{_dtype.name}(3,1)x(1,4)",
            _fn_int,
            _ref_int,
            T(_dtype, 3, 1, domain=_ia),
            T(_dtype, 1, 4, domain=_ib),
        )

for _name, _fn, _ref in (
    ("logical_and", operator.and_, np.logical_and),
    ("logical_or", operator.or_, np.logical_or),
    ("eq_bool", operator.eq, np.equal),
    ("ne_bool", operator.ne, np.not_equal),
):
    for _sa, _sb in BROADCAST_PAIRS + MORE_BROADCAST_PAIRS:
        add(f"{_name}{_shape_id(_sa, _sb)}", _fn, _ref, T(bool_, *_sa), T(bool_, *_sb))

# Python scalars on either side (weakly typed: the tensor's dtype wins).
add("add_scalar", lambda x: x + 1.5, lambda x: x + 1.5, F(2, 3), diff=True)
add("radd_scalar", lambda x: 2 + x, lambda x: 2 + x, F(2, 3), diff=True)
add("rsub_scalar", lambda x: 2 - x, lambda x: 2 - x, F(2, 3), diff=True)
add("mul_int_scalar", lambda x: x * 2, lambda x: x * 2, F(2, 3), diff=True)
add("rmul_scalar", lambda x: 0.5 * x, lambda x: 0.5 * x, F(2, 3), diff=True)
add("div_scalar", lambda x: x / 4, lambda x: x / 4, F(2, 3), diff=True)
add("rdiv_scalar", lambda x: 1 / x, lambda x: 1 / x, F(2, 3, domain="nonzero"), diff=True)
add("pow_two", lambda x: x**2, lambda x: x**2, F(2, 3), diff=True)
add("pow_half", lambda x: x**0.5, lambda x: x**0.5, F(2, 3, domain="positive"), diff=True)
add("pow_method", lambda x: x.pow(3), lambda x: x**3, F(2, 3), diff=True)
add("rpow_scalar", lambda x: 2**x, lambda x: 2**x, F(2, 3), diff=True)
add("mod_scalar", lambda x: x % 1.5, lambda x: np.mod(x, 1.5), F(2, 3, domain="wide"))
add("rfloordiv_scalar", lambda x: 7 // x, lambda x: 7 // x, F(2, 3, domain="nonzero"))
add("maximum_scalar", lambda x: gc.maximum(x, 0.25), lambda x: np.maximum(x, 0.25), F(2, 3))
add("gt_scalar", lambda x: x > 0, lambda x: x > 0, F(2, 3, domain="grid"))
add("le_rscalar", lambda x: operator.le(1, x), lambda x: operator.le(1, x), F(2, 3, domain="grid"))
add("eq_scalar", lambda x: x == 1, lambda x: x == 1, F(2, 3, domain="grid"))
add("int_mod_negative", lambda x: x % -3, lambda x: x % -3, T(int64, 2, 5))
add("atan2_method", lambda y, x: y.atan2(x), np.arctan2, F(3, 1), F(4), diff=True)
add("atan2_scalar", lambda y: gc.atan2(y, -1.5), lambda y: np.arctan2(y, -1.5), F(2, 3), diff=True)
add(
    "atan2_signed_zeros_and_infinities",
    gc.atan2,
    np.arctan2,
    F(len(SPECIAL_VALUES), 1, domain="specials"),
    F(1, len(SPECIAL_VALUES), domain="specials"),
)
add("int_floordiv_scalar", lambda x: x // 2, lambda x: x // 2, T(int32, 2, 5))

# == dtype promotion ==========================================================================
_f32 = np.float32
add(
    "promote_int_div_int",
    lambda a, b: a / b,
    lambda a, b: (a / b).astype(_f32),
    T(int64, 2, 3),
    T(int64, 2, 3, domain="nonzero"),
)
add("promote_int32_div_scalar", lambda a: a / 2, lambda a: (a / 2).astype(_f32), T(int32, 2, 3))
add(
    "promote_rdiv_int",
    lambda a: 1 / a,
    lambda a: (1 / a).astype(_f32),
    T(int64, 4, domain="nonzero"),
)
add("promote_int_plus_float", lambda a: a + 1.5, lambda a: (a + 1.5).astype(_f32), T(int64, 2, 3))
add("promote_int32_times_float", lambda a: a * 0.5, lambda a: (a * 0.5).astype(_f32), T(int32, 3))
add("promote_int32_times_int", lambda a: a * 3, lambda a: a * 3, T(int32, 2, 3))
add("promote_f32_times_int", lambda a: a * 2, lambda a: a * 2, T(float32, 2, 3))
add("promote_f64_plus_float", lambda a: a + 0.1, lambda a: a + 0.1, T(float64, 2, 3))
add("promote_int32_plus_int64", operator.add, np.add, T(int32, 2, 3), T(int64, 3))
add(
    "promote_int32_plus_f64",
    operator.add,
    lambda a, b: a.astype(np.float64) + b,
    T(int32, 2, 3),
    T(float64, 3),
)
add(
    "promote_f32_plus_f64",
    operator.add,
    lambda a, b: a.astype(np.float64) + b,
    T(float32, 3),
    T(float64, 3),
)
add(
    "promote_int_times_f32",
    operator.mul,
    lambda a, b: a.astype(_f32) * b,
    T(int64, 3),
    T(float32, 3),
)
add(
    "promote_bool_times_f32",
    operator.mul,
    lambda a, b: a.astype(_f32) * b,
    T(bool_, 3),
    T(float32, 3),
)
add("promote_int_lt_float", lambda a: a < 0.5, lambda a: a < 0.5, T(int64, 2, 3, domain="grid"))
add(
    "promote_int_eq_f32",
    operator.eq,
    lambda a, b: a == b,
    T(int32, 3, domain="grid"),
    T(float32, 3, domain="grid"),
)
add(
    "promote_f32_ge_f64",
    operator.ge,
    lambda a, b: a >= b,
    T(float32, 4, domain="grid"),
    T(float64, 4, domain="grid"),
)
add("promote_exp_int", gc.exp, lambda a: np.exp(a.astype(_f32)), T(int64, 2, 3, domain="grid"))
add(
    "promote_sqrt_int32", gc.sqrt, lambda a: np.sqrt(a.astype(_f32)), T(int32, 4, domain="positive")
)
add("promote_sigmoid_bool", gc.sigmoid, lambda a: _sigmoid(a.astype(_f32)), T(bool_, 4))
add(
    "promote_log1p_int",
    gc.log1p,
    lambda a: np.log1p(a.astype(_f32)),
    T(int32, 4, domain="positive"),
)
add(
    "promote_atan2_int",
    gc.atan2,
    lambda a, b: np.arctan2(a.astype(_f32), b.astype(_f32)),
    T(int64, 3, 1, domain="grid"),
    T(int32, 1, 4, domain="grid"),
)
add(
    "promote_int_pow_half",
    lambda a: a**0.5,
    lambda a: a.astype(_f32) ** 0.5,
    T(int64, 4, domain="positive"),
)
add(
    "promote_float_pow_int_tensor",
    operator.pow,
    lambda a, b: a ** b.astype(a.dtype),
    F(3, domain="positive"),
    T(int64, 3, domain="grid"),
)
add("promote_sum_int32", lambda a: a.sum(), lambda a: np.sum(a, dtype=np.int64), T(int32, 3, 4))
add(
    "promote_sum_bool",
    lambda a: a.sum(dim=1),
    lambda a: np.sum(a, axis=1, dtype=np.int64),
    T(bool_, 3, 4),
)
add(
    "promote_prod_int32",
    lambda a: a.prod(dim=0),
    lambda a: np.prod(a, axis=0, dtype=np.int64),
    T(int32, 3, 4),
)
add(
    "promote_sum_dtype_f64",
    lambda a: a.sum(dim=0, dtype=gc.float64),
    lambda a: np.sum(a.astype(np.float64), axis=0),
    T(float32, 3, 4),
)
add(
    "promote_mean_int_cast",
    lambda a: a.float().mean(),
    lambda a: np.mean(a.astype(_f32)),
    T(int64, 3, 4),
)
add(
    "promote_softmax_int",
    lambda a: gc.softmax(a, dim=-1),
    lambda a: _softmax(a.astype(_f32), -1),
    T(int64, 2, 4, domain="grid"),
)
add(
    "promote_where_int_float_scalar",
    lambda c, a: gc.where(c, a, 0.5),
    lambda c, a: np.where(c, a.astype(_f32), _f32(0.5)),
    T(bool_, 3, 4),
    T(int64, 3, 4),
)

# == where ====================================================================================
add(
    "where(3,1)(1,4)(3,4)",
    lambda c, a, b: gc.where(c > 0, a, b),
    lambda c, a, b: np.where(c > 0, a, b),
    F(3, 1),
    F(1, 4),
    F(3, 4),
    diff=True,
)
add(
    "where_symbolic",
    lambda c, a, b: gc.where(c > 0, a, b),
    lambda c, a, b: np.where(c > 0, a, b),
    F("B", 1),
    F("B", 3),
    F(3),
    diff=True,
)
add(
    "where_scalar_branch",
    lambda c, a: gc.where(c > 0, a, 0.0),
    lambda c, a: np.where(c > 0, a, a.dtype.type(0)),
    F(2, 3),
    F(2, 3),
    diff=True,
)
add(
    "where_bool_condition",
    lambda c, a, b: gc.where(c, a, b),
    lambda c, a, b: np.where(c, a, b),
    T(bool_, 2, 1, 4),
    F(3, 1),
    F(2, 3, 4),
)
add(
    "where_method",
    lambda c, a, b: a.where(c, b),
    lambda c, a, b: np.where(c, a, b),
    T(bool_, 2, 3),
    F(2, 3),
    F(3),
)
add(
    "where_int",
    lambda c, a, b: gc.where(c, a, b),
    lambda c, a, b: np.where(c, a, b),
    T(bool_, 3, 4),
    T(int64, 3, 4),
    T(int64, 4),
)
add(
    "where_int_condition",
    lambda c, a, b: gc.where(c, a, b),
    lambda c, a, b: np.where(c != 0, a, b),
    T(int64, 3, 4, domain="grid"),
    F(3, 4),
    F(3, 4),
)

# == arange over a symbolic length, tril / triu ================================================
# A range whose bound is a symbolic dim is the `arange` source op (a static one is a constant).
add(
    "arange_symbolic",
    lambda x: gc.arange(x.shape[0]),
    lambda x: np.arange(x.shape[0]),
    T(float32, "B", 2),
)
add(
    "arange_symbolic_reversed",
    lambda x: gc.arange(x.shape[0] - 1, -1, -1, dtype=gc.int32),
    lambda x: np.arange(x.shape[0] - 1, -1, -1, dtype=np.int32),
    T(int64, "B"),
)
add(
    "arange_symbolic_offset",
    lambda x: x * gc.arange(x.shape[0], 3 * x.shape[0], 2, dtype=x.dtype).unsqueeze(1),
    lambda x: x * np.arange(x.shape[0], 3 * x.shape[0], 2, dtype=x.dtype)[:, None],
    F("B", 3),
    diff=True,
)
add("tril_batched", lambda x: x.tril(), np.tril, F(2, 3, 4), diff=True)
add("triu_diagonal", lambda x: gc.triu(x, 1), lambda x: np.triu(x, 1), F(4, 3), diff=True)
add("tril_symbolic", lambda x: x.tril(-1), lambda x: np.tril(x, -1), F(2, "B", 4), diff=True)
add("triu_symbolic", lambda x: x.triu(2), lambda x: np.triu(x, 2), F("B", 3), diff=True)

# == cast between every pair of dtypes ========================================================
ALL_DTYPES = (float32, float64, int32, int64, bool_)


def _cast_ref(dtype: DType) -> Callable[[np.ndarray], np.ndarray]:
    def ref(x: np.ndarray) -> np.ndarray:
        if dtype.is_int and x.dtype.kind == "f":
            # Toward zero, as in PyTorch; NaN, inf and values out of range give the minimum.
            inside = (x >= -(2.0 ** (dtype.bits - 1))) & (x < 2.0 ** (dtype.bits - 1))
            truncated = np.trunc(np.where(inside, x, 0)).astype(dtype.numpy)
            return np.where(inside, truncated, np.iinfo(dtype.numpy).min).astype(dtype.numpy)
        if dtype.is_bool:
            return x != 0
        return x.astype(dtype.numpy)

    return ref


def _cast_fn(dtype: DType) -> Callable[[gc.Tensor], gc.Tensor]:
    return lambda x: gc.cast(x, dtype)


for _src in ALL_DTYPES:
    for _dst in ALL_DTYPES:
        if _src != _dst:
            _domain = "halves" if _src.is_float else "real"
            add(
                f"cast_{_src.short}_to_{_dst.short}",
                _cast_fn(_dst),
                _cast_ref(_dst),
                T(_src, 3, 6, domain=_domain),
            )
add("cast_wide_f32_to_i32", lambda x: x.int(), _cast_ref(int32), T(float32, 3, 4, domain="wide"))
add("cast_method_long", lambda x: x.long(), _cast_ref(int64), T(float64, 3, 4, domain="halves"))
add("cast_method_float", lambda x: x.float(), _cast_ref(float32), T(int64, 3, 4))
add("cast_method_double", lambda x: x.double(), _cast_ref(float64), T(float32, 3, 4))
add("cast_method_bool", lambda x: x.bool(), _cast_ref(bool_), T(float32, 3, 4, domain="grid"))
add("cast_method_to_name", lambda x: x.to("float64"), _cast_ref(float64), T(int32, 3, 4))
add("cast_float_to_same", lambda x: gc.cast(x, x.dtype) * 1, lambda x: x * 1, F(3, 4), diff=True)
add("cast_symbolic", lambda x: x.int(), _cast_ref(int32), T(float32, "B", 2, domain="halves"))

# == reductions ===============================================================================
_REDUCE_DIMS = (
    # id, dim, keepdim
    ("all", None, False),
    ("dim0", 0, False),
    ("dim-1", -1, False),
    ("dims0,2", (0, 2), False),
    ("dim1_keep", 1, True),
    ("dims-1,0_keep", (-1, 0), True),
)


def _np_axis(dim):
    return dim if dim is None or isinstance(dim, int) else tuple(dim)


for _rid, _dim, _keep in _REDUCE_DIMS:
    _ax = _np_axis(_dim)
    add(
        f"sum_{_rid}",
        lambda x, d=_dim, k=_keep: x.sum(dim=d, keepdim=k),
        lambda x, a=_ax, k=_keep: np.sum(x, axis=a, keepdims=k),
        F(2, 3, 4),
        diff=True,
    )
    add(
        f"prod_{_rid}",
        lambda x, d=_dim, k=_keep: x.prod(dim=d, keepdim=k),
        lambda x, a=_ax, k=_keep: np.prod(x, axis=a, keepdims=k),
        F(2, 3, 4, domain="near_one"),
        diff=True,
    )
    add(
        f"mean_{_rid}",
        lambda x, d=_dim, k=_keep: x.mean(dim=d, keepdim=k),
        lambda x, a=_ax, k=_keep: np.mean(x, axis=a, keepdims=k),
        F(2, 3, 4),
        diff=True,
    )
    for _corr in (1, 0):
        add(
            f"var_{_rid}_c{_corr}",
            lambda x, d=_dim, k=_keep, c=_corr: x.var(dim=d, keepdim=k, correction=c),
            lambda x, a=_ax, k=_keep, c=_corr: np.var(x, axis=a, keepdims=k, ddof=c),
            F(2, 3, 4),
            diff=True,
        )
        add(
            f"std_{_rid}_c{_corr}",
            lambda x, d=_dim, k=_keep, c=_corr: x.std(dim=d, keepdim=k, correction=c),
            lambda x, a=_ax, k=_keep, c=_corr: np.std(x, axis=a, keepdims=k, ddof=c),
            F(2, 3, 4),
            diff=True,
        )
    add(
        f"sum_int64_{_rid}",
        lambda x, d=_dim, k=_keep: x.sum(dim=d, keepdim=k),
        lambda x, a=_ax, k=_keep: np.sum(x, axis=a, keepdims=k),
        T(int64, 2, 3, 4),
    )
    add(
        f"prod_int64_{_rid}",
        lambda x, d=_dim, k=_keep: x.prod(dim=d, keepdim=k),
        lambda x, a=_ax, k=_keep: np.prod(x, axis=a, keepdims=k),
        T(int64, 2, 3, 4, domain="grid"),
    )

add("gc_sum_function", lambda x: gc.sum(x, 1), lambda x: np.sum(x, axis=1), F(3, 4), diff=True)
add("max_of_two_tensors", gc.max, np.maximum, F(3, 1), F(4), diff=True)
add("min_of_two_tensors", gc.min, np.minimum, F(3, 4), F(3, 4), diff=True)
add("gc_mean_function", lambda x: gc.mean(x, (0, 1)), np.mean, F(3, 4), diff=True)
add("sum_0d", lambda x: x.sum(), np.sum, F(), diff=True)
add("sum_symbolic_dim", lambda x: x.sum(dim=0), lambda x: np.sum(x, axis=0), F("B", 4), diff=True)
add(
    "mean_symbolic_dim", lambda x: x.mean(dim=0), lambda x: np.mean(x, axis=0), F("B", 4), diff=True
)
add("mean_symbolic_all", lambda x: x.mean(), np.mean, F("B", 4), diff=True)
add(
    "var_symbolic_dim",
    lambda x: x.var(dim=0),
    lambda x: np.var(x, axis=0, ddof=1),
    F("B", 4),
    diff=True,
)
add(
    "std_symbolic_keep",
    lambda x: x.std(dim=(0, 1), keepdim=True),
    lambda x: np.std(x, axis=(0, 1), ddof=1, keepdims=True),
    F("B", 4),
    diff=True,
)

# max/min: without dim the value; with an int dim (values, indices) like torch.max.
for _name, _np_val, _np_arg in (("max", np.max, np.argmax), ("min", np.min, np.argmin)):
    add(f"{_name}_all", lambda x, n=_name: getattr(x, n)(), _np_val, F(2, 3, 4), diff=True)
    add(
        f"{_name}_dim1_values",
        lambda x, n=_name: getattr(x, n)(dim=1).values,
        lambda x, f=_np_val: f(x, axis=1),
        F(2, 3, 4),
        diff=True,
    )
    add(
        f"{_name}_dim-1_keep_pair",
        lambda x, n=_name: tuple(getattr(x, n)(dim=-1, keepdim=True)),
        lambda x, f=_np_val, g=_np_arg: (
            f(x, axis=-1, keepdims=True),
            g(x, axis=-1, keepdims=True),
        ),
        F(2, 3, 4, domain="grid"),
    )
    add(
        f"{_name}_dim0_pair_int",
        lambda x, n=_name: tuple(getattr(gc, n)(x, 0)),
        lambda x, f=_np_val, g=_np_arg: (f(x, axis=0), g(x, axis=0)),
        T(int64, 4, 3, domain="grid"),
    )
    add(
        f"{_name}_symbolic",
        lambda x, n=_name: getattr(x, n)(dim=0).values,
        lambda x, f=_np_val: f(x, axis=0),
        F("B", 3),
        diff=True,
    )

for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    for _dim, _keep in ((None, False), (None, True), (1, False), (0, True), (-1, False)):
        _suffix = f"{_dim}{'_keep' if _keep else ''}"
        add(
            f"{_name}_{_suffix}",
            lambda x, n=_name, d=_dim, k=_keep: getattr(x, n)(dim=d, keepdim=k),
            lambda x, f=_fn, d=_dim, k=_keep: np.asarray(f(x, axis=d, keepdims=k), dtype=np.int64),
            F(3, 4, domain="grid"),  # ties: the first extremum wins
        )
    add(
        f"{_name}_int32",
        lambda x, n=_name: getattr(gc, n)(x, 1),
        lambda x, f=_fn: f(x, axis=1),
        T(int32, 3, 5, domain="grid"),
    )
    add(
        f"{_name}_symbolic",
        lambda x, n=_name: getattr(x, n)(dim=0),
        lambda x, f=_fn: f(x, axis=0),
        F("B", 4),
    )

# == composites ===============================================================================
for _dim in (-1, 0):
    add(
        f"softmax_dim{_dim}",
        lambda x, d=_dim: gc.softmax(x, d),
        lambda x, d=_dim: _softmax(x, d),
        F(3, 4),
        diff=True,
    )
    add(
        f"log_softmax_dim{_dim}",
        lambda x, d=_dim: x.log_softmax(d),
        lambda x, d=_dim: x - _logsumexp(x, d, keepdims=True),
        F(3, 4),
        diff=True,
    )
add("softmax_wide", lambda x: x.softmax(1), lambda x: _softmax(x, 1), F(3, 5, domain="wide"))
# log(softmax(x)) is rewritten to the stable x - logsumexp(x): the exact value, also where
# softmax underflows to 0 (numpy's log(softmax) would give -inf there).
add(
    "log_of_softmax",
    lambda x: gc.log(gc.softmax(x, -1)),
    lambda x: x - _logsumexp(x, -1, True),
    F(3, 5),
    diff=True,
)
add(
    "log_of_softmax_wide",
    lambda x: x.softmax(-1).log(),
    lambda x: x - _logsumexp(x, -1, True),
    F(3, 5, domain="wide"),
)
add(
    "log_softmax_wide",
    lambda x: gc.log_softmax(x, 1),
    lambda x: x - _logsumexp(x, 1, True),
    F(3, 5, domain="wide"),
)
add("softmax_symbolic", lambda x: x.softmax(-1), lambda x: _softmax(x, -1), F("B", 4), diff=True)
add("softmax_3d_middle", lambda x: x.softmax(1), lambda x: _softmax(x, 1), F(2, 3, 4), diff=True)
add("logsumexp_dim1", lambda x: x.logsumexp(1), lambda x: _logsumexp(x, 1), F(3, 4), diff=True)
add(
    "logsumexp_dims_keep",
    lambda x: gc.logsumexp(x, (0, 2), keepdim=True),
    lambda x: _logsumexp(x, (0, 2), True),
    F(2, 3, 4),
    diff=True,
)
add(
    "logsumexp_wide", lambda x: x.logsumexp(-1), lambda x: _logsumexp(x, -1), F(3, 5, domain="wide")
)
add(
    "logsumexp_all_neg_inf_row",
    lambda x: gc.where(x > 10, x, float("-inf")).logsumexp(1),
    lambda x: np.full(x.shape[0], -np.inf, dtype=x.dtype),
    F(3, 4),
)
add(
    "logsumexp_symbolic", lambda x: x.logsumexp(0), lambda x: _logsumexp(x, 0), F("B", 3), diff=True
)
add(
    "clamp_both",
    lambda x: x.clamp(-0.5, 0.7),
    lambda x: np.clip(x, -0.5, 0.7),
    F(3, 4),
    diff=True,
)
add(
    "clamp_min",
    lambda x: gc.clamp(x, min=0.1),
    lambda x: np.maximum(x, x.dtype.type(0.1)),
    F(3, 4),
    diff=True,
)
add(
    "clamp_max",
    lambda x: x.clip(max=-0.2),
    lambda x: np.minimum(x, x.dtype.type(-0.2)),
    F(3, 4),
    diff=True,
)
add(
    "clamp_tensor_bounds",
    lambda x, lo, hi: x.clamp(lo, lo + hi),
    lambda x, lo, hi: np.minimum(np.maximum(x, lo), lo + hi),
    F(3, 4),
    F(4),
    F(3, 1, domain="positive"),
    diff=True,
)
add("clamp_int", lambda x: x.clamp(-1, 2), lambda x: np.clip(x, -1, 2), T(int64, 3, 4))
add("relu", gc.relu, lambda x: np.maximum(x, 0), F(3, 4, domain="nonzero"), diff=True)
add("relu_method", lambda x: x.relu(), lambda x: np.maximum(x, 0), F(3, 4, domain="grid"))
add(
    "relu_symbolic",
    gc.relu,
    lambda x: np.maximum(x, 0),
    F("B", 2, domain="nonzero"),
    diff=True,
)


# == against PyTorch: values, first and second derivatives, special values =====================
def _torch_tensors(arrays, wide: bool) -> list:
    torch = _torch()
    return [torch.from_numpy(np.asarray(a, np.float64 if wide else a.dtype)) for a in arrays]


def _torch_values(forward, wide: bool = False):
    """Return a reference: forward on PyTorch tensors of the arrays (computed in float64 and
    rounded to the arrays' dtype when wide)."""

    def ref(*arrays):
        return forward(*_torch_tensors(arrays, wide)).numpy().astype(arrays[0].dtype)

    return ref


def _torch_derivatives(forward, n: int, order: int, wide: bool = False):
    """Return a reference for the arrays (x_1..x_n, gy, v_1..v_n): the gradients of
    sum(forward(xs) * gy), or for order 2 the gradients of sum_i <gradient_i, v_i> (a
    Hessian-vector product), by PyTorch's autograd."""

    def ref(*arrays):
        torch = _torch()
        tensors = _torch_tensors(arrays, wide)
        xs = [t.requires_grad_(True) for t in tensors[:n]]
        grads = torch.autograd.grad((forward(*xs) * tensors[n]).sum(), xs, create_graph=order > 1)
        if order > 1:
            total = sum((g * v).sum() for g, v in zip(grads, tensors[n + 1 :], strict=True))
            if total.requires_grad:
                grads = torch.autograd.grad(total, xs, allow_unused=True, materialize_grads=True)
            else:  # piecewise linear: nothing of x is left in the gradient
                grads = [torch.zeros_like(x) for x in xs]
        result = tuple(g.detach().numpy().astype(arrays[0].dtype) for g in grads)
        return result if n > 1 else result[0]

    return ref


def _graphc_derivatives(forward, n: int, order: int):
    """Return the graphc function of _torch_derivatives' arguments computing the same."""

    def fn(*tensors):
        xs = list(tensors[:n])
        grads = gc.grad((forward(*xs) * tensors[n]).sum(), xs, materialize_grads=True)
        if order > 1:
            total = sum((g * v).sum() for g, v in zip(grads, tensors[n + 1 :], strict=True))
            grads = gc.grad(total, xs, materialize_grads=True)
        return tuple(grads) if n > 1 else grads[0]

    return fn


def _with_gradients(forward, n: int):
    """Return fn(x_1..x_n, gy) -> (forward(xs), gradients of sum(forward(xs) * gy))."""
    derivatives = _graphc_derivatives(forward, n, 1)

    def fn(*tensors):
        grads = derivatives(*tensors)
        return (forward(*tensors[:n]), *(grads if n > 1 else (grads,)))

    return fn


def _torch_with_gradients(forward, n: int):
    values, derivatives = _torch_values(forward, wide=True), _torch_derivatives(forward, n, 1, True)

    def ref(*arrays):
        grads = derivatives(*arrays)
        return (values(*arrays[:n]), *(grads if n > 1 else (grads,)))

    return ref


def against_torch(name: str, graphc_fn, torch_fn, *args: Arg, specials: bool = True) -> None:
    """Add `name` (graphc_fn against torch_fn, differentiable: the grad table checks it),
    `name_grad` and `name_grad2` (its gradients and, where its order is 2, Hessian-vector
    products against PyTorch's autograd), and `name_specials`: values and gradients at
    SPECIAL_VALUES (every pair of them for two inputs) against PyTorch in float64."""
    n = len(args)
    add(name, graphc_fn, _torch_values(torch_fn), *args, diff=True)
    order = TABLE[-1].grad_order
    out_shape = np.broadcast_shapes(*(a.shape for a in args))
    directions = [F(*a.shape) for a in args]
    for k in range(1, order + 1):
        add(
            f"{name}_grad" + ("2" if k == 2 else ""),
            _graphc_derivatives(graphc_fn, n, k),
            _torch_derivatives(torch_fn, n, k),
            *args,
            F(*out_shape),
            *(directions if k == 2 else ()),
        )
    if specials:
        count = len(SPECIAL_VALUES)
        shapes = [(count,)] if n == 1 else [(count, 1), (1, count)]
        values = [F(*shape, domain="specials") for shape in shapes]
        add(
            f"{name}_specials",
            _with_gradients(graphc_fn, n),
            _torch_with_gradients(torch_fn, n),
            *values,
            F(*np.broadcast_shapes(*shapes)),
        )


def _fn(name: str):
    """Return torch.nn.functional.<name>, looked up when the reference runs."""
    return lambda *args, **kwargs: getattr(_torch().nn.functional, name)(*args, **kwargs)


against_torch("torch_log1p", gc.log1p, lambda x: _torch().log1p(x), F(2, 3, domain="small"))
against_torch("torch_expm1", gc.expm1, lambda x: _torch().expm1(x), F(2, 3, domain="small"))
against_torch(
    "torch_atan2", gc.atan2, lambda y, x: _torch().atan2(y, x), F(3, 1), F(1, 4, domain="nonzero")
)
against_torch("elu", gc.nn.functional.elu, _fn("elu"), F(3, 4))
against_torch(
    "elu_alpha",
    lambda x: gc.nn.functional.elu(x, alpha=0.5),
    lambda x: _fn("elu")(x, alpha=0.5),
    F(3, 4, domain="wide"),
)
against_torch("softplus", gc.nn.functional.softplus, _fn("softplus"), F(3, 4))
against_torch(
    "softplus_beta_threshold",
    lambda x: gc.nn.functional.softplus(x, beta=2.0, threshold=5.0),
    lambda x: _fn("softplus")(x, beta=2.0, threshold=5.0),
    F(3, 4, domain="wide"),
)
against_torch("mish", gc.nn.functional.mish, _fn("mish"), F(3, 4))
against_torch("mish_wide", gc.nn.functional.mish, _fn("mish"), F(3, 4, domain="wide"))
against_torch("hardtanh", gc.nn.functional.hardtanh, _fn("hardtanh"), F(3, 4))
against_torch(
    "hardtanh_bounds",
    lambda x: gc.nn.functional.hardtanh(x, min_val=-0.5, max_val=2.0),
    lambda x: _fn("hardtanh")(x, min_val=-0.5, max_val=2.0),
    F(3, 4),
)
against_torch("leaky_relu", gc.nn.functional.leaky_relu, _fn("leaky_relu"), F(3, 4))
against_torch(
    "leaky_relu_slope",
    lambda x: gc.nn.functional.leaky_relu(x, negative_slope=0.2),
    lambda x: _fn("leaky_relu")(x, negative_slope=0.2),
    F(3, 4),
)
against_torch("gelu", gc.nn.functional.gelu, _fn("gelu"), F(3, 4))
against_torch(
    "gelu_tanh",
    lambda x: gc.nn.functional.gelu(x, approximate="tanh"),
    lambda x: _fn("gelu")(x, approximate="tanh"),
    F(3, 4),
)
against_torch("silu", gc.nn.functional.silu, _fn("silu"), F(3, 4))
against_torch("silu_wide", gc.nn.functional.silu, _fn("silu"), F(3, 4, domain="wide"))


# == IEEE special values: NaN propagation, infinities, signed zeros, empty tensors ==============
_NAN, _INF = float("nan"), float("inf")


def _with_nans(x):
    """Return x with NaN wherever x > 1 (graphc or numpy, by the argument's type)."""
    if isinstance(x, np.ndarray):
        return np.where(x > 1, x.dtype.type(_NAN), x)
    return gc.where(x > 1, _NAN, x)


add(
    "maximum_nan",
    lambda x, y: gc.maximum(_with_nans(x), y),
    lambda x, y: np.maximum(_with_nans(x), y),
    F(3, 4),
    F(3, 4),
)
add(
    "minimum_nan",
    lambda x, y: gc.minimum(y, _with_nans(x)),
    lambda x, y: np.minimum(y, _with_nans(x)),
    F(3, 4),
    F(3, 4),
)
add(
    "max_nan",
    lambda x: _with_nans(x).max(dim=1).values,
    lambda x: np.max(_with_nans(x), axis=1),
    F(4, 3),
)
add("min_nan_all", lambda x: _with_nans(x).min(), lambda x: np.min(_with_nans(x)), F(4, 3))
add(
    "argmax_nan",
    lambda x: _with_nans(x).argmax(dim=1),
    lambda x: np.argmax(_with_nans(x), axis=1),
    F(4, 3),
)
add(
    "argmin_nan",
    lambda x: _with_nans(x).argmin(dim=0),
    lambda x: np.argmin(_with_nans(x), axis=0),
    F(4, 3),
)
add(
    "clamp_nan",
    lambda x: _with_nans(x).clamp(-0.5, 0.5),
    lambda x: np.clip(_with_nans(x), -0.5, 0.5),
    F(4, 3),
)
add("sum_nan", lambda x: _with_nans(x).sum(dim=0), lambda x: np.sum(_with_nans(x), axis=0), F(4, 3))
add("cast_nan_to_bool", lambda x: _with_nans(x).bool(), lambda x: _with_nans(x) != 0, F(4, 3))
add(
    "relu_nan",
    lambda x: _with_nans(x).relu(),
    lambda x: np.where(_with_nans(x) <= 0, 0, _with_nans(x)),  # NaN stays NaN, as in PyTorch
    F(4, 3),
)
# x + 0 is not x for x = -0.0: IEEE gives +0.0, so 1 / (x * 0 + 0) is +inf for every x.
add(
    "add_zero_to_negative_zero",
    lambda x: 1 / (x * 0 + 0),
    lambda x: 1 / (x * 0 + 0),
    F(3, 4, domain="nonzero"),
)
add(
    "floordiv_by_zero",
    lambda x, y: x // (y * 0),
    lambda x, y: x // (y * 0),
    F(3, 4, domain="grid"),
    F(3, 4),
)
add(
    "mod_by_zero",
    lambda x, y: x % (y * 0),
    lambda x, y: np.mod(x, y * 0),
    F(3, 4, domain="grid"),
    F(3, 4),
)
add(
    "div_by_zero",
    lambda x, y: x / (y * 0),
    lambda x, y: x / (y * 0),
    F(3, 4, domain="grid"),
    F(3, 4),
)
add("log_of_zero_and_negative", gc.log, np.log, F(3, 4, domain="grid"))
add("sqrt_of_negative", gc.sqrt, np.sqrt, F(3, 4, domain="grid"))
add("rsqrt_of_zero", gc.rsqrt, lambda x: (1 / np.sqrt(x)).astype(x.dtype), F(3, 4, domain="grid"))
add("exp_overflow", gc.exp, np.exp, F(3, 4, domain="wide"))
add("sigmoid_inf", lambda x: (x / 0).sigmoid(), lambda x: _sigmoid(x / 0), F(3, 4, domain="grid"))
add("tanh_inf", lambda x: (x / 0).tanh(), lambda x: np.tanh(x / 0), F(3, 4, domain="grid"))
add("erf_inf", lambda x: (x / 0).erf(), lambda x: _erf(x / 0), F(3, 4, domain="grid"))
add(
    "softmax_masked",
    lambda x, m: gc.where((m > 0) | (gc.arange(4) == 0), x, -_INF).softmax(-1),
    lambda x, m: _softmax(np.where((m > 0) | (np.arange(4) == 0), x, -np.inf), -1),
    F(3, 4),
    F(3, 4),
)
add("sum_empty", lambda x: x[2:2].sum(dim=0), lambda x: np.sum(x[2:2], axis=0), F(4, 5))
add("prod_empty", lambda x: x[:, 1:1].prod(dim=1), lambda x: np.prod(x[:, 1:1], axis=1), F(4, 5))
add("sum_empty_int", lambda x: x[3:].sum(), lambda x: np.sum(x[3:]), T(int64, 3, 2))
add("mul_empty", lambda x, y: x[:0] * y, lambda x, y: x[:0] * y, F(3, 4), F(4))
add(
    "matmul_empty_contraction",
    lambda a, b: a[:, :0] @ b[:0],
    lambda a, b: a[:, :0] @ b[:0],
    F(3, 4),
    F(4, 2),
)

# == movement =================================================================================
add("reshape_-1", lambda x: x.reshape(6, -1), lambda x: x.reshape(6, -1), F(2, 3, 4), diff=True)
add("reshape_flat", lambda x: x.reshape(-1), lambda x: x.reshape(-1), F(2, 3, 4), diff=True)
add(
    "reshape_tuple",
    lambda x: gc.reshape(x, (4, 3, 2)),
    lambda x: x.reshape(4, 3, 2),
    F(2, 3, 4),
    diff=True,
)
add("view", lambda x: x.view(3, 8), lambda x: x.reshape(3, 8), F(2, 3, 4), diff=True)
add("reshape_to_0d", lambda x: x.reshape(()), lambda x: x.reshape(()), F(1, 1), diff=True)
add(
    "reshape_symbolic_-1",
    lambda x: x.reshape(-1, 12),
    lambda x: x.reshape(-1, 12),
    F("B", 3, 4),
    diff=True,
)
add(
    "reshape_symbolic_merge",
    lambda x: x.reshape(x.shape[0], -1),
    lambda x: x.reshape(x.shape[0], -1),
    F("B", 3, 4),
    diff=True,
)
add(
    "reshape_symbolic_flat",
    lambda x: x.reshape(-1),
    lambda x: x.reshape(-1),
    F(2, "B", 3),
    diff=True,
)
add(
    "reshape_symbolic_split",
    lambda x: x.reshape(x.shape[0], 2, 3),
    lambda x: x.reshape(x.shape[0], 2, 3),
    F("B", 6),
    diff=True,
)
add("flatten", lambda x: x.flatten(), lambda x: x.reshape(-1), F(2, 3, 4), diff=True)
add("flatten_0d", lambda x: x.flatten(), lambda x: x.reshape(1), F(), diff=True)
add(
    "flatten_1",
    lambda x: gc.flatten(x, 1),
    lambda x: x.reshape(x.shape[0], -1),
    F("B", 3, 4),
    diff=True,
)
add("squeeze", lambda x: x.squeeze(), np.squeeze, F(2, 1, 3, 1), diff=True)
add("squeeze_dim", lambda x: gc.squeeze(x, 1), lambda x: np.squeeze(x, 1), F(2, 1, 3, 1), diff=True)
add("unsqueeze_0", lambda x: x.unsqueeze(0), lambda x: x[None], F(2, 3), diff=True)
add("unsqueeze_-1", lambda x: gc.unsqueeze(x, -1), lambda x: x[..., None], F("B", 3), diff=True)
add(
    "permute",
    lambda x: x.permute(2, 0, 1),
    lambda x: np.transpose(x, (2, 0, 1)),
    F(2, 3, 4),
    diff=True,
)
add(
    "permute_tuple",
    lambda x: gc.permute(x, (1, 2, 0)),
    lambda x: np.transpose(x, (1, 2, 0)),
    F(2, 3, 4),
    diff=True,
)
add(
    "permute_symbolic",
    lambda x: x.permute(1, 2, 0),
    lambda x: np.transpose(x, (1, 2, 0)),
    F("B", 3, 2),
    diff=True,
)
add("permute_int", lambda x: x.permute(1, 0), lambda x: x.T, T(int64, 3, 4))
add("transpose", lambda x: x.transpose(0, 2), lambda x: np.swapaxes(x, 0, 2), F(2, 3, 4), diff=True)
add(
    "transpose_neg",
    lambda x: gc.transpose(x, -1, -2),
    lambda x: np.swapaxes(x, -1, -2),
    F(2, 3, 4),
    diff=True,
)
add("T", lambda x: x.T, lambda x: x.T, F(3, 4), diff=True)
add("T_3d", lambda x: x.T, lambda x: x.T, F(2, 3, 4), diff=True)
add("mT", lambda x: x.mT, lambda x: np.swapaxes(x, -1, -2), F(2, 3, 4), diff=True)
add(
    "broadcast_to",
    lambda x: x.broadcast_to((2, 3, 4)),
    lambda x: np.broadcast_to(x, (2, 3, 4)),
    F(3, 1),
    diff=True,
)
add(
    "broadcast_to_fn",
    lambda x: gc.broadcast_to(x, (3, 4)),
    lambda x: np.broadcast_to(x, (3, 4)),
    F(4),
    diff=True,
)
add(
    "broadcast_to_0d",
    lambda x: x.broadcast_to((2, 2)),
    lambda x: np.broadcast_to(x, (2, 2)),
    F(),
    diff=True,
)
add("expand", lambda x: x.expand(-1, 4), lambda x: np.broadcast_to(x, (3, 4)), F(3, 1), diff=True)
add(
    "expand_new_dims",
    lambda x: x.expand(2, 3, 4),
    lambda x: np.broadcast_to(x, (2, 3, 4)),
    F(1, 4),
    diff=True,
)
add(
    "expand_symbolic",
    lambda x: x.expand(-1, 3),
    lambda x: np.broadcast_to(x, (x.shape[0], 3)),
    F("B", 1),
    diff=True,
)
add(
    "broadcast_to_symbolic",
    lambda x, y: x.expand_as(y) + y,
    lambda x, y: np.broadcast_to(x, y.shape) + y,
    F(1, 3),
    F("B", 3),
    diff=True,
)
add("expand_bool", lambda x: x.expand(2, 3), lambda x: np.broadcast_to(x, (2, 3)), T(bool_, 3))


# == pad (a primitive without a Tensor method) =================================================
def _np_pad(x: np.ndarray, pads, value) -> np.ndarray:
    """Return x padded by (before, after) widths per dim, a negative width cropping first."""
    kept = tuple(
        slice(max(-lo, 0), n - max(-hi, 0)) for n, (lo, hi) in zip(x.shape, pads, strict=True)
    )
    return np.pad(x[kept], [(max(lo, 0), max(hi, 0)) for lo, hi in pads], constant_values=value)


for _pid, _shape, _pads, _value in (
    ("2d", (2, 3), ((1, 2), (0, 1)), 0.0),
    ("value", (2, 3), ((0, 0), (2, 1)), -1.5),
    ("3d", (2, 2, 3), ((1, 0), (0, 0), (1, 1)), 0.0),
    ("symbolic", ("B", 3), ((0, 0), (2, 1)), 0.25),
    # Negative widths crop (torch.nn.functional.pad): mixed with padding, and cropping alone.
    ("crop_mixed", (3, 4), ((1, -2), (-1, 2)), 0.5),
    ("crop_only", (4, 5), ((-1, -2), (-2, -1)), 0.0),
    ("crop_to_empty_then_pad", (2, 3), ((1, -2), (0, 0)), 2.0),
    ("crop_symbolic_batch", ("B", 4), ((0, 0), (-3, 1)), 0.0),
):
    add(
        f"pad_{_pid}",
        lambda x, p=_pads, v=_value: _prim("pad", [x], pads=p, value=v),
        lambda x, p=_pads, v=_value: _np_pad(x, p, v),
        F(*_shape),
        diff=True,
    )
add(
    "pad_crop_symbolic_dim",
    lambda x: gc.pad(x, (1, -1, -1, 0)),
    lambda x: _np_pad(x, ((-1, 0), (1, -1)), 0.0),
    F("B", 3),
    diff=True,
)
add(
    "pad_int",
    lambda x: _prim("pad", [x], pads=((1, 1), (0, 2)), value=7),
    lambda x: np.pad(x, ((1, 1), (0, 2)), constant_values=7),
    T(int64, 2, 3),
)

# == slicing and integer-array indexing =======================================================
_SLICES = (
    # id, shape, index
    ("steps", (4, 5, 6), (slice(1, None), slice(None, None, 2))),
    ("int_and_steps", (4, 5, 6), (slice(None, None, 3), slice(1, 4, 2), -1)),
    ("ellipsis_none_int", (4, 5, 6), (Ellipsis, None, 0)),
    ("negative_int", (4, 5, 6), -1),
    ("mixed", (4, 5, 6), (slice(1, -1), None, slice(None, None, 4))),
    ("tail", (4, 5, 6), (slice(None), slice(-3, None))),
    ("clamped_stop", (4, 5), (slice(2, 100), slice(-100, 2))),
    ("empty", (4, 5, 6), slice(2, 2)),
    ("all_ints", (4, 5), (-2, 3)),
    ("list", (3, 5), (slice(None), [2, 0, 2])),
    ("list_negative", (4, 3), [1, -1, 0]),
    ("list_with_int", (3, 4, 5), (1, [3, -4])),
    ("list_after_slice_and_none", (3, 4, 5), (None, slice(1, 3), [0, -1])),
    ("list_numpy", (4, 3), np.array([3, 3, 0])),
    ("symbolic_steps", ("B", 4), (slice(1, None), slice(None, None, 2))),
    ("symbolic_head", ("B", 4), slice(None, -1)),
    ("symbolic_int", ("B", 4), (0, slice(1, 3))),
    ("symbolic_last", ("B", 4), -1),
    ("symbolic_list", ("B", 4), (slice(None), [3, 0])),
)
for _sid, _shape, _index in _SLICES:
    add(
        f"getitem_{_sid}",
        lambda x, i=_index: x[i],
        lambda x, i=_index: x[i],
        F(*_shape),
        diff=True,
    )
add("getitem_of_0d", lambda x: x[None, ...], lambda x: x[None, ...], F(), diff=True)
add(
    "getitem_index_tensor_0d",
    lambda x, i: x[:, i],
    lambda x, i: x[:, i],
    F(3, 4),
    I(low=-4, high=4),
    diff=True,
)
add("getitem_int_dtype", lambda x: x[1:, ::2], lambda x: x[1:, ::2], T(int64, 4, 5))
add("getitem_bool_dtype", lambda x: x[::2, [0, 2]], lambda x: x[::2, [0, 2]], T(bool_, 4, 3))
add(
    "getitem_index_tensor",
    lambda x, i: x[i],
    lambda x, i: x[i],
    F(4, 3),
    I(5, low=-4, high=4),
    diff=True,
)
add(
    "getitem_index_tensor_2d",
    lambda x, i: x[:, i],
    lambda x, i: x[:, i],
    F(3, 5),
    I(2, 2, low=0, high=5),
    diff=True,
)
add(
    "getitem_index_int32",
    lambda x, i: x[i, 1:],
    lambda x, i: x[i, 1:],
    F(4, 3),
    I(3, low=0, high=4, dtype=int32),
)
add(
    "getitem_index_symbolic",
    lambda x, i: x[i],
    lambda x, i: x[i],
    F(6, 2),
    I("B", low=0, high=6),
    diff=True,
)

# == gather and scatter_add (primitives) ======================================================
add(
    "gather_axis1",
    lambda x, i: _prim("gather", [x, i], axis=1),
    lambda x, i: np.take_along_axis(x, i, axis=1),
    F(3, 4),
    I(3, 2, low=0, high=4),
    diff=True,
)
add(
    "gather_axis0",
    lambda x, i: _prim("gather", [x, i], axis=0),
    lambda x, i: np.take_along_axis(x, i, axis=0),
    F(3, 4),
    I(5, 4, low=0, high=3),
    diff=True,
)
add(
    "gather_broadcast_index",
    lambda x, i: _prim("gather", [x, i], axis=1),
    lambda x, i: np.take_along_axis(x, np.broadcast_to(i, (3, 5)), axis=1),
    F(3, 4),
    I(1, 5, low=0, high=4),
    diff=True,
)
add(
    "gather_symbolic",
    lambda x, i: _prim("gather", [x, i], axis=1),
    lambda x, i: np.take_along_axis(x, i, axis=1),
    F("B", 4),
    I("B", 1, low=0, high=4),
    diff=True,
)
add(
    "gather_int",
    lambda x, i: _prim("gather", [x, i], axis=1),
    lambda x, i: np.take_along_axis(x, i, axis=1),
    T(int32, 3, 4),
    I(3, 6, low=0, high=4),
)
for _gid, _idx, _src, _shape, _axis in (
    ("axis1", I(3, 4, low=0, high=5), F(3, 4), (3, 5), 1),
    ("axis0", I(4, 3, low=0, high=2), F(4, 3), (2, 3), 0),
    ("broadcast_index", I(1, 4, low=0, high=5), F(3, 4), (3, 5), 1),
    ("symbolic", I("B", 2, low=0, high=3), F("B", 2), ("B", 3), 1),
):
    add(
        f"scatter_add_{_gid}",
        # "B" in the output shape is the source's batch dim (symbolic, or concrete when a
        # gradient checker feeds concrete shapes).
        lambda i, s, sh=_shape, a=_axis: _prim(
            "scatter_add", [i, s], shape=tuple(s.shape[0] if d == "B" else d for d in sh), axis=a
        ),
        lambda i, s, a=_axis, sh=_shape: _scatter_add_loops(
            i, s, tuple(s.shape[0] if d == "B" else d for d in sh), a
        ),
        _idx,
        _src,
        diff=True,
    )
add(
    "scatter_add_int",
    lambda i, s: _prim("scatter_add", [i, s], shape=(2, 4), axis=1),
    lambda i, s: _scatter_add_loops(i, s, (2, 4), 1),
    I(2, 6, low=0, high=4),
    T(int64, 2, 6),
)

# == cat / stack / split / chunk ==============================================================
add(
    "cat_dim0",
    lambda a, b: gc.cat([a, b]),
    lambda a, b: np.concatenate([a, b]),
    F(2, 3),
    F(4, 3),
    diff=True,
)
add(
    "cat_dim-1_three",
    lambda a, b, c: gc.cat([a, b, c], dim=-1),
    lambda a, b, c: np.concatenate([a, b, c], axis=-1),
    F(2, 1),
    F(2, 3),
    F(2, 2),
    diff=True,
)
add(
    "cat_symbolic",
    lambda a, b: gc.cat([a, b], dim=1),
    lambda a, b: np.concatenate([a, b], axis=1),
    F("B", 2),
    F("B", 3),
    diff=True,
)
add(
    "cat_symbolic_dim",
    lambda a, b: gc.cat([a, b], dim=0),
    lambda a, b: np.concatenate([a, b], axis=0),
    F("B", 2),
    F(3, 2),
    diff=True,
)
add(
    "cat_promotes",
    lambda a, b: gc.cat([a, b], dim=0),
    lambda a, b: np.concatenate([a.astype(np.float32), b]),
    T(int32, 2, 2),
    T(float32, 1, 2),
)
add(
    "cat_with_empty",
    lambda a, b: gc.cat([a, b[:0], a]),
    lambda a, b: np.concatenate([a, b[:0], a]),
    F(2, 3),
    F(4, 3),
    diff=True,
)
add(
    "cat_bool",
    lambda a, b: gc.cat([a, b], 1),
    lambda a, b: np.concatenate([a, b], 1),
    T(bool_, 2, 2),
    T(bool_, 2, 1),
)
add(
    "stack_dim0",
    lambda a, b, c: gc.stack([a, b, c]),
    lambda a, b, c: np.stack([a, b, c]),
    F(3, 2),
    F(3, 2),
    F(3, 2),
    diff=True,
)
add(
    "stack_dim-1",
    lambda a, b: gc.stack([a, b], dim=-1),
    lambda a, b: np.stack([a, b], axis=-1),
    F(3, 2),
    F(3, 2),
    diff=True,
)
add(
    "stack_symbolic",
    lambda a, b: gc.stack([a, b], dim=1),
    lambda a, b: np.stack([a, b], axis=1),
    F("B", 2),
    F("B", 2),
    diff=True,
)
add("split_size", lambda x: x.split(2), lambda x: tuple(np.split(x, [2, 4])), F(5, 3))
add(
    "split_sections",
    lambda x: gc.split(x, [1, 4], dim=1),
    lambda x: tuple(np.split(x, [1], axis=1)),
    F(2, 5),
)
add(
    "split_symbolic",
    lambda x: x.split([1, 3], dim=-1),
    lambda x: tuple(np.split(x, [1], axis=-1)),
    F("B", 4),
)
add("split_middle", lambda x: x.split(2, dim=1)[1], lambda x: x[:, 2:4], F(3, 5), diff=True)
add(
    "chunk_uneven",
    lambda x: x.chunk(3, dim=1),
    lambda x: tuple(np.split(x, [3, 6], axis=1)),
    F(2, 7),
)
add("chunk_even", lambda x: gc.chunk(x, 2), lambda x: tuple(np.split(x, 2)), F(4, 3))
add("chunk_last", lambda x: x.chunk(3, dim=1)[2], lambda x: x[:, 6:], F(2, 7), diff=True)
add("split_int", lambda x: x.split(1), lambda x: tuple(np.split(x, 3)), T(int64, 3, 2))

# == matmul (numpy's semantics) ===============================================================
_MATMUL = (
    ("1dx1d", (4,), (4,)),
    ("1dx2d", (4,), (4, 3)),
    ("2dx1d", (3, 4), (4,)),
    ("2dx2d", (3, 4), (4, 5)),
    ("batched", (2, 3, 4), (2, 4, 5)),
    ("batched_x_2d", (2, 3, 4), (4, 5)),
    ("2d_x_batched", (3, 4), (2, 4, 5)),
    ("broadcast_batch", (2, 1, 3, 4), (5, 4, 2)),
    ("batched_x_1d", (2, 3, 4), (4,)),
    ("1d_x_batched", (4,), (2, 4, 3)),
    ("symbolic_batch", ("B", 3, 4), (4, 5)),
    ("symbolic_both", ("B", 3, 4), ("B", 4, 2)),
    ("symbolic_rows", ("B", 4), (4, 2)),
    ("symbolic_contraction", (3, "B"), ("B", 2)),
    ("1d_x_symbolic", (4,), ("B", 4, 3)),
)
for _mid, _sa, _sb in _MATMUL:
    add(f"matmul_{_mid}", operator.matmul, np.matmul, F(*_sa), F(*_sb), diff=True)
add("matmul_fn", gc.matmul, np.matmul, F(2, 3), F(3, 2), diff=True)
add("matmul_method", lambda a, b: a.matmul(b), np.matmul, F(2, 3), F(3), diff=True)
add("matmul_int64", operator.matmul, np.matmul, T(int64, 2, 3), T(int64, 3, 4))
add("matmul_int32_1d", operator.matmul, np.matmul, T(int32, 3), T(int32, 3, 2))

# == conv2d and its gradient ops ==============================================================
_CONV = (
    # id, x shape, weight shape, stride, padding, dilation, groups
    ("basic", (2, 3, 6, 6), (4, 3, 3, 3), 1, 0, 1, 1),
    ("stride2_pad1", (2, 2, 7, 7), (3, 2, 3, 3), 2, 1, 1, 1),
    ("dilation2", (1, 2, 7, 8), (2, 2, 3, 3), 1, (2, 1), 2, 1),
    ("stride21_dilation12", (1, 2, 7, 7), (3, 2, 2, 3), (2, 1), (1, 0), (1, 2), 1),
    ("groups2", (2, 4, 5, 5), (6, 2, 3, 3), 1, 1, 1, 2),
    ("depthwise", (1, 3, 5, 5), (3, 1, 3, 3), 2, 1, 1, 3),
    ("kernel1x2", (2, 3, 4, 5), (2, 3, 1, 2), 1, 0, 1, 1),
    (
        "unused_rows",
        (1, 2, 6, 6),
        (2, 2, 3, 3),
        2,
        0,
        1,
        1,
    ),  # the last row and column feed no output
    ("symbolic_batch", ("B", 2, 5, 5), (3, 2, 3, 3), 1, 1, 1, 1),
)


def _conv_attrs(stride, padding, dilation, groups) -> dict[str, Any]:
    return {
        "stride": _pairs(stride),
        "padding": _pairs(padding),
        "dilation": _pairs(dilation),
        "groups": groups,
    }


def _conv_out_shape(x_shape, w_shape, attrs) -> tuple:
    h, w = x_shape[2:]
    kh, kw = w_shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    return (x_shape[0], w_shape[0], _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw))


def _torch_conv(attrs):
    def conv(x, w):
        torch = _torch()
        return torch.nn.functional.conv2d(
            x, w, None, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
        )

    return conv


for _cid, _xs, _ws, _s, _p, _d, _g in _CONV:
    _attrs = _conv_attrs(_s, _p, _d, _g)
    _ys = _conv_out_shape(_xs, _ws, _attrs)
    add(
        f"conv2d_{_cid}",
        lambda x, w, a=_attrs: _prim("conv2d", [x, w], **a),
        lambda x, w, a=_attrs: _conv2d_loops(
            x, w, a["stride"], a["padding"], a["dilation"], a["groups"]
        ),
        F(*_xs),
        F(*_ws),
        diff=True,
        tol=10,
    )
    add(
        f"conv2d_input_grad_{_cid}",
        lambda gy, w, a=_attrs, hw=_xs[2:]: _prim("conv2d_input_grad", [gy, w], **a, input_hw=hw),
        lambda gy, w, a=_attrs, xs=_xs: _torch_grad(
            _torch_conv(a), [np.zeros((gy.shape[0], *xs[1:]), gy.dtype), w], 0, gy
        ),
        F(*_ys),
        F(*_ws),
        diff=True,
        tol=10,
    )
    add(
        f"conv2d_weight_grad_{_cid}",
        lambda x, gy, a=_attrs, k=_ws[2:]: _prim("conv2d_weight_grad", [x, gy], **a, kernel=k),
        lambda x, gy, a=_attrs, ws=_ws: _torch_grad(
            _torch_conv(a), [x, np.zeros(ws, x.dtype)], 1, gy
        ),
        F(*_xs),
        F(*_ys),
        diff=True,
        tol=10,
    )


# im2col and col2im, the movement of the convolutions' GEMM form: torch's unfold and fold.
def _torch_unfold(attrs):
    def unfold(x):
        torch = _torch()
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            attrs[k] for k in ("kernel", "stride", "padding", "dilation")
        )
        cols = torch.nn.functional.unfold(
            torch.from_numpy(x), (kh, kw), (dh, dw), (ph, pw), (sh, sw)
        )
        out_hw = (_out_size(x.shape[2], kh, sh, ph, dh), _out_size(x.shape[3], kw, sw, pw, dw))
        windows = cols.reshape(*x.shape[:2], kh, kw, *out_hw)
        return windows.permute(1, 2, 3, 0, 4, 5).contiguous().numpy()

    return unfold


def _torch_fold(attrs, hw):
    def fold(cols):
        torch = _torch()
        c, kh, kw, n = cols.shape[:4]
        windows = torch.from_numpy(cols).permute(3, 0, 1, 2, 4, 5)
        return torch.nn.functional.fold(
            windows.reshape(n, c * kh * kw, -1),
            hw,
            (kh, kw),
            attrs["dilation"],
            attrs["padding"],
            attrs["stride"],
        ).numpy()

    return fold


for _cid, _xs, _ws, _s, _p, _d, _g in _CONV:
    _attrs = {
        "kernel": _ws[2:],
        "stride": _pairs(_s),
        "padding": _pairs(_p),
        "dilation": _pairs(_d),
    }
    _ys = _conv_out_shape(_xs, _ws, _attrs)
    add(
        f"im2col_{_cid}",
        lambda x, a=_attrs: _prim("im2col", [x], **a),
        _torch_unfold(_attrs),
        F(*_xs),
        diff=True,
    )
    add(
        f"col2im_{_cid}",
        lambda cols, a=_attrs, hw=_xs[2:]: _prim("col2im", [cols], **a, output_hw=hw),
        _torch_fold(_attrs, _xs[2:]),
        F(_xs[1], *_ws[2:], _xs[0], *_ys[2:]),
        diff=True,
    )


def _flat_windows(kernel, dilation, rows):
    """Return numpy's flat_im2col: every tap's run gathered by one fancy index."""

    def windows(x):
        n, c, hp, wp = x.shape
        (kh, kw), (dh, dw) = kernel, dilation
        starts = np.arange(kh)[:, None] * dh * wp + np.arange(kw)[None, :] * dw
        positions = starts[:, :, None] + np.arange(rows * wp)
        return x.reshape(n, c, hp * wp)[:, :, positions].transpose(1, 2, 3, 0, 4)

    return windows


_FLAT_WINDOWS = (
    # id, padded input shape, kernel, dilation, rows
    ("3x3", (2, 3, 7, 6), (3, 3), (1, 1), 4),
    ("dilated", (1, 2, 9, 7), (2, 3), (2, 2), 5),
    ("1x2", (2, 1, 3, 5), (1, 2), (1, 1), 2),
)
for _fid, _xs, _k, _d, _rows in _FLAT_WINDOWS:
    add(
        f"flat_im2col_{_fid}",
        lambda x, k=_k, d=_d, r=_rows: _prim("flat_im2col", [x], kernel=k, dilation=d, rows=r),
        _flat_windows(_k, _d, _rows),
        F(*_xs),
    )


def _window_product(kernel, dilation, rows, columns):
    """Return numpy's window_matmul: the taps of every pixel (oh, ow) with ow < columns
    gathered by one fancy index (in (i, j, c) order), times the weight matrix."""

    def product(x, w):
        n, hp, wp, c = x.shape
        (kh, kw), (dh, _) = kernel, dilation
        starts = np.arange(kh)[:, None] * dh * wp + np.arange(kw)[None, :]
        pixels = (np.arange(rows)[:, None] * wp + np.arange(columns)).reshape(-1)
        taps = x.reshape(n, hp * wp, c)[:, pixels[:, None, None] + starts]  # (N, P, kH, kW, C)
        return taps.reshape(n, rows * columns, kh * kw * c) @ w

    return product


_WINDOW_PRODUCTS = (
    # id, padded image shape (N, Hp, Wp, C), kernel, dilation, rows, columns, output channels
    ("3x3", (2, 7, 6, 3), (3, 3), (1, 1), 4, 6, 5),
    ("dilated", ("B", 9, 7, 2), (2, 3), (2, 1), 5, 7, 4),
    ("1x2", (2, 3, 5, 1), (1, 2), (1, 1), 2, 5, 3),
    # Fewer columns than the padded width: each output row's windows are a run of the GEMM's
    # rows (at least ROW_RUN_LEAST of them).
    ("row_runs", (2, 6, 15, 3), (3, 3), (1, 1), 3, 13, 5),
    ("row_runs_1ch", ("B", 8, 14, 1), (3, 3), (1, 1), 5, 12, 16),
)
for _wid, _xs, _k, _d, _rows, _columns, _o in _WINDOW_PRODUCTS:
    add(
        f"window_matmul_{_wid}",
        lambda x, w, k=_k, d=_d, r=_rows, c=_columns: _prim(
            "window_matmul", [x, w], kernel=k, dilation=d, rows=r, columns=c
        ),
        _window_product(_k, _d, _rows, _columns),
        F(*_xs),
        F(_k[0] * _k[1] * _xs[3], _o),
    )


# == pooling and its gradient ops =============================================================
_POOL = (
    # id, x shape, kernel, stride, padding, dilation, ceil_mode
    ("k2s2", (2, 3, 6, 6), 2, 2, 0, 1, False),
    ("k3s2p1", (1, 2, 7, 7), 3, 2, 1, 1, False),
    ("k2x3_s1x2", (2, 2, 5, 7), (2, 3), (1, 2), 0, 1, False),
    ("k3s1p1", (1, 2, 4, 5), 3, 1, 1, 1, False),
    ("symbolic_batch", ("B", 2, 4, 4), 2, 2, 0, 1, False),
    # ceil_mode keeps a partial last window (3x4 windows, not 2x3) ...
    ("k2s2_ceil", (1, 2, 5, 7), 2, 2, 0, 1, True),
    # ... but drops one that would start in the right padding (3 rows, not 4).
    ("k2s2p1_ceil_dropped", (1, 2, 5, 6), 2, 2, 1, 1, True),
    # The last windows hang past the padding: avg_pool2d's divisor counts 2 of their 3 rows.
    ("k3s2p1_ceil", (2, 2, 6, 8), 3, 2, 1, 1, True),
    ("symbolic_batch_ceil", ("B", 2, 6, 6), 3, 2, 0, 1, True),
    # Dilated windows (max_pool2d only), alone and with ceil_mode.
    ("k3s1p1_d2", (1, 2, 7, 6), 3, 1, 1, 2, False),
    ("k2x3_s2x1_p1x0_d3x2_ceil", (1, 2, 9, 9), (2, 3), (2, 1), (1, 0), (3, 2), True),
)


def _pool_out_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    """Return PyTorch's pooled length: ceil_mode rounds up, but drops a last window that would
    start past the input and its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1 if ceil_mode else span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_out_shape(x_shape, attrs) -> tuple:
    dilation, ceil_mode = attrs.get("dilation", (1, 1)), attrs["ceil_mode"]
    sizes = zip(
        x_shape[2:], attrs["kernel"], attrs["stride"], attrs["padding"], dilation, strict=True
    )
    return (*x_shape[:2], *(_pool_out_size(*dims, ceil_mode) for dims in sizes))


def _torch_max_pool(attrs):
    def pool(x):
        torch = _torch()
        return torch.nn.functional.max_pool2d(
            x,
            attrs["kernel"],
            attrs["stride"],
            attrs["padding"],
            attrs["dilation"],
            attrs["ceil_mode"],
        )

    return pool


def _torch_pool_indices(x, attrs):
    """Return PyTorch's max-pooling indices of x: each window's maximum as a flat position
    in its (H, W) image."""
    torch = _torch()
    _, where = torch.nn.functional.max_pool2d(
        torch.from_numpy(x),
        attrs["kernel"],
        attrs["stride"],
        attrs["padding"],
        attrs["dilation"],
        attrs["ceil_mode"],
        return_indices=True,
    )
    return where


def _torch_max_pool_select(x, values, attrs):
    """Return, per window, values at the position of x's maximum (PyTorch's pooling indices)."""
    torch = _torch()
    where = _torch_pool_indices(x, attrs)
    picked = torch.from_numpy(values).flatten(2).gather(2, where.flatten(2))
    return picked.reshape(where.shape).numpy()


def _window_positions(first_max, attrs, hw):
    """Return per window the input (row, col) of tap first_max (i * kW + j) and whether that
    position lies inside the (H, W) = hw input rather than in the padding."""
    kw = attrs["kernel"][1]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    out_rows = np.arange(first_max.shape[2])[:, None]
    out_cols = np.arange(first_max.shape[3])[None, :]
    rows = out_rows * sh - ph + first_max // kw * dh
    cols = out_cols * sw - pw + first_max % kw * dw
    inside = (rows >= 0) & (rows < hw[0]) & (cols >= 0) & (cols < hw[1])
    return rows, cols, inside


def _torch_max_pool_argmax(x, attrs):
    """Return each window's first maximum as a tap i * kW + j, from PyTorch's indices."""
    rows, cols = np.divmod(_torch_pool_indices(x, attrs).numpy(), x.shape[3])
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    i = (rows - np.arange(rows.shape[2])[:, None] * sh + ph) // dh
    j = (cols - np.arange(cols.shape[3])[None, :] * sw + pw) // dw
    return (i * attrs["kernel"][1] + j).astype(np.int32)


def _routed(first_max, gy, attrs, hw):
    """Return the (N, C, *hw) image with each window's gy added at its chosen tap."""
    rows, cols, inside = _window_positions(first_max, attrs, hw)
    n, c = np.indices(first_max.shape)[:2]
    out = np.zeros((*gy.shape[:2], *hw), gy.dtype)
    np.add.at(out, (n[inside], c[inside], rows[inside], cols[inside]), gy[inside])
    return out


def _picked(first_max, values, attrs):
    """Return values at each window's chosen tap, 0 for a tap in the padding."""
    rows, cols, inside = _window_positions(first_max, attrs, values.shape[2:])
    n, c = np.indices(first_max.shape)[:2]
    rows, cols = (
        np.clip(a, 0, size - 1) for a, size in zip((rows, cols), values.shape[2:], strict=True)
    )
    return np.where(inside, values[n, c, rows, cols], 0).astype(values.dtype)


def _torch_avg_pool(attrs):
    def pool(x):
        torch = _torch()
        return torch.nn.functional.avg_pool2d(
            x,
            attrs["kernel"],
            attrs["stride"],
            attrs["padding"],
            ceil_mode=attrs["ceil_mode"],
            count_include_pad=attrs["count_include_pad"],
            divisor_override=attrs.get("divisor_override"),
        )

    return pool


def _torch_forward(forward):
    def ref(x):
        torch = _torch()
        return forward(torch.from_numpy(x)).numpy()

    return ref


for _pid, _xs, _k, _s, _p, _d, _ceil in _POOL:
    _attrs = {
        "kernel": _pairs(_k),
        "stride": _pairs(_s),
        "padding": _pairs(_p),
        "dilation": _pairs(_d),
        "ceil_mode": _ceil,
    }
    _ys = _pool_out_shape(_xs, _attrs)
    add(
        f"max_pool2d_{_pid}",
        lambda x, a=_attrs: _prim("max_pool2d", [x], **a),
        _torch_forward(_torch_max_pool(_attrs)),
        F(*_xs),
        diff=True,
    )
    add(
        f"max_pool2d_grad_{_pid}",
        lambda x, gy, a=_attrs: _prim("max_pool2d_grad", [x, gy], **a),
        lambda x, gy, a=_attrs: _torch_grad(_torch_max_pool(a), [x], 0, gy),
        F(*_xs),
        F(*_ys),
        diff=True,
    )
    add(
        f"max_pool2d_select_{_pid}",
        lambda x, v, a=_attrs: _prim("max_pool2d_select", [x, v], **a),
        lambda x, v, a=_attrs: _torch_max_pool_select(x, v, a),
        F(*_xs),
        F(*_xs),
        diff=True,
    )
    # What the pool_argmax tier splits an overlapping max_pool2d_grad into.
    _taps = _pairs(_k)[0] * _pairs(_k)[1]
    add(
        f"max_pool2d_argmax_{_pid}",
        lambda x, a=_attrs: _prim("max_pool2d_argmax", [x], **a),
        lambda x, a=_attrs: _torch_max_pool_argmax(x, a),
        F(*_xs),
    )
    add(
        f"max_pool2d_routed_{_pid}",
        lambda t, gy, a=_attrs, hw=_xs[2:]: _prim("max_pool2d_routed", [t, gy], **a, input_hw=hw),
        lambda t, gy, a=_attrs, hw=_xs[2:]: _routed(t, gy, a, hw),
        I(*_ys, low=0, high=_taps, dtype=int32),
        F(*_ys),
        diff=True,
    )
    add(
        f"max_pool2d_pick_{_pid}",
        lambda t, v, a=_attrs: _prim("max_pool2d_pick", [t, v], **a),
        lambda t, v, a=_attrs: _picked(t, v, a),
        I(*_ys, low=0, high=_taps, dtype=int32),
        F(*_xs),
        diff=True,
    )
    if _pairs(_d) != (1, 1):
        continue  # avg_pool2d has no dilation
    _variants = [("", {"count_include_pad": True})]
    if _p != 0:
        _variants.append(("_exclude_pad", {"count_include_pad": False}))
    if _ceil:  # each window's sum over a fixed divisor, partial windows included
        _variants.append(("_divisor5", {"count_include_pad": True, "divisor_override": 5}))
    for _suffix, _options in _variants:
        _avg = {**{k: v for k, v in _attrs.items() if k != "dilation"}, **_options}
        add(
            f"avg_pool2d_{_pid}{_suffix}",
            lambda x, a=_avg: _prim("avg_pool2d", [x], **a),
            _torch_forward(_torch_avg_pool(_avg)),
            F(*_xs),
            diff=True,
        )
        add(
            f"avg_pool2d_grad_{_pid}{_suffix}",
            lambda gy, a=_avg, hw=_xs[2:]: _prim("avg_pool2d_grad", [gy], **a, input_hw=hw),
            lambda gy, a=_avg, xs=_xs: _torch_grad(
                _torch_avg_pool(a), [np.zeros((gy.shape[0], *xs[1:]), gy.dtype)], 0, gy
            ),
            F(*_ys),
            diff=True,
        )


# == the table ================================================================================
OP_TABLE: tuple[OpCase, ...] = tuple(TABLE)
_ids = [case.id for case in OP_TABLE]
assert len(set(_ids)) == len(_ids), sorted(i for i in _ids if _ids.count(i) > 1)


def differentiable_cases(dtype: DType = float64) -> tuple[OpCase, ...]:
    """Return the differentiable entries whose float inputs are in dtype (float64 by default)."""
    return tuple(c for c in OP_TABLE if c.differentiable and c.float_dtype == dtype)


def find(case_id: str) -> OpCase:
    """Return the entry with this id (name-dtype, e.g. 'add(3,1)x(1,4)-f64')."""
    for case in OP_TABLE:
        if case.id == case_id:
            return case
    raise KeyError(case_id)
