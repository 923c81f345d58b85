"""The numpy reference backend: runs a graph op by op with each op's reference implementation
(`graphc.ops.evaluate`).

It is the oracle every other backend and every gradient is tested against, so it favours
clarity and exactness over speed, and checks each result against the node's declared type.
Calls of one executable take turns (a lock), so updates such as `v <- v + 1` made from several
threads are never lost. A call of several steps (bind(..., steps)) runs them one after another
under the lock, on each step's slice of the stacked arrays.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np

from graphc.backends.calls import Runner, undone_on_error
from graphc.dims import evaluate_shape
from graphc.graph import Graph
from graphc.ops.evaluate import evaluate


class ReferenceExecutable:
    """Executes a graph with numpy, one node at a time."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._lock = threading.Lock()
        self._updated = graph.updated_storages()

    def run(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Return the outputs (copied into `out` if given), then apply the updates."""
        with self._lock:
            return self._run(feeds, bindings, out)

    def bind(self, bindings: Mapping[str, int], steps: int | None = None) -> Runner:
        """Return a function of (feeds, out) that runs the graph for these symbol sizes, or
        `steps` steps per call over arrays stacked along a leading steps dim."""
        if steps is None:
            return lambda feeds, out: self.run(feeds, bindings, out)
        return lambda feeds, out: self._run_steps(feeds, bindings, out, steps)

    def _run_steps(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None,
        steps: int,
    ) -> list[np.ndarray]:
        """Run each step on its slice of the stacked feeds into its slice of the stacked
        outputs; a failing step gives the Variables back the values they had before the call."""
        if out is None:
            out = [
                np.empty((steps, *evaluate_shape(n.type.shape, bindings)), n.type.dtype.numpy)
                for n in self.graph.outputs
            ]
        with self._lock, undone_on_error(self._updated):
            for step in range(steps):
                self._run([f[step, ...] for f in feeds], bindings, [o[step, ...] for o in out])
        return list(out)

    def _run(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None,
    ) -> list[np.ndarray]:
        values = evaluate(self.graph, feeds, bindings)
        if out is None:
            outputs = [np.array(values[n.id]) for n in self.graph.outputs]
        else:
            outputs = list(out)
            for target, node in zip(outputs, self.graph.outputs, strict=True):
                np.copyto(target, values[node.id])
        # Every value exists before any variable changes, so a failure above changed nothing.
        new_values = [np.array(values[value.id]) for _, value in self.graph.updates]
        for (variable, _), value in zip(self.graph.updates, new_values, strict=True):
            storage = variable.attrs["storage"]
            np.copyto(storage.value, value)
            storage.mark_host_written()
        return outputs
