"""Shared pieces of type rules: broadcasting, axis normalisation, dtype checks.

Symbolic dims broadcast by a rule decided when the graph is built: a symbol broadcasts with 1
and matches itself; a symbol against a concrete size or another symbol is a ShapeError, since
graphc would otherwise have to guess which one the user meant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphc.dims import Dim, Shape, Sym, dims_equal, format_shape
from graphc.dtypes import DType
from graphc.errors import DTypeError, ShapeError
from graphc.types import TensorType


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Return the broadcast of shapes, or raise ShapeError naming both sizes and the axis."""
    ndim = max((len(s) for s in shapes), default=0)
    result: list[Dim] = []
    for axis in range(-ndim, 0):
        out: Dim = 1
        for shape in shapes:
            if len(shape) < -axis:
                continue
            d = shape[axis]
            if isinstance(d, int) and d == 1:
                continue
            if isinstance(out, int) and out == 1:
                out = d
            elif not dims_equal(out, d):
                listed = " and ".join(format_shape(s) for s in shapes)
                hint = ""
                if isinstance(out, Sym) or isinstance(d, Sym):
                    hint = (
                        "; a symbolic dim only broadcasts with 1 or the same symbol "
                        "(graphc decides broadcasting when the graph is built)"
                    )
                raise ShapeError(
                    f"cannot broadcast shapes {listed}: axis {axis} has sizes {out} and {d}{hint}"
                )
        result.append(out)
    return tuple(result)


def normalize_axis(axis: int, ndim: int, shape: Shape | None = None) -> int:
    """Return axis in [0, ndim), accepting negative axes like PyTorch."""
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ShapeError(f"dim must be an int, got {axis!r}")
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        where = f" of shape {format_shape(shape)}" if shape is not None else ""
        raise ShapeError(
            f"dim {axis} is out of range for a {ndim}-d tensor{where} "
            f"(expected a dim in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])"
        )
    return axis % max(ndim, 1)


def same_dtype(types: Sequence[TensorType], role: str = "inputs") -> DType:
    """Return the common dtype of types, or raise DTypeError naming each."""
    first = types[0].dtype
    for t in types[1:]:
        if t.dtype != first:
            listed = ", ".join(str(t) for t in types)
            raise DTypeError(f"{role} must share a dtype, got {listed}")
    return first


def require_dtype(t: TensorType, allowed: str, role: str) -> None:
    """Raise DTypeError unless t's dtype is in the allowed categories ('float', 'int', 'bool')."""
    ok = (
        ("float" in allowed and t.dtype.is_float)
        or ("int" in allowed and t.dtype.is_int)
        or ("bool" in allowed and t.dtype.is_bool)
    )
    if not ok:
        raise DTypeError(f"{role} must be {allowed.replace(',', ' or ')}, got {t}")


def symbolic(dims: Sequence[Dim]) -> bool:
    """Return True if some dim is symbolic (known only when a call binds the symbols)."""
    return any(isinstance(d, Sym) for d in dims)


def bindings_text(bindings: Mapping[str, int]) -> str:
    """Return the symbol sizes of a call as 'B=3, T=7', for error messages."""
    return ", ".join(f"{name}={size}" for name, size in sorted(bindings.items()))
