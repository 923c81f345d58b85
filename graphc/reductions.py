"""Reductions of the Tensor API: sum/mean/var/std/prod/max/min/argmax/argmin over `dim`,
and the softmax family built from them (composites: their gradients come for free)."""

from __future__ import annotations

import builtins
from collections import namedtuple
from typing import Any

from graphc import dtypes
from graphc.dims import Dim, dim_prod
from graphc.errors import DTypeError, user_op
from graphc.math_ops import as_tensor, binary, cast, unary, where
from graphc.ops.reduce import require_nonempty
from graphc.ops.registry import make_node
from graphc.ops.shape_rules import normalize_axis
from graphc.tensor import Tensor

MinMax = namedtuple("MinMax", ["values", "indices"])


def normalize_dims(x: Tensor, dim: Any) -> tuple[int, ...]:
    """Return the axes named by dim (None: all), normalised to non-negative ints."""
    if dim is None:
        return tuple(range(x.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return tuple(sorted(normalize_axis(d, x.ndim, x.shape) for d in dims))


def _reduce(op: str, x: Tensor, dim: Any, keepdim: bool, **attrs: Any) -> Tensor:
    axes = normalize_dims(x, dim)
    attrs = {"axes": axes, "keepdims": bool(keepdim), **attrs}
    return Tensor(make_node(op, [x.node], attrs))


def _count(x: Tensor, axes: tuple[int, ...]) -> Dim:
    return dim_prod(x.shape[a] for a in axes)


def count_tensor(count: Dim, dtype: dtypes.DType) -> Tensor:
    """Return a size (maybe symbolic) as a scalar tensor of dtype."""
    if isinstance(count, int):
        return as_tensor(count, dtype)
    return Tensor(make_node("dim_size", [], {"dim": count, "dtype": dtype}))


@user_op
def sum(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:  # noqa: A001
    """Return the sum over dim; integer and bool tensors sum in int64, as in PyTorch."""
    x = as_tensor(x)
    if dtype is not None:
        x = cast(x, dtype)
    elif not x.dtype.is_float:
        x = cast(x, dtypes.int64)
    return _reduce("reduce_sum", x, dim, keepdim)


@user_op
def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the mean over dim (floating-point tensors only, as in PyTorch)."""
    x = as_tensor(x)
    if not x.dtype.is_float:
        raise DTypeError(f"needs a floating-point tensor, got {x!r}; call .float() first")
    axes = normalize_dims(x, dim)
    return sum(x, axes, keepdim) / count_tensor(_count(x, axes), x.dtype)


@user_op
def var(x: Tensor, dim: Any = None, keepdim: bool = False, *, correction: int = 1) -> Tensor:
    """Return the variance over dim, dividing by N - correction (Bessel's by default); as in
    PyTorch, by 0 where N - correction <= 0, so an empty or single-element slice gives NaN."""
    x = as_tensor(x)
    axes = normalize_dims(x, dim)
    centered = x - mean(x, axes, keepdim=True)
    squares = sum(centered * centered, axes, keepdim)
    count = _count(x, axes) - correction
    if isinstance(count, int):
        return squares / as_tensor(builtins.max(count, 0), x.dtype)
    return squares / binary("maximum", count_tensor(count, x.dtype), 0)


@user_op
def std(x: Tensor, dim: Any = None, keepdim: bool = False, *, correction: int = 1) -> Tensor:
    """Return the standard deviation over dim; its gradient is 0 where it is 0, as in PyTorch
    (sqrt's own derivative is infinite there)."""
    variance = var(x, dim, keepdim, correction=correction)
    # sqrt is taken of 1 where the variance is 0, so no inf * 0 reaches the gradient.
    zero = variance == 0
    return where(zero, 0.0, unary("sqrt", where(zero, 1.0, variance)))


@user_op
def prod(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the product over dim."""
    x = as_tensor(x)
    if not x.dtype.is_float:
        x = cast(x, dtypes.int64)
    return _reduce("reduce_prod", x, dim, keepdim)


def _ordered(x: Any) -> Tensor:
    """Return x as a tensor the extrema can compare (bools count as int64)."""
    x = as_tensor(x)
    return cast(x, dtypes.int64) if x.dtype.is_bool else x


def _like(result: Tensor, x: Any) -> Tensor:
    """Return an extremum in x's dtype: the max of bools is a bool, as in PyTorch."""
    return cast(result, dtypes.bool_) if as_tensor(x).dtype.is_bool else result


def _extremum(op: str, arg_op: str, original: Tensor, dim: Any, keepdim: bool):
    x = _ordered(original)
    if isinstance(dim, (Tensor, float)) or (dim is not None and not isinstance(dim, int)):
        raise DTypeError(f"{op[7:]}(dim=...) takes an int dim; for elementwise use maximum()")
    if dim is None:
        # The gradient is shared between tied extrema, as PyTorch's max() does.
        return _like(_nonempty_reduce(op, x, None, False), original)
    axis = normalize_axis(dim, x.ndim, x.shape)
    indices = _arg(arg_op, x, axis, True)
    # The values are read at the indices, so the whole gradient goes to the returned index,
    # as with torch.max(dim) (amax and amin share it between ties instead).
    values = Tensor(make_node("gather", [x.node, indices.node], {"axis": axis}))
    if not keepdim:
        values, indices = values.squeeze(axis), indices.squeeze(axis)
    return MinMax(_like(values, original), indices)


def _nonempty_reduce(op: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    """Return the max or min reduction that PyTorch's max(), amax() etc. are: an error over no
    elements (when the graph is built for static dims, when it runs for symbolic ones)."""
    require_nonempty(x.shape, normalize_dims(x, dim))
    return _reduce(op, x, dim, keepdim, nonempty=True)


@user_op
def max(x: Tensor, dim: Any = None, keepdim: bool = False):  # noqa: A001
    """Return the maximum; with an int dim, (values, indices) like torch.max."""
    if isinstance(dim, Tensor):
        return as_tensor(x).maximum(dim)
    return _extremum("reduce_max", "argmax", x, dim, keepdim)


@user_op
def min(x: Tensor, dim: Any = None, keepdim: bool = False):  # noqa: A001
    """Return the minimum; with an int dim, (values, indices) like torch.min."""
    if isinstance(dim, Tensor):
        return as_tensor(x).minimum(dim)
    return _extremum("reduce_min", "argmin", x, dim, keepdim)


@user_op
def amax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the maximum over dim (all dims by default); tied maxima share the gradient
    evenly, as with torch.amax."""
    return _like(_nonempty_reduce("reduce_max", _ordered(x), dim, keepdim), x)


@user_op
def amin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the minimum over dim (all dims by default); tied minima share the gradient
    evenly, as with torch.amin."""
    return _like(_nonempty_reduce("reduce_min", _ordered(x), dim, keepdim), x)


def _arg(op: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    x = _ordered(x)
    if dim is None:
        values = x.reshape(-1)
        require_nonempty(values.shape, (0,))
        flat = Tensor(make_node(op, [values.node], {"axis": 0, "keepdims": False}))
        return flat.reshape(*([1] * x.ndim)) if keepdim else flat
    axis = normalize_axis(dim, x.ndim, x.shape)
    require_nonempty(x.shape, (axis,))
    return Tensor(make_node(op, [x.node], {"axis": axis, "keepdims": bool(keepdim)}))


@user_op
def argmax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the index of the (first) maximum over dim, or over the flattened tensor."""
    return _arg("argmax", x, dim, keepdim)


@user_op
def argmin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the index of the (first) minimum over dim, or over the flattened tensor."""
    return _arg("argmin", x, dim, keepdim)


def _as_float(x: Any) -> Tensor:
    x = as_tensor(x)
    return cast(x, dtypes.float_result(x.dtype))


def _shift(x: Tensor, dim: Any) -> Tensor:
    """Return the maximum over dim (kept), the shift that keeps exp from overflowing: it
    cancels out of the derivative, so it carries no gradient. Over no elements it is -inf."""
    return stop_gradient(_reduce("reduce_max", x, dim, True))


@user_op
def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """Return log(sum(exp(x))) over dim, as max + log(sum(exp(x - max))) so it does not
    overflow; -inf over no elements or an all -inf slice, as in PyTorch."""
    x = _as_float(x)
    axes = normalize_dims(x, dim)
    shift = _shift(x, axes)
    # An all -inf (or a +inf) slice would give inf - inf; PyTorch shifts by 0 there instead.
    shift = where(abs(shift) == float("inf"), 0.0, shift)
    total = sum(unary("exp", x - shift), axes, keepdim=True)
    result = unary("log", total) + shift
    return result if keepdim else result.squeeze(axes)


def stop_gradient(x: Tensor) -> Tensor:
    """Return x unchanged, with no gradient flowing through it."""
    return Tensor(make_node("stop_gradient", [as_tensor(x).node]))


@user_op
def softmax(x: Tensor, dim: int) -> Tensor:
    """Return exp(x) / sum(exp(x)) over dim, computed with the maximum subtracted and as
    exp(x - max) times the reciprocal of its sum, as PyTorch computes it: a division per
    element took a third of a softmax's time (and of its gradient's), one per slice does
    not. The sum holds exp(0) = 1 for the maximum, so it is at least 1 (or NaN) and its
    reciprocal is exact to within rounding."""
    x = _as_float(x)
    e = unary("exp", x - _shift(x, dim))
    return e * (1.0 / sum(e, dim, keepdim=True))


@user_op
def log_softmax(x: Tensor, dim: int) -> Tensor:
    """Return x - logsumexp(x) over dim, computed as (x - max) - log(sum(exp(x - max))), as
    PyTorch does: exact for large logits, where x - logsumexp(x) would cancel; NaN for a slice
    holding +inf or only -inf."""
    x = _as_float(x)
    shifted = x - _shift(x, dim)
    return shifted - unary("log", sum(unary("exp", shifted), dim, keepdim=True))
