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
   the vector-Jacobian product of the step with (carry gradient, y gradient). The products
   the recomputation would repeat (matmuls of per-step values: an LSTM's h @ W_hh) are stored
   by the forward as residuals too, so the backward reads them instead of recomputing them.
3. The final carries of the backward loop are the gradients of init and of the implicit
   inputs; its ys are the gradients of the xs.

The rule is here rather than beside the op (`graphc/ops/scan.py`) because it calls the
autodiff pass on the body, and ops sit below passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphc.dims import dim_prod
from graphc.graph import Graph, Node
from graphc.ops.grad_helpers import zeros_like
from graphc.ops.operand import Value
from graphc.ops.registry import fusion_role, grad_rule, make_node
from graphc.ops.scan import carry_names, placeholder, tuple_items
from graphc.passes.autodiff import gradients
from graphc.passes.rewrite import GraphRewrite, Tier, rewrite, substitute


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

    # 2. (built first: it decides what 1 stores) The backward step, the vector-Jacobian
    # product of one forward step, reading the products the forward keeps.
    float_carries = [i for i, slot in enumerate(carry_slots) if slot.type.dtype.is_float]
    seeded_ys = [j for j, gy in enumerate(g_ys) if gy is not None]
    float_xs = [j for j, slot in enumerate(x_slots) if slot.type.dtype.is_float]
    float_implicit = [k for k, slot in enumerate(implicit_slots) if slot.type.dtype.is_float]
    carry_grads = [placeholder(f"carry_grad{i}", carry_slots[i].type) for i in float_carries]
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
    implicit_steps = step_grads[len(float_carries) + len(float_xs) :]
    implicit_grads = dict(zip(float_implicit, implicit_steps, strict=True))
    # A weight's gradient that is a product over the batch (x.T @ dy) is summed over the steps
    # by one product after the loop, of the factors stacked as ys; the rest add up in carries.
    factors = {k: _product_factors(v) for k, v in implicit_grads.items()}
    after = [k for k in float_implicit if factors[k] is not None]
    summed = [k for k in float_implicit if factors[k] is None]
    sums = [placeholder(f"implicit_grad{k}", implicit_slots[k].type) for k in summed]
    new_sums = [Value(total) + implicit_grads[k] for total, k in zip(sums, summed, strict=True)]
    stacked_factors = [factor for k in after for factor in factors[k] or ()]
    backward_body = Graph(
        (*carry_grads, *sums, *y_grads, *carry_slots, *x_slots, *implicit_slots),
        tuple(v.node for v in (*new_carry_grads, *new_sums, *x_grads, *stacked_factors)),
    )
    kept = _stored_products(body, [*carry_slots, *x_slots], backward_body)
    kept_slots = [placeholder(f"product{i}", node.type) for i, node in enumerate(kept)]
    backward_body = substitute(
        Graph(
            (*carry_grads, *sums, *y_grads, *carry_slots, *kept_slots, *x_slots, *implicit_slots),
            backward_body.outputs,
        ),
        {node.id: slot for node, slot in zip(kept, kept_slots, strict=True)},
    )

    # 1. The forward again, stacking the carry each step starts from and the kept products.
    residual_body = Graph(body.inputs, (*body.outputs, *carry_slots, *kept))
    forward = make_node(
        "scan", node.inputs, {**attrs, "body": residual_body}, location=node.location
    )
    stored = tuple_items(forward)[len(body.outputs) :]

    # 3. The backward loop, in the other direction.
    start: list[Value] = []
    for i in float_carries:
        given = g_carry[i]
        start.append(given if given is not None else zeros_like(init[i]))
    start += [zeros_like(implicit[k]) for k in summed]
    steps = [gy for gy in g_ys if gy is not None]  # in the order of seeded_ys
    names = carry_names(attrs)
    backward = make_node(
        "scan",
        [*(v.node for v in (*start, *steps)), *stored, *(v.node for v in (*seqs, *implicit))],
        {
            "body": backward_body,
            "num_carry": len(start),
            "num_xs": len(steps) + len(stored) + sequences,
            "length": attrs["length"],
            "reverse": not attrs["reverse"],
            "carry_names": (
                *(f"gradient of {names[i]}" for i in float_carries),
                *(f"gradient of {implicit_slots[k].name}" for k in summed),
            ),
        },
        location=node.location,
    )
    results = [Value(item) for item in tuple_items(backward)]
    grads: list[Value | None] = [None] * len(xs)
    for position, i in enumerate(float_carries):
        grads[i] = results[position]
    for position, k in enumerate(summed):
        grads[carries + sequences + k] = results[len(float_carries) + position]
    for position, j in enumerate(float_xs):
        grads[carries + j] = results[len(start) + position]
    stacks = iter(results[len(start) + len(float_xs) :])
    for k in after:
        left, right = next(stacks), next(stacks)  # [length, K, p] and [length, K, q]
        rows = dim_prod(left.shape[:2])
        grads[carries + sequences + k] = left.reshape(rows, left.shape[2]).mT @ right.reshape(
            rows, right.shape[2]
        )
    return grads


def _product_factors(step: Value) -> tuple[Value, Value] | None:
    """Return (a, b) where step is the product a.T @ b of two matrices (the gradient of a
    weight read by x @ W), or None for any other step gradient."""
    node = step.node
    if node.op != "matmul" or any(operand.type.ndim != 2 for operand in node.inputs):
        return None
    left, right = (Value(operand) for operand in node.inputs)
    if left.node.op == "permute" and left.node.inputs[0].type.ndim == 2:
        return Value(left.node.inputs[0]), right
    return left.mT, right


def _stored_products(body: Graph, stepped: Sequence[Node], backward_body: Graph) -> list[Node]:
    """Return the matmuls of the forward body that change from step to step (they read one of
    the stepped placeholders: a carry or a step of a sequence) and that the backward body would
    compute again."""
    varying = {slot.id for slot in stepped}
    for node in body.nodes:
        if any(source.id in varying for source in node.inputs):
            varying.add(node.id)
    recomputed = {node.id for node in backward_body.nodes}
    return [
        node
        for node in body.nodes
        if fusion_role(node) == "matmul" and node.id in varying and node.id in recomputed
    ]


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
