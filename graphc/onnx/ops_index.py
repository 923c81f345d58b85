"""Converters of ONNX's index-tuple gathers and of its scatters: GatherND, ScatterND and
ScatterElements (and Scatter, its deprecated name), with every reduction.

An index tuple into data's leading dims becomes one linear index into data flattened to
(positions, rest), so GatherND is one gather. graphc's public API has no scatter, so a
scatter is composed: comparing each update's linear index with every position says which
updates land where; reduction 'none' takes the last update landing on a position (ONNX's
reference assigns in order) with one gather, and add, mul, max and min reduce the updates
landing on each position (the reduction's identity where none does) and combine that with
data. The comparison holds one entry per (update, position) pair and the reductions one per
(update, element of data): exact, but sized for the indices of small updates.
"""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.dims import dim_prod
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_shape import normalize_axes, take

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _static_dims(node: NodeContext, shape: tuple, what: str) -> np.ndarray:
    """Return dims that must be static (data's indexed dims) as an int64 array."""
    if not all(isinstance(d, int) for d in shape):
        raise node.error(f"the {what} must be static, got {shape}")
    return np.asarray(shape, np.int64).reshape(-1)


def _row_major(sizes: np.ndarray) -> np.ndarray:
    """Return the strides of a row-major array of the given sizes, in elements."""
    return np.cumprod(np.append(sizes[1:], 1)[::-1])[::-1].copy()


def _linear(node: NodeContext, indices: gc.Tensor, sizes: np.ndarray) -> gc.Tensor:
    """Return the linear position of every index tuple (indices' last dim) into dims of the
    given sizes, negative entries counted from the end."""
    if indices.shape[-1] != len(sizes):
        raise node.error(f"index tuples of {indices.shape[-1]} entries into {len(sizes)} dims")
    wrapped = gc.where(indices < 0, indices + gc.tensor(sizes), indices)
    return (wrapped * gc.tensor(_row_major(sizes))).sum(-1)


def _tuple_depth(node: NodeContext, data: gc.Tensor, indices: gc.Tensor, batch: int) -> int:
    """Return how many of data's dims (after `batch` shared ones) an index tuple indexes."""
    depth = indices.shape[-1] if indices.ndim else 0
    if not isinstance(depth, int) or not 1 <= depth <= data.ndim - batch:
        raise node.error(f"indices {indices.shape} cannot index data {data.shape}")
    return depth


@converter("GatherND")
def gather_nd(node: NodeContext) -> gc.Tensor:
    """data's slices at the index tuples along indices' last dim, after `batch_dims` leading
    dims that data and indices share."""
    data, indices = node.tensor(0), node.tensor(1).to(gc.int64)
    batch = node.attr("batch_dims", 0)
    depth = _tuple_depth(node, data, indices, batch)
    leading = _static_dims(node, data.shape[: batch + depth], "batch and indexed dims of data")
    linear = _linear(node, indices, leading[batch:])
    if batch:
        entries = int(np.prod(leading[batch:]))
        position = gc.arange(int(np.prod(leading[:batch])))
        position = position.reshape(*leading[:batch].tolist(), *([1] * (linear.ndim - batch)))
        linear = linear + position * entries
    flat = data.reshape(int(np.prod(leading)), *data.shape[batch + depth :])
    return take(flat, 0, linear)


@converter("ScatterND")
def scatter_nd(node: NodeContext) -> gc.Tensor:
    """data with each slice that an index tuple names replaced by (or reduced with) its
    slice of updates."""
    data, indices, updates = node.tensor(0), node.tensor(1).to(gc.int64), node.tensor(2)
    reduction = node.require("reduction", _REDUCTIONS, "none", ", ".join(_REDUCTIONS))
    depth = _tuple_depth(node, data, indices, 0)
    sizes = _static_dims(node, data.shape[:depth], "indexed dims of data")
    rest = dim_prod(data.shape[depth:])
    flat = data.reshape(int(np.prod(sizes)), rest)
    linear = _linear(node, indices, sizes).reshape(-1)
    result = _scatter(node, flat, linear, updates.reshape(-1, rest), reduction)
    return result.reshape(*data.shape)


@converter("ScatterElements")
@converter("Scatter", since=9)
def scatter_elements(node: NodeContext) -> gc.Tensor:
    """data with updates written (or reduced) at indices along axis: for axis 0,
    updates[i][j] goes to data[indices[i][j]][j]."""
    data, indices, updates = node.tensor(0), node.tensor(1).to(gc.int64), node.tensor(2)
    axis = normalize_axes(node, [node.attr("axis", 0)], data.ndim)[0]
    reduction = node.require("reduction", _REDUCTIONS, "none", ", ".join(_REDUCTIONS))
    sizes = _static_dims(node, data.shape, "dims of data")
    if indices.shape != updates.shape or indices.ndim != data.ndim:
        raise node.error(f"indices {indices.shape} and updates {updates.shape} must match")
    strides = _row_major(sizes)
    wrapped = gc.where(indices < 0, indices + int(sizes[axis]), indices)
    linear = wrapped * int(strides[axis])
    for dim in range(data.ndim):
        if dim != axis:
            position = gc.arange(indices.shape[dim]) * int(strides[dim])
            linear = linear + position.reshape(*(-1 if i == dim else 1 for i in range(data.ndim)))
    result = _scatter(
        node, data.reshape(-1, 1), linear.reshape(-1), updates.reshape(-1, 1), reduction
    )
    return result.reshape(*data.shape)


def _scatter(
    node: NodeContext, data: gc.Tensor, position: gc.Tensor, updates: gc.Tensor, reduction: str
) -> gc.Tensor:
    """Return data (positions, rest) with updates (count, rest) put at their positions
    (count,): the last one landing on a position, or all of them reduced with data."""
    if reduction != "none" and data.dtype == gc.bool_:
        raise node.unsupported("reduction", reduction, "bool data takes 'none' only")
    if updates.shape[0] == 0:
        return data
    hits = position.reshape(-1, 1) == gc.arange(data.shape[0]).reshape(1, -1)
    if reduction == "none":
        order = gc.arange(updates.shape[0]).reshape(-1, 1)
        last = gc.where(hits, order, gc.tensor(-1, gc.int64)).amax(0)
        chosen = take(updates, 0, gc.maximum(last, gc.tensor(0, gc.int64)))
        return gc.where(last.reshape(-1, 1) >= 0, chosen, data)
    dtype = data.dtype
    identity: float
    if reduction in ("add", "mul"):
        identity = 0 if reduction == "add" else 1
    elif dtype.is_float:
        identity = -np.inf if reduction == "max" else np.inf
    else:
        limits = np.iinfo(dtype.numpy)
        identity = limits.min if reduction == "max" else limits.max
    spread = gc.where(hits.unsqueeze(-1), updates.unsqueeze(1), gc.tensor(identity, dtype))
    if reduction == "add":
        return data + spread.sum(0).to(dtype)
    if reduction == "mul":
        return data * spread.prod(0).to(dtype)
    if reduction == "max":
        return gc.maximum(data, spread.amax(0))
    return gc.minimum(data, spread.amin(0))
