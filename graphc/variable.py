"""Variables: persistent state (parameters, optimizer state) that compiled Functions read and
update in place between calls."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import dtypes
from graphc.dims import format_shape
from graphc.errors import DTypeError, InputError, located, user_location
from graphc.ops.registry import make_node
from graphc.tensor import Tensor

if TYPE_CHECKING:
    from graphc.backends.calls import DeviceCopy


class VariableStorage:
    """The value behind a Variable: an array in host memory, and the copies device backends
    keep of it; its shape and dtype are fixed.

    A device backend (CUDA) keeps a Variable in device memory for as long as its executable
    lives, so a training step neither uploads nor downloads it. Each such copy is either
    current (it holds the Variable's value) or stale, and the storage knows which:

    - `value` is the host array for code that may write it (the CPU backends, `assign`): a
      newer device value is copied in first, and every device copy becomes stale, so the
      next device call uploads what the host holds then. A backend that runs on the host
      array asks for `value` (the Variables its call updates; it calls `mark_host_written()`
      after the call) or `current_host()` (the others) whenever any of them has device
      copies; while none has, the host arrays are current where they lie.
    - `read()` is the same array for code that only reads it (`.numpy()`, `state_dict()`,
      `gc.save`, uploads), as a read-only view: a newer device value is copied in, device
      copies stay current.
    - A device backend asks `is_current(copy)` before a call (uploading `read()` and calling
      `mark_current(copy)` if not), and calls `mark_written(copy)` after a call that changed
      the value there (the host array and every other copy are then stale). A failed call
      changes no copy, so it tells the storage nothing.

    The host array itself never changes (`host`: what memory-overlap checks compare), only
    its contents. `version` counts the times they changed: code that writes them through
    `value` calls `mark_host_written()` when it is done, and a newer device value copied in
    counts too; so a backend that keeps something derived from the value (a GEMM's packed
    copy of a weight) knows when to derive it again.
    Every change of state takes the storage's lock, so a read on one thread and a device call
    on another leave it consistent (though not ordered: order such calls).
    """

    __slots__ = (
        "host",
        "name",
        "shape",
        "dtype",
        "trainable",
        "version",
        "device_copies",
        "_host_current",
        "_lock",
    )

    def __init__(self, value: np.ndarray, name: str, trainable: bool) -> None:
        self.host = value
        self.name = name
        self.shape = tuple(int(d) for d in value.shape)
        self.dtype = dtypes.from_numpy(value.dtype)
        self.trainable = trainable
        self.version = 0
        # Device copies holding the current value; when there are none, the host holds it
        # (a backend on the host may skip `value` and `current_host()` while it is empty).
        self.device_copies: list[DeviceCopy] = []
        self._host_current = True
        self._lock = threading.RLock()

    @property
    def value(self) -> np.ndarray:
        """Return the host array, holding the current value, for a caller that may write it:
        device copies become stale."""
        if self.device_copies:
            with self._lock:
                self._bring_to_host()
                self.device_copies = []
        return self.host

    def mark_host_written(self) -> None:
        """Note that a write of the host array (through `value`) has ended: what was derived
        from the contents before, or while it ran, is stale."""
        self.version += 1

    def current_host(self) -> np.ndarray:
        """Return the host array, holding the current value, for code that only reads it (a
        backend's pointer table): device copies stay current."""
        if self.device_copies:
            with self._lock:
                self._bring_to_host()
                self.device_copies = [copy for copy in self.device_copies if not copy.released]
        return self.host

    def read(self) -> np.ndarray:
        """Return the current value as a read-only view of the host array (device copies stay
        current: the caller does not write it)."""
        view = self.current_host().view()
        view.setflags(write=False)
        return view

    def is_current(self, copy: DeviceCopy) -> bool:
        """Return whether a device copy holds the current value."""
        return any(held is copy for held in self.device_copies)

    def mark_current(self, copy: DeviceCopy) -> None:
        """Note that a device copy was given the current value (from `read()`)."""
        with self._lock:
            if not self.is_current(copy):
                self.device_copies.append(copy)

    def mark_written(self, copy: DeviceCopy) -> None:
        """Note that a call changed the value in a device copy: it alone holds the new one."""
        with self._lock:
            self.device_copies = [copy]
            self._host_current = False

    def _bring_to_host(self) -> None:
        """Copy the current value into the host array if a device copy holds a newer one."""
        if not self._host_current:
            self.device_copies[0].download(self.host)
            self._host_current = True
            self.version += 1

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
        """Return the current value as a read-only view (use assign() to change it). After a
        Function on a device backend (CUDA) updates the Variable, read `.value` again: the view
        shows the host's copy, which such a call does not update until it is read."""
        return self.storage.read()

    def assign(self, value: Any) -> None:
        """Overwrite the value in place with an array of the same shape and dtype."""
        np.copyto(self.storage.value, self.storage.checked(value))
        self.storage.mark_host_written()

    def numpy(self) -> np.ndarray:
        """Return a copy of the current value."""
        return self.storage.read().copy()

    def __repr__(self) -> str:
        return f"Variable({self.storage.name!r}, {self.node.type})"


def _default_numpy_dtype(value: Any, array: np.ndarray) -> np.dtype:
    if isinstance(value, (np.ndarray, np.generic)):
        return array.dtype
    if array.dtype.kind == "f":
        return np.dtype(np.float32)
    return array.dtype
