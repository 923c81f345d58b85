"""Common-subexpression elimination: nodes with equal op, attributes and inputs merge."""

from __future__ import annotations

from graphc.graph import Graph, Node
from graphc.passes.rewrite import rewrite

# Sources whose identity matters: two inputs or variables with equal attributes differ.
_NEVER_MERGED = frozenset({"input", "variable"})


def cse(graph: Graph) -> Graph:
    """Return the graph with duplicate computations merged into their first occurrence."""
    first: dict[tuple, Node] = {}

    def merge(node: Node) -> Node:
        if node.op in _NEVER_MERGED:
            return node
        key = (node.op, node.attr_key(), tuple(n.id for n in node.inputs), node.type)
        kept = first.setdefault(key, node)
        if kept.name is None and node.name is not None:
            first[key] = kept = node  # prefer the copy the user named
        return kept

    return rewrite(graph, merge)
