"""Reverse-mode symbolic differentiation as a graph transformation.

Walks the nodes between the differentiated outputs and the `wrt` values in reverse
topological order, calling each op's gradient rule (defined next to the op) and summing the
contributions that reach each value. Integer and bool values carry no gradient. The rules
compute with `Value`s, so the gradients are built with `make_node` like any other pass's nodes.
A node of several results (a loop) collects the gradient of each result from the `tuple_get`
nodes that read it, and its rule receives them as a list (None where a result has none).
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.errors import GraphError, located
from graphc.graph import Node, topological_nodes
from graphc.ops import get_op
from graphc.ops.operand import Value
from graphc.types import TupleType


def _depends_on_wrt(order: Sequence[Node], wrt_ids: set[int]) -> set[int]:
    """Return the ids of nodes in order that depend on (or are) a wrt node."""
    relevant = set()
    for node in order:
        if node.id in wrt_ids or any(source.id in relevant for source in node.inputs):
            relevant.add(node.id)
    return relevant


def _total(contributions: list[Value]) -> Value:
    total = contributions[0]
    for term in contributions[1:]:
        total = total + term
    return total


def gradients(
    outputs: Sequence[Node], grad_outputs: Sequence[Node], wrt: Sequence[Node]
) -> list[Node | None]:
    """Return d(sum_i <outputs[i], grad_outputs[i]>)/d wrt[j] per j; None where unreached."""
    order = topological_nodes(outputs)
    wrt_ids = {node.id for node in wrt}
    relevant = _depends_on_wrt(order, wrt_ids)
    pending: dict[int, list[Value]] = {}
    for output, seed in zip(outputs, grad_outputs, strict=True):
        if output.id in relevant:
            pending.setdefault(output.id, []).append(Value(seed))
    # Gradients reaching each result of a node of several results (a loop), by position.
    item_pending: dict[int, dict[int, list[Value]]] = {}
    done: dict[int, Node] = {}
    for node in reversed(order):
        g: Value | list[Value | None]
        if isinstance(node.type, TupleType):
            items = item_pending.pop(node.id, None)
            if not items:
                continue
            g = [_total(items[i]) if i in items else None for i in range(len(node.type.items))]
        else:
            contributions = pending.pop(node.id, None)
            if not contributions:
                continue
            g = _total(contributions)
            done[node.id] = g.node
        op = get_op(node.op)
        if not op.differentiable or not node.inputs:
            continue
        if isinstance(node.inputs[0].type, TupleType):  # tuple_get: one result of a loop
            items = item_pending.setdefault(node.inputs[0].id, {})
            items.setdefault(node.attrs["index"], []).append(g)
            continue
        if not any(source.id in relevant and source.type.dtype.is_float for source in node.inputs):
            continue
        if op.grad is None:
            raise GraphError(located(f"{node.op} has no gradient rule", node.location))
        inputs = [Value(source) for source in node.inputs]
        input_grads = op.grad(inputs, Value(node), g, node.attrs)
        for source, source_grad in zip(node.inputs, input_grads, strict=True):
            if source_grad is None or source.id not in relevant:
                continue
            if not source.type.dtype.is_float:
                continue
            pending.setdefault(source.id, []).append(source_grad)
    return [done.get(node.id) for node in wrt]
