"""Movement ops: reshape, permute, broadcast_to, strided slice, pad, concat, gather, scatter-add.

Shape attributes may hold symbolic dims; implementations evaluate them with the call's
symbol bindings.
"""

from __future__ import annotations

import numpy as np

from graphc.dims import (
    Dim,
    dim_add,
    dim_mul,
    dim_prod,
    dims_equal,
    evaluate_dim,
    evaluate_shape,
    format_shape,
)
from graphc.errors import DTypeError, IndexingError, ShapeError, located
from graphc.graph import Node
from graphc.ops.grad_helpers import apply_op, sum_to
from graphc.ops.registry import define_op, grad_rule
from graphc.ops.shape_rules import bindings_text, broadcast_shapes, same_dtype, symbolic
from graphc.types import TensorType


# reshape, permute and broadcast_to read their input in place, as a strided view (fusion and
# the GEMM's operands use this): view(node, input shape, input strides) -> the node's strides.
def contiguous_strides(shape: tuple) -> tuple:
    """Return the row-major strides of shape, in elements (symbolic where the shape is)."""
    strides: list[Dim] = []
    running: Dim = 1
    for d in reversed(shape):
        strides.append(running)
        running = dim_mul(running, d)
    return tuple(reversed(strides))


def _reshape_view(node: Node, shape: tuple, strides: tuple) -> tuple | None:
    # Only a contiguous input keeps its layout through a reshape.
    if strides == contiguous_strides(shape):
        return contiguous_strides(node.type.shape)
    return None


def _permute_view(node: Node, shape: tuple, strides: tuple) -> tuple:
    return tuple(strides[p] for p in node.attrs["perm"])


def _broadcast_to_view(node: Node, shape: tuple, strides: tuple) -> tuple:
    out = node.type.shape
    offset = len(out) - len(shape)
    return (0,) * offset + tuple(
        0 if (d == 1 and not (isinstance(t, int) and t == 1)) else stride
        for d, t, stride in zip(shape, out[offset:], strides, strict=True)
    )


def _reshape_infer(types, attrs):
    (x,) = types
    shape = tuple(attrs["shape"])
    if not dims_equal(dim_prod(x.shape), dim_prod(shape)):
        raise ShapeError(
            f"cannot reshape {format_shape(x.shape)} ({dim_prod(x.shape)} elements) "
            f"to {format_shape(shape)} ({dim_prod(shape)} elements)"
        )
    return TensorType(shape, x.dtype)


define_op(
    "reshape",
    "movement",
    _reshape_infer,
    lambda args, attrs, env: args[0].reshape(evaluate_shape(attrs["shape"], env)),
    view=_reshape_view,
)


def _permute_infer(types, attrs):
    (x,) = types
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"{perm} is not a permutation of the dims of {format_shape(x.shape)}")
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


define_op(
    "permute",
    "movement",
    _permute_infer,
    lambda args, attrs, env: np.transpose(args[0], attrs["perm"]),
    view=_permute_view,
)


def _broadcast_to_infer(types, attrs):
    (x,) = types
    shape = tuple(attrs["shape"])
    if len(shape) < x.ndim or not dims_equal_all(broadcast_shapes(x.shape, shape), shape):
        raise ShapeError(f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    return TensorType(shape, x.dtype)


def dims_equal_all(a, b) -> bool:
    """Return True when two shapes are equal dim by dim (symbolically)."""
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b, strict=True))


define_op(
    "broadcast_to",
    "movement",
    _broadcast_to_infer,
    lambda args, attrs, env: np.broadcast_to(args[0], evaluate_shape(attrs["shape"], env)),
    view=_broadcast_to_view,
)


def _slice_infer(types, attrs):
    (x,) = types
    starts, sizes, steps = attrs["starts"], attrs["sizes"], attrs["steps"]
    if not len(starts) == len(sizes) == len(steps) == x.ndim:
        raise ShapeError(f"slice needs one (start, size, step) per dim of {format_shape(x.shape)}")
    for axis, step in enumerate(steps):
        if not isinstance(step, int) or step <= 0:
            raise ShapeError(f"slice step must be a positive int, got {step} on dim {axis}")
    return TensorType(tuple(sizes), x.dtype)


def _slice_reference(args, attrs, env):
    (x,) = args
    index = []
    for axis, (start, size, step) in enumerate(
        zip(attrs["starts"], attrs["sizes"], attrs["steps"], strict=True)
    ):
        start, size = evaluate_dim(start, env), evaluate_dim(size, env)
        last = start + (size - 1) * step
        if size and not (start >= 0 and last < x.shape[axis]):
            raise IndexError(
                f"slice of dim {axis} reads elements {start}..{last} of a dim of size "
                f"{x.shape[axis]}"
            )
        index.append(slice(start, start + size * step, step))
    return x[tuple(index)]


def _slice_call_check(node: Node):
    """Return the per-call check that a slice with symbolic bounds stays inside its input."""
    attrs = node.attrs
    bounds = (*attrs["starts"], *attrs["sizes"], *node.inputs[0].type.shape)
    if not symbolic(bounds):
        return None

    def check(bindings):
        source = node.inputs[0].type.shape
        for axis, (start, size, step) in enumerate(
            zip(attrs["starts"], attrs["sizes"], attrs["steps"], strict=True)
        ):
            begin, count = evaluate_dim(start, bindings), evaluate_dim(size, bindings)
            length = evaluate_dim(source[axis], bindings)
            last = begin + (count - 1) * step
            if count < 0 or (count and not (begin >= 0 and last < length)):
                raise IndexingError(
                    located(
                        f"slice of dim {axis} reads elements {begin}..{last} of a dim of size "
                        f"{length} (with {bindings_text(bindings)})",
                        node.location,
                    )
                )

    return check


define_op("slice", "movement", _slice_infer, _slice_reference, call_check=_slice_call_check)


# pad: (before, after) widths per dim; a negative width crops, as in torch.nn.functional.pad
# (crop first, then pad). Symbolic widths (slice gradients make them) are never negative.
def _crop_width(width) -> int:
    return -width if isinstance(width, int) and width < 0 else 0


def _pad_infer(types, attrs):
    (x,) = types
    pads = attrs["pads"]
    if len(pads) != x.ndim:
        raise ShapeError(f"pad needs one (before, after) pair per dim of {format_shape(x.shape)}")
    for axis, ((lo, hi), size) in enumerate(zip(pads, x.shape, strict=True)):
        kept = dim_add(size, -(_crop_width(lo) + _crop_width(hi)))
        if isinstance(kept, int) and kept < 0:
            raise ShapeError(
                f"widths ({lo}, {hi}) crop more than the {size} elements of dim {axis} of "
                f"{format_shape(x.shape)}"
            )
    shape = tuple(dim_add(d, dim_add(lo, hi)) for d, (lo, hi) in zip(x.shape, pads, strict=True))
    return TensorType(shape, x.dtype)


def _pad_reference(args, attrs, env):
    (x,) = args
    widths = [(evaluate_dim(lo, env), evaluate_dim(hi, env)) for lo, hi in attrs["pads"]]
    kept = []
    for axis, (lo, hi) in enumerate(widths):
        start, stop = max(-lo, 0), x.shape[axis] - max(-hi, 0)
        if stop < start:
            raise IndexError(
                f"pad widths ({lo}, {hi}) crop more than the {x.shape[axis]} elements of dim {axis}"
            )
        kept.append(slice(start, stop))
    positive = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    return np.pad(x[tuple(kept)], positive, constant_values=attrs["value"])


def _pad_call_check(node: Node):
    """Return the per-call check that symbolic pad widths are not negative."""
    pads = node.attrs["pads"]
    if not symbolic(tuple(width for pair in pads for width in pair)):
        return None

    def check(bindings):
        for lo, hi in pads:
            if evaluate_dim(lo, bindings) < 0 or evaluate_dim(hi, bindings) < 0:
                message = f"pad: negative width for {bindings_text(bindings)}"
                raise IndexingError(located(message, node.location))

    return check


define_op("pad", "movement", _pad_infer, _pad_reference, call_check=_pad_call_check)


def _concat_infer(types, attrs):
    axis = attrs["axis"]
    dtype = same_dtype(types, "concatenated tensors")
    first = types[0]
    total: Dim = 0
    for position, t in enumerate(types):
        if t.ndim != first.ndim:
            raise ShapeError(
                f"tensor {position} has {t.ndim} dims, tensor 0 has {first.ndim} "
                f"({format_shape(t.shape)} vs {format_shape(first.shape)})"
            )
        for d in range(first.ndim):
            if d != axis and not dims_equal(t.shape[d], first.shape[d]):
                raise ShapeError(
                    f"sizes must match except in dim {axis}, but dim {d} is {first.shape[d]} in "
                    f"tensor 0 {format_shape(first.shape)} and {t.shape[d]} in tensor "
                    f"{position} {format_shape(t.shape)}"
                )
        total = dim_add(total, t.shape[axis])
    shape = tuple(total if d == axis else first.shape[d] for d in range(first.ndim))
    return TensorType(shape, dtype)


define_op(
    "concat",
    "movement",
    _concat_infer,
    lambda args, attrs, env: np.concatenate(args, axis=attrs["axis"]),
)


def _check_index_type(idx: TensorType) -> None:
    if not idx.dtype.is_int:
        raise DTypeError(f"indices must be an integer tensor, got {idx}")


def gathered_shape(x_shape, idx_shape, axis):
    """Return gather's output shape, checking idx against x on every dim but axis."""
    if len(idx_shape) != len(x_shape):
        raise ShapeError(
            f"index {format_shape(idx_shape)} must have as many dims as the input "
            f"{format_shape(x_shape)}"
        )
    for d, (xd, idd) in enumerate(zip(x_shape, idx_shape, strict=True)):
        if d != axis and not (idd == 1 or dims_equal(xd, idd)):
            raise ShapeError(
                f"index {format_shape(idx_shape)} does not fit input {format_shape(x_shape)} "
                f"in dim {d}: sizes {idd} and {xd} (must be equal or 1)"
            )
    return tuple(idx_shape[d] if d == axis else x_shape[d] for d in range(len(x_shape)))


def _gather_infer(types, attrs):
    x, idx = types
    _check_index_type(idx)
    return TensorType(gathered_shape(x.shape, idx.shape, attrs["axis"]), x.dtype)


def checked_indices(idx: np.ndarray, size: int, axis: int, wrap: bool = True) -> np.ndarray:
    """Return indices with negatives wrapped, raising IndexError for any out of range (for
    any negative one too, without wrap)."""
    bad = (idx < (-size if wrap else 0)) | (idx >= size)
    if bad.any():
        value = int(idx[bad].flat[0])
        raise IndexingError(f"index {value} is out of bounds for dim {axis} with size {size}")
    return np.where(idx < 0, idx + size, idx)


def _gather_reference(args, attrs, env):
    x, idx = args
    axis = attrs["axis"]
    out_shape = tuple(idx.shape[d] if d == axis else x.shape[d] for d in range(x.ndim))
    wrap = attrs.get("wrap_negative", True)
    idx = checked_indices(np.broadcast_to(idx, out_shape), x.shape[axis], axis, wrap)
    return np.take_along_axis(x, idx, axis)


# gather is take_along_axis with the index's size-1 dims broadcast and negative indices wrapped,
# what integer-array indexing (x[[0, -1]]) needs; with wrap_negative=False (gc.gather, which
# follows torch.gather) a negative index is out of range.
define_op("gather", "gather", _gather_infer, _gather_reference)


def _scatter_add_infer(types, attrs):
    idx, src = types
    _check_index_type(idx)
    shape, axis = tuple(attrs["shape"]), attrs["axis"]
    expected = gathered_shape(shape, idx.shape, axis)
    if not dims_equal_all(expected, src.shape):
        raise ShapeError(
            f"source {format_shape(src.shape)} must have shape {format_shape(expected)} to "
            f"scatter into {format_shape(shape)} along dim {axis}"
        )
    return TensorType(shape, src.dtype)


def _scatter_add_reference(args, attrs, env):
    idx, src = args
    axis = attrs["axis"]
    out = np.zeros(evaluate_shape(attrs["shape"], env), dtype=src.dtype)
    index = list(np.indices(src.shape, sparse=True))
    index[axis] = checked_indices(np.broadcast_to(idx, src.shape), out.shape[axis], axis)
    np.add.at(out, tuple(index), src)
    return out


define_op(
    "scatter_add",
    "gather",
    _scatter_add_infer,
    _scatter_add_reference,
    fusion="scatter_add",
)


# -- gradients -------------------------------------------------------------------------------
@grad_rule("reshape")
def _reshape_grad(xs, out, g, attrs):
    return [g.reshape(*xs[0].shape)]


@grad_rule("permute")
def _permute_grad(xs, out, g, attrs):
    inverse = [0] * len(attrs["perm"])
    for position, axis in enumerate(attrs["perm"]):
        inverse[axis] = position
    return [g.permute(*inverse)]


@grad_rule("broadcast_to")
def _broadcast_to_grad(xs, out, g, attrs):
    return [sum_to(g, xs[0].shape)]


@grad_rule("slice")
def _slice_grad(xs, out, g, attrs):
    # Spread a strided slice back with zeros between the taken elements, then pad to x's size.
    (x,) = xs
    pads = []
    for axis, (start, size, step) in enumerate(
        zip(attrs["starts"], attrs["sizes"], attrs["steps"], strict=True)
    ):
        if step > 1 and not (isinstance(size, int) and size == 0):
            g = _interleave_zeros(g, axis, step)
            size = dim_add(dim_mul(size, step), 1 - step)
        after = dim_add(x.shape[axis], dim_mul(dim_add(start, size), -1))
        pads.append((start, after))
    return [pad_tensor(g, pads)]


def _interleave_zeros(g, axis: int, step: int):
    """Return g with step-1 zeros after each element along axis, the trailing ones cut."""
    size = g.shape[axis]
    spread = pad_tensor(
        g.unsqueeze(axis + 1),
        [(0, step - 1) if d == axis + 1 else (0, 0) for d in range(g.ndim + 1)],
    )
    merged = spread.reshape(*g.shape[:axis], dim_mul(size, step), *g.shape[axis + 1 :])
    keep = dim_add(dim_mul(size, step), 1 - step)
    index = tuple(slice(0, keep if d == axis else n) for d, n in enumerate(merged.shape))
    return slice_tensor(merged, index)


def pad_tensor(x, pads, value=0.0):
    """Return x padded with value by (before, after) widths per dim (the `pad` primitive)."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    return apply_op("pad", [x], {"pads": tuple(pads), "value": value})


@grad_rule("pad")
def _pad_grad(xs, out, g, attrs):
    # The adjoint of padding by (lo, hi) is padding by (-lo, -hi): crop where x was padded,
    # then pad with zeros where x was cropped.
    (x,) = xs
    index, crops = [], []
    for (lo, hi), size in zip(attrs["pads"], x.shape, strict=True):
        lo_crop, hi_crop = _crop_width(lo), _crop_width(hi)
        start = dim_add(lo, lo_crop)
        index.append(slice(start, dim_add(start, dim_add(size, -(lo_crop + hi_crop)))))
        crops.append((lo_crop, hi_crop))
    if any(not (isinstance(w, int) and w <= 0) for pair in attrs["pads"] for w in pair):
        g = slice_tensor(g, tuple(index))
    return [pad_tensor(g, crops)]


def slice_tensor(x, index):
    """Return x sliced by (start, stop) slices whose bounds may be symbolic (step 1)."""
    starts = tuple(s.start for s in index)
    sizes = tuple(dim_add(s.stop, dim_mul(s.start, -1)) for s in index)
    attrs = {"starts": starts, "sizes": sizes, "steps": (1,) * len(index)}
    return apply_op("slice", [x], attrs)


@grad_rule("concat")
def _concat_grad(xs, out, g, attrs):
    axis = attrs["axis"]
    grads = []
    start: Dim = 0
    for x in xs:
        stop = dim_add(start, x.shape[axis])
        index = tuple(
            slice(start, stop) if d == axis else slice(0, size) for d, size in enumerate(g.shape)
        )
        grads.append(slice_tensor(g, index))
        start = stop
    return grads


@grad_rule("gather")
def _gather_grad(xs, out, g, attrs):
    x, idx = xs
    return [apply_op("scatter_add", [idx, g], {"shape": x.shape, "axis": attrs["axis"]}), None]


@grad_rule("scatter_add")
def _scatter_add_grad(xs, out, g, attrs):
    idx, src = xs
    return [None, apply_op("gather", [g, idx], {"axis": attrs["axis"]})]
