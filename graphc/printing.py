"""gc.show and gc.subgraph: the graph behind a tensor, and its listing (`graph.format_graph`)."""

from __future__ import annotations

from typing import Any

from graphc.graph import Graph, format_graph, topological_nodes


def subgraph(tensor: Any) -> Graph:
    """Return the graph of everything a tensor depends on, with its inputs as graph inputs."""
    inputs = tuple(n for n in topological_nodes([tensor.node]) if n.op == "input")
    return Graph(inputs, (tensor.node,))


def show(tensor: Any) -> None:
    """Print the shape-annotated subgraph that produces a tensor."""
    print(format_graph(subgraph(tensor)))
