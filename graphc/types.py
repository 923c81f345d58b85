"""TensorType: the static type of every graph value, a shape of Dims and a DType."""

from __future__ import annotations

from dataclasses import dataclass

from graphc.dims import Dim, Shape, dim_prod, format_shape
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
