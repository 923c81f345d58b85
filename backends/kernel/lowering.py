"""Lowering of graph ops to kernel-IR expressions, one rule per op, registered on the op's
definition (OpDef.lowerings["kernel"]); an elementwise op of one or two operands without a rule
of its own lowers to the Unary or Binary node of its name (`kernel_rule`).

A rule gets the lowering context, the node, and the Index of the element wanted, and returns
the expression for that element; it asks the context for its inputs' elements, which are
loads from buffers for materialised nodes and inlined expressions for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from graphc.backends.kernel.index import Index, dim_expr
from graphc.backends.kernel.ir import (
    Binary,
    Cast,
    Const,
    Expr,
    IConst,
    IndexCheck,
    IndexValue,
    IntExpr,
    Load,
    Philox,
    Reduce,
    Select,
    Unary,
    ValueIndex,
    Var,
    iadd,
    ibin,
    imul,
)
from graphc.dims import Dim
from graphc.dtypes import DType, bool_, float64, int64
from graphc.graph import Node
from graphc.ops import OpDef, get_op

Rule = Callable[["LoweringContext", Node, Index], Expr]


class LoweringContext:
    """Resolves node elements to expressions: loads for buffers, inlined rules otherwise."""

    def __init__(self, buffers: Mapping[int, str]) -> None:
        self.buffers = buffers
        self._counter = 0
        # The same node at the same element is one expression, so a reduction used twice
        # (softmax's row maximum) is one Reduce that code generation computes once.
        self._lowered: dict[tuple[int, IntExpr], Expr] = {}

    def fresh(self, prefix: str) -> Var:
        self._counter += 1
        return Var(f"{prefix}.{self._counter}")

    def value(self, node: Node, index: Index) -> Expr:
        """Return the expression of node's element at index."""
        name = self.buffers.get(node.id)
        if name is not None:
            return Load(name, index.linear(), node.type.dtype)
        rule = kernel_rule(get_op(node.op))
        if _statically_empty(node.type.shape):
            # A zero-size dim makes the row-major offset forget the indices before it, so
            # different elements (in different loop scopes) would share one expression.
            return rule(self, node, index)
        key = (node.id, index.linear())
        if key not in self._lowered:
            self._lowered[key] = rule(self, node, index)
        return self._lowered[key]

    def operand(self, node: Node, position: int, index: Index) -> Expr:
        """Return input `position` of node at index, broadcast to node's shape."""
        source = node.inputs[position]
        return self.value(source, index.broadcast_from(source.type.shape))


def _statically_empty(shape: tuple) -> bool:
    return any(isinstance(d, int) and d == 0 for d in shape)


def _register(name: str, rule: Rule) -> None:
    get_op(name).lowerings["kernel"] = rule


def kernel_rule(op: OpDef) -> Rule:
    """Return op's lowering to the kernel IR: its registered rule, or for an elementwise op of
    one or two operands the Unary or Binary expression of its name."""
    rule = op.lowerings.get("kernel")
    if rule is None and op.kind == "elementwise" and op.arity in _GENERIC:
        rule = _GENERIC[op.arity]
    if rule is None:
        raise NotImplementedError(f"no kernel lowering for op {op.name}")
    return rule


def _clamp(i: IntExpr, size: IntExpr) -> IntExpr:
    return ibin("min", ibin("max", i, IConst(0)), ibin("sub", size, IConst(1)))


def _in_range(i: IntExpr, size: IntExpr) -> IntExpr:
    return ibin("and", ibin("le", IConst(0), i), ibin("lt", i, size))


def _all(conditions: list[IntExpr]) -> IntExpr:
    result: IntExpr = IConst(1)
    for c in conditions:
        if isinstance(c, IConst):
            if not c.value:
                return IConst(0)  # a condition known false when lowering (pad's element 0)
            continue
        result = c if isinstance(result, IConst) else ibin("and", result, c)
    return result


# -- elementwise ----------------------------------------------------------------------------
def _unary(ctx, node, index):
    return Unary(node.op, ctx.operand(node, 0, index), node.type.dtype)


def _binary(ctx, node, index):
    operands = (ctx.operand(node, 0, index), ctx.operand(node, 1, index))
    return Binary(node.op, *operands, node.type.dtype)


_GENERIC: dict[int, Rule] = {1: _unary, 2: _binary}
_register(
    "where",
    lambda ctx, node, index: Select(
        ctx.operand(node, 0, index),
        ctx.operand(node, 1, index),
        ctx.operand(node, 2, index),
        node.type.dtype,
    ),
)
_register("cast", lambda ctx, node, index: Cast(ctx.operand(node, 0, index), node.type.dtype))
_register("stop_gradient", lambda ctx, node, index: ctx.operand(node, 0, index))


def _constant(ctx, node, index):
    value = node.attrs["value"]
    if value.size != 1:
        raise NotImplementedError("constants with several elements are buffers")
    return Const(value.reshape(()).item(), node.type.dtype)


_register("constant", _constant)
_register(
    "dim_size", lambda ctx, node, index: IndexValue(dim_expr(node.attrs["dim"]), node.type.dtype)
)


# -- reductions -----------------------------------------------------------------------------
_REDUCE_OPS = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min", "reduce_prod": "prod"}


def _reduction(ctx, node, index, op: str, axes: tuple[int, ...], keepdims: bool):
    x = node.inputs[0]
    out = index.dims()
    reduce_vars = {axis: ctx.fresh("r") for axis in axes}
    dims, position = [], 0
    for axis in range(x.type.ndim):
        if axis in reduce_vars:
            dims.append(reduce_vars[axis])
            position += keepdims
        else:
            dims.append(out[position])
            position += 1
    body = ctx.value(x, Index(x.type.shape, dims=tuple(dims)))
    extents = tuple(dim_expr(x.type.shape[axis]) for axis in axes)
    return Reduce(op, tuple(reduce_vars[a] for a in axes), extents, body, node.type.dtype)


def _reduction_rule(op: str):
    def rule(ctx, node, index):
        return _reduction(ctx, node, index, op, node.attrs["axes"], node.attrs["keepdims"])

    return rule


for _name, _op in _REDUCE_OPS.items():
    _register(_name, _reduction_rule(_op))
_register(
    "argmax",
    lambda ctx, node, index: _reduction(
        ctx, node, index, "argmax", (node.attrs["axis"],), node.attrs["keepdims"]
    ),
)
_register(
    "argmin",
    lambda ctx, node, index: _reduction(
        ctx, node, index, "argmin", (node.attrs["axis"],), node.attrs["keepdims"]
    ),
)


# -- movement -------------------------------------------------------------------------------
_register(
    "reshape",
    lambda ctx, node, index: ctx.value(node.inputs[0], index.reshaped(node.inputs[0].type.shape)),
)


def _permute(ctx, node, index):
    out = index.dims()
    inverse = {axis: position for position, axis in enumerate(node.attrs["perm"])}
    dims = tuple(out[inverse[axis]] for axis in range(len(out)))
    return ctx.value(node.inputs[0], Index(node.inputs[0].type.shape, dims=dims))


_register("permute", _permute)
_register("broadcast_to", lambda ctx, node, index: ctx.operand(node, 0, index))


def _slice(ctx, node, index):
    out = index.dims()
    dims = tuple(
        iadd(dim_expr(start), imul(i, IConst(step)))
        for i, start, step in zip(out, node.attrs["starts"], node.attrs["steps"], strict=True)
    )
    return ctx.value(node.inputs[0], Index(node.inputs[0].type.shape, dims=dims))


_register("slice", _slice)


def _pad(ctx, node, index):
    # Output element i reads x at i - lo; only a side that pads (a positive or symbolic width)
    # can put that outside x, a side that crops (a negative width) never does.
    x = node.inputs[0]
    out = index.dims()
    dims, inside = [], []
    for i, (lo, hi), size in zip(out, node.attrs["pads"], x.type.shape, strict=True):
        shifted = ibin("sub", i, dim_expr(lo))
        pads_lo = not (isinstance(lo, int) and lo <= 0)
        pads_hi = not (isinstance(hi, int) and hi <= 0)
        if pads_lo:
            shifted_in = ibin("max", shifted, IConst(0))
            inside.append(ibin("le", IConst(0), shifted))
        else:
            shifted_in = shifted
        if pads_hi:
            shifted_in = ibin("min", shifted_in, ibin("sub", dim_expr(size), IConst(1)))
            inside.append(ibin("lt", shifted, dim_expr(size)))
        dims.append(shifted_in)
    value = ctx.value(x, Index(x.type.shape, dims=tuple(dims)))
    if not inside:
        return value
    condition = IndexValue(_all(inside), bool_)
    return Select(condition, value, Const(node.attrs["value"], node.type.dtype), node.type.dtype)


_register("pad", _pad)


def _concat(ctx, node, index):
    axis = node.attrs["axis"]
    out = index.dims()
    pieces = []
    start: IntExpr = IConst(0)
    for source in node.inputs:
        size = dim_expr(source.type.shape[axis])
        # A piece with no elements along the axis is never read: its buffer has nothing to read.
        if not _statically_empty((source.type.shape[axis],)):
            pieces.append((source, start, size))
        start = iadd(start, size)
    if not pieces:
        return Const(0, node.type.dtype)  # the result itself has no elements
    result: Expr | None = None
    for source, begin, size in reversed(pieces):
        local = _clamp(ibin("sub", out[axis], begin), size)
        dims = tuple(local if d == axis else out[d] for d in range(len(out)))
        piece = ctx.value(source, Index(source.type.shape, dims=dims))
        if result is None:
            result = piece
        else:
            chosen = IndexValue(ibin("lt", out[axis], iadd(begin, size)), bool_)
            result = Select(chosen, piece, result, node.type.dtype)
    return result


_register("concat", _concat)


def _gather(ctx, node, index):
    x, idx = node.inputs
    axis = node.attrs["axis"]
    out = index.dims()
    position = ctx.value(idx, index.broadcast_from(idx.type.shape))
    size = dim_expr(x.type.shape[axis])
    wrap = node.attrs.get("wrap_negative", True)
    checked = ValueIndex(IndexCheck(position, size, axis, int64, wrap))
    dims = tuple(checked if d == axis else out[d] for d in range(len(out)))
    return ctx.value(x, Index(x.type.shape, dims=dims))


_register("gather", _gather)


# -- matmul (the generic loop form; float matmuls use the backend's GEMM instead) ----------
def _matmul(ctx, node, index):
    a, b = node.inputs
    out = index.dims()
    k = ctx.fresh("k")
    a_rows = a.type.ndim > 1
    b_cols = b.type.ndim > 1
    rank = len(out)
    m = out[-2] if (a_rows and b_cols) else (out[-1] if a_rows else None)
    n = out[-1] if b_cols else None
    batch = out[: rank - int(a_rows) - int(b_cols)]
    a_dims = (m, k) if a_rows else (k,)
    b_dims = (k, n) if b_cols else (k,)
    a_index = _batched(a.type.shape, batch, a_dims)
    b_index = _batched(b.type.shape, batch, b_dims)
    dtype = node.type.dtype
    body = Binary("mul", ctx.value(a, a_index), ctx.value(b, b_index), dtype)
    return Reduce("sum", (k,), (dim_expr(a.type.shape[-1]),), body, dtype)


def _batched(shape, batch, trailing) -> Index:
    """Return the index of an operand of shape whose batch dims broadcast against batch."""
    lead = shape[: len(shape) - len(trailing)]
    offset = len(batch) - len(lead)
    dims = tuple(
        IConst(0) if (isinstance(d, int) and d == 1) else batch[i + offset]
        for i, d in enumerate(lead)
    )
    return Index(shape, dims=dims + tuple(trailing))


_register("matmul", _matmul)


# -- random ---------------------------------------------------------------------------------
def _uniform(word: Expr, dtype: DType) -> Expr:
    if dtype == float64:
        return Binary("mul", Cast(word, dtype), Const(2.0**-32, dtype), dtype)
    top = Binary("floordiv", word, Const(256, int64), int64)
    return Binary("mul", Cast(top, dtype), Const(2.0**-24, dtype), dtype)


def _random(ctx, node, index):
    dtype = node.type.dtype
    offset = ctx.operand(node, 0, Index((), dims=()))
    seed = node.attrs["seed"]

    def word(k: int) -> Expr:
        return Philox(index.linear(), offset, seed, k, int64)

    if node.attrs["distribution"] == "uniform":
        return _uniform(word(0), dtype)
    u1 = Binary("sub", Const(1.0, dtype), _uniform(word(0), dtype), dtype)
    u2 = _uniform(word(1), dtype)
    radius = Unary("sqrt", Binary("mul", Const(-2.0, dtype), Unary("log", u1, dtype), dtype), dtype)
    angle = Binary("mul", Const(2 * math.pi, dtype), u2, dtype)
    return Binary("mul", radius, Unary("cos", angle, dtype), dtype)


_register("random", _random)


# -- convolution and pooling ----------------------------------------------------------------
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
    return value, _all([rows_inside, cols_inside])


def _tap_axis(position: IntExpr, pad: int, size: Dim, reach: int | None):
    """Return (position clamped into [0, size), whether it lies inside). An axis without
    padding whose taps all stay inside needs neither, so contiguous taps load as vectors."""
    if reach is not None and pad == 0 and isinstance(size, int) and reach <= size:
        return position, IConst(1)
    return _clamp(position, dim_expr(size)), _in_range(position, dim_expr(size))


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
    valid = _all(
        [
            ibin("le", IConst(0), t),
            ibin("eq", ibin("mod", t, IConst(stride)), IConst(0)),
            ibin("lt", source, dim_expr(size)),
        ]
    )
    return _clamp(source, dim_expr(size)), valid


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
    body = _masked_product(gv, wv, _all([row_ok, col_ok]), node.type.dtype)
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


_register("conv2d", _conv2d)
_register("conv2d_input_grad", _conv2d_input_grad)
_register("conv2d_weight_grad", _conv2d_weight_grad)


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
    body = Select(IndexValue(_all([row_ok, col_ok]), bool_), value, Const(0, dtype), dtype)
    return Reduce("sum", (i, j), (IConst(kh), IConst(kw)), body, dtype)


_register("im2col", _im2col)
_register("col2im", _col2im)


def _pool_geometry(node: Node):
    """Return a pooling node's kernel, stride, padding and dilation (1 where it has none)."""
    attrs = node.attrs
    return attrs["kernel"], attrs["stride"], attrs["padding"], attrs.get("dilation", (1, 1))


def _window(ctx, node, x: Node, n, ch, oh, ow, fill: float):
    """Return (vars, extents, value of x under tap (i, j) or `fill` outside, valid flag)."""
    (kh, kw), stride, padding, dilation = _pool_geometry(node)
    i, j = ctx.fresh("i"), ctx.fresh("j")
    xv, inside = _tap(ctx, x, n, ch, oh, ow, i, j, stride, dilation, padding)
    dtype = x.type.dtype
    value = Select(IndexValue(inside, bool_), xv, Const(fill, dtype), dtype)
    return (i, j), (IConst(kh), IConst(kw)), value, inside


def _max_pool(ctx, node, index):
    n, ch, oh, ow = index.dims()
    taps, extents, value, _ = _window(ctx, node, node.inputs[0], n, ch, oh, ow, -np.inf)
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
    inside = _all([_in_range(ih, IConst(x_shape[2])), _in_range(iw, IConst(x_shape[3]))])
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
    taps, extents, value, _ = _window(ctx, node, x, n, ch, oh, ow, 0.0)
    total = Reduce("sum", taps, extents, value, dtype)
    divisor = _avg_divisor(ctx, node, oh, ow, x.type.shape, node.type.shape, dtype)
    return Binary("div", total, divisor, dtype)


def _windows_over(ctx, node, gy: Node, h: IntExpr, w: IntExpr):
    """Return (kernel, tap vars (i, j), the output window (row, col) whose tap (i, j) is input
    (h, w), whether that window exists): the windows a pooling gradient sums over."""
    kernel, (sh, sw), (ph, pw), (dh, dw) = _pool_geometry(node)
    i, j = ctx.fresh("i"), ctx.fresh("j")
    row, row_ok = _strided_source(h, i, sh, dh, ph, gy.type.shape[2])
    col, col_ok = _strided_source(w, j, sw, dw, pw, gy.type.shape[3])
    return kernel, (i, j), (row, col), _all([row_ok, col_ok])


def _avg_pool_grad(ctx, node, index):
    (gy,) = node.inputs
    n, ch, h, w = index.dims()
    (kh, kw), (i, j), (row, col), valid = _windows_over(ctx, node, gy, h, w)
    dtype = node.type.dtype
    share = Binary(
        "div",
        ctx.value(gy, Index(gy.type.shape, dims=(n, ch, row, col))),
        _avg_divisor(ctx, node, row, col, node.type.shape, gy.type.shape, dtype),
        dtype,
    )
    body = Select(IndexValue(valid, bool_), share, Const(0, dtype), dtype)
    return Reduce("sum", (i, j), (IConst(kh), IConst(kw)), body, dtype)


def _max_pool_grad(ctx, node, index):
    # dx[h, w] sums g over the windows whose first maximum sits at (h, w).
    x, gy = node.inputs
    n, ch, h, w = index.dims()
    (kh, kw), (i, j), (row, col), valid = _windows_over(ctx, node, gy, h, w)
    taps, extents, value, _ = _window(ctx, node, x, n, ch, row, col, -np.inf)
    first_max = Reduce("argmax", taps, extents, value, int64)
    is_here = IndexValue(ibin("eq", ValueIndex(first_max), iadd(imul(i, IConst(kw)), j)), bool_)
    dtype = node.type.dtype
    gv = ctx.value(gy, Index(gy.type.shape, dims=(n, ch, row, col)))
    chosen = Binary("logical_and", IndexValue(valid, bool_), is_here, bool_)
    body = Select(chosen, gv, Const(0, dtype), dtype)
    return Reduce("sum", (i, j), (IConst(kh), IConst(kw)), body, dtype)


def _max_pool_select(ctx, node, index):
    x, values = node.inputs
    n, ch, oh, ow = index.dims()
    taps, extents, value, _ = _window(ctx, node, x, n, ch, oh, ow, -np.inf)
    first_max = ValueIndex(Reduce("argmax", taps, extents, value, int64))
    (_, kw), (sh, sw), (ph, pw), (dh, dw) = _pool_geometry(node)
    i, j = ibin("div", first_max, IConst(kw)), ibin("mod", first_max, IConst(kw))
    _, _, height, width = x.type.shape
    row = _clamp(_window_position(oh, i, sh, dh, ph), IConst(height))
    col = _clamp(_window_position(ow, j, sw, dw, pw), IConst(width))
    return ctx.value(values, Index(values.type.shape, dims=(n, ch, row, col)))


_register("max_pool2d_select", _max_pool_select)
_register("max_pool2d", _max_pool)
_register("avg_pool2d", _avg_pool)
_register("avg_pool2d_grad", _avg_pool_grad)
_register("max_pool2d_grad", _max_pool_grad)
