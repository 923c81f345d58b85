"""Dead-code elimination.

A Graph holds only the nodes its outputs and updates reach (networkx reachability from the
roots), so rebuilding it drops dead nodes; this pass also drops updates that write a
variable's own value back.
"""

from __future__ import annotations

import networkx as nx

from graphc.graph import Graph


def dce(graph: Graph) -> Graph:
    """Return the graph without unreachable nodes or no-op updates."""
    updates = tuple((v, value) for v, value in graph.updates if v is not value)
    rebuilt = Graph(graph.inputs, graph.outputs, updates)
    roots = {n.id for n in rebuilt.outputs} | {n.id for pair in updates for n in pair}
    digraph = rebuilt.to_networkx()
    live = set(roots).union(*(nx.ancestors(digraph, r) for r in roots)) if roots else set()
    live |= {n.id for n in rebuilt.inputs}
    assert live == {n.id for n in rebuilt.nodes}, "Graph kept a node no root reaches"
    return rebuilt
