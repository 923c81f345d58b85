"""The CSE tier: nodes with equal op, attributes, inputs and type merge into the first one."""

from __future__ import annotations

from graphc.graph import Graph, Node
from graphc.passes.rewrite import GraphRewrite, Tier, run_tier, with_inputs

# Sources whose identity matters: two inputs or variables with equal attributes differ.
# (Two random draws differ by their counter input, so equal draws are the same values.)
_NEVER_MERGED = frozenset({"input", "variable"})


def _merge_duplicates(graph: Graph) -> tuple[Graph, int]:
    """Return the graph with duplicates merged, and how many nodes merged into another."""
    first: dict[tuple, Node] = {}
    kept: dict[int, Node] = {}  # node id -> the first node equal to it
    names: dict[int, str] = {}  # kept node id -> the first user name among its duplicates
    for node in graph.nodes:
        if node.op in _NEVER_MERGED:
            kept[node.id] = node
            continue
        key = (node.op, node.attr_key(), tuple(kept[n.id].id for n in node.inputs), node.type)
        kept[node.id] = first.setdefault(key, node)
        if node.name is not None:
            names.setdefault(kept[node.id].id, node.name)
    merged = sum(kept[n.id] is not n for n in graph.nodes)
    if not merged:
        return graph, 0
    built: dict[int, Node] = {}
    for node in graph.nodes:
        if kept[node.id] is not node:
            built[node.id] = built[kept[node.id].id]
            continue
        inputs = tuple(built[source.id] for source in node.inputs)
        name = names.get(node.id, node.name)
        if name == node.name:
            built[node.id] = with_inputs(node, inputs)
        else:  # an unnamed first copy takes the name the user gave a duplicate
            built[node.id] = Node(node.op, inputs, node.attrs, node.type, node.location, name)
    outputs = tuple(built[n.id] for n in graph.outputs)
    updates = tuple((built[v.id], built[value.id]) for v, value in graph.updates)
    return Graph(tuple(built[n.id] for n in graph.inputs), outputs, updates), merged


merge_duplicates = GraphRewrite("merge_duplicates", _merge_duplicates)
CSE = Tier("cse", (merge_duplicates,))


def cse(graph: Graph) -> Graph:
    """Return the graph with duplicate computations merged into their first occurrence."""
    return run_tier(CSE, graph)[0]
