"""Source ops: constants, fed inputs, persistent variables, symbolic sizes as values, and
ranges whose bounds may be symbolic."""

from __future__ import annotations

import numpy as np

from graphc.dims import Sym, dim_add, dim_mul, evaluate_dim
from graphc.dtypes import as_dtype, from_numpy
from graphc.errors import DTypeError, IndexingError, ShapeError, located
from graphc.graph import Node
from graphc.ops.registry import define_op
from graphc.ops.shape_rules import bindings_text
from graphc.types import TensorType


def _constant_infer(types, attrs):
    value: np.ndarray = attrs["value"]
    return TensorType(tuple(int(d) for d in value.shape), from_numpy(value.dtype))


def _constant_fusion(node) -> str:
    # A scalar is a literal in the code that reads it; a larger array is a buffer.
    return "inline" if node.attrs["value"].size == 1 else "buffer"


define_op(
    "constant",
    "source",
    _constant_infer,
    lambda args, attrs, env: attrs["value"],
    differentiable=False,
    fusion=_constant_fusion,
)


def _declared_infer(types, attrs):
    return TensorType(tuple(attrs["shape"]), as_dtype(attrs["dtype"]))


def _fed_only(args, attrs, env):
    raise RuntimeError("inputs are fed by the caller, never computed")


define_op("input", "source", _declared_infer, _fed_only, differentiable=False)


def _variable_infer(types, attrs):
    storage = attrs["storage"]
    return TensorType(storage.shape, storage.dtype)


define_op(
    "variable",
    "source",
    _variable_infer,
    lambda args, attrs, env: attrs["storage"].value,
    differentiable=False,
)


def _dim_size_infer(types, attrs):
    return TensorType((), as_dtype(attrs["dtype"]))


define_op(
    "dim_size",
    "source",
    _dim_size_infer,
    lambda args, attrs, env: np.asarray(
        evaluate_dim(attrs["dim"], env), dtype=as_dtype(attrs["dtype"]).numpy
    ),
    differentiable=False,
    fusion="inline",  # computed from the call's sizes where it is read
)


# arange: start + step * i for i in [0, size), where start and size may be symbolic dims (a
# range over a sequence length). A static range is a constant instead; the Tensor API builds
# this op only when a bound is symbolic.
def _arange_infer(types, attrs):
    dtype = as_dtype(attrs["dtype"])
    if dtype.is_bool:
        raise DTypeError("arange gives numbers; bool is not a dtype it makes")
    if not isinstance(attrs["step"], int) or attrs["step"] == 0:
        raise ShapeError(f"arange needs a nonzero int step, got {attrs['step']!r}")
    return TensorType((attrs["size"],), dtype)


def _arange_reference(args, attrs, env):
    start = evaluate_dim(attrs["start"], env)
    count = evaluate_dim(attrs["size"], env)
    values = start + attrs["step"] * np.arange(count, dtype=np.int64)
    return values.astype(as_dtype(attrs["dtype"]).numpy)


def _arange_call_check(node: Node):
    """Return the per-call check that a range whose length may be negative is not: a symbol
    size is never negative, so neither is a sum of products of symbols with positive
    coefficients (T, B*T+1)."""
    size = node.attrs["size"]
    if not isinstance(size, Sym) or all(coeff > 0 for _, coeff in size.terms):
        return None

    def check(bindings):
        count = evaluate_dim(size, bindings)
        if count < 0:
            start, step = node.attrs["start"], node.attrs["step"]
            end = dim_add(start, dim_mul(size, step))
            raise IndexingError(
                located(
                    f"arange({start}, {end}, {step}) has {size} = {count} elements with "
                    f"{bindings_text(bindings)}: its end is on the wrong side of its start",
                    node.location,
                )
            )

    return check


define_op(
    "arange",
    "source",
    _arange_infer,
    _arange_reference,
    differentiable=False,
    fusion="inline",  # index arithmetic, computed where it is read
    call_check=_arange_call_check,
)
