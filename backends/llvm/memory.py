"""The memory planner: intermediates share one arena, reused across calls, where buffers whose
lifetimes (first to last kernel touching them) do not overlap share bytes. Also the GEMM
workspaces, one per calling thread, that every executable shares, and data_address(), how a
call finds where an array's elements are."""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

import numpy as np

from graphc.backends.kernel import KernelProgram
from graphc.dims import dim_prod, evaluate_dim
from graphc.recent import RecentValues

ALIGNMENT = 64
# Plans (and pointer tables) kept per executable: a model fed many batch sizes keeps the most
# recent ones; an older size is planned again (microseconds) when it comes back.
PLANS_KEPT = 16


def _data_field_offset() -> int | None:
    """Return where a numpy array object keeps the address of its elements (numpy's C API
    puts it right after the object header), or None unless reading it there gives what
    `.ctypes.data` gives for a few kinds of array."""
    if platform.python_implementation() != "CPython":
        return None  # id() is an object's address only in CPython
    offset = object.__basicsize__
    samples = [np.zeros(3), np.arange(12.0)[5:], np.empty(0, np.int8), np.ones((2, 3)).T]
    read = ctypes.c_size_t.from_address
    if all(read(id(array) + offset).value == array.ctypes.data for array in samples):
        return offset
    return None


def _tuple_items_offset() -> int | None:
    """Return where a tuple object keeps its item pointers (CPython's tuple header is its
    basic size), or None unless reading there gives the items' addresses."""
    if _DATA_OFFSET is None:
        return None
    offset = tuple.__basicsize__
    sample = (object(), np.zeros(1), "item")
    word = ctypes.sizeof(ctypes.c_void_p)
    read = ctypes.c_size_t.from_address
    if all(read(id(sample) + offset + i * word).value == id(x) for i, x in enumerate(sample)):
        return offset
    return None


_DATA_OFFSET = _data_field_offset()
_READ_ADDRESS = ctypes.c_size_t.from_address
# Where native code finds a tuple's items and an array's data: with both, a call hands its
# arrays over as one tuple and the entry point reads their addresses itself (None: it cannot,
# and Python writes them into the table).
TUPLE_ITEMS_OFFSET = _tuple_items_offset()
ARRAY_DATA_OFFSET = _DATA_OFFSET if TUPLE_ITEMS_OFFSET is not None else None


def data_address(array: np.ndarray) -> int:
    """Return the address of array's first element: what `array.ctypes.data` returns, read
    straight from the array object, since building `.ctypes` costs most of a small call."""
    if _DATA_OFFSET is None:
        return array.ctypes.data
    return _READ_ADDRESS(id(array) + _DATA_OFFSET).value


class ArenaPlanner:
    """Assigns arena offsets to the program's temporaries for given symbol sizes, and keeps
    the host arena they live in on the CPU (the CUDA backend places its device arena with
    place())."""

    def __init__(
        self,
        program: KernelProgram,
        lifetimes: Mapping[str, tuple[int, int]],
        exclude: AbstractSet[str] = frozenset(),
    ) -> None:
        self._temps = [
            (name, spec)
            for name, spec in program.buffers.items()
            if spec.role == "temp" and name not in exclude
        ]
        self._lifetimes = lifetimes
        self._plans: RecentValues[tuple[dict[str, int], int]] = RecentValues(PLANS_KEPT)
        self._arena: np.ndarray | None = None
        self.arena_bytes = 0
        # Counts the arenas allocated, so a caller holding addresses in one knows they moved.
        self.generation = 0

    def place(self, bindings: Mapping[str, int]) -> tuple[dict[str, int], int]:
        """Return (offset per temporary, bytes they need) for these sizes: offsets into any
        arena aligned to ALIGNMENT, host memory (plan()) or a device's."""
        key = tuple(sorted(bindings.items()))
        placement = self._plans.recall(key)
        if placement is None:
            placement = self._plans.remember(key, self._place(bindings))
        return placement

    def plan(self, bindings: Mapping[str, int]) -> tuple[dict[str, int], np.ndarray | None]:
        """Return (offset per temporary, arena array) for these sizes; the arena only grows."""
        offsets, size = self.place(bindings)
        if size and (self._arena is None or self._arena.nbytes < size + ALIGNMENT):
            self._arena = np.zeros(size + ALIGNMENT, dtype=np.uint8)
            self.generation += 1
        self.arena_bytes = size
        if self._arena is None:
            return offsets, None
        shift = (-self._arena.ctypes.data) % ALIGNMENT
        return {name: offset + shift for name, offset in offsets.items()}, self._arena

    def _place(self, bindings: Mapping[str, int]) -> tuple[dict[str, int], int]:
        """Greedy by size: each buffer takes the lowest offset free for its whole lifetime."""
        sized = []
        for name, spec in self._temps:
            count = evaluate_dim(dim_prod(spec.shape), bindings)
            nbytes = -(-max(1, count * spec.dtype.itemsize) // ALIGNMENT) * ALIGNMENT
            sized.append((nbytes, name))
        sized.sort(key=lambda item: (-item[0], item[1]))
        placed: list[tuple[int, int, tuple[int, int]]] = []
        offsets: dict[str, int] = {}
        for nbytes, name in sized:
            life = self._lifetimes.get(name, (0, 0))
            conflicts = sorted(
                (start, end)
                for start, end, other in placed
                if not (other[1] < life[0] or life[1] < other[0])
            )
            offset = 0
            for start, end in conflicts:
                if offset + nbytes <= start:
                    break
                offset = max(offset, end)
            placed.append((offset, offset + nbytes, life))
            offsets[name] = offset
        return offsets, max((end for _, end, _ in placed), default=0)


class Workspace:
    """A zeroed scratch buffer of `nbytes` usable bytes starting at the aligned `address`."""

    __slots__ = ("address", "buffer", "nbytes")

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.buffer = np.zeros(nbytes + ALIGNMENT, dtype=np.uint8)
        start = self.buffer.ctypes.data
        self.address = start + (-start) % ALIGNMENT


class ThreadWorkspaces:
    """One workspace per calling thread, shared by every executable that thread calls: a
    thread runs one call at a time, so two calls running at once never write the same one,
    and a thread's workspace is freed when the thread ends."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.created = 0  # workspaces ever allocated, for tests and memory reports

    def get(self, nbytes: int) -> Workspace:
        """Return this thread's workspace, grown to at least nbytes."""
        workspace = getattr(self._local, "workspace", None)
        if workspace is None or workspace.nbytes < nbytes:
            workspace = self._local.workspace = Workspace(nbytes)
            self.created += 1
        return workspace

    def current_bytes(self) -> int:
        """Return the size of this thread's workspace (0 if it has none)."""
        workspace = getattr(self._local, "workspace", None)
        return workspace.buffer.nbytes if workspace is not None else 0


WORKSPACES = ThreadWorkspaces()
