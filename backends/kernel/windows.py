"""Lowering of convolution, im2col / col2im and pooling ops to kernel-IR expressions: window
arithmetic (which input position a window tap reads, which windows cover an input position).
The rules register themselves on the ops' definitions when this module is imported."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.backends.kernel.index import Index, all_of, clamp, dim_expr, in_range
from graphc.backends.kernel.ir import (
    Binary,
    Cast,
    Const,
    Expr,
    IConst,
    IndexValue,
    IntExpr,
    Reduce,
    Select,
    ValueIndex,
    Var,
    iadd,
    ibin,
    imul,
)
from graphc.backends.kernel.lowering import register
from graphc.dims import Dim
from graphc.dtypes import DType, bool_, int32, int64
from graphc.graph import Node
from graphc.ops.conv import windows_disjoint


def _window_position(out_i: IntExpr, tap: IntExpr, stride: int, dilation: int, pad: int):
    return ibin("sub", iadd(imul(out_i, IConst(stride)), imul(tap, IConst(dilation))), IConst(pad))


def _tap(ctx, x: Node, n, channel, oh, ow, i, j, stride, dilation, padding, reach=(None, None)):
    """Return (x at window tap (i, j) of output (oh, ow), clamped; whether it is inside x).
    reach, where known, is per axis one past the furthest position a tap reaches."""
    _, _, height, width = x.type.shape
    ih = _window_position(oh, i, stride[0], dilation[0], padding[0])
    iw = _window_position(ow, j, stride[1], dilation[1], padding[1])
    rows, rows_inside = _tap_axis(ih, padding[0], height, reach[0])
    cols, cols_inside = _tap_axis(iw, padding[1], width, reach[1])
    value = ctx.value(x, Index(x.type.shape, dims=(n, channel, rows, cols)))
    return value, all_of([rows_inside, cols_inside])


def _tap_axis(position: IntExpr, pad: int, size: Dim, reach: int | None):
    """Return (position clamped into [0, size), whether it lies inside). An axis without
    padding whose taps all stay inside needs neither, so contiguous taps load as vectors."""
    if reach is not None and pad == 0 and isinstance(size, int) and reach <= size:
        return position, IConst(1)
    return clamp(position, dim_expr(size)), in_range(position, dim_expr(size))


def _reach(grid, kernel, stride, dilation) -> tuple[int, ...]:
    """Return per axis one past the furthest position (before padding) a window's taps reach."""
    return tuple(
        (out - 1) * s + (k - 1) * d + 1
        for out, k, s, d in zip(grid, kernel, stride, dilation, strict=True)
    )


def _masked_product(a: Expr, b: Expr, inside: IntExpr, dtype: DType) -> Expr:
    return Select(IndexValue(inside, bool_), Binary("mul", a, b, dtype), Const(0, dtype), dtype)


def _conv2d(ctx, node, index):
    x, w = node.inputs
    n, o, oh, ow = index.dims()
    stride, padding, dilation = (node.attrs[k] for k in ("stride", "padding", "dilation"))
    out_c, per_group, kh, kw = w.type.shape
    c, i, j = ctx.fresh("c"), ctx.fresh("i"), ctx.fresh("j")
    group = ibin("div", o, IConst(out_c // node.attrs["groups"]))
    channel = iadd(imul(group, IConst(per_group)), c)
    xv, inside = _tap(ctx, x, n, channel, oh, ow, i, j, stride, dilation, padding)
    wv = ctx.value(w, Index(w.type.shape, dims=(o, c, i, j)))
    body = _masked_product(xv, wv, inside, node.type.dtype)
    extents = (IConst(per_group), IConst(kh), IConst(kw))
    return Reduce("sum", (c, i, j), extents, body, node.type.dtype)


def _strided_source(
    position: IntExpr, tap: IntExpr, stride: int, dilation: int, pad: int, size: Dim
):
    """Return (index, valid) of the output element whose window puts `tap` on `position`."""
    t = ibin("sub", iadd(position, IConst(pad)), imul(tap, IConst(dilation)))
    source = ibin("div", t, IConst(stride))
    valid = all_of(
        [
            ibin("le", IConst(0), t),
            ibin("eq", ibin("mod", t, IConst(stride)), IConst(0)),
            ibin("lt", source, dim_expr(size)),
        ]
    )
    return clamp(source, dim_expr(size)), valid


def _conv2d_input_grad(ctx, node, index):
    gy, w = node.inputs
    n, c, h, wd = index.dims()
    groups = node.attrs["groups"]
    (sh, sw), (ph, pw), (dh, dw) = (node.attrs[k] for k in ("stride", "padding", "dilation"))
    out_c, per_group, kh, kw = w.type.shape
    out_h, out_w = gy.type.shape[2], gy.type.shape[3]
    per_out = out_c // groups
    o, i, j = ctx.fresh("o"), ctx.fresh("i"), ctx.fresh("j")
    group = ibin("div", c, IConst(per_group))
    channel = iadd(imul(group, IConst(per_out)), o)
    row, row_ok = _strided_source(h, i, sh, dh, ph, out_h)
    col, col_ok = _strided_source(wd, j, sw, dw, pw, out_w)
    gv = ctx.value(gy, Index(gy.type.shape, dims=(n, channel, row, col)))
    wv = ctx.value(w, Index(w.type.shape, dims=(channel, ibin("mod", c, IConst(per_group)), i, j)))
    body = _masked_product(gv, wv, all_of([row_ok, col_ok]), node.type.dtype)
    extents = (IConst(per_out), IConst(kh), IConst(kw))
    return Reduce("sum", (o, i, j), extents, body, node.type.dtype)


def _conv2d_weight_grad(ctx, node, index):
    x, gy = node.inputs
    o, c, i, j = index.dims()
    stride, padding, dilation = (node.attrs[k] for k in ("stride", "padding", "dilation"))
    groups = node.attrs["groups"]
    in_c, (_, out_c, out_h, out_w) = x.type.shape[1], gy.type.shape
    n, oh, ow = ctx.fresh("n"), ctx.fresh("oh"), ctx.fresh("ow")
    group = ibin("div", o, IConst(out_c // groups))
    channel = iadd(imul(group, IConst(in_c // groups)), c)
    xv, inside = _tap(ctx, x, n, channel, oh, ow, i, j, stride, dilation, padding)
    gv = ctx.value(gy, Index(gy.type.shape, dims=(n, o, oh, ow)))
    body = _masked_product(xv, gv, inside, node.type.dtype)
    extents = (dim_expr(x.type.shape[0]), IConst(out_h), IConst(out_w))
    return Reduce("sum", (n, oh, ow), extents, body, node.type.dtype)


register("conv2d", _conv2d)
register("conv2d_input_grad", _conv2d_input_grad)
register("conv2d_weight_grad", _conv2d_weight_grad)


def _im2col(ctx, node, index):
    c, i, j, n, oh, ow = index.dims()
    kernel, stride, padding, dilation = (
        node.attrs[k] for k in ("kernel", "stride", "padding", "dilation")
    )
    reach = _reach(node.type.shape[4:], kernel, stride, dilation)
    x = node.inputs[0]
    xv, inside = _tap(ctx, x, n, c, oh, ow, i, j, stride, dilation, padding, reach)
    if inside == IConst(1):
        return xv
    dtype = node.type.dtype
    return Select(IndexValue(inside, bool_), xv, Const(0, dtype), dtype)


def _col2im(ctx, node, index):
    (cols,) = node.inputs
    n, c, h, w = index.dims()
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        node.attrs[k] for k in ("kernel", "stride", "padding", "dilation")
    )
    out_h, out_w = cols.type.shape[4:]
    i, j = ctx.fresh("i"), ctx.fresh("j")
    row, row_ok = _strided_source(h, i, sh, dh, ph, out_h)
    col, col_ok = _strided_source(w, j, sw, dw, pw, out_w)
    value = ctx.value(cols, Index(cols.type.shape, dims=(c, i, j, n, row, col)))
    dtype = node.type.dtype
    body = Select(IndexValue(all_of([row_ok, col_ok]), bool_), value, Const(0, dtype), dtype)
    return Reduce("sum", (i, j), (IConst(kh), IConst(kw)), body, dtype)


def _flat_im2col(ctx, node, index):
    """Window tap (i, j) of image n, channel c at flat position q: x[n, c].flat[i*dh*Wp +
    j*dw + q], one offset linear in every index (the input is a buffer: see fusion.py)."""
    c, i, j, n, q = index.dims()
    x = node.inputs[0]
    channels, height, width = x.type.shape[1:]
    (dh, dw) = node.attrs["dilation"]
    image = imul(iadd(imul(n, IConst(channels)), c), IConst(height * width))
    tap = iadd(imul(i, IConst(dh * width)), imul(j, IConst(dw)))
    return ctx.value(x, Index(x.type.shape, linear=iadd(iadd(image, tap), q)))


register("im2col", _im2col)
register("flat_im2col", _flat_im2col)
register("col2im", _col2im)


def _pool_geometry(node: Node):
    """Return a pooling node's kernel, stride, padding and dilation (1 where it has none)."""
    attrs = node.attrs
    return attrs["kernel"], attrs["stride"], attrs["padding"], attrs.get("dilation", (1, 1))


def _window(ctx, node, x: Node, n, ch, oh, ow, grid, fill: float):
    """Return (tap vars (i, j), their extents, x under tap (i, j) of window (oh, ow) or `fill`
    outside x); grid is the windows' (rows, cols), which bounds how far a tap reaches."""
    kernel, stride, padding, dilation = _pool_geometry(node)
    i, j = ctx.fresh("i"), ctx.fresh("j")
    reach = _reach(grid, kernel, stride, dilation)
    xv, inside = _tap(ctx, x, n, ch, oh, ow, i, j, stride, dilation, padding, reach)
    dtype = x.type.dtype
    if inside != IConst(1):
        xv = Select(IndexValue(inside, bool_), xv, Const(fill, dtype), dtype)
    return (i, j), tuple(IConst(k) for k in kernel), xv


def _max_pool(ctx, node, index):
    n, ch, oh, ow = index.dims()
    grid = node.type.shape[2:]
    taps, extents, value = _window(ctx, node, node.inputs[0], n, ch, oh, ow, grid, -np.inf)
    return Reduce("max", taps, extents, value, node.type.dtype)


def _avg_divisor(ctx, node, oh, ow, x_shape, out_shape, dtype) -> Expr:
    kernel, stride, padding, _ = _pool_geometry(node)
    if node.attrs.get("divisor_override") is not None:
        return Const(float(node.attrs["divisor_override"]), dtype)
    if node.attrs["count_include_pad"]:
        # Padded positions count, positions past the padding do not: with ceil_mode the last
        # window along a dim may cover fewer than kernel rows.
        counts: list[IntExpr] = []
        for o, out, size, k, s, p in zip(
            (oh, ow), out_shape[2:], x_shape[2:], kernel, stride, padding, strict=True
        ):
            if (out - 1) * s + k <= size + 2 * p:
                counts.append(IConst(k))
            else:
                counts.append(
                    ibin("min", IConst(k), ibin("sub", dim_expr(size + 2 * p), imul(o, IConst(s))))
                )
        area = imul(*counts)
        if isinstance(area, IConst):
            return Const(float(area.value), dtype)
        return IndexValue(area, dtype)
    i, j = ctx.fresh("i"), ctx.fresh("j")
    ih = _window_position(oh, i, stride[0], 1, padding[0])
    iw = _window_position(ow, j, stride[1], 1, padding[1])
    inside = all_of([in_range(ih, IConst(x_shape[2])), in_range(iw, IConst(x_shape[3]))])
    return Reduce(
        "sum",
        (i, j),
        tuple(IConst(k) for k in kernel),
        Cast(IndexValue(inside, bool_), dtype),
        dtype,
    )


def _avg_pool(ctx, node, index):
    n, ch, oh, ow = index.dims()
    x = node.inputs[0]
    dtype = node.type.dtype
    taps, extents, value = _window(ctx, node, x, n, ch, oh, ow, node.type.shape[2:], 0.0)
    total = Reduce("sum", taps, extents, value, dtype)
    divisor = _avg_divisor(ctx, node, oh, ow, x.type.shape, node.type.shape, dtype)
    return Binary("div", total, divisor, dtype)


@dataclass(frozen=True)
class Covering:
    """The windows that cover an input position (h, w), for a pooling gradient: the window
    (row, col) and its tap (i, j) on (h, w) are expressions of the loop vars `taps` (extents
    `extents`), one loop per dim whose windows overlap; `valid` says whether that window
    exists and covers (h, w)."""

    taps: tuple[Var, ...]
    extents: tuple[IntExpr, ...]
    window: tuple[IntExpr, IntExpr]
    tap: tuple[IntExpr, IntExpr]
    valid: IntExpr

    def total(self, body: Expr) -> Expr:
        """Return body summed over the covering windows (itself where there is just one)."""
        if not self.taps:
            return body
        return Reduce("sum", self.taps, self.extents, body, body.dtype)


def _covering(ctx, node, gy: Node, h: IntExpr, w: IntExpr) -> Covering:
    """Return the windows of a pooling node that cover input position (h, w)."""
    taps, extents, window, tap, valid = [], [], [], [], []
    for position, k, s, p, d, windows, size in zip(
        (h, w), *_pool_geometry(node), gy.type.shape[2:], node.type.shape[2:], strict=True
    ):
        if windows_disjoint(k, s, d):
            row, offset, ok = _only_window(position, k, s, p, d, windows, size)
        else:
            # Overlapping windows: every tap of the window names the window that puts it on
            # the position. (Looping over the ceil(extent / stride) windows that can hold it
            # instead, 4 rather than 9 for a 3x3 pool with stride 2, measured twice as slow.)
            offset = ctx.fresh("t")
            taps.append(offset)
            extents.append(IConst(k))
            row, ok = _strided_source(position, offset, s, d, p, windows)
        window.append(row)
        tap.append(offset)
        valid.append(ok)
    return Covering(
        tuple(taps), tuple(extents), (window[0], window[1]), (tap[0], tap[1]), all_of(valid)
    )


def _only_window(
    position: IntExpr, kernel: int, stride: int, pad: int, dilation: int, windows: int, size: int
):
    """Return (window, tap, valid) for a dim whose windows do not overlap: the one window
    that can cover position (clamped into the grid), its tap there, and whether it covers it.
    No loop over taps and, for the usual stride == kernel, no condition at all."""
    extent = (kernel - 1) * dilation + 1
    shifted = iadd(position, IConst(pad))
    window = ibin("div", shifted, IConst(stride))
    offset = ibin("sub", shifted, imul(window, IConst(stride)))
    conditions = []
    if dilation > 1:
        conditions.append(ibin("eq", ibin("mod", offset, IConst(dilation)), IConst(0)))
    if stride > extent:
        conditions.append(ibin("lt", offset, IConst(extent)))
    if (size - 1 + pad) // stride >= windows:
        conditions.append(ibin("lt", window, IConst(windows)))
        window = clamp(window, IConst(windows))
    return window, ibin("div", offset, IConst(dilation)), all_of(conditions)


def _avg_pool_grad(ctx, node, index):
    (gy,) = node.inputs
    n, ch, h, w = index.dims()
    cover = _covering(ctx, node, gy, h, w)
    row, col = cover.window
    dtype = node.type.dtype
    share = Binary(
        "div",
        ctx.value(gy, Index(gy.type.shape, dims=(n, ch, row, col))),
        _avg_divisor(ctx, node, row, col, node.type.shape, gy.type.shape, dtype),
        dtype,
    )
    return cover.total(_masked(cover.valid, share))


def _route(ctx, node, gy: Node, index, first_max_at) -> Expr:
    """Return dx[h, w]: gy summed over the windows covering (h, w) whose first maximum,
    first_max_at((n, channel, row, col)) as a flat tap i * kW + j, sits at (h, w)."""
    n, ch, h, w = index.dims()
    cover = _covering(ctx, node, gy, h, w)
    row, col = cover.window
    i, j = cover.tap
    flat_tap = iadd(imul(i, IConst(node.attrs["kernel"][1])), j)
    here = all_of([cover.valid, ibin("eq", first_max_at((n, ch, row, col)), flat_tap)])
    return cover.total(_masked(here, ctx.value(gy, Index(gy.type.shape, dims=(n, ch, row, col)))))


def _first_max(ctx, node, x: Node, at: tuple, grid) -> Reduce:
    """Return the flat tap (i * kW + j) of the first maximum of x's window at (n, ch, oh, ow)."""
    n, ch, oh, ow = at
    taps, extents, value = _window(ctx, node, x, n, ch, oh, ow, grid, -np.inf)
    return Reduce("argmax", taps, extents, value, int64)


def _max_pool_grad(ctx, node, index):
    # Each covering window's first maximum is computed again: exact, ties included, and no
    # index buffer to keep. Overlapping windows go through max_pool2d_routed instead.
    x, gy = node.inputs
    grid = gy.type.shape[2:]
    return _route(ctx, node, gy, index, lambda at: ValueIndex(_first_max(ctx, node, x, at, grid)))


def _recorded(ctx, first_max: Node, at: tuple) -> IntExpr:
    """Return the flat tap max_pool2d_argmax recorded for the window at (n, ch, row, col)."""
    return ValueIndex(ctx.value(first_max, Index(first_max.type.shape, dims=at)))


def _max_pool_routed(ctx, node, index):
    first_max, gy = node.inputs
    return _route(ctx, node, gy, index, lambda at: _recorded(ctx, first_max, at))


def _max_pool_argmax(ctx, node, index):
    grid = node.type.shape[2:]
    return Cast(_first_max(ctx, node, node.inputs[0], index.dims(), grid), int32)


def _masked(condition: IntExpr, value: Expr) -> Expr:
    """Return value where condition holds, else 0."""
    if condition == IConst(1):
        return value
    return Select(IndexValue(condition, bool_), value, Const(0, value.dtype), value.dtype)


def _at_tap(ctx, node, values: Node, at: tuple, flat_tap: IntExpr) -> Expr:
    """Return values at tap flat_tap (i * kW + j) of the window at (n, ch, oh, ow); 0 in the
    padding."""
    n, ch, oh, ow = at
    (_, kw), stride, padding, dilation = _pool_geometry(node)
    i, j = ibin("div", flat_tap, IConst(kw)), ibin("mod", flat_tap, IConst(kw))
    value, inside = _tap(ctx, values, n, ch, oh, ow, i, j, stride, dilation, padding)
    return _masked(inside, value)


def _max_pool_select(ctx, node, index):
    x, values = node.inputs
    at = index.dims()
    first_max = ValueIndex(_first_max(ctx, node, x, at, node.type.shape[2:]))
    return _at_tap(ctx, node, values, at, first_max)


def _max_pool_pick(ctx, node, index):
    first_max, values = node.inputs
    at = index.dims()
    return _at_tap(ctx, node, values, at, _recorded(ctx, first_max, at))


register("max_pool2d_select", _max_pool_select)
register("max_pool2d", _max_pool)
register("avg_pool2d", _avg_pool)
register("avg_pool2d_grad", _avg_pool_grad)
register("max_pool2d_grad", _max_pool_grad)
register("max_pool2d_argmax", _max_pool_argmax)
register("max_pool2d_routed", _max_pool_routed)
register("max_pool2d_pick", _max_pool_pick)
