"""Whole-graph verification: re-run every node's type rule and check the graph's structure."""

from __future__ import annotations

import networkx as nx

from graphc.errors import GraphcError, GraphError, located
from graphc.graph import Graph
from graphc.ops.registry import infer_again
from graphc.types import same_type


def verify(graph: Graph) -> Graph:
    """Return the graph unchanged if every node type-checks and the structure is sound."""
    if not nx.is_directed_acyclic_graph(graph.to_networkx()):
        raise GraphError("the graph has a cycle")
    seen: set[int] = set()
    for node in graph.nodes:
        for source in node.inputs:
            if source.id not in seen:
                raise GraphError(
                    located(f"{node.op}: uses a value defined after it", node.location)
                )
        seen.add(node.id)
        try:
            inferred = infer_again(node)
        except GraphcError as error:
            raise type(error)(located(f"{node.op}: {error}", node.location)) from None
        if not same_type(inferred, node.type):
            raise GraphError(
                located(
                    f"{node.op}: node says {node.type} but its inputs give {inferred}",
                    node.location,
                )
            )
    for node in graph.inputs:
        if node.op != "input":
            raise GraphError(f"graph input {node!r} is not an input placeholder")
    for variable, value in graph.updates:
        if variable.op != "variable" or variable.type != value.type:
            raise GraphError(
                located(f"update of {variable!r} with {value!r}: types differ", value.location)
            )
    return graph
