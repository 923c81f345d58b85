"""Converters of ONNX's movement ops (reshapes, transposes, slices, gathers, joins, pads) and
of the ops that generate a tensor of a shape (ConstantOfShape, Range, EyeLike, OneHot).

Their shape arguments (Reshape's shape, Slice's starts, Pad's pads, ...) must be known while
the graph is built; they may hold symbolic dims (see `shape_values`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import graphc as gc
from graphc.dims import dim_mul, dim_prod, dims_equal
from graphc.onnx.common import dtype_of
from graphc.onnx.nodes import Known, NodeContext, converter
from graphc.reductions import count_tensor

# Slice bounds past the end: ONNX exporters write INT64_MAX (or MIN) for "to the end".
_FAR = 2**62


def normalize_axes(node: NodeContext, axes: Sequence[int], rank: int) -> list[int]:
    """Return axes in [0, rank), or raise naming the node where one is out of range."""
    out = []
    for axis in axes:
        if not -rank <= axis < rank:
            raise node.error(f"axis {axis} is out of range for a {rank}-d input")
        out.append(axis % rank)
    return out


def take(x: gc.Tensor, axis: int, index: np.ndarray | gc.Tensor) -> gc.Tensor:
    """Return np.take(x, index, axis): the dim replaced by index's dims (negative indices
    count from the end)."""
    return x[(slice(None),) * axis + (index,)]


@converter("Reshape")
def reshape(node: NodeContext) -> gc.Tensor:
    """x with the given shape: 0 copies the input's dim (unless allowzero), -1 is inferred."""
    x = node.tensor(0)
    shape = node.dims(1, "shape")
    if not node.require("allowzero", (0, 1), 0, "0 or 1"):
        shape = [x.shape[i] if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(*shape)


@converter("Flatten")
def flatten(node: NodeContext) -> gc.Tensor:
    """x as a matrix: the dims before `axis` make the rows."""
    x = node.tensor(0)
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(dim_prod(x.shape[:axis]), dim_prod(x.shape[axis:]))


@converter("Transpose")
def transpose(node: NodeContext) -> gc.Tensor:
    """x with its dims permuted (reversed where no perm is given)."""
    x = node.tensor(0)
    perm = node.attr("perm", list(reversed(range(x.ndim))))
    return x.permute(*normalize_axes(node, perm, x.ndim))


@converter("Squeeze")
def squeeze(node: NodeContext) -> gc.Tensor:
    """x without the named size-1 dims (all size-1 dims where none are named)."""
    x = node.tensor(0)
    axes = node.ints(1, "axes")
    if axes is None:
        symbolic = [d for d in x.shape if not isinstance(d, int)]
        if symbolic:
            raise node.error(
                f"Squeeze without axes drops the dims of size 1, so the symbolic dims "
                f"{symbolic} would decide the result's rank; give the axes"
            )
        return x.reshape(*(d for d in x.shape if d != 1))
    axes = normalize_axes(node, axes, x.ndim)
    for axis in axes:
        if not dims_equal(x.shape[axis], 1):
            raise node.error(f"cannot squeeze dim {axis} of size {x.shape[axis]}")
    return x.reshape(*(d for i, d in enumerate(x.shape) if i not in axes))


@converter("Unsqueeze")
def unsqueeze(node: NodeContext) -> gc.Tensor:
    """x with size-1 dims inserted at the given axes of the result."""
    x = node.tensor(0)
    axes = node.ints(1, "axes") or []
    rank = x.ndim + len(axes)
    shape = list(x.shape)
    for axis in sorted(normalize_axes(node, axes, rank)):
        shape.insert(axis, 1)
    return x.reshape(*shape)


@converter("Concat")
def concat(node: NodeContext) -> gc.Tensor:
    """The inputs joined along axis."""
    tensors = [node.tensor(i) for i in range(len(node)) if node.has(i)]
    return gc.cat(tensors, node.attr("axis"))


@converter("Split")
def split(node: NodeContext) -> list[gc.Tensor]:
    """x cut along `axis` into the listed sizes, or into equal parts (the last smaller)."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", 0)], x.ndim)[0]
    sizes = node.ints(1, "split")
    parts = node.attr("num_outputs", node.output_count)
    if sizes is None:
        size = x.shape[axis]
        if not isinstance(size, int):
            raise node.error(f"cannot split the symbolic dim {size} into {parts} parts")
        step = -(-size // parts)
        sizes = [min(step, size - start) for start in range(0, size, step)]
    return list(x.split(sizes, axis))


@converter("Slice")
def slice_(node: NodeContext) -> gc.Tensor:
    """x[starts:ends:steps] on the given axes; negative steps read backwards."""
    x = node.tensor(0)
    starts, ends = node.ints(1, "starts") or [], node.ints(2, "ends") or []
    axes = node.ints(3, "axes")
    axes = normalize_axes(node, list(range(len(starts))) if axes is None else axes, x.ndim)
    steps = node.ints(4, "steps") or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    reversed_axes = []
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            raise node.error("a slice step cannot be 0")
        size = x.shape[axis]
        if step < 0 or isinstance(size, int):
            if not isinstance(size, int):
                raise node.error(f"a negative step on the symbolic dim {size} is not supported")
            positions = np.arange(size)[slice(start, end, step)]
            if step < 0:
                reversed_axes.append((axis, positions))
                continue
            index[axis] = (
                slice(int(positions[0]), int(positions[-1]) + 1, step)
                if len(positions)
                else slice(0, 0)
            )
        else:
            index[axis] = slice(start, None if end >= _FAR else end, step)
    y = x[tuple(index)]
    for axis, positions in reversed_axes:
        y = take(y, axis, positions.astype(np.int64))
    return y


@converter("Gather")
def gather(node: NodeContext) -> gc.Tensor:
    """np.take(data, indices, axis): negative indices count from the end."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", 0)], x.ndim)[0]
    indices = node.value(1)
    index = indices.array if isinstance(indices, Known) and not indices.symbolic else node.tensor(1)
    return take(x, axis, index)


@converter("GatherElements")
def gather_elements(node: NodeContext) -> gc.Tensor:
    """torch.gather(data, axis, indices), with negative indices counted from the end."""
    x, index = node.tensor(0), node.tensor(1).to(gc.int64)
    axis = normalize_axes(node, [node.attr("axis", 0)], x.ndim)[0]
    size = count_tensor(x.shape[axis], gc.int64)
    return gc.gather(x, axis, gc.where(index < 0, index + size, index))


@converter("ReverseSequence")
def reverse_sequence(node: NodeContext) -> gc.Tensor:
    """Each batch entry's first sequence_lens[b] steps along time_axis in reverse order, the
    steps after them as they are: a gather along the time axis."""
    x, lengths = node.tensor(0), node.tensor(1).to(gc.int64)
    time, batch = normalize_axes(
        node, [node.attr("time_axis", 0), node.attr("batch_axis", 1)], x.ndim
    )
    if time == batch:
        raise node.error(f"time_axis and batch_axis are both {time}")

    def along(values: gc.Tensor, axis: int) -> gc.Tensor:
        return values.reshape(*(-1 if i == axis else 1 for i in range(x.ndim)))

    steps, length = along(gc.arange(x.shape[time]), time), along(lengths, batch)
    index = gc.where(steps < length, length - 1 - steps, steps)
    return gc.gather(x, time, index.broadcast_to(x.shape))


@converter("Expand")
def expand(node: NodeContext) -> gc.Tensor:
    """x broadcast with the given shape (either side's 1s stretch, as numpy broadcasting)."""
    x = node.tensor(0)
    shape = node.dims(1, "shape")
    rank = max(x.ndim, len(shape))
    own = [1] * (rank - x.ndim) + list(x.shape)
    wanted = [1] * (rank - len(shape)) + shape
    target = [a if isinstance(b, int) and b == 1 else b for a, b in zip(own, wanted, strict=True)]
    return x.reshape(*own).broadcast_to(target)


@converter("Tile")
def tile(node: NodeContext) -> gc.Tensor:
    """x repeated `repeats[i]` times along each dim i."""
    x = node.tensor(0)
    repeats = node.ints(1, "repeats") or []
    if len(repeats) != x.ndim:
        raise node.error(f"needs one repeat per dim of a {x.ndim}-d input, got {repeats}")
    spread = x.reshape(*(d for size in x.shape for d in (1, size)))
    target = [d for r, size in zip(repeats, x.shape, strict=True) for d in (r, size)]
    return spread.broadcast_to(target).reshape(
        *(dim_mul(r, size) for r, size in zip(repeats, x.shape, strict=True))
    )


@converter("ConstantOfShape")
def constant_of_shape(node: NodeContext) -> gc.Tensor:
    """A tensor of the given (maybe symbolic) shape filled with `value` (float32 0 by default)."""
    value = node.attr("value")
    fill = np.zeros(1, np.float32) if value is None else value.reshape(-1)
    return gc.full(node.dims(0, "shape"), fill[0].item(), dtype=gc.tensor(fill).dtype)


@converter("Range")
def range_(node: NodeContext) -> gc.Tensor:
    """start + delta * i for i below ceil((limit - start) / delta)."""
    start, limit, delta = (
        node.static(i, name) for i, name in enumerate(("start", "limit", "delta"))
    )
    assert start is not None and limit is not None and delta is not None
    count = max(int(np.ceil((limit - start) / delta)), 0)  # in the inputs' type, as ONNX
    dtype = node.tensor(0).dtype
    return gc.arange(count).to(dtype) * gc.tensor(delta, dtype) + gc.tensor(start, dtype)


@converter("Pad")
def pad(node: NodeContext) -> gc.Tensor:
    """x padded with a constant, or by reflecting, repeating the edge or wrapping around."""
    x = node.tensor(0)
    pads = node.ints(1, "pads") or []
    given = node.ints(3, "axes")
    axes = normalize_axes(node, given, x.ndim) if given is not None else list(range(x.ndim))
    if len(pads) != 2 * len(axes):
        raise node.error(f"pads {pads} needs a begin and an end for each of the axes {axes}")
    widths = {axis: (pads[k], pads[k + len(axes)]) for k, axis in enumerate(axes)}
    mode = node.require(
        "mode", ("constant", "reflect", "edge", "wrap"), "constant", "constant/reflect/edge/wrap"
    )
    if mode == "constant":
        pairs = [w for axis in reversed(range(x.ndim)) for w in widths.get(axis, (0, 0))]
        if not node.has(2) or isinstance(node.value(2), Known):
            value = node.static(2, "constant_value")
            return gc.pad(x, pairs, 0.0 if value is None else value.item())
        # A fill computed in the graph: pad with 0, then put the fill where nothing was.
        inside = gc.pad(gc.ones_like(x, gc.float32), pairs, 0.0) > 0
        return gc.where(inside, gc.pad(x, pairs, 0.0), node.tensor(2).to(x.dtype))
    for axis, (before, after) in widths.items():
        size = x.shape[axis]
        if not isinstance(size, int):
            raise node.error(f"mode {mode!r} on the symbolic dim {size} is not supported")
        positions = np.arange(-before, size + after)
        if mode == "edge":
            positions = np.clip(positions, 0, size - 1)
        elif mode == "wrap":
            positions = positions % size
        else:  # reflect about the first and last element, which are not repeated
            period = 2 * (size - 1) if size > 1 else 1
            folded = positions % period
            positions = np.where(folded >= size, period - folded, folded)
        if before or after:
            x = take(x, axis, positions.astype(np.int64))
    return x


@converter("DepthToSpace", "SpaceToDepth")
def depth_space(node: NodeContext) -> gc.Tensor:
    """Move blocks of channels to space (DepthToSpace, DCR or CRD order) or back."""
    x = node.tensor(0)
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    mode = node.require("mode", ("DCR", "CRD"), "DCR", "DCR or CRD")
    if node.op == "SpaceToDepth":
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.permute(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@converter("Trilu")
def trilu(node: NodeContext) -> gc.Tensor:
    """The upper (or lower) triangle of the last two dims from diagonal k; zeros elsewhere."""
    x = node.tensor(0)
    k = (node.ints(1, "k") or [0])[0]
    rows, cols = x.shape[-2], x.shape[-1]
    if not isinstance(rows, int) or not isinstance(cols, int):
        raise node.error("the last two dims must be static")
    upper = node.require("upper", (0, 1), 1, "0 or 1")
    mask = (
        np.triu(np.ones((rows, cols), bool), k)
        if upper
        else np.tril(np.ones((rows, cols), bool), k)
    )
    return gc.where(gc.tensor(mask), x, gc.zeros_like(x))


@converter("EyeLike")
def eye_like(node: NodeContext) -> gc.Tensor:
    """Ones on diagonal k of a matrix of the input's shape, zeros elsewhere, in `dtype` (the
    input's where not given)."""
    x = node.tensor(0)
    if x.ndim != 2:
        raise node.error(f"the input must be 2-d, got {x.ndim}-d")
    dtype = node.attr("dtype")
    dtype = x.dtype if dtype is None else dtype_of(dtype, f"EyeLike node {node.name!r}")
    rows, cols = x.shape
    diagonal = gc.arange(rows).reshape(-1, 1) + node.attr("k", 0) == gc.arange(cols)
    return diagonal.to(dtype)


@converter("OneHot")
def one_hot(node: NodeContext) -> gc.Tensor:
    """values[1] where an index (negative ones counted from depth) equals the position along
    the new axis, values[0] elsewhere (so everywhere for an index out of range)."""
    indices = node.tensor(0)
    depth = node.static(1, "depth")
    assert depth is not None
    if depth.size != 1:
        raise node.error(f"depth must hold one value, got {depth.tolist()}")
    values = node.tensor(2)
    if values.shape != (2,):
        raise node.error(f"values must be (off, on), got shape {values.shape}")
    axis = normalize_axes(node, [node.attr("axis", -1)], indices.ndim + 1)[0]
    classes = np.arange(depth.item()).astype(indices.dtype.numpy)
    positions = gc.tensor(classes.reshape((-1,) + (1,) * (indices.ndim - axis)))
    wrapped = gc.where(indices < 0, indices + gc.tensor(depth.item(), indices.dtype), indices)
    hot = wrapped.unsqueeze(axis) == positions
    return gc.where(hot, values[1], values[0])
