"""What the backends share about running a call: the Runner a bound executable returns, and
undoing the updates of a call of several steps whose later step fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np

# Runs a graph on (feeds, out arrays or None) for symbol sizes fixed when it was made.
Runner = Callable[[Sequence[np.ndarray], Sequence[np.ndarray] | None], list[np.ndarray]]


class Storage(Protocol):
    """Where a Variable's value lives (graphc.variable's VariableStorage)."""

    value: np.ndarray
    name: str


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
        return self.bind(bindings)(feeds, out)
