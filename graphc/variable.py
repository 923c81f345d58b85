"""Variables: persistent state (parameters, optimizer state) that compiled Functions read and
update in place between calls."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc import dtypes
from graphc.dims import format_shape
from graphc.errors import DTypeError, InputError, located, user_location
from graphc.ops.registry import make_node
from graphc.tensor import Tensor


class VariableStorage:
    """The array behind a Variable; backends read and write it, its shape and dtype are fixed."""

    __slots__ = ("value", "name", "shape", "dtype", "trainable")

    def __init__(self, value: np.ndarray, name: str, trainable: bool) -> None:
        self.value = value
        self.name = name
        self.shape = tuple(int(d) for d in value.shape)
        self.dtype = dtypes.from_numpy(value.dtype)
        self.trainable = trainable

    def checked(self, new_value: Any) -> np.ndarray:
        """Return new_value as an array of this variable's shape and dtype, or raise."""
        array = np.asarray(new_value)
        if array.shape != self.shape:
            raise InputError(
                f"variable {self.name!r} has shape {format_shape(self.shape)}, "
                f"got a value of shape {format_shape(array.shape)}"
            )
        if not np.can_cast(array.dtype, self.dtype.numpy, casting="same_kind"):
            raise DTypeError(
                f"variable {self.name!r} holds {self.dtype.name}, got a value of {array.dtype}"
            )
        return np.array(array, dtype=self.dtype.numpy, order="C")


_counter = [0]


class Variable(Tensor):
    """A tensor whose value persists across calls and can be updated by compiled Functions."""

    __slots__ = ()

    def __init__(
        self, value: Any, name: str | None = None, dtype: Any = None, *, trainable: bool = True
    ) -> None:
        if isinstance(value, Tensor):
            value = value.numpy()
        array = np.array(value, dtype=None if dtype is None else dtypes.as_dtype(dtype).numpy)
        if dtype is None:
            array = array.astype(_default_numpy_dtype(value, array), copy=False)
        if array.dtype.kind not in "biuf":
            raise DTypeError(located(f"cannot make a Variable from {array.dtype}", user_location()))
        array = np.array(array, dtype=dtypes.from_numpy(array.dtype).numpy, order="C")
        if name is None:
            _counter[0] += 1
            name = f"var{_counter[0]}"
        storage = VariableStorage(array, name, trainable)
        super().__init__(make_node("variable", [], {"storage": storage}, name=name))

    @property
    def storage(self) -> VariableStorage:
        return self.node.attrs["storage"]

    @property
    def value(self) -> np.ndarray:
        """Return the current value (read-only view; use assign() to change it)."""
        view = self.storage.value.view()
        view.setflags(write=False)
        return view

    def assign(self, value: Any) -> None:
        """Overwrite the value in place with an array of the same shape and dtype."""
        np.copyto(self.storage.value, self.storage.checked(value))

    def numpy(self) -> np.ndarray:
        """Return a copy of the current value."""
        return self.storage.value.copy()

    def __repr__(self) -> str:
        return f"Variable({self.storage.name!r}, {self.node.type})"


def _default_numpy_dtype(value: Any, array: np.ndarray) -> np.dtype:
    if isinstance(value, (np.ndarray, np.generic)):
        return array.dtype
    if array.dtype.kind == "f":
        return np.dtype(np.float32)
    return array.dtype
