"""Argument checks shared by nn: errors that name the shapes and the user's file:line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphc.dims import Dim
from graphc.errors import DTypeError, GraphError, ShapeError, located, user_location
from graphc.math_ops import as_tensor
from graphc.tensor import Tensor


def shape_text(shape: Iterable[Dim]) -> str:
    """Return PyTorch-style text for a shape: (2, 3, 5), (B, 10), (4,)."""
    dims = [str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def shape_error(message: str) -> ShapeError:
    """Return a ShapeError located at the user's line."""
    return ShapeError(located(message, user_location()))


def dtype_error(message: str) -> DTypeError:
    """Return a DTypeError located at the user's line."""
    return DTypeError(located(message, user_location()))


def graph_error(message: str) -> GraphError:
    """Return a GraphError located at the user's line."""
    return GraphError(located(message, user_location()))


def tensor_arg(value: Any, role: str) -> Tensor:
    """Return value as a Tensor (arrays and scalars become constants)."""
    try:
        return as_tensor(value)
    except Exception:  # noqa: BLE001 - anything that is not tensor-like is the caller's error
        raise graph_error(f"{role} must be a tensor, got {type(value).__name__}") from None


def float_arg(value: Any, role: str) -> Tensor:
    """Return value as a floating-point Tensor, or raise a DTypeError naming the role."""
    t = tensor_arg(value, role)
    if not t.dtype.is_float:
        raise dtype_error(f"{role} must be floating point, got {t!r}; call .float() first")
    return t


def pair(value: Any, name: str) -> tuple[int, int]:
    """Return an int or a pair of ints as a pair."""
    items = (value, value) if isinstance(value, int) else tuple(value)
    if len(items) == 2:
        first, second = items
        if isinstance(first, int) and isinstance(second, int):
            return first, second
    raise graph_error(f"{name} must be an int or a pair of ints, got {value!r}")


def check_reduction(reduction: str) -> str:
    """Return reduction if it is 'mean', 'sum' or 'none'."""
    if reduction not in ("mean", "sum", "none"):
        raise graph_error(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction
