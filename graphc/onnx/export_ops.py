"""The ONNX form of each graphc primitive: one emitter per op, which writes ONNX nodes for a
graphc node and returns the name of its value.

Where ONNX's op differs from graphc's (integer floor division, the sign of a float remainder,
graphc's gather broadcasting its index) the emitter composes graphc's meaning from ONNX ops;
an op ONNX cannot express is left out, and exporting it raises naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

import graphc as gc
from graphc.onnx.common import OnnxExportError, elem_type_of

if TYPE_CHECKING:
    from graphc.onnx.exporter import ExportContext

Emitter = Callable[["ExportContext", gc.Node], str]
EMITTERS: dict[str, Emitter] = {}


def emits(*ops: str) -> Callable[[Emitter], Emitter]:
    """Register a function as the emitter of the given graphc ops."""

    def register(function: Emitter) -> Emitter:
        """Record function as the emitter of every op named."""
        for op in ops:
            EMITTERS[op] = function
        return function

    return register


def _operands(context: ExportContext, node: gc.Node) -> list[str]:
    return [context.value_of(n) for n in node.inputs]


def _same_op(onnx_op: str) -> Emitter:
    return lambda context, node: context.add(onnx_op, _operands(context, node))


_DIRECT = {
    "neg": "Neg",
    "abs": "Abs",
    "sign": "Sign",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "sin": "Sin",
    "cos": "Cos",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "erf": "Erf",
    "floor": "Floor",
    "ceil": "Ceil",
    "round": "Round",
    "logical_not": "Not",
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "pow": "Pow",
    "maximum": "Max",
    "minimum": "Min",
    "eq": "Equal",
    "lt": "Less",
    "le": "LessOrEqual",
    "gt": "Greater",
    "ge": "GreaterOrEqual",
    "logical_and": "And",
    "logical_or": "Or",
    "where": "Where",
    "matmul": "MatMul",
    "stop_gradient": "Identity",
}
for _op, _onnx_op in _DIRECT.items():
    EMITTERS[_op] = _same_op(_onnx_op)


def _scalar(context: ExportContext, value: float, node: gc.Node) -> str:
    return context.const(np.asarray(value, dtype=node.type.dtype.numpy))


@emits("constant")
def constant(context: ExportContext, node: gc.Node) -> str:
    """A Constant node holding the array."""
    return context.const(np.asarray(node.attrs["value"], dtype=node.type.dtype.numpy))


@emits("dim_size")
def dim_size(context: ExportContext, node: gc.Node) -> str:
    """A size computed from the inputs' shapes, as a scalar of the node's dtype."""
    size = context.add("Squeeze", [context.dim(node.attrs["dim"]), context.const([0], np.int64)])
    return context.add("Cast", [size], to=elem_type_of(node.type.dtype))


@emits("arange")
def arange(context: ExportContext, node: gc.Node) -> str:
    """start, start + step, ... (size values, sizes read from the inputs' shapes): Range."""
    step = node.attrs["step"]
    start = context.dim(node.attrs["start"])
    limit = context.add(
        "Add",
        [
            start,
            context.add("Mul", [context.dim(node.attrs["size"]), context.const([step], np.int64)]),
        ],
    )
    axis = context.const([0], np.int64)
    scalars = [context.add("Squeeze", [value, axis]) for value in (start, limit)]
    values = context.add("Range", [*scalars, context.const(step, np.int64)])
    return context.add("Cast", [values], to=elem_type_of(node.type.dtype))


@emits("expm1", "log1p", "rsqrt", "ne")
def composed_unary(context: ExportContext, node: gc.Node) -> str:
    """expm1 = exp(x) - 1, log1p = log(1 + x), rsqrt = 1 / sqrt(x), ne = not(a == b)."""
    args = _operands(context, node)
    if node.op == "expm1":
        return context.add("Sub", [context.add("Exp", args), _scalar(context, 1.0, node)])
    if node.op == "log1p":
        return context.add("Log", [context.add("Add", [args[0], _scalar(context, 1.0, node)])])
    if node.op == "rsqrt":
        return context.add("Reciprocal", [context.add("Sqrt", args)])
    return context.add("Not", [context.add("Equal", args)])


@emits("floordiv", "mod")
def floor_division(context: ExportContext, node: gc.Node) -> str:
    """Floor division and the remainder with the divisor's sign, as PyTorch computes them."""
    a, b = _operands(context, node)
    if node.type.dtype.is_float:
        quotient = context.add("Floor", [context.add("Div", [a, b])])
        if node.op == "floordiv":
            return quotient
        return context.add("Sub", [a, context.add("Mul", [quotient, b])])
    if node.op == "mod":
        return context.add("Mod", [a, b], fmod=0)
    # ONNX's integer Div truncates: step down where the signs differ and it was inexact.
    truncated = context.add("Div", [a, b])
    inexact = context.add("Not", [context.add("Equal", [context.add("Mul", [truncated, b]), a])])
    zero = _scalar(context, 0, node)
    signs = context.add("Xor", [context.add("Less", [a, zero]), context.add("Less", [b, zero])])
    step = context.add(
        "Cast", [context.add("And", [inexact, signs])], to=elem_type_of(node.type.dtype)
    )
    return context.add("Sub", [truncated, step])


@emits("cast")
def cast(context: ExportContext, node: gc.Node) -> str:
    """Cast to the node's element type."""
    return context.add("Cast", _operands(context, node), to=elem_type_of(node.type.dtype))


@emits("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
def reduce(context: ExportContext, node: gc.Node) -> str:
    """ReduceSum/Max/Min/Prod over the node's axes (axes given as an input, opset 18)."""
    onnx_op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}
    if not node.attrs["axes"]:  # ONNX would read no axes as every axis
        return context.add("Identity", _operands(context, node))
    axes = context.const(list(node.attrs["axes"]), np.int64)
    return context.add(
        onnx_op.get(node.op, "ReduceProd"),
        [*_operands(context, node), axes],
        keepdims=int(node.attrs["keepdims"]),
    )


@emits("argmax", "argmin")
def arg_reduce(context: ExportContext, node: gc.Node) -> str:
    """ArgMax/ArgMin along the node's axis (the first extremum, as graphc)."""
    return context.add(
        "ArgMax" if node.op == "argmax" else "ArgMin",
        _operands(context, node),
        axis=node.attrs["axis"],
        keepdims=int(node.attrs["keepdims"]),
    )


@emits("reshape")
def reshape(context: ExportContext, node: gc.Node) -> str:
    """Reshape to the node's shape; allowzero where the shape has a 0 dim."""
    shape = node.type.shape
    empty = any(isinstance(d, int) and d == 0 for d in shape)
    return context.add(
        "Reshape", [*_operands(context, node), context.shape(shape)], allowzero=int(empty)
    )


@emits("broadcast_to")
def broadcast_to(context: ExportContext, node: gc.Node) -> str:
    """Expand to the node's shape."""
    return context.add("Expand", [*_operands(context, node), context.shape(node.type.shape)])


@emits("permute")
def permute(context: ExportContext, node: gc.Node) -> str:
    """Transpose with the node's permutation."""
    return context.add("Transpose", _operands(context, node), perm=list(node.attrs["perm"]))


@emits("concat")
def concat(context: ExportContext, node: gc.Node) -> str:
    """Concat along the node's axis."""
    return context.add("Concat", _operands(context, node), axis=node.attrs["axis"])


@emits("slice")
def slice_(context: ExportContext, node: gc.Node) -> str:
    """Slice with ends one past the last element taken (start + (size - 1) * step + 1)."""
    starts, sizes, steps = (node.attrs[k] for k in ("starts", "sizes", "steps"))
    ends = [
        start + (size - 1) * step + 1
        for start, size, step in zip(starts, sizes, steps, strict=True)
    ]
    axes = list(range(len(starts)))
    return context.add(
        "Slice",
        [
            *_operands(context, node),
            context.shape(starts),
            context.shape(ends),
            context.const(axes, np.int64),
            context.const(list(steps), np.int64),
        ],
    )


@emits("pad")
def pad(context: ExportContext, node: gc.Node) -> str:
    """Pad with a constant; negative widths crop, as in graphc."""
    pairs = node.attrs["pads"]
    widths = [before for before, _ in pairs] + [after for _, after in pairs]
    value = _scalar(context, node.attrs["value"], node)
    return context.add("Pad", [*_operands(context, node), context.const(widths, np.int64), value])


@emits("gather")
def gather(context: ExportContext, node: gc.Node) -> str:
    """take_along_axis: GatherElements on the index broadcast to the output's shape."""
    x, index = _operands(context, node)
    full = context.add("Expand", [index, context.shape(node.type.shape)])
    return context.add("GatherElements", [x, full], axis=node.attrs["axis"])


@emits("scatter_add")
def scatter_add(context: ExportContext, node: gc.Node) -> str:
    """ScatterElements with reduction=add onto zeros, the index broadcast to the source's shape."""
    index, source = _operands(context, node)
    zero = _scalar(context, 0, node)
    zeros = context.add("Expand", [zero, context.shape(node.type.shape)])
    full = context.add("Expand", [index, context.shape(node.inputs[1].type.shape)])
    return context.add(
        "ScatterElements", [zeros, full, source], axis=node.attrs["axis"], reduction="add"
    )


def _window(node: gc.Node) -> dict:
    (ph, pw) = node.attrs["padding"]
    return {
        "strides": list(node.attrs["stride"]),
        "pads": [ph, pw, ph, pw],
        "dilations": list(node.attrs.get("dilation", (1, 1))),
    }


@emits("conv2d")
def conv2d(context: ExportContext, node: gc.Node) -> str:
    """Conv with graphc's symmetric padding, strides, dilations and groups."""
    return context.add(
        "Conv", _operands(context, node), group=node.attrs["groups"], **_window(node)
    )


@emits("conv2d_input_grad")
def conv_transpose2d(context: ExportContext, node: gc.Node) -> str:
    """A transposed convolution: output_padding makes up the rows past the last window."""
    x, w = node.inputs
    window = _window(node)
    (ph, pw), (sh, sw), (dh, dw) = node.attrs["padding"], node.attrs["stride"], window["dilations"]
    kh, kw = w.type.shape[2], w.type.shape[3]
    full_h = (x.type.shape[2] - 1) * sh - 2 * ph + dh * (kh - 1) + 1
    full_w = (x.type.shape[3] - 1) * sw - 2 * pw + dw * (kw - 1) + 1
    height, width = node.type.shape[2], node.type.shape[3]
    return context.add(
        "ConvTranspose",
        _operands(context, node),
        group=node.attrs["groups"],
        output_padding=[height - full_h, width - full_w],
        **window,
    )


@emits("max_pool2d", "avg_pool2d")
def pool2d(context: ExportContext, node: gc.Node) -> str:
    """MaxPool or AveragePool; avg_pool2d's divisor_override has no ONNX form."""
    window = _window(node)
    attrs = {
        "kernel_shape": list(node.attrs["kernel"]),
        "strides": window["strides"],
        "pads": window["pads"],
        "ceil_mode": int(node.attrs.get("ceil_mode", False)),
    }
    if node.op == "max_pool2d":
        return context.add(
            "MaxPool", _operands(context, node), dilations=window["dilations"], **attrs
        )
    if node.attrs.get("divisor_override") is not None:
        raise OnnxExportError("avg_pool2d's divisor_override has no ONNX form")
    include = int(node.attrs.get("count_include_pad", True))
    return context.add("AveragePool", _operands(context, node), count_include_pad=include, **attrs)


@emits("im2col")
def im2col(context: ExportContext, node: gc.Node) -> str:
    """Every window's taps, (C, kH, kW, N, OH, OW): one strided Slice of the padded input per
    tap, stacked and moved into graphc's layout."""
    (x,) = _operands(context, node)
    (kh, kw), (sh, sw), (ph, pw) = (node.attrs[k] for k in ("kernel", "stride", "padding"))
    (dh, dw) = node.attrs["dilation"]
    channels, _, _, _, oh, ow = node.type.shape
    padded = context.add("Pad", [x, context.const([0, 0, ph, pw, 0, 0, ph, pw], np.int64)])
    taps = []
    for i in range(kh):
        for j in range(kw):
            starts = [i * dh, j * dw]
            ends = [i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1]
            tap = context.add(
                "Slice",
                [
                    padded,
                    context.const(starts, np.int64),
                    context.const(ends, np.int64),
                    context.const([2, 3], np.int64),
                    context.const([sh, sw], np.int64),
                ],
            )
            taps.append(context.add("Unsqueeze", [tap, context.const([2], np.int64)]))
    stacked = context.add("Concat", taps, axis=2)
    shape = context.const([-1, channels, kh, kw, oh, ow], np.int64)
    return context.add(
        "Transpose", [context.add("Reshape", [stacked, shape])], perm=[1, 2, 3, 0, 4, 5]
    )


@emits("flat_im2col")
def flat_im2col(context: ExportContext, node: gc.Node) -> str:
    """Every tap's run of the flattened padded image, (C, kH, kW, N, OH * Wp): one Slice of
    the flattened rows per tap, stacked and moved into graphc's layout."""
    (x,) = _operands(context, node)
    _, channels, height, width = node.inputs[0].type.shape
    (kh, kw), (dh, dw) = node.attrs["kernel"], node.attrs["dilation"]
    length = node.attrs["rows"] * width
    flat = context.add("Reshape", [x, context.const([0, channels, height * width], np.int64)])
    taps = []
    for i in range(kh):
        for j in range(kw):
            start = i * dh * width + j * dw
            bounds = [context.const([value], np.int64) for value in (start, start + length, 2)]
            tap = context.add("Slice", [flat, *bounds])
            taps.append(context.add("Unsqueeze", [tap, context.const([2], np.int64)]))
    stacked = context.add("Concat", taps, axis=2)
    shape = context.const([0, channels, kh, kw, length], np.int64)
    return context.add(
        "Transpose", [context.add("Reshape", [stacked, shape])], perm=[1, 2, 3, 0, 4]
    )


@emits("window_matmul")
def window_matmul(context: ExportContext, node: gc.Node) -> str:
    """The taps of every pixel of the flattened padded image, one Slice per tap concatenated
    along the channels in (i, j, c) order, times the weight matrix: one MatMul; then, with
    fewer columns than the padded width, each row's first columns."""
    x, w = _operands(context, node)
    _, height, width, channels = node.inputs[0].type.shape
    (kh, kw), (dh, _) = node.attrs["kernel"], node.attrs["dilation"]
    rows, columns = node.attrs["rows"], node.attrs["columns"]
    length = rows * width
    flat = context.add("Reshape", [x, context.const([0, height * width, channels], np.int64)])
    taps = []
    for i in range(kh):
        for j in range(kw):
            start = i * dh * width + j
            bounds = [context.const([value], np.int64) for value in (start, start + length, 1)]
            taps.append(context.add("Slice", [flat, *bounds]))
    product = context.add("MatMul", [context.add("Concat", taps, axis=2), w])
    if columns == width:
        return product
    grid = context.add("Reshape", [product, context.const([0, rows, width, -1], np.int64)])
    bounds = [context.const([value], np.int64) for value in (0, columns, 2)]
    kept = context.add("Slice", [grid, *bounds])
    return context.add("Reshape", [kept, context.const([0, rows * columns, -1], np.int64)])


@emits("col2im")
def col2im(context: ExportContext, node: gc.Node) -> str:
    """The windows (C, kH, kW, N, OH, OW) summed back onto the image: ONNX's Col2Im."""
    (cols,) = _operands(context, node)
    channels, kh, kw, _, oh, ow = node.inputs[0].type.shape
    moved = context.add("Transpose", [cols], perm=[3, 0, 1, 2, 4, 5])
    blocks = context.add(
        "Reshape", [moved, context.const([0, channels * kh * kw, oh * ow], np.int64)]
    )
    window = _window(node)
    return context.add(
        "Col2Im",
        [
            blocks,
            context.const(list(node.attrs["output_hw"]), np.int64),
            context.const([kh, kw], np.int64),
        ],
        **window,
    )
