"""2-D convolution (NCHW, stride, padding, dilation, groups), pooling, their gradient ops, and
im2col, flat_im2col and col2im, the movement that makes a convolution a matmul, and
window_matmul, the product that reads a channels-last image's windows in place.

The batch dim may be symbolic; channel and spatial dims must be concrete. The reference
implementations gather the kernel's taps one (i, j) offset at a time, so no im2col buffer
larger than the output times the kernel area is made.
"""

from __future__ import annotations

import numpy as np

from graphc.dims import dims_equal, format_shape
from graphc.dtypes import int32
from graphc.errors import ShapeError
from graphc.ops.grad_helpers import apply_op
from graphc.ops.registry import define_op, grad_rule
from graphc.ops.shape_rules import require_dtype, same_dtype
from graphc.types import TensorType


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Return the output length of a convolution or pooling window sweep along one dim."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _spatial(x: TensorType, role: str) -> tuple[int, int, int]:
    if x.ndim != 4:
        raise ShapeError(f"{role} must be 4-d (N, C, H, W), got {format_shape(x.shape)}")
    channels, height, width = x.shape[1:]
    if isinstance(channels, int) and isinstance(height, int) and isinstance(width, int):
        return channels, height, width
    axis = next(a for a in (1, 2, 3) if not isinstance(x.shape[a], int))
    raise ShapeError(
        f"{role} {format_shape(x.shape)} has a symbolic dim {axis}; only the batch dim "
        "may be symbolic"
    )


def _output_hw(h: int, w: int, kernel, attrs) -> tuple[int, int]:
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oh = conv_output_size(h, kernel[0], sh, ph, dh)
    ow = conv_output_size(w, kernel[1], sw, pw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"a {kernel[0]}x{kernel[1]} window (dilation {attrs['dilation']}) does not fit an "
            f"{h}x{w} input with padding {attrs['padding']}"
        )
    return oh, ow


def _conv2d_infer(types, attrs):
    x, w = types
    dtype = same_dtype(types, "input and weight")
    require_dtype(x, "float", "the input")
    c, h, wd = _spatial(x, "the input")
    if w.ndim != 4 or not all(isinstance(d, int) for d in w.shape):
        raise ShapeError(f"weight must be a concrete 4-d (O, C/groups, kH, kW), got {w}")
    groups = attrs["groups"]
    out_c, per_group, kh, kw = w.shape
    if c % groups or out_c % groups:
        raise ShapeError(f"channels in={c} and out={out_c} must both divide by groups={groups}")
    if per_group != c // groups:
        raise ShapeError(
            f"weight {format_shape(w.shape)} expects {per_group * groups} input channels "
            f"(dim 1 times groups={groups}), the input {format_shape(x.shape)} has {c} in dim 1"
        )
    oh, ow = _output_hw(h, wd, (kh, kw), attrs)
    return TensorType((x.shape[0], out_c, oh, ow), dtype)


def _taps(xp: np.ndarray, kernel, out_hw, attrs):
    """Yield (i, j, view) with view[n, c, oh, ow] = xp[n, c, oh*s + i*d, ow*s + j*d]."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    oh, ow = out_hw
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            yield i, j, (slice(None), slice(None), rows, cols)


def _group_view(view: tuple) -> tuple:
    """Return a tap's view of an (N, C, H, W) array as a view of its (N, G, C/G, H, W) form."""
    return (slice(None), slice(None), *view[1:])


def _pad_hw(x: np.ndarray, padding) -> np.ndarray:
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _grouped(a: np.ndarray, groups: int) -> np.ndarray:
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, *a.shape[2:])


def _conv2d_reference(args, attrs, env):
    x, w = args
    groups = attrs["groups"]
    kernel = w.shape[2:]
    out_hw = _output_hw(x.shape[2], x.shape[3], kernel, attrs)
    xp = _grouped(_pad_hw(x, attrs["padding"]), groups)
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    out = np.zeros((x.shape[0], groups, wg.shape[1], *out_hw), dtype=x.dtype)
    for i, j, view in _taps(xp[:, 0], kernel, out_hw, attrs):
        patch = xp[_group_view(view)]  # (N, G, Cg, OH, OW)
        out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, i, j])
    return out.reshape(x.shape[0], w.shape[0], *out_hw)


define_op("conv2d", "conv", _conv2d_infer, _conv2d_reference)


def _conv_input_grad_infer(types, attrs):
    gy, w = types
    dtype = same_dtype(types, "gradient and weight")
    c = w.shape[1] * attrs["groups"]
    h, wd = attrs["input_hw"]
    return TensorType((gy.shape[0], c, h, wd), dtype)


def _conv_input_grad_reference(args, attrs, env):
    gy, w = args
    groups = attrs["groups"]
    h, wd = attrs["input_hw"]
    (ph, pw) = attrs["padding"]
    kernel = w.shape[2:]
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    gyg = _grouped(gy, groups)
    n, c = gy.shape[0], w.shape[1] * groups
    # Room for every tap a strided sweep touches, also past the input (output_padding).
    full_h = max(
        h + 2 * ph,
        (gy.shape[2] - 1) * attrs["stride"][0] + (kernel[0] - 1) * attrs["dilation"][0] + 1,
    )
    full_w = max(
        wd + 2 * pw,
        (gy.shape[3] - 1) * attrs["stride"][1] + (kernel[1] - 1) * attrs["dilation"][1] + 1,
    )
    dxp = np.zeros((n, groups, c // groups, full_h, full_w), dtype=gy.dtype)
    for i, j, view in _taps(dxp[:, 0], kernel, gy.shape[2:], attrs):
        dxp[_group_view(view)] += np.einsum("ngohw,goc->ngchw", gyg, wg[:, :, :, i, j])
    return dxp.reshape(n, c, full_h, full_w)[:, :, ph : ph + h, pw : pw + wd]


define_op("conv2d_input_grad", "conv", _conv_input_grad_infer, _conv_input_grad_reference)


def _conv_weight_grad_infer(types, attrs):
    x, gy = types
    dtype = same_dtype(types, "input and gradient")
    c = x.shape[1]
    kh, kw = attrs["kernel"]
    return TensorType((gy.shape[1], c // attrs["groups"], kh, kw), dtype)


def _conv_weight_grad_reference(args, attrs, env):
    x, gy = args
    groups = attrs["groups"]
    kernel = attrs["kernel"]
    xp = _grouped(_pad_hw(x, attrs["padding"]), groups)
    gyg = _grouped(gy, groups)
    dw = np.zeros((groups, gy.shape[1] // groups, x.shape[1] // groups, *kernel), dtype=x.dtype)
    for i, j, view in _taps(xp[:, 0], kernel, gy.shape[2:], attrs):
        patch = xp[_group_view(view)]
        dw[:, :, :, i, j] = np.einsum("ngchw,ngohw->goc", patch, gyg)
    return dw.reshape(gy.shape[1], x.shape[1] // groups, *kernel)


define_op("conv2d_weight_grad", "conv", _conv_weight_grad_infer, _conv_weight_grad_reference)


# im2col and col2im: the movement that turns a convolution into a matmul (passes/conv_gemm.py).
# attrs kernel, stride, padding, dilation (pairs); col2im adds output_hw. im2col's (C, kH, kW,
# N, OH, OW) holds every window's taps (zero where a tap falls in the padding): the batch sits
# inside, so that all images' windows are the columns of one (C*kH*kW, N*OH*OW) matrix, and
# moving N to the front gives torch.nn.functional.unfold. col2im sums such windows back onto
# an (N, C, H, W) image (torch.nn.functional.fold), its adjoint.
def _window_attrs(attrs) -> dict:
    return {k: attrs[k] for k in ("kernel", "stride", "padding", "dilation")}


def _im2col_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float", "the input")
    c, h, w = _spatial(x, "the input")
    oh, ow = _output_hw(h, w, attrs["kernel"], attrs)
    return TensorType((c, *attrs["kernel"], x.shape[0], oh, ow), x.dtype)


def _im2col_reference(args, attrs, env):
    (x,) = args
    kernel = attrs["kernel"]
    out_hw = _output_hw(x.shape[2], x.shape[3], kernel, attrs)
    xp = _pad_hw(x, attrs["padding"]).transpose(1, 0, 2, 3)
    out = np.empty((x.shape[1], *kernel, x.shape[0], *out_hw), dtype=x.dtype)
    for i, j, view in _taps(xp, kernel, out_hw, attrs):
        out[:, i, j] = xp[view]
    return out


define_op("im2col", "conv", _im2col_infer, _im2col_reference)


def _col2im_infer(types, attrs):
    (cols,) = types
    require_dtype(cols, "float", "the columns")
    shape = cols.shape
    if cols.ndim != 6 or not all(isinstance(d, int) for d in (*shape[:3], *shape[4:])):
        raise ShapeError(f"columns must be (C, kH, kW, N, OH, OW), got {format_shape(shape)}")
    c, kh, kw, n, oh, ow = shape
    h, w = attrs["output_hw"]
    if (kh, kw) != tuple(attrs["kernel"]) or _output_hw(h, w, (kh, kw), attrs) != (oh, ow):
        raise ShapeError(
            f"columns {format_shape(shape)} are not the {attrs['kernel']} windows of an "
            f"{h}x{w} image with stride {attrs['stride']}, padding {attrs['padding']} and "
            f"dilation {attrs['dilation']}"
        )
    return TensorType((n, c, h, w), cols.dtype)


def _col2im_reference(args, attrs, env):
    (cols,) = args
    h, w = attrs["output_hw"]
    (ph, pw), kernel, out_hw = attrs["padding"], attrs["kernel"], cols.shape[4:]
    image = np.zeros((cols.shape[0], cols.shape[3], h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i, j, view in _taps(image, kernel, out_hw, attrs):
        image[view] += cols[:, i, j]
    return image.transpose(1, 0, 2, 3)[:, :, ph : ph + h, pw : pw + w]


define_op("col2im", "conv", _col2im_infer, _col2im_reference)


# flat_im2col: the windows of an already padded image (N, C, Hp, Wp) taken along its flattened
# rows, for a stride-1 convolution: (C, kH, kW, N, OH * Wp), where window tap (i, j) of image
# n, channel c is the contiguous run x[n, c].flat[i*dh*Wp + j*dw :][: OH * Wp]. Position
# oh * Wp + ow is the window whose first tap is pixel (oh, ow); from ow = Wp - (kW - 1) * dw on
# its taps run into the next row, whose first pixels a left-padded image's rows make zeros:
# the reader keeps the windows that stand for outputs and skips the others. Every run is one
# contiguous copy, where im2col copies rows of OW (14 floats on MNIST's second convolution)
# at a loop's cost each. attrs kernel, dilation, rows (OH).
def _flat_im2col_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float", "the padded input")
    c, hp, wp = _spatial(x, "the padded input")
    (kh, kw), (dh, dw), rows = attrs["kernel"], attrs["dilation"], attrs["rows"]
    if min(kh, kw, dh, dw) < 1:
        raise ShapeError(
            f"needs a kernel and a dilation of at least 1, got {(kh, kw)} and {(dh, dw)}"
        )
    if rows < 1 or (kh - 1) * dh * wp + (kw - 1) * dw + rows * wp > hp * wp:
        raise ShapeError(
            f"{rows} rows of {kh}x{kw} windows (dilation {(dh, dw)}) reach past the flattened "
            f"{hp}x{wp} padded input"
        )
    return TensorType((c, kh, kw, x.shape[0], rows * wp), x.dtype)


def _flat_im2col_reference(args, attrs, env):
    (x,) = args
    n, c, hp, wp = x.shape
    (kh, kw), (dh, dw), length = attrs["kernel"], attrs["dilation"], attrs["rows"] * wp
    flat = x.reshape(n, c, hp * wp).transpose(1, 0, 2)
    out = np.empty((c, kh, kw, n, length), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j * dw
            out[:, i, j] = flat[:, :, start : start + length]
    return out


define_op(
    "flat_im2col",
    "conv",
    _flat_im2col_infer,
    _flat_im2col_reference,
    differentiable=False,
    fusion="windows",
)


# window_matmul: a stride-1 convolution's product over the flat windows of a channels-last
# padded image, read where they lie (no im2col): x (N, Hp, Wp, C), w (kH * kW * C, O) with its
# rows in (i, j, c) order, out (N, rows * columns, O) with out[n, oh * columns + ow] the sum
# over taps (i, j) of pixel p = oh * Wp + ow + i * dh * Wp + j of x[n]'s flattened rows times
# w's (i, j) block: the window whose first tap is pixel (oh, ow). Channels last, the kW * C
# taps of a kernel row are one contiguous run per pixel, so the GEMM reads each kernel row's
# windows as a matrix (rows C apart) in place; that needs a dilation of 1 along the width.
# With columns = Wp the product's rows are one run, and the reader skips the windows that
# stand for no output, as flat_im2col's does; with fewer, each output row's windows are a run
# of the GEMM's rows, which needs at least ROW_RUN_LEAST of them. attrs kernel, dilation,
# rows, columns.
#
# The tallest micro-tile of the CPU GEMM's plans (12 rows): a tile then crosses into the next
# run of rows at most once.
ROW_RUN_LEAST = 12


def _window_matmul_infer(types, attrs):
    x, w = types
    dtype = same_dtype(types, "the padded image and the weight")
    require_dtype(x, "float", "the padded image")
    shape = x.shape
    if x.ndim != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise ShapeError(
            "the padded image must be (N, Hp, Wp, C) with only N symbolic, got "
            f"{format_shape(shape)}"
        )
    _, hp, wp, c = shape
    (kh, kw), (dh, dw), rows = attrs["kernel"], attrs["dilation"], attrs["rows"]
    if min(kh, kw, dh) < 1 or dw != 1:
        raise ShapeError(
            f"needs a kernel of at least 1x1, a row dilation of at least 1 and a column "
            f"dilation of 1, got {(kh, kw)} and {(dh, dw)}"
        )
    if w.ndim != 2 or not all(isinstance(d, int) for d in w.shape) or w.shape[0] != kh * kw * c:
        raise ShapeError(
            f"the weight must be a concrete ({kh * kw * c}, O) matrix for {kh}x{kw} windows of "
            f"{c} channels, got {format_shape(w.shape)}"
        )
    if rows < 1 or (kh - 1) * dh * wp + (kw - 1) + rows * wp > hp * wp:
        raise ShapeError(
            f"{rows} rows of {kh}x{kw} windows (row dilation {dh}) reach past the flattened "
            f"{hp}x{wp} padded image"
        )
    columns = attrs["columns"]
    if columns != wp and not ROW_RUN_LEAST <= columns < wp:
        raise ShapeError(
            f"needs {wp} columns of windows (the padded width) or {ROW_RUN_LEAST} to {wp - 1}, "
            f"got {columns}"
        )
    return TensorType((shape[0], rows * columns, w.shape[1]), dtype)


def _window_matmul_reference(args, attrs, env):
    x, w = args
    n, hp, wp, c = x.shape
    (kh, kw), (dh, _), length = attrs["kernel"], attrs["dilation"], attrs["rows"] * wp
    pixels = x.reshape(n, hp * wp, c)
    taps = w.reshape(kh, kw, c, w.shape[1])
    out = np.zeros((n, length, w.shape[1]), dtype=np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j
            out += pixels[:, start : start + length] @ taps[i, j]
    grid = out.reshape(n, attrs["rows"], wp, w.shape[1])[:, :, : attrs["columns"]]
    return np.ascontiguousarray(grid).reshape(n, attrs["rows"] * attrs["columns"], w.shape[1])


define_op(
    "window_matmul",
    "conv",
    _window_matmul_infer,
    _window_matmul_reference,
    differentiable=False,
    fusion="matmul",
)


# Pooling: attrs kernel, stride, padding, dilation (pairs) and ceil_mode; avg_pool2d has no
# dilation and adds count_include_pad and divisor_override. An attribute a graph leaves out
# takes PyTorch's default.
_POOL_DEFAULTS = {"dilation": (1, 1), "ceil_mode": False, "divisor_override": None}


def _pool_attrs(attrs) -> dict:
    return {**_POOL_DEFAULTS, **attrs}


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """Return the number of pooling windows along one dim, counted as PyTorch does: ceil_mode
    keeps a last, partial window, but only one that starts inside the input or its left
    padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_out_hw(hw, attrs) -> tuple[int, int]:
    a = _pool_attrs(attrs)
    height, width = (
        pool_output_size(size, kernel, stride, padding, dilation, a["ceil_mode"])
        for size, kernel, stride, padding, dilation in zip(
            hw, a["kernel"], a["stride"], a["padding"], a["dilation"], strict=True
        )
    )
    return height, width


def _pool_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float", "the input")
    c, h, w = _spatial(x, "the input")
    a = _pool_attrs(attrs)
    for name in ("kernel", "stride", "dilation"):
        if any(v <= 0 for v in a[name]):
            raise ShapeError(f"{name} {a[name]} must be positive")
    kernel, padding = a["kernel"], a["padding"]
    if any(p < 0 or p * 2 > k for p, k in zip(padding, kernel, strict=True)):
        raise ShapeError(
            f"padding {padding} must be at least 0 and at most half the kernel {kernel}"
        )
    if a["divisor_override"] == 0:
        raise ShapeError("divisor_override must not be 0")
    oh, ow = _pool_out_hw((h, w), a)
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"a {kernel[0]}x{kernel[1]} window (dilation {a['dilation']}) does not fit an "
            f"{h}x{w} input with padding {padding}: the output would be {oh}x{ow}"
        )
    return TensorType((x.shape[0], c, oh, ow), x.dtype)


def _pool_padding(hw, out_hw, attrs) -> tuple[tuple[int, int], ...]:
    """Return (before, after) widths per spatial dim that hold every tap of every window: the
    after side grows past `padding` where ceil_mode lets the last window hang over."""
    a = _pool_attrs(attrs)
    widths = []
    for size, out, k, s, p, d in zip(
        hw, out_hw, a["kernel"], a["stride"], a["padding"], a["dilation"], strict=True
    ):
        reach = (out - 1) * s + (k - 1) * d + 1
        widths.append((p, max(p, reach - size - p)))
    return tuple(widths)


def _pool_pad(x: np.ndarray, attrs, out_hw, fill: float) -> np.ndarray:
    widths = _pool_padding(x.shape[2:], out_hw, attrs)
    return np.pad(x, ((0, 0), (0, 0), *widths), constant_values=fill)


def _pool_crop(xp: np.ndarray, hw, out_hw, attrs) -> np.ndarray:
    """Return the input's part of an array padded by _pool_pad."""
    (top, _), (left, _) = _pool_padding(hw, out_hw, attrs)
    return xp[:, :, top : top + hw[0], left : left + hw[1]]


def _max_pool_windows(x: np.ndarray, attrs) -> np.ndarray:
    """Return (N, C, kH*kW, OH, OW): every window's taps, padded with -inf."""
    a = _pool_attrs(attrs)
    out_hw = _pool_out_hw(x.shape[2:], a)
    xp = _pool_pad(x, a, out_hw, -np.inf)
    return np.stack([xp[view] for _, _, view in _taps(xp, a["kernel"], out_hw, a)], axis=2)


def windows_disjoint(kernel: int, stride: int, dilation: int) -> bool:
    """Return whether pooling windows along one dim never share a tap: the stride reaches the
    window's span."""
    return stride >= (kernel - 1) * dilation + 1


def _pool_fusion(node) -> str:
    """Return a pool's fusion role: `disjoint_windows` where no two windows share a tap along
    either dim, so the math it reads can run inside it (bias and ReLU before a 2x2 pool: no
    kernel of their own, no buffer between)."""
    a = _pool_attrs(node.attrs)
    geometry = zip(a["kernel"], a["stride"], a["dilation"], strict=True)
    return "disjoint_windows" if all(windows_disjoint(*g) for g in geometry) else "root"


define_op(
    "max_pool2d",
    "pool",
    _pool_infer,
    lambda args, attrs, env: _max_pool_windows(args[0], attrs).max(axis=2),
    fusion=_pool_fusion,
)


def _max_pool_grad_infer(types, attrs):
    x, gy = types
    return TensorType(x.shape, same_dtype(types, "input and gradient"))


def _route(first_max: np.ndarray, gy: np.ndarray, hw, attrs) -> np.ndarray:
    """Return the (N, C, *hw) input gradient that sends each window's gy to the tap
    first_max names (i * kW + j), summed where windows overlap."""
    a = _pool_attrs(attrs)
    out_hw = gy.shape[2:]
    dxp = np.zeros_like(_pool_pad(np.zeros((*gy.shape[:2], *hw), gy.dtype), a, out_hw, 0.0))
    kw = a["kernel"][1]
    for i, j, view in _taps(dxp, a["kernel"], out_hw, a):
        dxp[view] += np.where(first_max == i * kw + j, gy, 0)
    return _pool_crop(dxp, hw, out_hw, a)


def _max_pool_grad_reference(args, attrs, env):
    x, gy = args
    # The whole gradient of a window goes to its first maximum, as in PyTorch.
    return _route(_max_pool_windows(x, attrs).argmax(axis=2), gy, x.shape[2:], attrs)


define_op("max_pool2d_grad", "pool", _max_pool_grad_infer, _max_pool_grad_reference)


def _max_pool_select_infer(types, attrs):
    x, values = types
    return TensorType(_pool_infer([x], attrs).shape, same_dtype(types, "input and values"))


def _max_pool_select_reference(args, attrs, env):
    # The adjoint of max_pool2d_grad in its second input: each window takes `values` at the
    # position of the window's first maximum of x.
    x, values = args
    return _pick(_max_pool_windows(x, attrs).argmax(axis=2), values, attrs)


def _pick(first_max: np.ndarray, values: np.ndarray, attrs) -> np.ndarray:
    """Return values at the tap first_max names (i * kW + j) in each window. A first maximum
    in the padding (a window whose real taps are all -inf) picks 0, as the routed gradient
    drops what lands there."""
    a = _pool_attrs(attrs)
    out_hw = first_max.shape[2:]
    padded = _pool_pad(values, a, out_hw, 0.0)
    taps = np.stack([padded[view] for _, _, view in _taps(padded, a["kernel"], out_hw, a)], 2)
    return np.take_along_axis(taps, first_max[:, :, None].astype(np.int64), axis=2)[:, :, 0]


# A gather of one element per window: it joins its consumers' kernel like elementwise math.
define_op(
    "max_pool2d_select",
    "pool",
    _max_pool_select_infer,
    _max_pool_select_reference,
    fusion="fuse",
)


# Overlapping windows (3x3 with stride 1 or 2) cover each input position several times, and
# max_pool2d_grad would search every covering window for its maximum again. The pool_argmax
# tier (passes/pool_argmax.py) splits it instead: max_pool2d_argmax records each window's
# first maximum once, as PyTorch's forward does, and max_pool2d_routed sends gy there.
def _max_pool_argmax_infer(types, attrs):
    return TensorType(_pool_infer(types, attrs).shape, int32)


define_op(
    "max_pool2d_argmax",
    "pool",
    _max_pool_argmax_infer,
    lambda args, attrs, env: _max_pool_windows(args[0], attrs).argmax(axis=2).astype(np.int32),
    differentiable=False,
)


def _window_choice(types, attrs, hw) -> TensorType:
    """Check a window choice (integers, one tap index per window of an (N, C, *hw) input) and
    values of its shape or of the input's (`hw`); return the values' type."""
    first_max, values = types
    require_dtype(first_max, "int", "the window choice")
    require_dtype(values, "float", "the values")
    c, _, _ = _spatial(values, "the values")
    grid = _pool_infer([TensorType((values.shape[0], c, *hw), values.dtype)], attrs)
    if not all(map(dims_equal, first_max.shape, grid.shape)):
        raise ShapeError(
            f"the window choice {format_shape(first_max.shape)} does not match the "
            f"{format_shape(grid.shape)} windows of a {hw[0]}x{hw[1]} input"
        )
    return values


def _max_pool_routed_infer(types, attrs):
    gy = _window_choice(types, attrs, attrs["input_hw"])
    if not all(map(dims_equal, gy.shape, types[0].shape)):
        raise ShapeError(
            f"the gradient {format_shape(gy.shape)} must have the window choice's shape "
            f"{format_shape(types[0].shape)}"
        )
    return TensorType((*gy.shape[:2], *attrs["input_hw"]), gy.dtype)


def _max_pool_pick_infer(types, attrs):
    values_hw = types[1].shape[2:]
    values = _window_choice(types, attrs, values_hw)
    return TensorType((*values.shape[:2], *_pool_out_hw(values_hw, attrs)), values.dtype)


define_op(
    "max_pool2d_routed",
    "pool",
    _max_pool_routed_infer,
    lambda args, attrs, env: _route(args[0], args[1], attrs["input_hw"], attrs),
)
define_op(
    "max_pool2d_pick",
    "pool",
    _max_pool_pick_infer,
    lambda args, attrs, env: _pick(args[0], args[1], attrs),
    fusion="fuse",
)


def _avg_divisor(x_hw, out_hw, attrs, dtype) -> np.ndarray:
    """Return each window's divisor, (OH, OW), as PyTorch counts it."""
    a = _pool_attrs(attrs)
    if a["divisor_override"] is not None:
        return np.full(out_hw, a["divisor_override"], dtype=dtype)
    if a["count_include_pad"]:
        # Padded positions count; positions past the padding (ceil_mode) do not.
        rows, cols = (
            np.minimum(k, size + 2 * p - s * np.arange(out))
            for size, out, k, s, p in zip(
                x_hw, out_hw, a["kernel"], a["stride"], a["padding"], strict=True
            )
        )
        return np.outer(rows, cols).astype(dtype)
    return _avg_pool_sum(np.ones((1, 1, *x_hw), dtype=dtype), a, out_hw)[0, 0]


def _avg_pool_sum(x: np.ndarray, attrs, out_hw) -> np.ndarray:
    xp = _pool_pad(x, attrs, out_hw, 0.0)
    return sum(xp[view] for _, _, view in _taps(xp, attrs["kernel"], out_hw, attrs))


def _avg_pool_reference(args, attrs, env):
    (x,) = args
    a = _pool_attrs(attrs)
    out_hw = _pool_out_hw(x.shape[2:], a)
    return _avg_pool_sum(x, a, out_hw) / _avg_divisor(x.shape[2:], out_hw, a, x.dtype)


define_op("avg_pool2d", "pool", _pool_infer, _avg_pool_reference, fusion=_pool_fusion)


def _avg_pool_grad_infer(types, attrs):
    (gy,) = types
    h, w = attrs["input_hw"]
    return TensorType((gy.shape[0], gy.shape[1], h, w), gy.dtype)


def _avg_pool_grad_reference(args, attrs, env):
    (gy,) = args
    a = _pool_attrs(attrs)
    hw, out_hw = attrs["input_hw"], gy.shape[2:]
    share = gy / _avg_divisor(hw, out_hw, a, gy.dtype)
    dxp = _pool_pad(np.zeros((*gy.shape[:2], *hw), dtype=gy.dtype), a, out_hw, 0.0)
    for _, _, view in _taps(dxp, a["kernel"], out_hw, a):
        dxp[view] += share
    return _pool_crop(dxp, hw, out_hw, a)


define_op("avg_pool2d_grad", "pool", _avg_pool_grad_infer, _avg_pool_grad_reference)


# -- gradients -------------------------------------------------------------------------------
# conv2d, its input gradient (a transposed convolution) and its weight gradient are the three
# bilinear products of one contraction, so each one's gradients are the other two.
def _conv_attrs(attrs) -> dict:
    return {k: attrs[k] for k in ("stride", "padding", "dilation", "groups")}


@grad_rule("conv2d")
def _conv2d_grad(xs, out, g, attrs):
    x, w = xs
    base = _conv_attrs(attrs)
    return [
        apply_op("conv2d_input_grad", [g, w], {**base, "input_hw": tuple(x.shape[2:])}),
        apply_op("conv2d_weight_grad", [x, g], {**base, "kernel": tuple(w.shape[2:])}),
    ]


def _cropped(result, shape: tuple):
    """Return a convolution's result cut to shape. A transposed convolution's output_padding
    may reach past its last window, and then the convolution of its output has more windows
    than its input has positions: those extra ones touch only the padding rows."""
    if all(map(dims_equal, result.shape, shape)):
        return result
    attrs = {"starts": (0, 0, 0, 0), "sizes": tuple(shape), "steps": (1, 1, 1, 1)}
    return apply_op("slice", [result], attrs)


@grad_rule("conv2d_input_grad")
def _conv2d_input_grad_grad(xs, out, g, attrs):
    gy, w = xs
    base = _conv_attrs(attrs)
    return [
        _cropped(apply_op("conv2d", [g, w], base), gy.shape),
        apply_op("conv2d_weight_grad", [g, gy], {**base, "kernel": tuple(w.shape[2:])}),
    ]


@grad_rule("conv2d_weight_grad")
def _conv2d_weight_grad_grad(xs, out, g, attrs):
    x, gy = xs
    base = _conv_attrs(attrs)
    return [
        apply_op("conv2d_input_grad", [gy, g], {**base, "input_hw": tuple(x.shape[2:])}),
        _cropped(apply_op("conv2d", [x, g], base), gy.shape),
    ]


@grad_rule("im2col")
def _im2col_grad(xs, out, g, attrs):
    (x,) = xs
    return [apply_op("col2im", [g], {**_window_attrs(attrs), "output_hw": tuple(x.shape[2:])})]


@grad_rule("col2im")
def _col2im_grad(xs, out, g, attrs):
    return [apply_op("im2col", [g], _window_attrs(attrs))]


@grad_rule("max_pool2d")
def _max_pool_grad(xs, out, g, attrs):
    (x,) = xs
    return [apply_op("max_pool2d_grad", [x, g], dict(attrs))]


@grad_rule("max_pool2d_grad")
def _max_pool_grad_grad(xs, out, g, attrs):
    x, gy = xs
    # The routing depends on x only through comparisons: no gradient flows to x.
    return [None, apply_op("max_pool2d_select", [x, g], dict(attrs))]


@grad_rule("max_pool2d_select")
def _max_pool_select_grad(xs, out, g, attrs):
    x, values = xs
    return [None, apply_op("max_pool2d_grad", [x, g], dict(attrs))]


@grad_rule("max_pool2d_routed")
def _max_pool_routed_grad(xs, out, g, attrs):
    first_max, gy = xs
    pool = {k: v for k, v in attrs.items() if k != "input_hw"}
    return [None, apply_op("max_pool2d_pick", [first_max, g], pool)]


@grad_rule("max_pool2d_pick")
def _max_pool_pick_grad(xs, out, g, attrs):
    first_max, values = xs
    routed = {**attrs, "input_hw": tuple(values.shape[2:])}
    return [None, apply_op("max_pool2d_routed", [first_max, g], routed)]


@grad_rule("avg_pool2d")
def _avg_pool_grad(xs, out, g, attrs):
    (x,) = xs
    return [apply_op("avg_pool2d_grad", [g], {**attrs, "input_hw": tuple(x.shape[2:])})]


@grad_rule("avg_pool2d_grad")
def _avg_pool_grad_grad(xs, out, g, attrs):
    pool_attrs = {k: v for k, v in attrs.items() if k != "input_hw"}
    return [apply_op("avg_pool2d", [g], pool_attrs)]
