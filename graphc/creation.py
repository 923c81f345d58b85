"""Creation functions of the Tensor API: tensor, zeros/ones/full, arange, eye, linspace,
rand/randn, the *_like forms, manual_seed, and gc.input placeholders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc import dtypes
from graphc.dims import (
    Sym,
    as_dim,
    as_shape,
    dim_add,
    dim_div,
    dim_mul,
    dim_prod,
    is_static,
    static_dim,
)
from graphc.dtypes import DType, as_dtype
from graphc.errors import DTypeError, GraphError, ShapeError, located, user_location
from graphc.math_ops import as_tensor, cast, constant
from graphc.ops.registry import make_node
from graphc.shaping import broadcast_to
from graphc.tensor import Tensor

_DEFAULT_SEED = 0x5EED


class _RandomState:
    """The seed and next counter offset used by rand/randn (set by manual_seed)."""

    seed = _DEFAULT_SEED
    offset = 0


def manual_seed(seed: int) -> None:
    """Seed the generator behind rand/randn and every random initialisation."""
    _RandomState.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    _RandomState.offset = 0


def _shape_args(size: Sequence[Any]) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def tensor(data: Any, dtype: Any = None) -> Tensor:
    """Return a constant tensor from nested lists, a numpy array or a scalar.

    Python ints become int64, floats float32 and bools bool unless dtype says otherwise.
    """
    if isinstance(data, Tensor):
        return as_tensor(data, None if dtype is None else as_dtype(dtype))
    try:
        array = np.asarray(data)
    except ValueError as error:
        raise GraphError(
            located(f"tensor(): ragged or invalid data: {error}", user_location())
        ) from None
    if array.dtype.kind not in "biuf":
        raise DTypeError(
            located(f"tensor(): cannot make a tensor from {array.dtype} data", user_location())
        )
    return constant(
        array if isinstance(data, np.ndarray) else data, None if dtype is None else as_dtype(dtype)
    )


def full(size: Sequence[Any], fill_value: Any, dtype: Any = None) -> Tensor:
    """Return a tensor of the given shape (symbols allowed) filled with fill_value."""
    shape = as_shape(size)
    dtype = dtypes.scalar_dtype(fill_value) if dtype is None else as_dtype(dtype)
    return broadcast_to(constant(fill_value, dtype), shape)


def zeros(*size: Any, dtype: Any = None) -> Tensor:
    """Return a tensor of zeros (float32 unless dtype says otherwise)."""
    return full(_shape_args(size), 0.0, dtype or dtypes.DEFAULT_FLOAT)


def ones(*size: Any, dtype: Any = None) -> Tensor:
    """Return a tensor of ones (float32 unless dtype says otherwise)."""
    return full(_shape_args(size), 1.0, dtype or dtypes.DEFAULT_FLOAT)


def zeros_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Return zeros with x's shape and dtype."""
    return full(x.shape, 0, dtype or x.dtype)


def ones_like(x: Tensor, dtype: Any = None) -> Tensor:
    """Return ones with x's shape and dtype."""
    return full(x.shape, 1, dtype or x.dtype)


def full_like(x: Tensor, fill_value: Any, dtype: Any = None) -> Tensor:
    """Return fill_value with x's shape and dtype."""
    return full(x.shape, fill_value, dtype or x.dtype)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    """Return values from start up to (not including) end in steps of step; int64 when every
    argument is an int or a dim, float32 otherwise (or dtype).

    start and end may be symbolic dims (`gc.arange(x.shape[1])`): the length is then the dim
    (end - start) / step, so with a step other than 1 it must divide exactly.
    """
    if end is None:
        start, end = 0, start
    for role, value in (("start", start), ("end", end), ("step", step)):
        if not isinstance(value, (Sym, str, int, float, np.integer, np.floating)):
            raise GraphError(
                located(
                    f"arange(): {role} must be a number or a dim (an int or x.shape[i]), "
                    f"got {type(value).__name__} {value!r}",
                    user_location(),
                )
            )
    if dtype is not None:
        dtype = as_dtype(dtype)
    if any(isinstance(v, (Sym, str)) for v in (start, end, step)):
        return _symbolic_arange(start, end, step, dtype)
    if step == 0:
        raise ShapeError(located(f"arange({start}, {end}, {step}): the step is 0", user_location()))
    try:
        values = np.arange(start, end, step)
    except (ValueError, ZeroDivisionError, OverflowError) as error:
        raise ShapeError(
            located(f"arange({start}, {end}, {step}): {error}", user_location())
        ) from None
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = dtypes.int64 if is_int else dtypes.DEFAULT_FLOAT
    return constant(values, dtype)


def _symbolic_arange(start: Any, end: Any, step: Any, dtype: DType | None) -> Tensor:
    """Return the arange op for a range with a symbolic bound; its length must be a dim."""
    call = f"arange({start}, {end}, {step})"
    where = user_location()
    for role, value in (("start", start), ("end", end)):
        if isinstance(value, (float, np.floating)):
            raise ShapeError(
                located(f"{call}: with a symbolic bound, {role} must be an int or a dim", where)
            )
    if isinstance(step, (Sym, str, float, np.floating)) or step == 0:
        raise ShapeError(located(f"{call}: the step must be a nonzero int", where))
    try:
        first, last, stride = as_dim(start), as_dim(end), int(step)
    except ShapeError as error:
        raise ShapeError(located(f"{call}: {error}", where)) from None
    span = dim_add(last, dim_mul(first, -1))
    try:
        size = dim_div(span, stride)
    except ShapeError:
        raise ShapeError(
            located(
                f"{call}: the length ({span})/{stride} of a range with a symbolic bound must be "
                f"a dim, and {stride} does not divide {span} exactly for every size",
                where,
            )
        ) from None
    if dtype is not None and dtype.is_bool:
        raise DTypeError(located(f"{call}: arange cannot make a bool tensor", where))
    attrs = {"start": first, "size": size, "step": stride, "dtype": dtype or dtypes.int64}
    return Tensor(make_node("arange", [], attrs))


def linspace(start: float, end: float, steps: int, dtype: Any = None) -> Tensor:
    """Return `steps` evenly spaced values from start to end inclusive."""
    return constant(np.linspace(start, end, steps), as_dtype(dtype or dtypes.DEFAULT_FLOAT))


def eye(n: int, m: int | None = None, dtype: Any = None) -> Tensor:
    """Return the n x m identity matrix."""
    return constant(np.eye(n, m), as_dtype(dtype or dtypes.DEFAULT_FLOAT))


def _random(distribution: str, size: Sequence[Any], dtype: Any, step: Tensor | None) -> Tensor:
    shape = as_shape(_shape_args(size))
    dtype = as_dtype(dtype or dtypes.DEFAULT_FLOAT)
    offset = _RandomState.offset
    count = dim_prod(shape)
    # A symbolic size reserves a wide counter range so later draws never overlap it.
    _RandomState.offset += static_dim(count) if is_static(shape) else 1 << 40
    attrs = {
        "shape": shape,
        "dtype": dtype,
        "seed": _RandomState.seed,
        "distribution": distribution,
    }
    counter = constant(np.int64(offset), dtypes.int64)
    if step is not None:
        # A changing step (e.g. a Variable advanced by a training step's updates) moves the
        # draw to a fresh counter range, far from every other draw's, on each call.
        counter = counter + cast(step, dtypes.int64) * (1 << 44)
    return Tensor(make_node("random", [counter.node], attrs))


def rand(*size: Any, dtype: Any = None, step: Tensor | None = None) -> Tensor:
    """Return uniform random values in [0, 1) from the counter-based generator.

    `step`, an integer scalar tensor, makes the values differ between calls of a compiled
    Function: pass a Variable that the Function's updates increment (as Dropout does).
    """
    return _random("uniform", size, dtype, step)


def randn(*size: Any, dtype: Any = None, step: Tensor | None = None) -> Tensor:
    """Return standard normal random values from the counter-based generator (see rand)."""
    return _random("normal", size, dtype, step)


def input(name: str, shape: Sequence[Any], dtype: Any = dtypes.float32) -> Tensor:  # noqa: A001
    """Return a placeholder fed at call time; dims may be ints or symbol names ("B")."""
    if not isinstance(name, str) or not name:
        raise GraphError(
            located(f"input names must be non-empty strings, got {name!r}", user_location())
        )
    attrs = {"name": name, "shape": as_shape(shape), "dtype": as_dtype(dtype)}
    return Tensor(make_node("input", [], attrs, name=name))
