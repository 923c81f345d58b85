"""Converters of ONNX's reductions, arg-reductions, softmaxes and running sums (CumSum).

A reduction's axes come from its attribute before opset 18 (ReduceSum: 13) and from its second
input from then on. Over an empty set ONNX gives the reduction's identity (ReduceMax: -inf);
graphc refuses empty max/min reductions, so the converter builds that constant itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import graphc as gc
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_shape import normalize_axes, take

Reduction = Callable[[gc.Tensor, tuple[int, ...], bool], gc.Tensor]

# op: (the reduction over axes, its value over an empty set)
REDUCTIONS: dict[str, tuple[Reduction, float]] = {
    "ReduceSum": (lambda x, axes, keep: x.sum(axes, keep), 0.0),
    "ReduceMean": (lambda x, axes, keep: x.mean(axes, keep), math.nan),
    "ReduceProd": (lambda x, axes, keep: x.prod(axes, keep), 1.0),
    "ReduceMax": (lambda x, axes, keep: x.amax(axes, keep), -math.inf),
    "ReduceMin": (lambda x, axes, keep: x.amin(axes, keep), math.inf),
    "ReduceL1": (lambda x, axes, keep: gc.abs(x).sum(axes, keep), 0.0),
    "ReduceL2": (lambda x, axes, keep: gc.sqrt((x * x).sum(axes, keep)), 0.0),
    "ReduceSumSquare": (lambda x, axes, keep: (x * x).sum(axes, keep), 0.0),
    "ReduceLogSum": (lambda x, axes, keep: gc.log(x.sum(axes, keep)), -math.inf),
    "ReduceLogSumExp": (lambda x, axes, keep: x.logsumexp(axes, keep), -math.inf),
}
# The opset from which each reduction reads its axes from an input.
_AXES_INPUT_SINCE = {op: 13 if op == "ReduceSum" else 18 for op in REDUCTIONS}


@converter(*REDUCTIONS)
def reduce(node: NodeContext) -> gc.Tensor:
    """x reduced over the given axes (all where none are given, unless noop_with_empty_axes)."""
    x = node.tensor(0)
    since = _AXES_INPUT_SINCE[node.op]
    given = node.ints(1, "axes") if node.opset >= since else node.attr("axes")
    keep = bool(node.require("keepdims", (0, 1), 1, "0 or 1"))
    if not given:
        if node.require("noop_with_empty_axes", (0, 1), 0, "0 or 1"):
            return x
        given = list(range(x.ndim))
    else:
        node.attr("noop_with_empty_axes")
    axes = tuple(sorted(normalize_axes(node, given, x.ndim)))
    reduction, empty_value = REDUCTIONS[node.op]
    if node.op == "ReduceMean" and not x.dtype.is_float:
        raise node.error(f"ReduceMean of {x.dtype.name} (an integer mean) is not supported")
    if any(isinstance(x.shape[a], int) and x.shape[a] == 0 for a in axes):
        shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
        return gc.full(shape, _in_range(empty_value, x.dtype), dtype=x.dtype)
    return reduction(x, axes, keep).to(x.dtype)


def _in_range(value: float, dtype: gc.DType) -> float | int:
    """Return value in dtype: an infinite identity becomes the integer type's extreme (for
    bool, True above and False below)."""
    if dtype.is_bool:
        return int(value > 0)
    if dtype.is_float or math.isfinite(value):
        return value
    info = np.iinfo(dtype.numpy)
    return int(info.max) if value > 0 else int(info.min)


@converter("ArgMax", "ArgMin")
def arg_extremum(node: NodeContext) -> gc.Tensor:
    """The int64 index of the first (or, select_last_index=1, last) max or min along axis."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", 0)], x.ndim)[0]
    keep = bool(node.require("keepdims", (0, 1), 1, "0 or 1"))
    last = node.require("select_last_index", (0, 1), 0, "0 or 1")
    function = gc.argmax if node.op == "ArgMax" else gc.argmin
    if not last:
        return function(x, axis, keep)
    size = x.shape[axis]
    if not isinstance(size, int):
        raise node.error(f"select_last_index on the symbolic dim {size} is not supported")
    backwards = take(x, axis, np.arange(size - 1, -1, -1, dtype=np.int64))
    return (size - 1) - function(backwards, axis, keep)


@converter("Softmax", "LogSoftmax")
def softmax(node: NodeContext) -> gc.Tensor:
    """Softmax or LogSoftmax along one axis (opset 13's meaning)."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", -1)], x.ndim)[0]
    return x.softmax(axis) if node.op == "Softmax" else x.log_softmax(axis)


@converter("Hardmax")
def hardmax(node: NodeContext) -> gc.Tensor:
    """1 at the first maximum along axis, 0 elsewhere."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", -1)], x.ndim)[0]
    size = x.shape[axis]
    positions = gc.arange(size).reshape(*([-1] + [1] * (x.ndim - axis - 1)))
    return (positions == x.argmax(axis, keepdim=True)).to(x.dtype)


@converter("CumSum", "CumProd")
def cumulative(node: NodeContext) -> gc.Tensor:
    """The running sum or product along axis (from the end where reverse; without the
    current element where exclusive), accumulated in order by a gc.scan, so the axis may be
    symbolic."""
    x = node.tensor(0)
    axis = normalize_axes(node, node.ints(1, "axis") or [], x.ndim)
    if len(axis) != 1:
        raise node.error(f"axis must be one integer, got {axis}")
    exclusive = node.require("exclusive", (0, 1), 0, "0 or 1")
    reverse = node.require("reverse", (0, 1), 0, "0 or 1")
    order = [axis[0], *(i for i in range(x.ndim) if i != axis[0])]
    moved = x.permute(*order)

    product = node.op == "CumProd"

    def step(total: gc.Tensor, item: gc.Tensor) -> tuple[gc.Tensor, gc.Tensor]:
        running = total * item if product else total + item
        return running, total if exclusive else running

    start = gc.full(moved.shape[1:], 1 if product else 0, dtype=x.dtype)
    _, totals = gc.scan(step, start, moved, reverse=bool(reverse))
    return totals.permute(*np.argsort(order).tolist())
