"""Lowering of graph ops to kernel-IR expressions, one rule per op, registered on the op's
definition (OpDef.lowerings["kernel"]); an elementwise op of one or two operands without a rule
of its own lowers to the Unary or Binary node of its name (`kernel_rule`).

A rule gets the lowering context, the node, and the Index of the element wanted, and returns
the expression for that element; it asks the context for its inputs' elements, which are
loads from buffers for materialised nodes and inlined expressions for the rest.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

from graphc.backends.kernel.index import Index, all_of, clamp, dim_expr
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
from graphc.backends.kernel.phased_gathers import phased_position
from graphc.dtypes import DType, bool_, float64, int64
from graphc.graph import Node
from graphc.ops import OpDef, get_op
from graphc.ops.reduce import reduced_axes

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


def register(name: str, rule: Rule) -> None:
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


# -- elementwise ----------------------------------------------------------------------------
def _unary(ctx, node, index):
    return Unary(node.op, ctx.operand(node, 0, index), node.type.dtype)


def _binary(ctx, node, index):
    operands = (ctx.operand(node, 0, index), ctx.operand(node, 1, index))
    return Binary(node.op, *operands, node.type.dtype)


_GENERIC: dict[int, Rule] = {1: _unary, 2: _binary}
register(
    "where",
    lambda ctx, node, index: Select(
        ctx.operand(node, 0, index),
        ctx.operand(node, 1, index),
        ctx.operand(node, 2, index),
        node.type.dtype,
    ),
)
register("cast", lambda ctx, node, index: Cast(ctx.operand(node, 0, index), node.type.dtype))
register("stop_gradient", lambda ctx, node, index: ctx.operand(node, 0, index))


def _constant(ctx, node, index):
    value = node.attrs["value"]
    if value.size != 1:
        raise NotImplementedError("constants with several elements are buffers")
    return Const(value.reshape(()).item(), node.type.dtype)


register("constant", _constant)
register(
    "dim_size", lambda ctx, node, index: IndexValue(dim_expr(node.attrs["dim"]), node.type.dtype)
)


def _arange(ctx, node, index):
    (i,) = index.dims()
    value = iadd(dim_expr(node.attrs["start"]), imul(i, IConst(node.attrs["step"])))
    return IndexValue(value, node.type.dtype)


register("arange", _arange)


# -- reductions -----------------------------------------------------------------------------
_REDUCE_OPS = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min", "reduce_prod": "prod"}


def _reduction(ctx, node, index, op: str):
    """Return node's reduction at index as one Reduce over its input. A same-op reduction
    feeding it that is inlined (fusion inlines one only when this is its sole user) is folded
    in, so a sum over dim 0 of a sum over dims 2 and 3 is one loop nest over the source's
    three dims, in the source's dim order, and reads it contiguously."""
    link, out = node, index.dims()
    reduce_vars: list[Var] = []
    while True:
        x = link.inputs[0]
        fresh = {axis: ctx.fresh("r") for axis in reduced_axes(link)}
        reduce_vars += fresh.values()
        dims, position = [], 0
        for axis in range(x.type.ndim):
            if axis in fresh:
                dims.append(fresh[axis])
                position += link.attrs["keepdims"]
            else:
                dims.append(out[position])
                position += 1
        if not _folds(ctx, node, x):
            break
        link, out = x, dims
    # A var of an outer reduction over a dim an inner one kept (size 1) reads nothing.
    looped = [axis for axis, d in enumerate(dims) if d in reduce_vars]
    body = ctx.value(x, Index(x.type.shape, dims=tuple(dims)))
    extents = tuple(dim_expr(x.type.shape[axis]) for axis in looped)
    return Reduce(op, tuple(dims[axis] for axis in looped), extents, body, node.type.dtype)


def _folds(ctx, node: Node, x: Node) -> bool:
    """Return whether reduction node folds its input x, an inlined reduction of the same op
    and dtype throughout, into its own loop nest."""
    return (
        x.op == node.op in _REDUCE_OPS
        and x.id not in ctx.buffers
        and node.type.dtype == x.type.dtype == x.inputs[0].type.dtype
    )


for _name, _op in {**_REDUCE_OPS, "argmax": "argmax", "argmin": "argmin"}.items():
    register(_name, functools.partial(_reduction, op=_op))


# -- movement -------------------------------------------------------------------------------
register(
    "reshape",
    lambda ctx, node, index: ctx.value(node.inputs[0], index.reshaped(node.inputs[0].type.shape)),
)


def _permute(ctx, node, index):
    out = index.dims()
    inverse = {axis: position for position, axis in enumerate(node.attrs["perm"])}
    dims = tuple(out[inverse[axis]] for axis in range(len(out)))
    return ctx.value(node.inputs[0], Index(node.inputs[0].type.shape, dims=dims))


register("permute", _permute)
register("broadcast_to", lambda ctx, node, index: ctx.operand(node, 0, index))


def _slice(ctx, node, index):
    out = index.dims()
    dims = tuple(
        iadd(dim_expr(start), imul(i, IConst(step)))
        for i, start, step in zip(out, node.attrs["starts"], node.attrs["steps"], strict=True)
    )
    return ctx.value(node.inputs[0], Index(node.inputs[0].type.shape, dims=dims))


register("slice", _slice)


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
    condition = IndexValue(all_of(inside), bool_)
    return Select(condition, value, Const(node.attrs["value"], node.type.dtype), node.type.dtype)


register("pad", _pad)


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
        local = clamp(ibin("sub", out[axis], begin), size)
        dims = tuple(local if d == axis else out[d] for d in range(len(out)))
        piece = ctx.value(source, Index(source.type.shape, dims=dims))
        if result is None:
            result = piece
        else:
            chosen = IndexValue(ibin("lt", out[axis], iadd(begin, size)), bool_)
            result = Select(chosen, piece, result, node.type.dtype)
    return result


register("concat", _concat)


def _gather(ctx, node, index):
    x, idx = node.inputs
    axis = node.attrs["axis"]
    out = index.dims()
    at = index.broadcast_from(idx.type.shape)
    checked = phased_position(idx, at, x.type.shape[axis])
    if checked is None:
        size = dim_expr(x.type.shape[axis])
        wrap = node.attrs.get("wrap_negative", True)
        checked = ValueIndex(IndexCheck(ctx.value(idx, at), size, axis, int64, wrap))
    dims = tuple(checked if d == axis else out[d] for d in range(len(out)))
    return ctx.value(x, Index(x.type.shape, dims=dims))


register("gather", _gather)


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


register("matmul", _matmul)


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


register("random", _random)
