"""The stabilise tier: replace numerically fragile forms by stable equivalents.

log(softmax(x)) becomes log_softmax(x): with e = exp(s) and s = x - max(x),
log(e / sum(e)) is rewritten to s - log(sum(e)), which stays finite where softmax underflows.
"""

from __future__ import annotations

from graphc.graph import Graph, Node
from graphc.ops.registry import make_node
from graphc.passes.rewrite import Tier, node_rewrite, run_tier


@node_rewrite("log")
def log_of_softmax(node: Node) -> Node | None:
    """log(exp(s) / sum(exp(s), keepdims)) -> s - log(sum(exp(s), keepdims))."""
    if node.inputs[0].op != "div":
        return None
    numerator, denominator = node.inputs[0].inputs
    if numerator.op != "exp" or denominator.op != "reduce_sum":
        return None
    if denominator.inputs[0] is not numerator or not denominator.attrs["keepdims"]:
        return None
    shifted = numerator.inputs[0]
    log_total = make_node("log", [denominator], location=node.location)
    return make_node("sub", [shifted, log_total], location=node.location, name=node.name)


STABILIZE = Tier("stabilize", (log_of_softmax,))


def stabilize(graph: Graph) -> Graph:
    """Return the graph with fragile expressions replaced by stable ones."""
    return run_tier(STABILIZE, graph)[0]
