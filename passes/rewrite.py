"""The shared walk of every rewriting pass: visit nodes inputs-first, let a rule replace each."""

from __future__ import annotations

from collections.abc import Callable

from graphc.graph import Graph, Node

# rule(node with already-rewritten inputs) -> replacement node (or the node itself).
Rule = Callable[[Node], Node]


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    """Return node with new inputs (the same node if they did not change)."""
    if all(a is b for a, b in zip(inputs, node.inputs, strict=True)):
        return node
    return Node(node.op, inputs, node.attrs, node.type, node.location, node.name)


def rewrite(graph: Graph, rule: Rule) -> Graph:
    """Return the graph with rule applied to every node, inputs before their users."""
    replaced: dict[int, Node] = {}
    for node in graph.nodes:
        inputs = tuple(replaced[source.id] for source in node.inputs)
        replaced[node.id] = rule(with_inputs(node, inputs))
    outputs = tuple(replaced[n.id] for n in graph.outputs)
    updates = tuple((replaced[v.id], replaced[value.id]) for v, value in graph.updates)
    inputs = tuple(replaced[n.id] for n in graph.inputs)
    return Graph(inputs, outputs, updates)
