"""Tensor indexing `x[...]`: ints, slices with positive steps, None, Ellipsis, and one
integer-array index (a list, numpy array or int tensor, lowered to gather).

Basic indices become one strided slice plus a reshape; the array index becomes a gather
along its axis. Boolean masks select a data-dependent number of elements, which a static
graph cannot type: they raise and point to `where`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.dims import Dim, Sym, dim_add, dim_mul, dims_equal
from graphc.dtypes import int64
from graphc.errors import IndexingError, located, user_location, user_op
from graphc.math_ops import as_tensor, cast
from graphc.ops.registry import make_node
from graphc.tensor import Tensor


@dataclass
class _Axis:
    """What an input axis becomes: kept (sliced), dropped (int), or array-indexed."""

    start: Dim
    size: Dim
    step: int
    drop: bool = False


def _error(message: str) -> IndexingError:
    return IndexingError(located(message, user_location()))


def _is_array_index(item: Any) -> bool:
    return isinstance(item, (list, np.ndarray, Tensor))


def _int_index(i: int, size: Dim, axis: int, of: str) -> _Axis:
    if isinstance(size, int):
        if not -size <= i < size:
            raise _error(f"index {i} is out of bounds for dim {axis} with size {size} of {of}")
        return _Axis(i % size, 1, 1, drop=True)
    return _Axis(dim_add(size, i) if i < 0 else i, 1, 1, drop=True)


def _slice_index(s: slice, size: Dim, axis: int) -> _Axis:
    step = 1 if s.step is None else s.step
    if not isinstance(step, int) or step <= 0:
        raise _error(
            f"slice step must be a positive int (as in PyTorch), got {s.step} on dim {axis}"
        )
    for bound in (s.start, s.stop):
        if bound is not None and not isinstance(bound, (int, np.integer, Sym)):
            raise _error(
                f"slice bounds must be ints or symbolic dims (such as x.shape[1]), got "
                f"{bound!r} on dim {axis}"
            )
    start = s.start if s.start is None or isinstance(s.start, Sym) else int(s.start)
    stop = s.stop if s.stop is None or isinstance(s.stop, Sym) else int(s.stop)
    if isinstance(size, int) and not isinstance(start, Sym) and not isinstance(stop, Sym):
        begin, past, step = slice(start, stop, step).indices(size)
        return _Axis(begin, len(range(begin, past, step)), step)
    if step != 1:
        raise _error(f"a slice with step {step} of dim {axis} (size {size}) with symbolic bounds")
    # A symbolic bound counts from the start of the dim (it is a size, never negative); the
    # call checks that the slice stays inside the dim once the symbols are bound.
    first: Dim = 0 if start is None else _from_start(start, size)
    end: Dim = size if stop is None else _from_start(stop, size)
    return _Axis(first, dim_add(end, dim_mul(first, -1)), 1)


def _from_start(bound: Dim, size: Dim) -> Dim:
    """Return a slice bound as a position from the dim's start (an int below 0 counts back
    from its end)."""
    return dim_add(size, bound) if isinstance(bound, int) and bound < 0 else bound


def _array_index(item: Any, size: Dim, axis: int, of: str) -> Tensor:
    if isinstance(item, Tensor):
        index = item
    else:
        array = np.asarray(item)
        if array.dtype == np.bool_:
            index = None
        elif array.dtype.kind not in "iu":
            raise _error(f"index arrays must hold integers, got {array.dtype} for dim {axis}")
        else:
            if (
                isinstance(size, int)
                and array.size
                and not ((array >= -size).all() and (array < size).all())
            ):
                bad = array[(array < -size) | (array >= size)].flat[0]
                raise _error(
                    f"index {bad} is out of bounds for dim {axis} with size {size} of {of}"
                )
            index = as_tensor(array.astype(np.int64))
    if index is None or index.dtype.is_bool:
        raise _error(
            "boolean-mask indexing selects a data-dependent number of elements, which a "
            "static graph cannot type; use gc.where(mask, x, 0) (or multiply by the mask) "
            "to keep the shape"
        )
    if not index.dtype.is_int:
        raise _error(f"index tensors must be integer, got {index!r} for dim {axis}")
    return cast(index, int64)


def _expand_ellipsis(items: tuple, ndim: int, of: str) -> tuple:
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    if sum(1 for it in items if it is Ellipsis) > 1:
        raise _error("an index can only have a single ellipsis ('...')")
    if consuming > ndim:
        raise _error(f"too many indices for {of}: it has {ndim} dims, {consuming} indexed")
    if any(it is Ellipsis for it in items):
        at = next(i for i, it in enumerate(items) if it is Ellipsis)
        return items[:at] + (slice(None),) * (ndim - consuming) + items[at + 1 :]
    return items + (slice(None),) * (ndim - consuming)


@user_op
def getitem(x: Tensor, index: Any) -> Tensor:
    """Return x[index] with PyTorch/numpy semantics (see the module docstring)."""
    items = index if isinstance(index, tuple) else (index,)
    items = tuple(it if not isinstance(it, (bool, np.bool_)) else [it] for it in items)
    of = f"a {x.node.type} tensor"
    items = _expand_ellipsis(items, x.ndim, of)
    axes: list[_Axis] = []
    layout: list[tuple[str, Any]] = []  # ("axis", i) | ("new", None) | ("array", (i, tensor))
    for item in items:
        axis = len(axes)
        if item is None:
            layout.append(("new", None))
            continue
        size = x.shape[axis]
        if _is_array_index(item):
            axes.append(_Axis(0, size, 1))
            layout.append(("array", (axis, _array_index(item, size, axis, of))))
        elif isinstance(item, slice):
            axes.append(_slice_index(item, size, axis))
            layout.append(("axis", axis))
        elif isinstance(item, (int, np.integer)):
            axes.append(_int_index(int(item), size, axis, of))
            layout.append(("axis", axis))
        else:
            raise _error(f"unsupported index {item!r} for dim {axis}")
    if sum(1 for kind, _ in layout if kind == "array") > 1:
        raise _error(
            "only one integer-array index per expression is supported; "
            "index one dim at a time, or use gather"
        )

    result = _slice(x, axes)
    final_shape: list[Dim] = []
    for kind, value in layout:
        if kind == "new":
            final_shape.append(1)
        elif kind == "axis":
            if not axes[value].drop:
                final_shape.append(result.shape[value])
        else:
            axis, idx = value
            result = _gather(result, axis, idx)
            final_shape.extend(idx.shape)
    return result.reshape(*final_shape)


def _slice(x: Tensor, axes: list[_Axis]) -> Tensor:
    whole = all(
        isinstance(a.start, int) and a.start == 0 and a.step == 1 and dims_equal(a.size, d)
        for a, d in zip(axes, x.shape, strict=True)
    )
    if whole:
        return x
    attrs = {
        "starts": tuple(a.start for a in axes),
        "sizes": tuple(a.size for a in axes),
        "steps": tuple(a.step for a in axes),
    }
    return Tensor(make_node("slice", [x.node], attrs))


def _gather(x: Tensor, axis: int, index: Tensor) -> Tensor:
    """Return x with dim `axis` replaced by the flattened index's entries."""
    flat = index.reshape(-1)
    count = flat.shape[0]
    shaped = flat.reshape(*([1] * axis), count, *([1] * (x.ndim - axis - 1)))
    return Tensor(make_node("gather", [x.node, shaped.node], {"axis": axis}))
