"""Dimensions: an int or a symbolic expression over named sizes ("B", "B*5", "B*T+1").

A symbolic dim is a polynomial with integer coefficients over symbol names, enough for
reshape/flatten/view with symbols: products, sums, exact division and -1 inference.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import SupportsIndex

from graphc.errors import ShapeError

# A monomial is a sorted tuple of symbol names (repeated for powers); () is the constant term.
Monomial = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sym:
    """A symbolic dimension: a sum of coefficient * product-of-symbols terms."""

    terms: tuple[tuple[Monomial, int], ...]

    @staticmethod
    def named(name: str) -> Sym:
        if not name.isidentifier():
            raise ShapeError(f"a symbolic dim must be an identifier like 'B', got {name!r}")
        return Sym((((name,), 1),))

    def __str__(self) -> str:
        # Highest-degree terms first and the constant last, so B-1 reads as written.
        ordered = sorted(self.terms, key=lambda term: (-len(term[0]), term[0]))
        text = ""
        for monomial, coeff in ordered:
            magnitude = abs(coeff)
            factors = list(monomial) + ([str(magnitude)] if magnitude != 1 or not monomial else [])
            sign = "-" if coeff < 0 else ("+" if text else "")
            text += sign + "*".join(factors)
        return text

    def __repr__(self) -> str:
        return str(self)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(name for monomial, _ in self.terms for name in monomial)

    @property
    def single_symbol(self) -> str | None:
        """Return the name if this dim is exactly one symbol (bindable from a shape)."""
        if len(self.terms) == 1 and self.terms[0][1] == 1 and len(self.terms[0][0]) == 1:
            return self.terms[0][0][0]
        return None

    def __add__(self, other: Dim) -> Dim:
        return dim_add(self, other)

    __radd__ = __add__

    def __mul__(self, other: Dim) -> Dim:
        return dim_mul(self, other)

    __rmul__ = __mul__

    def __sub__(self, other: Dim) -> Dim:
        return dim_add(self, dim_mul(other, -1))

    def __rsub__(self, other: Dim) -> Dim:
        return dim_add(other, dim_mul(self, -1))

    def __neg__(self) -> Dim:
        return dim_mul(self, -1)

    def __floordiv__(self, other: Dim) -> Dim:
        return dim_div(self, other)


Dim = int | Sym
Shape = tuple[Dim, ...]


def _terms(d: Dim) -> dict[Monomial, int]:
    if isinstance(d, Sym):
        return dict(d.terms)
    return {(): int(d)} if d != 0 else {}


def _make(terms: Mapping[Monomial, int]) -> Dim:
    kept = tuple(sorted((m, c) for m, c in terms.items() if c != 0))
    if not kept:
        return 0
    if len(kept) == 1 and kept[0][0] == ():
        return kept[0][1]
    return Sym(kept)


def as_dim(value: object) -> Dim:
    """Return a Dim from an int, a symbol name or a Sym."""
    if isinstance(value, Sym):
        return value
    if isinstance(value, str):
        return Sym.named(value)
    if isinstance(value, bool):
        raise ShapeError(f"a dim must be an int or a symbol name, got {value!r}")
    if not isinstance(value, SupportsIndex):  # ints and numpy integers
        raise ShapeError(f"a dim must be an int or a symbol name, got {value!r}")
    return operator.index(value)


def as_shape(values: Iterable[object]) -> Shape:
    """Return a Shape from an iterable of ints / symbol names, rejecting negative sizes."""
    shape = tuple(as_dim(v) for v in values)
    for axis, d in enumerate(shape):
        if isinstance(d, int) and d < 0:
            raise ShapeError(f"dim {axis} of shape {format_shape(shape)} is negative")
    return shape


def dim_add(a: Dim, b: Dim) -> Dim:
    """Return a + b."""
    terms = _terms(a)
    for m, c in _terms(b).items():
        terms[m] = terms.get(m, 0) + c
    return _make(terms)


def dim_mul(a: Dim, b: Dim) -> Dim:
    """Return a * b."""
    terms: dict[Monomial, int] = {}
    for ma, ca in _terms(a).items():
        for mb, cb in _terms(b).items():
            m = tuple(sorted(ma + mb))
            terms[m] = terms.get(m, 0) + ca * cb
    return _make(terms)


def dim_prod(dims: Iterable[Dim]) -> Dim:
    """Return the product of dims (1 for none)."""
    result: Dim = 1
    for d in dims:
        result = dim_mul(result, d)
    return result


def _divide_monomial(m: Monomial, by: Monomial) -> Monomial | None:
    rest = list(m)
    for name in by:
        if name not in rest:
            return None
        rest.remove(name)
    return tuple(rest)


def dim_div(a: Dim, b: Dim) -> Dim:
    """Return a / b when it divides exactly; raise ShapeError otherwise."""
    if isinstance(b, int):
        if b == 0:
            raise ShapeError("division of a dim by zero")
        terms = _terms(a)
        if all(c % b == 0 for c in terms.values()):
            return _make({m: c // b for m, c in terms.items()})
    else:
        b_terms = _terms(b)
        if len(b_terms) == 1:
            ((mb, cb),) = b_terms.items()
            quotient = {}
            for m, c in _terms(a).items():
                rest = _divide_monomial(m, mb)
                if rest is None or c % cb:
                    break
                quotient[rest] = c // cb
            else:
                return _make(quotient)
    raise ShapeError(f"size {a} is not divisible by {b}")


def dims_equal(a: Dim, b: Dim) -> bool:
    """Return True when a and b are the same size for every binding of the symbols."""
    return _make(_terms(a)) == _make(_terms(b))


def same_dims(a: Iterable[Dim], b: Iterable[Dim]) -> bool:
    """Return whether two shapes are equal for every binding of their symbols."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(map(dims_equal, a, b))


def is_static(shape: Iterable[Dim]) -> bool:
    """Return True when every dim is a plain int."""
    return all(isinstance(d, int) for d in shape)


def static_dim(d: Dim, what: str = "the size") -> int:
    """Return d as an int, for a dim that must be static (ShapeError naming `what` if not)."""
    if isinstance(d, int):
        return d
    raise ShapeError(f"{what} must be static, got the symbolic {d}")


def static_shape(shape: Iterable[Dim], what: str = "the shape") -> tuple[int, ...]:
    """Return shape as ints, for a shape that must be static (ShapeError naming `what`)."""
    dims = tuple(shape)
    if not is_static(dims):
        raise ShapeError(f"{what} must be static, got {format_shape(dims)}")
    return tuple(static_dim(d) for d in dims)


def evaluate_dim(d: Dim, bindings: Mapping[str, int]) -> int:
    """Return the size of d for concrete values of its symbols."""
    if isinstance(d, int):
        return d
    total = 0
    for monomial, coeff in d.terms:
        try:
            total += coeff * math.prod(bindings[name] for name in monomial)
        except KeyError as missing:
            raise ShapeError(f"symbolic dim {missing.args[0]} is not bound to a size") from None
    return total


def evaluate_shape(shape: Iterable[Dim], bindings: Mapping[str, int]) -> tuple[int, ...]:
    """Return the concrete shape for given symbol values."""
    return tuple(evaluate_dim(d, bindings) for d in shape)


def format_shape(shape: Iterable[Dim]) -> str:
    """Return '[B,10]'-style text for a shape."""
    return "[" + ",".join(str(d) for d in shape) + "]"
