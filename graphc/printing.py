"""Human-readable forms of a graph: the shape-annotated listing, DOT text, gc.show()."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.dtypes import DType
from graphc.graph import Graph, Node

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
    """Return one listing line: '%h = op(%a, %b) {attrs} : f32[B,10]  # file.py:12'."""
    if node.op == "constant":
        rhs = f"constant {_format_constant(node.attrs['value'])}"
    else:
        args = ", ".join(names[source.id] for source in node.inputs)
        attrs = ", ".join(
            f"{k}={_format_attr(v)}" for k, v in node.attrs.items() if k not in _HIDDEN_ATTRS
        )
        rhs = f"{node.op}({args})" + (f" {{{attrs}}}" if attrs else "")
    line = f"  {names[node.id]} = {rhs} : {node.type}"
    notes = [kernel] if kernel else []
    notes += [node.location] if node.location else []
    return line + (f"  # {', '.join(notes)}" if notes else "")


def format_graph(graph: Graph) -> str:
    """Return the shape-annotated listing of a graph."""
    names = value_names(graph)
    lines = ["graph("]
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


def subgraph(tensor: Any) -> Graph:
    """Return the graph of everything a tensor depends on, with its inputs as graph inputs."""
    from graphc.graph import topological_nodes

    inputs = tuple(n for n in topological_nodes([tensor.node]) if n.op == "input")
    return Graph(inputs, (tensor.node,))


def show(tensor: Any) -> None:
    """Print the shape-annotated subgraph that produces a tensor."""
    print(format_graph(subgraph(tensor)))
