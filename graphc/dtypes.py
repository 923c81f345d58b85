"""Element types and PyTorch's type-promotion rules (Python scalars are weakly typed)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import DTypeError

# Promotion categories, lowest first: a higher category wins regardless of width.
_BOOL, _INT, _FLOAT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class DType:
    """An element type: its name, short name for printing, numpy equivalent and category."""

    name: str
    short: str
    numpy: np.dtype
    category: int
    bits: int

    def __repr__(self) -> str:
        return f"gc.{self.name}"

    @property
    def is_float(self) -> bool:
        return self.category == _FLOAT

    @property
    def is_int(self) -> bool:
        return self.category == _INT

    @property
    def is_bool(self) -> bool:
        return self.category == _BOOL

    @property
    def itemsize(self) -> int:
        return self.bits // 8


float32 = DType("float32", "f32", np.dtype(np.float32), _FLOAT, 32)
float64 = DType("float64", "f64", np.dtype(np.float64), _FLOAT, 64)
int32 = DType("int32", "i32", np.dtype(np.int32), _INT, 32)
int64 = DType("int64", "i64", np.dtype(np.int64), _INT, 64)
bool_ = DType("bool", "bool", np.dtype(np.bool_), _BOOL, 8)

ALL_DTYPES: tuple[DType, ...] = (float32, float64, int32, int64, bool_)
DEFAULT_FLOAT = float32
DEFAULT_INT = int64

_BY_NUMPY = {d.numpy: d for d in ALL_DTYPES}
_BY_NAME = {d.name: d for d in ALL_DTYPES} | {
    "float": float32,
    "double": float64,
    "long": int64,
    "int": int32,
}


def as_dtype(value: Any) -> DType:
    """Return the DType for a DType, a name ('float32'), a numpy dtype or a Python type."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    if value is float:
        return DEFAULT_FLOAT
    if value is int:
        return DEFAULT_INT
    if value is bool:
        return bool_
    try:
        np_dtype = np.dtype(value)
    except TypeError:
        np_dtype = None
    if np_dtype is not None and np_dtype in _BY_NUMPY:
        return _BY_NUMPY[np_dtype]
    supported = ", ".join(d.name for d in ALL_DTYPES)
    raise DTypeError(f"unsupported dtype {value!r}; graphc supports {supported}")


def from_numpy(np_dtype: np.dtype) -> DType:
    """Map a numpy dtype to graphc's, narrowing the ones graphc lacks (float16 -> float32)."""
    np_dtype = np.dtype(np_dtype)
    if np_dtype in _BY_NUMPY:
        return _BY_NUMPY[np_dtype]
    if np_dtype.kind == "f":
        return float32 if np_dtype.itemsize < 8 else float64
    if np_dtype.kind in "iu":
        return int64
    if np_dtype.kind == "b":
        return bool_
    raise DTypeError(f"numpy dtype {np_dtype} has no graphc equivalent")


def promote(a: DType, b: DType) -> DType:
    """Return the result type of a binary op on two tensors of one kind (PyTorch's rule):
    the higher category wins, otherwise the wider type."""
    if a == b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    return a if a.bits >= b.bits else b


def scalar_category(value: object) -> int:
    """Return the promotion category of a Python scalar."""
    if isinstance(value, (bool, np.bool_)):
        return _BOOL
    if isinstance(value, (int, np.integer)):
        return _INT
    if isinstance(value, (float, np.floating)):
        return _FLOAT
    raise DTypeError(f"expected a Python number, got {type(value).__name__}")


def result_type(
    dimensioned: Iterable[DType] = (),
    zero_dim: Iterable[DType] = (),
    scalars: Iterable[object] = (),
) -> DType:
    """Return the dtype an op on these operands computes in (PyTorch's `result_type`).

    Operands are ranked in three groups: tensors with at least one dim, 0-d tensors, Python
    scalars. Each group is promoted on its own; a later group changes the result only when its
    category (bool < int < float) is higher, so `f32[3] + f64[]` is f32 and `i32[3] + i64[]` is
    i32, while `i32[3] + f64[]` is f64 and `bool[3] + i64[]` is i64. A Python float counts as
    the default float dtype and a Python int as int64.
    """
    groups = [list(dimensioned), list(zero_dim), [scalar_dtype(v) for v in scalars]]
    promoted = [functools.reduce(promote, group) if group else None for group in groups]
    dim_result, zero_result, scalar_result = promoted
    result = _combine_categories(dim_result, _combine_categories(zero_result, scalar_result))
    if result is None:
        raise DTypeError("result_type needs at least one operand")
    return result


def _combine_categories(higher: DType | None, lower: DType | None) -> DType | None:
    """Return the result of a higher-ranked group combined with a lower-ranked one."""
    if higher is None:
        return lower
    if lower is None or higher.is_float:
        return higher
    if higher.is_bool or lower.category > higher.category:
        return promote(higher, lower)
    return higher


def promote_with_scalar(tensor_dtype: DType, value: object) -> DType:
    """Return the result type of tensor (op) Python scalar: the scalar is weakly typed."""
    return result_type([tensor_dtype], scalars=[value])


def scalar_dtype(value: object) -> DType:
    """Return the dtype a Python scalar gets on its own (int -> int64, float -> float32)."""
    return {_BOOL: bool_, _INT: DEFAULT_INT, _FLOAT: DEFAULT_FLOAT}[scalar_category(value)]


def float_result(dtype: DType) -> DType:
    """Return the dtype of a floating-point function (exp, division) applied to dtype."""
    return dtype if dtype.is_float else DEFAULT_FLOAT
