"""Source ops: constants, fed inputs, persistent variables, and symbolic sizes as values."""

from __future__ import annotations

import numpy as np

from graphc.dims import evaluate_dim
from graphc.dtypes import as_dtype, from_numpy
from graphc.ops.registry import define_op
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
