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
    return _strides(tuple(dim_expr(d) for d in shape))


def _strides(extents: tuple[IntExpr, ...]) -> tuple[IntExpr, ...]:
    strides: list[IntExpr] = []
    running: IntExpr = IConst(1)
    for extent in reversed(extents):
        strides.append(running)
        running = imul(running, extent)
    return tuple(reversed(strides))


def row_major_offset(indices: tuple[IntExpr, ...], extents: tuple[IntExpr, ...]) -> IntExpr:
    """Return the row-major offset of indices in an array of the given extents: the same
    expression an Index of that position gives, so a backend can recognise it."""
    total: IntExpr = IConst(0)
    for i, stride in zip(indices, _strides(extents), strict=True):
        total = iadd(total, imul(i, stride))
    return total


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
            self._linear = row_major_offset(self.dims(), tuple(dim_expr(d) for d in self.shape))
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


def clamp(i: IntExpr, size: IntExpr) -> IntExpr:
    """Return i clamped into [0, size)."""
    return ibin("min", ibin("max", i, IConst(0)), ibin("sub", size, IConst(1)))


def in_range(i: IntExpr, size: IntExpr) -> IntExpr:
    """Return the condition 0 <= i < size."""
    return ibin("and", ibin("le", IConst(0), i), ibin("lt", i, size))


def all_of(conditions: list[IntExpr]) -> IntExpr:
    """Return the conjunction of integer conditions, dropping those known true when lowering."""
    result: IntExpr = IConst(1)
    for c in conditions:
        if isinstance(c, IConst):
            if not c.value:
                return IConst(0)  # a condition known false when lowering (pad's element 0)
            continue
        result = c if isinstance(result, IConst) else ibin("and", result, c)
    return result
