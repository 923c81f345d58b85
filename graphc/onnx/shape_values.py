"""Values computed while the graph is built: constants, shapes and the integer arithmetic on them.

Exporters compute the target of a Reshape or an Expand from `Shape(x)`: gather a dim, multiply,
concatenate with constants. graphc needs those sizes when it builds the node, so a node whose
inputs are all known integers (or symbolic dims, kept as graphc dims in object arrays) is
evaluated here rather than turned into graph ops, and a `batch` dim stays the symbol `batch`.
Floating-point values are never computed here: they become graph ops like any data.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

import graphc as gc
from graphc.dims import Dim, dim_add, dim_div, dim_mul, dim_prod, dims_equal
from graphc.onnx.common import dtype_of
from graphc.onnx.nodes import OLDEST_OPSET, Known, NodeContext, Value

Fold = Callable[[NodeContext, list[np.ndarray]], np.ndarray]
FOLDS: dict[str, Fold] = {}


def _folds(*op_types: str) -> Callable[[Fold], Fold]:
    def register(function: Fold) -> Fold:
        """Record function as the fold of every op type named."""
        for op_type in op_types:
            FOLDS[op_type] = function
        return function

    return register


def known(array: np.ndarray, dtype: gc.DType) -> Known:
    """Return a Known value, with plain integers where no entry is symbolic any more."""
    array = np.asarray(array)
    if array.dtype == object and all(isinstance(v, (int, np.integer)) for v in array.flat):
        array = array.astype(dtype.numpy)
    return Known(array, dtype)


def fold(node: NodeContext) -> list[Value] | None:
    """Return the node's outputs computed now, or None where it becomes graph ops."""
    if node.op == "Constant":
        return [_constant(node)]
    if node.op in ("Shape", "Size"):
        source = node.stored(0)  # an initializer's shape does not make it a Variable
        shape = source.shape if isinstance(source, gc.Tensor) else source.array.shape
        return [known(_shape_of(node, tuple(shape)), gc.int64)]
    given = [node.stored(i) for i in range(len(node)) if node.has(i)]
    inputs = [v for v in given if isinstance(v, Known)]
    if node.op not in FOLDS or len(inputs) != len(given):
        return None
    if any(v.dtype.is_float for v in inputs):
        return None
    dtype = _result_dtype(node, inputs)
    if dtype.is_float:
        return None
    arrays = [node.static(i, "a folded input") if node.has(i) else None for i in range(len(node))]
    return [known(FOLDS[node.op](node, arrays), dtype)]  # type: ignore[arg-type]


def _result_dtype(node: NodeContext, inputs: list[Known]) -> gc.DType:
    """Return the element type of the node's output, from its inputs' and attributes."""
    if node.op == "Cast":
        return dtype_of(node.attr("to"), f"Cast node {node.name!r}")
    if node.op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or"):
        return gc.bool_
    if node.op == "ConstantOfShape":
        value = node.attr("value")
        return gc.float32 if value is None else dtype_of(_elem_type(value), "ConstantOfShape")
    if node.op == "Where":
        return inputs[1].dtype
    return inputs[0].dtype


def _elem_type(array: np.ndarray) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


# Later versions of these only add attributes and element types: the folds read them all.
OLDEST_OPSET.update(Constant=1, Shape=1, Size=1)


def _constant(node: NodeContext) -> Known:
    given = [
        (name, node.attr(name))
        for name in (
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "sparse_value",
            "value_string",
            "value_strings",
        )
        if node.attr(name) is not None
    ]
    if len(given) != 1:
        raise node.error("needs exactly one value attribute")
    name, value = given[0]
    if name in ("sparse_value", "value_string", "value_strings"):
        raise node.unsupported(name, "...", "graphc has no sparse or string tensors")
    if name in ("value_float", "value_floats"):
        return Known(np.asarray(value, np.float32), gc.float32)
    if name in ("value_int", "value_ints"):
        return Known(np.asarray(value, np.int64), gc.int64)
    dtype = dtype_of(_elem_type(value), f"Constant node {node.name!r}")
    return Known(np.asarray(value), dtype)


def _shape_of(node: NodeContext, shape: tuple[Dim, ...]) -> np.ndarray:
    if node.op == "Size":
        return np.asarray(dim_prod(shape), dtype=object)
    start, end = node.attr("start", 0), node.attr("end", None)
    dims = shape[start:end] if end is not None else shape[start:]
    array = np.empty(len(dims), dtype=object)
    array[:] = dims
    return array


def _elementwise(function: Callable[[Dim, Dim], Dim]) -> Fold:
    ufunc = np.frompyfunc(function, 2, 1)
    return lambda node, arrays: ufunc(arrays[0].astype(object), arrays[1].astype(object))


def _truncating_div(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    return dim_div(a, b)


def _equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if dims_equal(a, b):
        return True
    raise gc.errors.ShapeError(f"cannot decide whether {a} == {b} for every size of the symbols")


FOLDS["Add"] = _elementwise(dim_add)
FOLDS["Sub"] = _elementwise(lambda a, b: dim_add(a, dim_mul(b, -1)))
FOLDS["Mul"] = _elementwise(dim_mul)
FOLDS["Div"] = _elementwise(_truncating_div)
FOLDS["Equal"] = _elementwise(_equal)


@_folds("Mod")
def _mod(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    a, b = (np.asarray(x) for x in arrays[:2])
    if a.dtype == object or b.dtype == object:
        raise node.error("the remainder of a symbolic dim is not supported")
    return np.fmod(a, b) if node.attr("fmod", 0) else np.mod(a, b)


def _comparison(compare: Callable[[Any, Any], Any]) -> Fold:
    return lambda node, arrays: compare(arrays[0], arrays[1])


FOLDS["Less"] = _comparison(operator.lt)
FOLDS["Greater"] = _comparison(operator.gt)
FOLDS["LessOrEqual"] = _comparison(operator.le)
FOLDS["GreaterOrEqual"] = _comparison(operator.ge)
FOLDS["And"] = _comparison(operator.and_)
FOLDS["Or"] = _comparison(operator.or_)


@_folds("Max", "Min")
def _extremum(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    reduce = np.maximum if node.op == "Max" else np.minimum
    result = arrays[0]
    for array in arrays[1:]:
        result = reduce(result, array)
    return result


@_folds("Neg")
def _neg(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    return _elementwise(dim_mul)(node, [arrays[0], np.asarray(-1)])


@_folds("Not")
def _not(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    return np.logical_not(arrays[0])


@_folds("Where")
def _where(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    return np.where(arrays[0], arrays[1], arrays[2])


@_folds("Identity")
def _identity(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0]


@_folds("Cast")
def _cast(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    node.attr("saturate")
    node.attr("round_mode")
    target = dtype_of(node.attr("to"), f"Cast node {node.name!r}")
    return arrays[0] if arrays[0].dtype == object else arrays[0].astype(target.numpy)


@_folds("Gather")
def _gather(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    return np.take(arrays[0], arrays[1], axis=node.attr("axis", 0))


@_folds("Concat")
def _concat(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    parts = [a.astype(object) for a in arrays if a is not None]
    return np.concatenate(parts, axis=node.attr("axis"))


@_folds("Unsqueeze")
def _unsqueeze(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    axes = [int(a) for a in arrays[1].reshape(-1)]
    rank = arrays[0].ndim + len(axes)
    return np.expand_dims(arrays[0], tuple(a % rank for a in axes))


@_folds("Squeeze")
def _squeeze(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    if arrays[1:] and arrays[1] is not None:
        return np.squeeze(arrays[0], tuple(int(a) for a in arrays[1].reshape(-1)))
    return np.squeeze(arrays[0])


@_folds("Reshape")
def _reshape(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    allow_zero = node.attr("allowzero", 0)
    shape = [int(s) for s in arrays[1]]
    if not allow_zero:
        shape = [arrays[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return arrays[0].reshape(shape)


@_folds("Slice")
def _slice(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    data, starts, ends = arrays[0], arrays[1], arrays[2]
    axes = arrays[3] if len(arrays) > 3 and arrays[3] is not None else range(len(starts))
    steps = arrays[4] if len(arrays) > 4 and arrays[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        size = data.shape[int(axis)]
        index[int(axis)] = slice(*slice(int(start), int(end), int(step)).indices(size))
    return data[tuple(index)]


@_folds("Range")
def _range(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    start, limit, delta = (a.item() for a in arrays)
    return np.arange(start, limit, delta)


@_folds("ConstantOfShape")
def _constant_of_shape(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    value = node.attr("value")
    return np.full([int(d) for d in arrays[0]], value.reshape(-1)[0], dtype=value.dtype)


@_folds("Expand")
def _expand(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    shape = np.broadcast_shapes(arrays[0].shape, tuple(int(d) for d in arrays[1]))
    return np.broadcast_to(arrays[0], shape).copy()


@_folds("ReduceProd")
def _reduce_prod(node: NodeContext, arrays: list[np.ndarray]) -> np.ndarray:
    keepdims = bool(node.attr("keepdims", 1))
    axes = arrays[1] if len(arrays) > 1 and arrays[1] is not None else node.attr("axes")
    if node.attr("noop_with_empty_axes", 0) and axes is None:
        return arrays[0]
    axis = None if axes is None or len(axes) == 0 else tuple(int(a) for a in axes)
    product = np.frompyfunc(dim_mul, 2, 1).reduce(
        arrays[0].astype(object), axis=axis, keepdims=keepdims, initial=1
    )
    return np.asarray(product, dtype=object)
