"""The gradient of a loop (`scan`), and the rewrite that lets its forward pass run once.

Reverse mode through `carry_{t+1}, y_t = f(carry_t, x_t, w)`, where w are the body's
implicit inputs (weights), given the gradients of the final carry and of every y_t:

1. The forward runs again as a scan whose body also returns the carry each step starts from,
   stacked like a y: the residuals. (`merge_residual_scans` then makes the original loop's
   results come from this one, so a training step runs the forward loop once.)
2. The backward is a scan in the other direction. Its carries are the gradient of the carry
   and one accumulator per float implicit input (the weights' gradients, summed over the
   steps); it steps along the gradients of the ys, the stored carries and the xs. Its body
   recomputes the step from the stored carry and differentiates it with the autodiff pass:
   the vector-Jacobian product of the step with (carry gradient, y gradient).
3. The final carries of the backward loop are the gradients of init and of the implicit
   inputs; its ys are the gradients of the xs.

The rule is here rather than beside the op (`graphc/ops/scan.py`) because it calls the
autodiff pass on the body, and ops sit below passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphc.graph import Graph, Node
from graphc.ops.grad_helpers import zeros_like
from graphc.ops.operand import Value
from graphc.ops.registry import grad_rule, make_node
from graphc.ops.scan import carry_names, placeholder, tuple_items
from graphc.passes.autodiff import gradients
from graphc.passes.rewrite import GraphRewrite, Tier, rewrite


@grad_rule("scan")
def _scan_grad(
    xs: Sequence[Value], out: Value, g: Sequence[Value | None], attrs: Mapping[str, Any]
) -> list[Value | None]:
    node = out.node
    body: Graph = attrs["body"]
    carries, sequences = attrs["num_carry"], attrs["num_xs"]
    carry_slots = body.inputs[:carries]
    x_slots = body.inputs[carries : carries + sequences]
    implicit_slots = body.inputs[carries + sequences :]
    carry_results, y_results = body.outputs[:carries], body.outputs[carries:]
    init, seqs, implicit = (
        xs[:carries],
        xs[carries : carries + sequences],
        xs[carries + sequences :],
    )
    g_carry, g_ys = g[:carries], g[carries:]

    # 1. The forward again, stacking the carry each step starts from.
    residual_body = Graph(body.inputs, (*body.outputs, *carry_slots))
    forward = make_node(
        "scan", node.inputs, {**attrs, "body": residual_body}, location=node.location
    )
    stored = tuple_items(forward)[len(body.outputs) :]

    # 2. The backward step: the vector-Jacobian product of one forward step.
    float_carries = [i for i, slot in enumerate(carry_slots) if slot.type.dtype.is_float]
    seeded_ys = [j for j, gy in enumerate(g_ys) if gy is not None]
    float_xs = [j for j, slot in enumerate(x_slots) if slot.type.dtype.is_float]
    float_implicit = [k for k, slot in enumerate(implicit_slots) if slot.type.dtype.is_float]
    carry_grads = [placeholder(f"carry_grad{i}", carry_slots[i].type) for i in float_carries]
    sums = [placeholder(f"implicit_grad{k}", implicit_slots[k].type) for k in float_implicit]
    y_grads = [placeholder(f"y_grad{j}", y_results[j].type) for j in seeded_ys]
    wrt = [
        *(carry_slots[i] for i in float_carries),
        *(x_slots[j] for j in float_xs),
        *(implicit_slots[k] for k in float_implicit),
    ]
    found = gradients(
        [*(carry_results[i] for i in float_carries), *(y_results[j] for j in seeded_ys)],
        [*carry_grads, *y_grads],
        wrt,
    )
    step_grads = [
        Value(g) if g is not None else zeros_like(Value(w)) for g, w in zip(found, wrt, strict=True)
    ]
    new_carry_grads = step_grads[: len(float_carries)]
    x_grads = step_grads[len(float_carries) : len(float_carries) + len(float_xs)]
    new_sums = [
        Value(total) + step
        for total, step in zip(sums, step_grads[len(float_carries) + len(float_xs) :], strict=True)
    ]
    backward_body = Graph(
        (*carry_grads, *sums, *y_grads, *carry_slots, *x_slots, *implicit_slots),
        tuple(v.node for v in (*new_carry_grads, *new_sums, *x_grads)),
    )

    # 3. The backward loop, in the other direction.
    start: list[Value] = []
    for i in float_carries:
        given = g_carry[i]
        start.append(given if given is not None else zeros_like(init[i]))
    start += [zeros_like(implicit[k]) for k in float_implicit]
    steps = [gy for gy in g_ys if gy is not None]  # in the order of seeded_ys
    names = carry_names(attrs)
    backward = make_node(
        "scan",
        [*(v.node for v in (*start, *steps)), *stored, *(v.node for v in (*seqs, *implicit))],
        {
            "body": backward_body,
            "num_carry": len(start),
            "num_xs": len(steps) + carries + sequences,
            "length": attrs["length"],
            "reverse": not attrs["reverse"],
            "carry_names": (
                *(f"gradient of {names[i]}" for i in float_carries),
                *(f"gradient of {implicit_slots[k].name}" for k in float_implicit),
            ),
        },
        location=node.location,
    )
    results = [Value(item) for item in tuple_items(backward)]
    grads: list[Value | None] = [None] * len(xs)
    for position, i in enumerate(float_carries):
        grads[i] = results[position]
    for position, k in enumerate(float_implicit):
        grads[carries + sequences + k] = results[len(float_carries) + position]
    for position, j in enumerate(float_xs):
        grads[carries + j] = results[len(start) + position]
    return grads


def _merge_residual_scans(graph: Graph) -> tuple[Graph, int]:
    """Read each loop's results from a loop with the same inputs whose body returns the same
    outputs and more (the forward of its gradient), so the forward steps run once."""
    longest: dict[tuple, Node] = {}
    for node in graph.nodes:
        if node.op == "scan":
            key = _loop_key(node)
            known = longest.get(key)
            if known is None or _extends(node, known):
                longest[key] = node
    merged = 0

    def rule(node: Node) -> Node:
        nonlocal merged
        if node.op != "tuple_get" or node.inputs[0].op != "scan":
            return node
        loop = node.inputs[0]
        # A loop rebuilt in this walk (its inputs were rewritten) is matched on the next.
        target = longest.get(_loop_key(loop), loop)
        if target is loop or not _extends(target, loop):
            return node
        merged += 1
        return Node(node.op, (target,), node.attrs, node.type, node.location, node.name)

    result = rewrite(graph, rule)
    return result, merged


def _loop_key(node: Node) -> tuple:
    attrs = node.attrs
    return (
        tuple(source.id for source in node.inputs),
        tuple(slot.id for slot in attrs["body"].inputs),
        attrs["num_carry"],
        attrs["num_xs"],
        str(attrs["length"]),
        attrs["reverse"],
    )


def _extends(longer: Node, shorter: Node) -> bool:
    """Return True if longer's body returns every output of shorter's, first and in order."""
    a, b = longer.attrs["body"].outputs, shorter.attrs["body"].outputs
    return len(a) >= len(b) and all(x is y for x, y in zip(a, b, strict=False))


merge_residual_scans = GraphRewrite("merge_residual_scans", _merge_residual_scans)
SCAN = Tier("scan", (merge_residual_scans,))
