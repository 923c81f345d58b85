"""Memory shared between a call's arrays: out= arrays, fed arrays and Variables' storage.

A Function must know when an out= array overlaps a fed array (compute into a temporary),
another out= array or a Variable (an error), and when a fed array overlaps a Variable the
call updates (copy it first). Most calls share nothing, which the ids of the arrays' memory
owners decide without comparing any memory. A backend whose native code can screen a
call's arrays itself runs a call that shares nothing without these checks, and returns None,
having run nothing, for one that may share: that one takes the checks.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from graphc.errors import InputError
from graphc.graph import Graph

if TYPE_CHECKING:
    from graphc.backends.calls import Storage


def _owner_id(array: np.ndarray) -> int:
    """Return the id of the array whose allocation holds array's memory, or 0 when numpy did
    not allocate it (a bytes buffer, a memory map, foreign memory). The id stays valid while
    array is alive, since array keeps its owner alive."""
    base = array.base
    while isinstance(base, np.ndarray):
        array, base = base, base.base
    return id(array) if base is None and array.flags.owndata else 0


class _OwnerIndex:
    """Arrays grouped by the array that owns their memory, to find which one an array overlaps.

    Distinct numpy allocations never overlap, so only arrays with the same owner, or with an
    owner numpy did not allocate, are compared with np.may_share_memory. Its bounds test is
    exact here: every array graphc compares is C-contiguous (fed arrays after validation,
    out= arrays by requirement, Variable storage by construction).
    """

    __slots__ = ("arrays", "_by_owner", "_unowned")

    def __init__(self, arrays: Iterable[np.ndarray] = (), owners: Iterable[int] = ()) -> None:
        self.arrays: list[np.ndarray] = []
        self._by_owner: dict[int, list[int]] = {}
        self._unowned: list[int] = []
        for array, owner in zip(arrays, owners, strict=True):
            self.add(array, owner)

    def add(self, array: np.ndarray, owner: int) -> None:
        """Index array, whose owner id is given (0: unknown)."""
        position = len(self.arrays)
        self.arrays.append(array)
        if owner:
            self._by_owner.setdefault(owner, []).append(position)
        else:
            self._unowned.append(position)

    def overlapping(self, array: np.ndarray, owner: int) -> int | None:
        """Return the position of an indexed array that shares memory with array, or None."""
        if owner:
            candidates: Iterable[int] = self._by_owner.get(owner, ())
            if self._unowned:
                candidates = sorted([*candidates, *self._unowned])
        else:
            candidates = range(len(self.arrays))
        for position in candidates:
            if np.may_share_memory(array, self.arrays[position]):
                return position
        return None


# Variables are compared by their host arrays, which never change; reading them needs no
# newer value from a device.
_HOST = operator.attrgetter("host")


class _StorageArrays:
    """The arrays some Variables hold at one moment, and the ids of their memory owners."""

    __slots__ = ("values", "owners", "all_owned", "_index")

    def __init__(self, values: tuple[np.ndarray, ...]) -> None:
        owners = [_owner_id(value) for value in values]
        self.values = values  # holding them keeps their owners alive, and so the ids valid
        self.owners = frozenset(owners)
        self.all_owned = 0 not in self.owners
        self._index: _OwnerIndex | None = None

    @property
    def index(self) -> _OwnerIndex:
        """Return the arrays indexed by owner (built on first use)."""
        if self._index is None:
            self._index = _OwnerIndex(self.values, map(_owner_id, self.values))
        return self._index


def _holds(storages: Sequence[Storage], arrays: _StorageArrays | None) -> bool:
    """Return whether the storages still hold the arrays they held when `arrays` was made."""
    return arrays is not None and all(map(operator.is_, map(_HOST, storages), arrays.values))


class VariableMemory:
    """The memory of the Variables a graph reads or updates, checked against a call's arrays.

    Most calls share no memory at all: every array owns its allocation and no two arrays
    have the same owner, which the owners' ids decide. Only when that fails are arrays
    compared (`_OwnerIndex`). The Variables' arrays are looked at again only when a storage
    holds a different array than at the last call.
    """

    def __init__(self, graph: Graph) -> None:
        storages = {id(n.attrs["storage"]): n.attrs["storage"] for n in graph.variables}
        self.storages = tuple(storages.values())
        self.updated = graph.updated_storages()
        self._arrays = {
            False: _StorageArrays(tuple(map(_HOST, self.storages))),
            True: _StorageArrays(tuple(map(_HOST, self.updated))),
        }
        # The last out= call's Variable arrays, its number of out arrays, its out arrays and
        # fed arrays, and which out arrays it staged.
        self._cleared: tuple[_StorageArrays | None, int, tuple[np.ndarray, ...], list[int]] = (
            None,
            -1,
            (),
            [],
        )

    def _current(self, updated_only: bool) -> tuple[tuple[Storage, ...], _StorageArrays]:
        storages = self.updated if updated_only else self.storages
        arrays = self._arrays[updated_only]
        if not _holds(storages, arrays):
            arrays = _StorageArrays(tuple(map(_HOST, storages)))
            self._arrays[updated_only] = arrays  # one store: a concurrent call sees old or new
        return storages, arrays

    def detached(self, feeds: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        """Return feeds with a copy of each array that shares memory with a Variable the call
        updates, so no update changes an input while the backend still reads it."""
        _, variables = self._current(updated_only=True)
        owners = list(map(_owner_id, feeds))
        if variables.all_owned and 0 not in owners and variables.owners.isdisjoint(owners):
            return feeds
        return [
            array if variables.index.overlapping(array, owner) is None else array.copy()
            for array, owner in zip(feeds, owners, strict=True)
        ]

    def check_outputs(
        self, targets: Sequence[np.ndarray], feeds: Sequence[np.ndarray]
    ) -> list[int]:
        """Return the positions of out arrays that overlap a fed array; raise InputError for
        one that overlaps another out array or a Variable's memory.

        The arrays of the last call found clear are remembered (and so kept alive) and not
        compared again: while referenced, an array's memory cannot move (numpy refuses to
        resize it), so the same array objects against the same Variable arrays overlap as
        they did then."""
        last_variables, last_count, last_arrays, staged = self._cleared
        arrays = (*targets, *feeds)
        if (
            last_count == len(targets)
            and len(last_arrays) == len(arrays)
            and all(map(operator.is_, last_arrays, arrays))
            and (not self.storages or _holds(self.storages, last_variables))
        ):
            return staged
        storages, variables = self._current(updated_only=False)
        staged = self._staged(targets, feeds, storages, variables)
        self._cleared = (variables, len(targets), arrays, staged)  # one store
        return staged

    def _staged(
        self,
        targets: Sequence[np.ndarray],
        feeds: Sequence[np.ndarray],
        storages: Sequence[Storage],
        variables: _StorageArrays,
    ) -> list[int]:
        """Return the positions of out arrays that overlap a fed array, comparing memory
        only where the arrays' owners do not already tell; raise InputError as above."""
        owners = list(map(_owner_id, targets))
        fed_owners = list(map(_owner_id, feeds))
        distinct = set(owners)
        if (
            variables.all_owned
            and 0 not in distinct
            and 0 not in fed_owners
            and len(distinct) == len(owners)
            and distinct.isdisjoint(variables.owners)
            and distinct.isdisjoint(fed_owners)
        ):
            return []
        fed = _OwnerIndex(feeds, fed_owners)
        earlier = _OwnerIndex()
        staged = []
        for position, (array, owner) in enumerate(zip(targets, owners, strict=True)):
            hit = variables.index.overlapping(array, owner)
            if hit is not None:
                raise InputError(
                    f"out[{position}] shares memory with Variable {storages[hit].name!r}; "
                    "a Function changes Variables only through its updates, so give the "
                    "output an array of its own (Variable.assign() copies a value in)"
                )
            hit = earlier.overlapping(array, owner)
            if hit is not None:
                raise InputError(
                    f"out[{position}] shares memory with out[{hit}]; each output needs an "
                    "out array of its own"
                )
            earlier.add(array, owner)
            if fed.overlapping(array, owner) is not None:
                staged.append(position)
        return staged
