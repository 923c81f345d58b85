"""TensorType: the static type of every graph value, a shape of Dims and a DType; TupleType:
the type of a node with several results (a loop), whose items `tuple_get` nodes read."""

from __future__ import annotations

from dataclasses import dataclass

from graphc.dims import Dim, Shape, dim_prod, dims_equal, format_shape
from graphc.dtypes import DType


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor's shape (ints and symbols) and element type."""

    shape: Shape
    dtype: DType

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> Dim:
        return dim_prod(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.short}{format_shape(self.shape)}"


@dataclass(frozen=True, slots=True)
class TupleType:
    """The type of a node with several results (a loop): one TensorType per result, each read
    by a `tuple_get` node. No kernel stores a tuple; only its items are values."""

    items: tuple[TensorType, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(map(str, self.items)) + ")"


def same_type(a: TensorType | TupleType, b: TensorType | TupleType) -> bool:
    """Return True if a and b are equal types for every binding of the symbols."""
    if isinstance(a, TupleType) or isinstance(b, TupleType):
        return (
            isinstance(a, TupleType)
            and isinstance(b, TupleType)
            and len(a.items) == len(b.items)
            and all(map(same_type, a.items, b.items))
        )
    return (
        a.dtype == b.dtype
        and len(a.shape) == len(b.shape)
        and all(map(dims_equal, a.shape, b.shape))
    )
