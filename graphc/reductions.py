"""Reductions of the Tensor API: sum/mean/var/std/prod/max/min/argmax/argmin over `dim`,
and the softmax family built from them (composites: their gradients come for free)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from graphc import dtypes
from graphc.dims import Dim, dim_prod
from graphc.errors import DTypeError, user_op
from graphc.math_ops import as_tensor, cast, unary, where
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


def _reduce(op: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    axes = normalize_dims(x, dim)
    return Tensor(make_node(op, [x.node], {"axes": axes, "keepdims": bool(keepdim)}))


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
    """Return the variance over dim, dividing by N - correction (Bessel's by default)."""
    x = as_tensor(x)
    axes = normalize_dims(x, dim)
    centered = x - mean(x, axes, keepdim=True)
    squares = sum(centered * centered, axes, keepdim)
    return squares / count_tensor(_count(x, axes) - correction, x.dtype)


@user_op
def std(x: Tensor, dim: Any = None, keepdim: bool = False, *, correction: int = 1) -> Tensor:
    """Return the standard deviation over dim."""
    return unary("sqrt", var(x, dim, keepdim, correction=correction))


@user_op
def prod(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the product over dim."""
    x = as_tensor(x)
    if not x.dtype.is_float:
        x = cast(x, dtypes.int64)
    return _reduce("reduce_prod", x, dim, keepdim)


def _extremum(op: str, arg_op: str, x: Tensor, dim: Any, keepdim: bool):
    x = as_tensor(x)
    if isinstance(dim, (Tensor, float)) or (dim is not None and not isinstance(dim, int)):
        raise DTypeError(f"{op[7:]}(dim=...) takes an int dim; for elementwise use maximum()")
    if x.dtype.is_bool:
        x = cast(x, dtypes.int64)
    if dim is None:
        return _reduce(op, x, None, False)
    values = _reduce(op, x, dim, keepdim)
    indices = _arg(arg_op, x, dim, keepdim)
    return MinMax(values, indices)


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


def _arg(op: str, x: Tensor, dim: Any, keepdim: bool) -> Tensor:
    x = as_tensor(x)
    if x.dtype.is_bool:
        x = cast(x, dtypes.int64)
    if dim is None:
        flat = Tensor(make_node(op, [x.reshape(-1).node], {"axis": 0, "keepdims": False}))
        return flat.reshape(*([1] * x.ndim)) if keepdim else flat
    axis = normalize_axis(dim, x.ndim, x.shape)
    return Tensor(make_node(op, [x.node], {"axis": axis, "keepdims": bool(keepdim)}))


@user_op
def argmax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the index of the (first) maximum over dim, or over the flattened tensor."""
    return _arg("argmax", x, dim, keepdim)


@user_op
def argmin(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Return the index of the (first) minimum over dim, or over the flattened tensor."""
    return _arg("argmin", x, dim, keepdim)


@user_op
def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """Return log(sum(exp(x))) over dim, shifted by the maximum so it does not overflow."""
    x = cast(as_tensor(x), dtypes.float_result(as_tensor(x).dtype))
    axes = normalize_dims(x, dim)
    shift = stop_gradient(_reduce("reduce_max", x, axes, True))
    # An all -inf (or inf) slice would give inf - inf; shift by 0 there instead.
    shift = where(abs(shift) == float("inf"), 0.0, shift)
    total = sum(unary("exp", x - shift), axes, keepdim=True)
    result = unary("log", total) + shift
    return result if keepdim else result.squeeze(axes)


def stop_gradient(x: Tensor) -> Tensor:
    """Return x unchanged, with no gradient flowing through it."""
    return Tensor(make_node("stop_gradient", [as_tensor(x).node]))


@user_op
def softmax(x: Tensor, dim: int) -> Tensor:
    """Return exp(x) / sum(exp(x)) over dim, computed with the maximum subtracted."""
    x = cast(as_tensor(x), dtypes.float_result(as_tensor(x).dtype))
    shifted = x - stop_gradient(_reduce("reduce_max", x, dim, True))
    e = unary("exp", shifted)
    return e / sum(e, dim, keepdim=True)


@user_op
def log_softmax(x: Tensor, dim: int) -> Tensor:
    """Return x - logsumexp(x) over dim."""
    x = cast(as_tensor(x), dtypes.float_result(as_tensor(x).dtype))
    return x - logsumexp(x, dim, keepdim=True)
