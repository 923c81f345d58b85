"""Converters of ONNX's convolutions, pooling and normalizations.

graphc's convolution and pooling are 2-D (NCHW) with the same padding on both sides of a dim.
A 1-D op runs as 2-D on a height of 1; padding that differs between the two sides of a dim, or
comes from auto_pad, is applied with an explicit pad first (-inf for max pooling), so the
result is exactly ONNX's. 3-D ops are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import graphc as gc
from graphc.nn import functional as F
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_shape import normalize_axes


def _spatial(node: NodeContext, x: gc.Tensor) -> int:
    """Return the number of spatial dims (1 or 2), or raise for other ranks."""
    rank = x.ndim - 2
    if rank not in (1, 2):
        raise node.error(f"{rank}-d spatial inputs are not supported (graphc has 1-d and 2-d)")
    return rank


def _kernel(node: NodeContext, weight: gc.Tensor) -> list[int]:
    """Return the spatial sizes of a convolution's weight, which must be static."""
    static = [k for k in weight.shape[2:] if isinstance(k, int)]
    if len(static) != weight.ndim - 2:
        raise node.error(f"the weight's window {weight.shape[2:]} must be static")
    return static


def _window(node: NodeContext, rank: int, kernel: Sequence[int]) -> tuple[list[int], list[int]]:
    """Return the strides and dilations (defaults 1)."""
    strides = list(node.attr("strides", [1] * rank))
    dilations = list(node.attr("dilations", [1] * rank))
    given = node.attr("kernel_shape")
    if given is not None and list(given) != list(kernel):
        raise node.error(f"kernel_shape {given} differs from the weight's {list(kernel)}")
    return strides, dilations


def _pads(
    node: NodeContext,
    sizes: Sequence[object],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[list[int], list[int]]:
    """Return the (begins, ends) padding of each spatial dim, from `pads` or auto_pad."""
    rank = len(kernel)
    auto_pad = node.require(
        "auto_pad", ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"), "NOTSET", "an ONNX mode"
    )
    if auto_pad == "NOTSET":
        pads = list(node.attr("pads", [0] * 2 * rank))
        return pads[:rank], pads[rank:]
    node.attr("pads")
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        if not isinstance(size, int):
            raise node.error(f"auto_pad={auto_pad} on the symbolic dim {size} is not supported")
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins, ends


def _as_2d(x: gc.Tensor, rank: int) -> gc.Tensor:
    return x.unsqueeze(2) if rank == 1 else x


def _from_2d(y: gc.Tensor, rank: int) -> gc.Tensor:
    return y.squeeze(2) if rank == 1 else y


def _pre_pad(x: gc.Tensor, begins: list[int], ends: list[int], value: float) -> gc.Tensor:
    """Return x (N, C, H, W) padded on its last two dims."""
    return gc.pad(x, [begins[1], ends[1], begins[0], ends[0]], value)


def _padded(
    x: gc.Tensor, begins: list[int], ends: list[int], kernel: Sequence[int], value: float
) -> tuple[gc.Tensor, tuple[int, int]]:
    """Return x and the symmetric padding graphc's op applies, padding x first where the two
    sides differ or the padding is wider than half the window (beyond what graphc's pooling
    takes)."""
    if begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel, strict=True)):
        return x, (begins[0], begins[1])
    return _pre_pad(x, begins, ends, value), (0, 0)


@converter("Conv")
def conv(node: NodeContext) -> gc.Tensor:
    """The grouped, strided, dilated, padded 1-d or 2-d convolution of X with W, plus B."""
    x, w, b = node.tensor(0), node.tensor(1), node.optional(2)
    rank = _spatial(node, x)
    kernel = _kernel(node, w)
    strides, dilations = _window(node, rank, kernel)
    begins, ends = _pads(node, x.shape[2:], kernel, strides, dilations)
    x, w = _as_2d(x, rank), _as_2d(w, rank)
    if rank == 1:
        strides, dilations, begins, ends = [1, *strides], [1, *dilations], [0, *begins], [0, *ends]
    padding = (begins[0], begins[1])
    if begins != ends:
        x, padding = _pre_pad(x, begins, ends, 0.0), (0, 0)
    y = gc.conv2d(x, w, b, tuple(strides), padding, tuple(dilations), node.attr("group", 1))
    return _from_2d(y, rank)


@converter("ConvTranspose")
def conv_transpose(node: NodeContext) -> gc.Tensor:
    """The transposed convolution of X with W (C, O/group, k...): ONNX's output_shape,
    output_padding and asymmetric pads become a crop or zero extension of the full result."""
    x, w, b = node.tensor(0), node.tensor(1), node.optional(2)
    rank = _spatial(node, x)
    kernel = _kernel(node, w)
    strides, dilations = _window(node, rank, kernel)
    extra = list(node.attr("output_padding", [0] * rank))
    output_shape = node.attr("output_shape")
    auto_pad = node.require(
        "auto_pad", ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"), "NOTSET", "an ONNX mode"
    )
    sizes = x.shape[2:]
    full = [
        (n - 1) * s + (k - 1) * d + 1
        for n, s, k, d in zip(sizes, strides, kernel, dilations, strict=True)
    ]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        node.attr("pads")
        wanted = (
            list(output_shape)[-rank:]
            if output_shape is not None
            else [n * s for n, s in zip(sizes, strides, strict=True)]
        )
        totals = [f + e - o for f, e, o in zip(full, extra, wanted, strict=True)]
        upper = auto_pad == "SAME_UPPER"
        begins = [t // 2 if upper else t - t // 2 for t in totals]
        ends = [t - t // 2 if upper else t // 2 for t in totals]
    elif auto_pad == "VALID":
        node.attr("pads")
        begins, ends = [0] * rank, [0] * rank
    else:
        pads = list(node.attr("pads", [0] * 2 * rank))
        begins, ends = pads[:rank], pads[rank:]
    x, w = _as_2d(x, rank), _as_2d(w, rank)
    if rank == 1:
        strides, dilations = [1, *strides], [1, *dilations]
        begins, ends, extra = [0, *begins], [0, *ends], [0, *extra]
    y = gc.conv_transpose2d(
        x, w, None, tuple(strides), 0, 0, node.attr("group", 1), tuple(dilations)
    )
    widths = [-begins[1], extra[1] - ends[1], -begins[0], extra[0] - ends[0]]
    if any(widths):
        y = gc.pad(y, widths, 0.0)
    if b is not None:
        y = y + b.reshape(-1, 1, 1)
    return _from_2d(y, rank)


@converter("MaxPool", "AveragePool", "LpPool")
def pool(node: NodeContext) -> gc.Tensor:
    """Max, average or Lp-norm pooling over 1-d or 2-d windows."""
    x = node.tensor(0)
    rank = _spatial(node, x)
    kernel = list(node.attr("kernel_shape"))
    strides, dilations = _window(node, rank, kernel)
    begins, ends = _pads(node, x.shape[2:], kernel, strides, dilations)
    ceil_mode = bool(node.require("ceil_mode", (0, 1), 0, "0 or 1"))
    x = _as_2d(x, rank)
    if rank == 1:
        kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
        begins, ends = [0, *begins], [0, *ends]
    if node.op == "MaxPool":
        node.attr("storage_order")  # it orders the Indices output, which graphc does not give
        x, padding = _padded(x, begins, ends, kernel, -math.inf)
        y = gc.max_pool2d(x, tuple(kernel), tuple(strides), padding, tuple(dilations), ceil_mode)
        return _from_2d(y, rank)
    extra = [0, 0]
    if ceil_mode and any(d != 1 for d in dilations):
        # Dilated windows are summed by a convolution, which has no ceil mode: the windows
        # ceil mode adds become zero padding past the end.
        extra = [
            _ceil_extra(node, n, k, s, d, b, e)
            for n, k, s, d, b, e in zip(
                x.shape[2:], kernel, strides, dilations, begins, ends, strict=True
            )
        ]
        ceil_mode = False
    if node.op == "LpPool":  # the p-th root of each window's sum of |x| ** p
        p = node.attr("p", 2)
        powered = gc.abs(x) if p == 1 else x * x if p == 2 else gc.abs(x) ** p
        padded, padding = _padded(powered, begins, _plus(ends, extra), kernel, 0.0)
        sums = _window_sums(padded, padding, kernel, strides, dilations, ceil_mode)
        return _from_2d(sums if p == 1 else gc.sqrt(sums) if p == 2 else sums ** (1 / p), rank)
    include_pad = bool(node.require("count_include_pad", (0, 1), 0, "0 or 1"))
    direct, padding = _padded(x, begins, ends, kernel, 0.0)
    if all(d == 1 for d in dilations) and (include_pad or direct is x):
        y = gc.avg_pool2d(direct, tuple(kernel), tuple(strides), padding, include_pad, ceil_mode)
        return _from_2d(y, rank)
    # Each window's sum over its count of the elements that count: the real ones, and the
    # padding too where count_include_pad says so (not what ceil mode adds).
    ones = gc.ones(1, 1, *x.shape[2:], dtype=x.dtype)
    counted = _pre_pad(_pre_pad(ones, begins, ends, float(include_pad)), [0, 0], extra, 0.0)
    padded = _pre_pad(x, begins, _plus(ends, extra), 0.0)
    total = _window_sums(padded, (0, 0), kernel, strides, dilations, ceil_mode)
    count = _window_sums(counted, (0, 0), kernel, strides, dilations, ceil_mode)
    return _from_2d(total / count, rank)


def _plus(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [p + q for p, q in zip(a, b, strict=True)]


def _ceil_extra(
    node: NodeContext, size: object, kernel: int, stride: int, dilation: int, begin: int, end: int
) -> int:
    """Return the padding past the end that holds ceil mode's last window: windows are
    counted rounding up, and one that would start past the input and its leading padding is
    dropped (ONNX and PyTorch agree)."""
    if not isinstance(size, int):
        raise node.error(f"ceil_mode with dilations on the symbolic dim {size} is not supported")
    extent = (kernel - 1) * dilation + 1
    count = -(-(size + begin + end - extent) // stride) + 1
    if (count - 1) * stride >= size + begin:
        count -= 1
    return max((count - 1) * stride + extent - (size + begin + end), 0)


def _window_sums(
    x: gc.Tensor,
    padding: tuple[int, int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool,
) -> gc.Tensor:
    """Return each window's sum over x (N, C, H, W), zero-padded by `padding`. graphc's
    average pooling has no dilation, so dilated windows are summed by a depthwise convolution
    with a kernel of ones (the caller has turned ceil mode into padding)."""
    if all(d == 1 for d in dilations):
        window = (tuple(kernel), tuple(strides), padding, True, ceil_mode)
        return gc.avg_pool2d(x, *window, divisor_override=1)
    channels = x.shape[1]
    if not isinstance(channels, int):
        raise gc.errors.ShapeError(f"dilated pooling needs a static channel count, got {channels}")
    ones = gc.ones(channels, 1, *kernel, dtype=x.dtype)
    return gc.conv2d(x, ones, None, tuple(strides), padding, tuple(dilations), channels)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(node: NodeContext) -> gc.Tensor:
    """The mean or the max over every spatial dim, which stay as size 1."""
    x = node.tensor(0)
    axes = tuple(range(2, x.ndim))
    return x.mean(axes, keepdim=True) if node.op == "GlobalAveragePool" else x.amax(axes, True)


# -- normalizations --------------------------------------------------------------------------
def _per_channel(t: gc.Tensor, ndim: int) -> gc.Tensor:
    """Return a (C,) tensor shaped to broadcast over dim 1 of an ndim-d input."""
    return t.reshape(-1, *([1] * (ndim - 2)))


@converter("BatchNormalization")
def batch_norm(node: NodeContext) -> gc.Tensor:
    """Inference: (X - mean) / sqrt(var + epsilon) * scale + B with the given statistics."""
    if node.require("training_mode", (0,), 0, "graphc imports inference graphs"):
        raise node.error("training_mode is not supported")
    node.attr("momentum")  # it updates running statistics, which inference does not
    x = node.tensor(0)
    scale, bias, mean, var = (node.tensor(i) for i in range(1, 5))
    return F.batch_norm(x, mean, var, scale, bias, False, eps=node.attr("epsilon", 1e-5))


def _normalized(x: gc.Tensor, axes: tuple[int, ...], eps: float) -> tuple[gc.Tensor, ...]:
    """Return x normalised over axes, its mean and 1 / sqrt(var + eps) (kept dims)."""
    mean = x.mean(axes, keepdim=True)
    inverse = gc.rsqrt(x.var(axes, keepdim=True, correction=0) + eps)
    return (x - mean) * inverse, mean, inverse


def _stash(node: NodeContext, x: gc.Tensor) -> gc.Tensor:
    """Return x in the type its statistics are computed in (stash_type, float32 by default)."""
    stash = node.require("stash_type", (1, 11), 1, "FLOAT or DOUBLE")
    return x.to(gc.float32 if stash == 1 else gc.float64)


@converter("InstanceNormalization")
def instance_norm(node: NodeContext) -> gc.Tensor:
    """X normalised over its spatial dims per sample and channel, then scaled and shifted per
    channel."""
    x, scale, bias = node.tensor(0), node.tensor(1), node.tensor(2)
    y, _, _ = _normalized(x, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


@converter("LayerNormalization")
def layer_norm(node: NodeContext) -> list[gc.Tensor]:
    """X normalised over the dims from `axis` on, then scaled and shifted; also the mean and
    the inverse standard deviation, in the stash type."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", -1)], x.ndim)[0]
    stashed = _stash(node, x)
    y, mean, inverse = _normalized(stashed, tuple(range(axis, x.ndim)), node.attr("epsilon", 1e-5))
    y = y.to(x.dtype) * node.tensor(1)
    bias = node.optional(2)
    return [y if bias is None else y + bias, mean, inverse]


@converter("GroupNormalization")
def group_norm(node: NodeContext) -> gc.Tensor:
    """X normalised over each group of channels; scale and bias per channel (opset 21) or
    per group (opset 18)."""
    x, scale, bias = node.tensor(0), node.tensor(1), node.tensor(2)
    groups = node.attr("num_groups")
    channels = x.shape[1]
    stashed = _stash(node, x) if node.opset >= 21 else x
    grouped = stashed.reshape(x.shape[0], groups, -1)
    y, _, _ = _normalized(grouped, (2,), node.attr("epsilon", 1e-5))
    y = y.to(x.dtype).reshape(*x.shape)
    if node.opset < 21:
        scale, bias = (
            t.reshape(groups, 1).broadcast_to((groups, channels // groups)) for t in (scale, bias)
        )
        scale, bias = scale.reshape(-1), bias.reshape(-1)
    return y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


@converter("RMSNormalization")
def rms_norm(node: NodeContext) -> gc.Tensor:
    """X / sqrt(mean(X^2) + epsilon) over the dims from `axis` on, times scale."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", -1)], x.ndim)[0]
    stashed = _stash(node, x)
    axes = tuple(range(axis, x.ndim))
    rms = gc.rsqrt((stashed * stashed).mean(axes, keepdim=True) + node.attr("epsilon", 1e-5))
    return (stashed * rms).to(x.dtype) * node.tensor(1)


@converter("LpNormalization")
def lp_norm(node: NodeContext) -> gc.Tensor:
    """X divided by its L1 or L2 norm along axis (0 where the norm is 0)."""
    x = node.tensor(0)
    axis = normalize_axes(node, [node.attr("axis", -1)], x.ndim)[0]
    p = node.require("p", (1, 2), 2, "1 or 2")
    norm = gc.abs(x).sum(axis, keepdim=True) if p == 1 else gc.sqrt((x * x).sum(axis, True))
    return gc.where(norm == 0, gc.zeros_like(x), x / norm)


@converter("MeanVarianceNormalization")
def mean_variance_norm(node: NodeContext) -> gc.Tensor:
    """(X - mean) / (sqrt(var) + 1e-9) over `axes`, as ONNX's function body computes it."""
    x = node.tensor(0)
    axes = tuple(normalize_axes(node, node.attr("axes", [0, 2, 3]), x.ndim))
    mean = x.mean(axes, keepdim=True)
    return (x - mean) / (gc.sqrt(x.var(axes, keepdim=True, correction=0)) + 1e-9)


@converter("LRN")
def local_response_norm(node: NodeContext) -> gc.Tensor:
    """X / (bias + alpha / size * sum of squares over `size` neighbouring channels) ** beta."""
    x = node.tensor(0)
    size = node.attr("size")
    channels = x.shape[1]
    before = (size - 1) // 2
    widths = [0, 0] * (x.ndim - 2) + [before, size - 1 - before]
    squares = gc.pad(x * x, widths, 0.0)
    total = squares[:, 0:channels]
    for shift in range(1, size):
        total = total + squares[:, shift : shift + channels]
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    return x / gc.pow(total * (alpha / size) + bias, beta)
