"""What the backends share about running a call: the Runner a bound executable returns,
undoing the updates of a call of several steps whose later step fails, how Variables' values
are shared with device memory (Storage, DeviceCopy), and how a device backend launches a
kernel (LaunchGeometry, what Function.kernels() shows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Runs a graph on (feeds, out arrays or None) for symbol sizes fixed when it was made. An
# executable with `screens_memory` set also takes a third argument, screen: when true, the
# runner first looks natively for arrays that may share memory and, finding any, runs nothing
# and returns None (the Function then runs the call again after its memory checks).
Runner = Callable[[Sequence[np.ndarray], Sequence[np.ndarray] | None], list[np.ndarray] | None]


class DeviceCopy(Protocol):
    """A Variable's value in a device's memory, kept by a device backend's executable."""

    # Set when its executable is gone: the storage then keeps it only while no other place
    # holds the value.
    released: bool

    def download(self, array: np.ndarray) -> None:
        """Copy the device value into a host array of the Variable's shape and dtype."""
        ...


class Storage(Protocol):
    """Where a Variable's value lives (graphc.variable's VariableStorage, which describes how
    the host array and device copies share it)."""

    name: str
    host: np.ndarray

    @property
    def value(self) -> np.ndarray:
        """Return the host array, current, for a caller that may write it."""
        ...

    def read(self) -> np.ndarray:
        """Return the current value, a read-only view of the host array."""
        ...

    def current_host(self) -> np.ndarray:
        """Return the host array, current, for a caller that only reads it."""
        ...

    def mark_host_written(self) -> None:
        """Note that a write through `value` has ended."""
        ...

    def is_current(self, copy: DeviceCopy) -> bool:
        """Return whether a device copy holds the current value."""
        ...

    def mark_current(self, copy: DeviceCopy) -> None:
        """Note that a device copy was given the current value."""
        ...

    def mark_written(self, copy: DeviceCopy) -> None:
        """Note that a call changed the value in a device copy."""
        ...


@dataclass(frozen=True)
class LaunchGeometry:
    """How a device backend starts one kernel function: its symbol, the grid (blocks: a
    number, or a formula of the symbol sizes), threads per block, and the block-shared
    memory it declares in bytes."""

    symbol: str
    grid: str
    block: int
    shared_bytes: int

    def __str__(self) -> str:
        return (
            f"{self.symbol}<<<{self.grid}, {self.block}>>> "
            f"({self.shared_bytes} bytes shared per block)"
        )


@contextmanager
def undone_on_error(storages: Sequence[Storage]) -> Iterator[None]:
    """Run the body; if it raises, give each storage back the value it held before, so a call
    whose later step fails leaves the Variables as they were."""
    saved = [storage.value.copy() for storage in storages]
    try:
        yield
    except BaseException:
        for storage, value in zip(storages, saved, strict=True):
            np.copyto(storage.value, value)
            storage.mark_host_written()
        raise


class RunsBound:
    """An executable whose run() is its bound runner for the call's sizes: it defines
    bind(bindings, steps=None) and keeps the runners it made."""

    def bind(self, bindings: Mapping[str, int], steps: int | None = None) -> Runner:
        raise NotImplementedError

    def run(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Return the outputs (in `out` if given) and apply the updates, all or none."""
        outputs = self.bind(bindings)(feeds, out)
        assert outputs is not None, "a runner not asked to screen always runs"
        return outputs
