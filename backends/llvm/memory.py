"""The memory planner: intermediates share one arena, reused across calls, where buffers whose
lifetimes (first to last kernel touching them) do not overlap share bytes. Also the GEMM
workspaces, one per calling thread, that every executable shares."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from collections.abc import Set as AbstractSet
from typing import TypeVar

import numpy as np

from graphc.backends.kernel import KernelProgram
from graphc.dims import dim_prod, evaluate_dim

ALIGNMENT = 64
# Plans (and pointer tables) kept per executable: a model fed many batch sizes keeps the most
# recent ones; an older size is planned again (microseconds) when it comes back.
PLANS_KEPT = 16

Value = TypeVar("Value")


class RecentValues(OrderedDict[Hashable, Value]):
    """An ordered dict that keeps the `size` most recently used keys. Callers look up with
    get() and mark a hit with move_to_end() (both in C: this sits on the per-call path) and
    add with remember()."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Hashable, value: Value) -> Value:
        """Store value for key, dropping the least recently used beyond `size`; return it."""
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class ArenaPlanner:
    """Assigns arena offsets to the program's temporaries for given symbol sizes."""

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

    def plan(self, bindings: Mapping[str, int]) -> tuple[dict[str, int], np.ndarray | None]:
        """Return (offset per temporary, arena array) for these sizes; the arena only grows."""
        key = tuple(sorted(bindings.items()))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans.remember(key, self._place(bindings))
        else:
            self._plans.move_to_end(key)
        offsets, size = plan
        if size and (self._arena is None or self._arena.nbytes < size + ALIGNMENT):
            self._arena = np.zeros(size + ALIGNMENT, dtype=np.uint8)
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
