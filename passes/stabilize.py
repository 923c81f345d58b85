"""The stabilise tier: replace numerically fragile forms by stable equivalents.

log(softmax(x)) becomes log_softmax(x): with e = exp(s) and s = x - max(x),
log(e / sum(e)) (or log(e * (1 / sum(e))), softmax's own form) is rewritten to
s - log(sum(e)), which stays finite where softmax underflows.
"""

from __future__ import annotations

import numpy as np

from graphc.graph import Graph, Node
from graphc.ops.registry import make_node
from graphc.passes.rewrite import Tier, node_rewrite, run_tier


@node_rewrite("log")
def log_of_softmax(node: Node) -> Node | None:
    """log(exp(s) / sum(exp(s), keepdims)) -> s - log(sum(exp(s), keepdims)); also when the
    quotient is written as exp(s) * (1 / sum(exp(s), keepdims)), as `softmax` computes it."""
    quotient = _softmax_parts(node.inputs[0])
    if quotient is None:
        return None
    numerator, denominator = quotient
    if numerator.op != "exp" or denominator.op != "reduce_sum":
        return None
    if denominator.inputs[0] is not numerator or not denominator.attrs["keepdims"]:
        return None
    shifted = numerator.inputs[0]
    log_total = make_node("log", [denominator], location=node.location)
    return make_node("sub", [shifted, log_total], location=node.location, name=node.name)


def _softmax_parts(node: Node) -> tuple[Node, Node] | None:
    """Return (a, b) of a / b, or of a * (1 / b) in either order of the product."""
    if node.op == "div":
        return node.inputs[0], node.inputs[1]
    if node.op != "mul":
        return None
    for factor, other in (node.inputs, reversed(node.inputs)):
        if other.op == "div" and _is_one(other.inputs[0]):
            return factor, other.inputs[1]
    return None


def _is_one(node: Node) -> bool:
    """Return whether node is a constant whose every element is 1."""
    return node.op == "constant" and bool(np.all(np.asarray(node.attrs["value"]) == 1))


STABILIZE = Tier("stabilize", (log_of_softmax,))


def stabilize(graph: Graph) -> Graph:
    """Return the graph with fragile expressions replaced by stable ones."""
    return run_tier(STABILIZE, graph)[0]
