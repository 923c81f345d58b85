"""Index arithmetic for lowering: symbolic dims as index expressions, and an Index that holds
a position either as per-dim indices or as a row-major offset, converting only on demand
(so chains of same-shape elementwise ops and reshapes of buffers never divide)."""

from __future__ import annotations

from graphc.backends.kernel.ir import IConst, IntExpr, SymSize, iadd, ibin, imul
from graphc.dims import Dim, dims_equal


def dim_expr(d: Dim) -> IntExpr:
    """Return a dim (int or symbolic polynomial) as an index expression."""
    if isinstance(d, int):
        return IConst(d)
    total: IntExpr = IConst(0)
    for monomial, coeff in d.terms:
        term: IntExpr = IConst(coeff)
        for name in monomial:
            term = imul(term, SymSize(name))
        total = iadd(total, term)
    return total


def row_major_strides(shape: tuple[Dim, ...]) -> tuple[IntExpr, ...]:
    """Return the element strides of a contiguous row-major array of shape."""
    strides: list[IntExpr] = []
    running: IntExpr = IConst(1)
    for d in reversed(shape):
        strides.append(running)
        running = imul(running, dim_expr(d))
    return tuple(reversed(strides))


class Index:
    """A position in an array of `shape`: per-dim indices, a row-major offset, or both."""

    __slots__ = ("shape", "_dims", "_linear")

    def __init__(
        self,
        shape: tuple[Dim, ...],
        dims: tuple[IntExpr, ...] | None = None,
        linear: IntExpr | None = None,
    ) -> None:
        self.shape = shape
        self._dims = dims
        self._linear = linear

    def dims(self) -> tuple[IntExpr, ...]:
        """Return the per-dim indices (dividing the offset if only it is known)."""
        if self._dims is None:
            assert self._linear is not None  # an Index holds dims, a linear offset or both
            rest = self._linear
            dims: list[IntExpr] = []
            for stride, d in zip(row_major_strides(self.shape), self.shape, strict=True):
                if isinstance(d, int) and d == 1:
                    dims.append(IConst(0))
                    continue
                dims.append(ibin("div", rest, stride))
                rest = ibin("mod", rest, stride)
            self._dims = tuple(dims)
        return self._dims

    def linear(self) -> IntExpr:
        """Return the row-major offset (summing index times stride if only dims are known)."""
        if self._linear is None:
            total: IntExpr = IConst(0)
            for i, stride in zip(self.dims(), row_major_strides(self.shape), strict=True):
                total = iadd(total, imul(i, stride))
            self._linear = total
        return self._linear

    def reshaped(self, shape: tuple[Dim, ...]) -> Index:
        """Return the same element seen through a reshape to shape."""
        return Index(shape, linear=self.linear())

    def broadcast_from(self, source_shape: tuple[Dim, ...]) -> Index:
        """Return the index into an operand of source_shape that broadcasts to this shape."""
        if len(source_shape) == len(self.shape) and all(map(dims_equal, source_shape, self.shape)):
            return self
        offset = len(self.shape) - len(source_shape)
        out = self.dims()
        dims = tuple(
            IConst(0) if (isinstance(d, int) and d == 1) else out[k + offset]
            for k, d in enumerate(source_shape)
        )
        return Index(source_shape, dims=dims)
