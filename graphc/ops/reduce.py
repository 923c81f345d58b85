"""Reductions: sum, max, min, prod over a tuple of axes, and argmax/argmin over one axis.

max and min over no elements give the identity (-inf / inf, or the integer type's extremes),
which softmax's shift relies on; with the attribute `nonempty` (the user's max() and min(),
like PyTorch's) a dim of size 0 is an error instead, as it always is for argmax and argmin.
"""

from __future__ import annotations

import numpy as np

from graphc.dims import evaluate_dim, format_shape
from graphc.dtypes import int64
from graphc.errors import IndexingError, ShapeError, located
from graphc.graph import Node
from graphc.ops.grad_helpers import where
from graphc.ops.registry import define_op, grad_rule
from graphc.ops.shape_rules import bindings_text, require_dtype, symbolic
from graphc.types import TensorType

REDUCTIONS = {
    "reduce_sum": np.sum,
    "reduce_max": np.max,
    "reduce_min": np.min,
    "reduce_prod": np.prod,
}


def reduced_shape(shape, axes, keepdims):
    """Return the shape after reducing axes (already normalised)."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _check_axes(x: TensorType, axes) -> None:
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated dim in {axes} for shape {format_shape(x.shape)}")
    for axis in axes:
        if not 0 <= axis < max(x.ndim, 1) or (x.ndim == 0 and axes):
            raise ShapeError(f"dim {axis} is out of range for shape {format_shape(x.shape)}")


def _reduce_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float,int", "the input")
    axes = attrs["axes"]
    _check_axes(x, axes)
    if attrs.get("nonempty"):
        require_nonempty(x.shape, axes)
    return TensorType(reduced_shape(x.shape, axes, attrs["keepdims"]), x.dtype)


def _identity(op: str, dtype: np.dtype):
    """Return the value a max or min over no elements starts from (what the LLVM backend's
    loop starts from): -inf / inf, or the integer type's minimum / maximum."""
    if dtype.kind == "f":
        return -np.inf if op == "reduce_max" else np.inf
    info = np.iinfo(dtype)
    return info.min if op == "reduce_max" else info.max


def require_nonempty(shape, axes) -> None:
    """Raise IndexingError (a ShapeError) when a reduction that needs an element (max,
    argmax) has none: when the node is built for a static dim, when it runs otherwise."""
    for axis in axes:
        if isinstance(shape[axis], int) and shape[axis] == 0:
            raise IndexingError(
                f"expected reduction dim {axis} to have non-zero size, got shape "
                f"{format_shape(shape)}"
            )


def reduced_axes(node: Node) -> tuple[int, ...]:
    """Return the axes a reduction node reduces (argmax and argmin reduce one)."""
    return (node.attrs["axis"],) if "axis" in node.attrs else tuple(node.attrs["axes"])


def _nonempty_call_check(node: Node):
    """Return the per-call check that a reduction needing an element (argmax, the user's max)
    does not reduce a symbolic dim that is 0 in this call, as in PyTorch."""
    if "axes" in node.attrs and not node.attrs.get("nonempty"):
        return None  # a sum, or max as softmax's shift: over no elements it is the identity
    shape = node.inputs[0].type.shape
    axes = reduced_axes(node)
    if not symbolic(tuple(shape[axis] for axis in axes)):
        return None

    def check(bindings):
        for axis in axes:
            if evaluate_dim(shape[axis], bindings) == 0:
                message = (
                    f"{node.op}: expected reduction dim {axis} to have non-zero size "
                    f"(with {bindings_text(bindings)})"
                )
                raise IndexingError(located(message, node.location))

    return check


def _reduce_reference(name, fn):
    def reference(args, attrs, env):
        (x,) = args
        axes = tuple(attrs["axes"])
        if name in ("reduce_max", "reduce_min") and any(x.shape[a] == 0 for a in axes):
            # The user's max() and min() need an element; softmax's shift does not.
            if attrs.get("nonempty"):
                require_nonempty(x.shape, axes)
            return fn(x, axis=axes, keepdims=attrs["keepdims"], initial=_identity(name, x.dtype))
        return fn(x, axis=axes, keepdims=attrs["keepdims"])

    return reference


for _name, _fn in REDUCTIONS.items():
    define_op(
        _name,
        "reduce",
        _reduce_infer,
        _reduce_reference(_name, _fn),
        call_check=_nonempty_call_check,
    )


def _arg_infer(types, attrs):
    (x,) = types
    require_dtype(x, "float,int", "the input")
    axis = attrs["axis"]
    _check_axes(x, (axis,))
    require_nonempty(x.shape, (axis,))
    return TensorType(reduced_shape(x.shape, (axis,), attrs["keepdims"]), int64)


def _arg_reference(fn):
    def reference(args, attrs, env):
        # A dim that is symbolic when the graph is built may be 0 when it runs.
        require_nonempty(args[0].shape, (attrs["axis"],))
        # numpy and PyTorch both return the first index of the extremum (NaN counts as largest).
        return fn(args[0], axis=attrs["axis"], keepdims=attrs["keepdims"])

    return reference


for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    define_op(
        _name,
        "reduce",
        _arg_infer,
        _arg_reference(_fn),
        differentiable=False,
        call_check=_nonempty_call_check,
    )


# -- gradients -------------------------------------------------------------------------------
def _expand_back(g, x, attrs):
    """Return g (a reduction's gradient) broadcast back to x's shape."""
    if not attrs["keepdims"]:
        g = g.reshape(*reduced_shape(x.shape, attrs["axes"], True))
    return g.broadcast_to(x.shape)


@grad_rule("reduce_sum")
def _sum_grad(xs, out, g, attrs):
    return [_expand_back(g, xs[0], attrs)]


def _extremum_grad(xs, out, g, attrs):
    # The gradient is shared evenly between tied extrema, as PyTorch's amax/amin do.
    (x,) = xs
    hits = (x == _expand_back(out, x, attrs)).to(g.dtype)
    count = hits.sum(dim=attrs["axes"], keepdim=True)
    return [_expand_back(g, x, attrs) * hits / count]


grad_rule("reduce_max")(_extremum_grad)
grad_rule("reduce_min")(_extremum_grad)


@grad_rule("reduce_prod")
def _prod_grad(xs, out, g, attrs):
    # d prod / d x_i is the product of the other entries; computed without dividing by a zero.
    (x,) = xs
    axes = attrs["axes"]
    is_zero = x == 0
    zeros = is_zero.to(int64).sum(dim=axes, keepdim=True)
    nonzero_product = where(is_zero, 1, x).prod(dim=axes, keepdim=True)
    others = where(
        is_zero,
        where(zeros == 1, nonzero_product, 0),
        where(zeros == 0, nonzero_product / where(is_zero, 1, x), 0),
    )
    return [_expand_back(g, x, attrs) * others]
