"""Reductions: sum, max, min, prod over a tuple of axes, and argmax/argmin over one axis."""

from __future__ import annotations

import numpy as np

from graphc.dims import format_shape
from graphc.dtypes import int64
from graphc.errors import ShapeError
from graphc.ops.registry import define_op
from graphc.ops.shape_rules import require_dtype
from graphc.types import TensorType

REDUCTIONS = {
    "reduce_sum": np.sum,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
}


def reduced_shape(shape, axes, keepdims):
    """Return the shape after reducing axes (already normalised)."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _check_axes(x: TensorType, axes) -> None:
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated dim in {axes} for shape {format_shape(x.shape)}")
    for axis in axes:
        if not 0 <= axis < max(x.ndim, 1) or (x.ndim == 0 and axes):
            raise ShapeError(f"dim {axis} is out of range for shape {format_shape(x.shape)}")


def _reduce_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float,int", "the input")
    axes = attrs["axes"]
    _check_axes(x, axes)
    return TensorType(reduced_shape(x.shape, axes, attrs["keepdims"]), x.dtype)


def _reduce_reference(fn):
    def reference(args, attrs, env):
        return fn(args[0], axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"])

    return reference


for _name, _fn in REDUCTIONS.items():
    define_op(_name, "reduce", _reduce_infer, _reduce_reference(_fn))


def _arg_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float,int", "the input")
    axis = attrs["axis"]
    _check_axes(x, (axis,))
    if isinstance(x.shape[axis], int) and x.shape[axis] == 0:
        raise ShapeError(f"cannot take the arg-extremum of an empty dim {axis}")
    return TensorType(reduced_shape(x.shape, (axis,), attrs["keepdims"]), int64)


def _arg_reference(fn):
    def reference(args, attrs, env):
        # numpy and PyTorch both return the first index of the extremum (NaN counts as largest).
        return fn(args[0], axis=attrs["axis"], keepdims=attrs["keepdims"])

    return reference


define_op("argmax", "reduce", _arg_infer, _arg_reference(np.argmax), differentiable=False)
define_op("argmin", "reduce", _arg_infer, _arg_reference(np.argmin), differentiable=False)
