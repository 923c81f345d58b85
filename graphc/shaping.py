"""Shape functions of the Tensor API: reshape/view, transpose/permute, squeeze/unsqueeze,
expand, cat/stack/split/chunk, and matmul.

`view` is the same as `reshape` here: graphs have no aliasing, so there is no distinction
between a view and a copy to preserve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphc.dims import Dim, as_dim, dim_div, dim_prod, dims_equal, format_shape
from graphc.dtypes import promote
from graphc.errors import GraphError, ShapeError, located, user_location, user_op
from graphc.math_ops import as_tensor, result_dtype
from graphc.ops.registry import make_node
from graphc.ops.shape_rules import normalize_axis
from graphc.tensor import Tensor


def _flat_args(args: Sequence[Any]) -> tuple:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _shape_error(message: str) -> ShapeError:
    return ShapeError(located(message, user_location()))


@user_op
def reshape(x: Tensor, *shape: Any) -> Tensor:
    """Return x with a new shape of the same size; one dim may be -1 (inferred)."""
    requested = _flat_args(shape)
    unknown = [i for i, d in enumerate(requested) if isinstance(d, int) and d == -1]
    if len(unknown) > 1:
        raise _shape_error(f"reshape: only one dim may be -1, got {requested}")
    dims: list[Dim] = [1 if i in unknown else as_dim(d) for i, d in enumerate(requested)]
    if unknown:
        known = dim_prod(dims)
        try:
            dims[unknown[0]] = dim_div(x.numel(), known)
        except ShapeError:
            raise _shape_error(
                f"reshape: cannot reshape {format_shape(x.shape)} ({x.numel()} elements) to "
                f"{format_shape(requested)}: {x.numel()} is not divisible by {known}"
            ) from None
    new_shape = tuple(dims)
    if len(new_shape) == x.ndim and all(map(dims_equal, new_shape, x.shape)):
        return x
    return Tensor(make_node("reshape", [x.node], {"shape": new_shape}))


@user_op
def permute(x: Tensor, *dims: Any) -> Tensor:
    """Return x with its dims reordered."""
    perm = tuple(normalize_axis(d, x.ndim, x.shape) for d in _flat_args(dims))
    if perm == tuple(range(x.ndim)):
        return x
    return Tensor(make_node("permute", [x.node], {"perm": perm}))


@user_op
def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Return x with two dims swapped."""
    perm = list(range(x.ndim))
    a, b = normalize_axis(dim0, x.ndim, x.shape), normalize_axis(dim1, x.ndim, x.shape)
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, *perm)


@user_op
def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Return x with dims start_dim..end_dim merged into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    start = normalize_axis(start_dim, x.ndim, x.shape)
    end = normalize_axis(end_dim, x.ndim, x.shape)
    if start > end:
        raise _shape_error(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = dim_prod(x.shape[start : end + 1])
    return reshape(x, *x.shape[:start], merged, *x.shape[end + 1 :])


@user_op
def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """Return x without size-1 dims (all of them, or those named by dim that are 1)."""
    if dim is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = [a for a in (normalize_axis(d, x.ndim, x.shape) for d in dims) if x.shape[a] == 1]
    return reshape(x, *(d for i, d in enumerate(x.shape) if i not in axes))


@user_op
def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Return x with a size-1 dim inserted at dim."""
    axis = normalize_axis(dim, x.ndim + 1, x.shape)
    return reshape(x, *x.shape[:axis], 1, *x.shape[axis:])


@user_op
def broadcast_to(x: Tensor, shape: Sequence[Any]) -> Tensor:
    """Return x broadcast to shape (numpy's rules)."""
    target = tuple(as_dim(d) for d in shape)
    if len(target) == x.ndim and all(map(dims_equal, target, x.shape)):
        return x
    return Tensor(make_node("broadcast_to", [x.node], {"shape": target}))


@user_op
def expand(x: Tensor, *sizes: Any) -> Tensor:
    """Return x broadcast to sizes, where -1 keeps a dim's size (PyTorch's expand)."""
    sizes = _flat_args(sizes)
    offset = len(sizes) - x.ndim
    if offset < 0:
        raise ShapeError(f"{len(sizes)} sizes given for a {x.ndim}-d tensor")
    target = []
    for i, size in enumerate(sizes):
        if isinstance(size, int) and size == -1:
            if i < offset:
                raise ShapeError(f"-1 is not allowed for the new leading dim {i} of expand")
            size = x.shape[i - offset]
        target.append(size)
    return broadcast_to(x, target)


@user_op
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Return the tensors joined along an existing dim."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise GraphError(located("cat: needs at least one tensor", user_location()))
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = promote(dtype, t.dtype)
    tensors = [as_tensor(t, dtype) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    axis = normalize_axis(dim, tensors[0].ndim, tensors[0].shape)
    return Tensor(make_node("concat", [t.node for t in tensors], {"axis": axis}))


@user_op
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Return the tensors joined along a new dim."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise GraphError(located("stack: needs at least one tensor", user_location()))
    axis = normalize_axis(dim, tensors[0].ndim + 1, tensors[0].shape)
    return cat([unsqueeze(t, axis) for t in tensors], axis)


@user_op
def split(x: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Return x cut along dim into pieces of a given size, or of the listed sizes."""
    axis = normalize_axis(dim, x.ndim, x.shape)
    size = x.shape[axis]
    if not isinstance(size, int):
        raise _shape_error(f"split: dim {dim} of {format_shape(x.shape)} is symbolic")
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise _shape_error(f"split: split_size must be positive, got {step}")
        sections = [min(step, size - start) for start in range(0, size, step)] or [0]
    else:
        sections = list(split_size_or_sections)
        if sum(sections) != size:
            raise _shape_error(
                f"split: sections {sections} add up to {sum(sections)}, but dim {dim} of "
                f"{format_shape(x.shape)} has size {size}"
            )
    pieces, start = [], 0
    for length in sections:
        index = [slice(None)] * axis + [slice(start, start + length)]
        pieces.append(x[tuple(index)])
        start += length
    return tuple(pieces)


@user_op
def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """Return x cut into `chunks` nearly equal pieces along dim (the last may be smaller)."""
    axis = normalize_axis(dim, x.ndim, x.shape)
    size = x.shape[axis]
    if not isinstance(size, int) or chunks <= 0:
        raise _shape_error(f"chunk: needs a positive count and a concrete dim, got {chunks}")
    return split(x, -(-size // chunks), axis)


@user_op
def matmul(a: Any, b: Any) -> Tensor:
    """Return the matrix product with numpy semantics (1-D, batched, broadcast batch dims)."""
    dtype = result_dtype(a, b)
    a, b = as_tensor(a, dtype), as_tensor(b, dtype)
    return Tensor(make_node("matmul", [a.node, b.node]))
