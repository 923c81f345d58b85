"""Variables in device memory: each executable keeps a copy of every Variable it reads or
updates for as long as it lives, uploaded only when the copy is not current and downloaded
only when the host reads the value (the storage's protocol: graphc.variable.VariableStorage).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from graphc.backends.calls import Storage
from graphc.backends.cuda.driver import Driver


class DeviceVariable:
    """A Variable's value in device memory, owned by one executable; the storage keeps it
    (and so its memory) while it holds a value no other place has."""

    __slots__ = ("driver", "address", "nbytes", "released")

    def __init__(self, driver: Driver, nbytes: int) -> None:
        self.driver = driver
        self.address = driver.alloc(nbytes)
        self.nbytes = nbytes
        self.released = False

    def download(self, array: np.ndarray) -> None:
        """Copy the device value into a host array (on whichever thread reads it)."""
        self.driver.activate()
        self.driver.download(array, self.address)

    def __del__(self, _finalizing=sys.is_finalizing) -> None:
        if not _finalizing():
            self.driver.free(self.address)


class DeviceVariables:
    """The device copies of the Variables one executable reads or updates."""

    def __init__(self, driver: Driver, storages: Sequence[tuple[Storage, bool]]) -> None:
        """Give each storage, flagged True if the executable updates it, a device copy."""
        self._driver = driver
        self.copies = [
            (storage, DeviceVariable(driver, storage.host.nbytes)) for storage, _ in storages
        ]
        self.updated = [
            entry for entry, (_, updates) in zip(self.copies, storages, strict=True) if updates
        ]
        self._saved: list[DeviceVariable] | None = None  # made by the first save_updated()

    def upload_stale(self) -> None:
        """Give every copy that is not current the Variable's value."""
        for storage, copy in self.copies:
            if not storage.is_current(copy):
                self._driver.upload(copy.address, storage.read())
                storage.mark_current(copy)

    def written(self) -> None:
        """Note that a call updated the Variables in their device copies."""
        for storage, copy in self.updated:
            storage.mark_written(copy)

    def save_updated(self) -> None:
        """Copy the updated Variables' device values aside (device to device), for a call
        of several steps whose later step may fail (`restore_updated`)."""
        if self._saved is None:
            self._saved = [DeviceVariable(self._driver, copy.nbytes) for _, copy in self.updated]
        for (_, copy), saved in zip(self.updated, self._saved, strict=True):
            self._driver.copy(saved.address, copy.address, copy.nbytes)

    def restore_updated(self) -> None:
        """Give the updated Variables' device copies back the values `save_updated` saw."""
        assert self._saved is not None
        for (_, copy), saved in zip(self.updated, self._saved, strict=True):
            self._driver.copy(copy.address, saved.address, copy.nbytes)

    def release(self) -> None:
        """Tell the storages the executable is gone (its copies are not asked for again)."""
        for _, copy in self.copies:
            copy.released = True
