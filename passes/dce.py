"""The DCE tier: drop dead code.

A Graph holds only the nodes its outputs, updates and inputs reach, so every rewrite drops
the nodes it leaves unused when it rebuilds the graph; this tier drops updates that write a
variable's own value back.
"""

from __future__ import annotations

import networkx as nx

from graphc.graph import Graph
from graphc.passes.rewrite import GraphRewrite, Tier, run_tier


def _drop_noop_updates(graph: Graph) -> tuple[Graph, int]:
    """Return the graph without updates that write a variable back unchanged, and how many."""
    updates = tuple((v, value) for v, value in graph.updates if v is not value)
    dropped = len(graph.updates) - len(updates)
    return (Graph(graph.inputs, graph.outputs, updates) if dropped else graph), dropped


drop_noop_updates = GraphRewrite("drop_noop_updates", _drop_noop_updates)
DCE = Tier("dce", (drop_noop_updates,))


def dce(graph: Graph) -> Graph:
    """Return the graph without unreachable nodes or no-op updates."""
    rebuilt = run_tier(DCE, graph)[0]
    roots = {n.id for n in rebuilt.outputs} | {n.id for pair in rebuilt.updates for n in pair}
    digraph = rebuilt.to_networkx()
    live = set(roots).union(*(nx.ancestors(digraph, r) for r in roots)) if roots else set()
    live |= {n.id for n in rebuilt.inputs}
    assert live == {n.id for n in rebuilt.nodes}, "Graph kept a node no root reaches"
    return rebuilt
