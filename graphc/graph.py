"""The IR: immutable Nodes (op, ordered inputs, attributes, type, source location) and Graphs,
and their text forms: the shape-annotated listing (`str(graph)`) and Graphviz DOT text.

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

from graphc.dtypes import DType
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

    def updated_storages(self) -> tuple[Any, ...]:
        """Return the storages of the Variables the graph updates, each once."""
        storages = {id(v.attrs["storage"]): v.attrs["storage"] for v, _ in self.updates}
        return tuple(storages.values())

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
        return format_graph(self)

    def to_dot(self) -> str:
        """Return Graphviz DOT text with shapes on the edges."""
        return graph_to_dot(self)


# -- the listing and DOT text -----------------------------------------------------------------
# Constants with at most this many elements print their values inline.
MAX_INLINE_CONSTANT = 8
_HIDDEN_ATTRS = frozenset({"value", "storage"})


def value_names(graph: Graph) -> dict[int, str]:
    """Return a unique display name per node: user names first, then %1, %2, ..."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    counter = 0
    for node in graph.nodes:
        if node.name:
            base, suffix = node.name, 1
            name = base
            while name in taken:
                suffix += 1
                name = f"{base}_{suffix}"
        else:
            counter += 1
            name = str(counter)
            while name in taken:
                counter += 1
                name = str(counter)
        taken.add(name)
        names[node.id] = "%" + name
    return names


def _format_attr(value: Any) -> str:
    if isinstance(value, DType):
        return value.name
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(_format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    return str(value)


def _format_constant(value: np.ndarray) -> str:
    if value.size <= MAX_INLINE_CONSTANT:
        text = np.array2string(value, separator=", ", threshold=MAX_INLINE_CONSTANT)
        return text.replace("\n", "")
    return "<elided>"


def format_node(node: Node, names: dict[int, str], kernel: str | None = None) -> str:
    """Return one listing line: '%h = op(%a, %b) {attrs} : f32[B,10]  # file.py:12'; an
    attribute that is a graph (a loop's body) follows as a nested, indented listing."""
    bodies = {k: v for k, v in node.attrs.items() if isinstance(v, Graph)}
    if node.op == "constant":
        rhs = f"constant {_format_constant(node.attrs['value'])}"
    else:
        args = ", ".join(names[source.id] for source in node.inputs)
        attrs = ", ".join(
            f"{k}={_format_attr(v)}"
            for k, v in node.attrs.items()
            if k not in _HIDDEN_ATTRS and k not in bodies
        )
        rhs = f"{node.op}({args})" + (f" {{{attrs}}}" if attrs else "")
    line = f"  {names[node.id]} = {rhs} : {node.type}"
    notes = [kernel] if kernel else []
    notes += [node.location] if node.location else []
    line += f"  # {', '.join(notes)}" if notes else ""
    for label, body in bodies.items():
        nested = format_graph(body, label).splitlines()
        line += "".join("\n    " + text for text in nested)
    return line


def format_graph(graph: Graph, label: str = "graph") -> str:
    """Return the shape-annotated listing of a graph, headed by label."""
    names = value_names(graph)
    lines = [f"{label}("]
    lines += [f"  {names[n.id]} : {n.type}," for n in graph.inputs]
    lines.append(") {")
    variables = graph.variables
    if variables:
        lines.append("  # variables")
        lines += [f"  {names[v.id]} : {v.type}" for v in variables]
    for node in graph.nodes:
        if node.op not in ("input", "variable"):
            lines.append(format_node(node, names, graph.kernels.get(node.id)))
    outputs = ", ".join(names[n.id] for n in graph.outputs)
    lines.append(f"  return {outputs}")
    for variable, value in graph.updates:
        lines.append(f"  update {names[variable.id]} <- {names[value.id]}")
    lines.append("}")
    return "\n".join(lines)


def _dot_quote(text: str) -> str:
    """Return text as a DOT string literal; newlines become DOT line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def graph_to_dot(graph: Graph) -> str:
    """Return Graphviz DOT text: one box per node, edges labelled with the value's type."""
    names = value_names(graph)
    lines = ["digraph graphc {", "  rankdir=TB;", "  node [shape=box, fontname=monospace];"]
    for node in graph.nodes:
        shape = "ellipse" if node.op in ("input", "variable") else "box"
        label = f"{names[node.id]}\n{node.op}"
        lines.append(f"  n{node.id} [label={_dot_quote(label)}, shape={shape}];")
    for node in graph.nodes:
        for source in node.inputs:
            lines.append(f"  n{source.id} -> n{node.id} [label={_dot_quote(str(source.type))}];")
    for position, node in enumerate(graph.outputs):
        lines.append(f"  out{position} [label={_dot_quote(f'output {position}')}, shape=plain];")
        lines.append(f"  n{node.id} -> out{position} [label={_dot_quote(str(node.type))}];")
    lines.append("}")
    return "\n".join(lines)
