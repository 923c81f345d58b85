"""The IR: immutable Nodes (op, ordered inputs, attributes, type, source location) and Graphs.

Node ids grow in creation order and a node is always created after its inputs, so sorting
the nodes of a graph by id gives a deterministic topological order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from graphc.types import TensorType

_ids = itertools.count()


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One value in the graph: the result of applying `op` to `inputs` with `attrs`."""

    op: str
    inputs: tuple[Node, ...]
    attrs: Mapping[str, Any]
    type: TensorType
    location: str | None = None
    name: str | None = None
    id: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"Node#{self.id}({self.op}{label}: {self.type})"

    def attr_key(self) -> tuple:
        """Return a hashable form of the attributes, for merging equal nodes."""
        return tuple(sorted((k, hashable(v)) for k, v in self.attrs.items()))


def renamed(node: Node, name: str) -> Node:
    """Return a copy of node (a new node, same computation) carrying a display name."""
    return Node(node.op, node.inputs, node.attrs, node.type, node.location, name)


def hashable(value: Any) -> Any:
    """Return a hashable stand-in for an attribute value (arrays by content)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return value


def topological_nodes(outputs: Iterable[Node]) -> tuple[Node, ...]:
    """Return every node the outputs depend on, inputs before users, in a stable order."""
    seen: dict[int, Node] = {}
    stack = list(outputs)
    while stack:
        node = stack.pop()
        if node.id not in seen:
            seen[node.id] = node
            stack.extend(node.inputs)
    return tuple(seen[i] for i in sorted(seen))


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """A computation: fed inputs, computed outputs, and updates of persistent variables."""

    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]
    updates: tuple[tuple[Node, Node], ...] = ()
    # Display only: node id -> the name of the compiled kernel that computes it.
    kernels: Mapping[int, str] = field(default_factory=dict)
    nodes: tuple[Node, ...] = field(init=False)

    def __post_init__(self) -> None:
        roots = [*self.outputs, *(value for _, value in self.updates)]
        roots += [variable for variable, _ in self.updates]
        nodes = topological_nodes([*roots, *self.inputs])
        object.__setattr__(self, "nodes", nodes)

    @property
    def variables(self) -> tuple[Node, ...]:
        """Return the variable nodes the graph reads or updates."""
        return tuple(n for n in self.nodes if n.op == "variable")

    def replace(
        self,
        outputs: Iterable[Node],
        updates: Iterable[tuple[Node, Node]] | None = None,
    ) -> Graph:
        """Return a graph with the same inputs and new outputs and update values."""
        new_updates = self.updates if updates is None else tuple(updates)
        return Graph(self.inputs, tuple(outputs), tuple(new_updates))

    def with_kernels(self, kernels: Mapping[int, str]) -> Graph:
        """Return the same graph annotated with the kernel computing each node."""
        return Graph(self.inputs, self.outputs, self.updates, dict(kernels))

    def users(self) -> dict[int, list[Node]]:
        """Return, for each node id, the nodes that take it as an input."""
        result: dict[int, list[Node]] = {n.id: [] for n in self.nodes}
        for node in self.nodes:
            for source in node.inputs:
                result[source.id].append(node)
        return result

    def to_networkx(self) -> nx.MultiDiGraph:
        """Return the graph as a networkx MultiDiGraph keyed by node id, edges in input order."""
        digraph = nx.MultiDiGraph()
        for node in self.nodes:
            digraph.add_node(node.id, node=node)
            for position, source in enumerate(node.inputs):
                digraph.add_edge(source.id, node.id, position=position)
        return digraph

    def __str__(self) -> str:
        from graphc.printing import format_graph

        return format_graph(self)

    def to_dot(self) -> str:
        """Return Graphviz DOT text with shapes on the edges."""
        from graphc.printing import graph_to_dot

        return graph_to_dot(self)
