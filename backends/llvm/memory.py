"""The memory planner: intermediates share one arena, reused across calls, where buffers whose
lifetimes (first to last kernel touching them) do not overlap share bytes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphc.backends.kernel import KernelProgram
from graphc.dims import dim_prod, evaluate_dim

ALIGNMENT = 64


class ArenaPlanner:
    """Assigns arena offsets to the program's temporaries for given symbol sizes."""

    def __init__(
        self,
        program: KernelProgram,
        lifetimes: Mapping[str, tuple[int, int]],
        exclude: set[str] = frozenset(),
    ) -> None:
        self._temps = [
            (name, spec)
            for name, spec in program.buffers.items()
            if spec.role == "temp" and name not in exclude
        ]
        self._lifetimes = lifetimes
        self._plans: dict[tuple, tuple[dict[str, int], int]] = {}
        self._arena: np.ndarray | None = None
        self.arena_bytes = 0

    def plan(self, bindings: Mapping[str, int]) -> tuple[dict[str, int], np.ndarray | None]:
        """Return (offset per temporary, arena array) for these sizes; the arena only grows."""
        key = tuple(sorted(bindings.items()))
        if key not in self._plans:
            self._plans[key] = self._place(bindings)
        offsets, size = self._plans[key]
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
