"""The canonicalise rewrite tier: algebraic identities that never change NaN/inf results.

- x + (-0.0), x - 0, x * 1, x / 1 -> x (when x already has the result's shape; + 0.0 is
  not an identity for floats, as -0.0 + 0.0 is +0.0);
- an elementwise op applied to broadcast_to(y) -> the op on y, broadcasting inside the op
  (binary ops keep the operand unbroadcast; unary ops move the broadcast after them);
- reshape(reshape(x)) and broadcast_to(broadcast_to(x)) collapse; a no-op reshape,
  broadcast_to or permute disappears; permute(permute(x)) composes;
- the transpose of a matmul becomes the matmul of the transposes, (AB)^T = B^T A^T (a weight
  gradient then comes out in the weight's layout; the GEMM reads transposes through strides).
x * 0 -> 0 is deliberately absent: it changes inf and NaN inputs (a fast-math rewrite).
"""

from __future__ import annotations

import numpy as np

from graphc.dims import dims_equal
from graphc.errors import ShapeError
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.ops.registry import make_node
from graphc.ops.shape_rules import broadcast_shapes
from graphc.passes.rewrite import rewrite

_IDENTITY_CONSTANT = {"add": (0, 1), "sub": (0,), "mul": (1, 1), "div": (1,)}
_IDENTITY_VALUE = {"add": 0, "sub": 0, "mul": 1, "div": 1}


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(map(dims_equal, a, b))


def _constant_equal_to(node: Node, value: float, negative_zero: bool = False) -> bool:
    if node.op != "constant" or not bool(np.all(node.attrs["value"] == value)):
        return False
    # Only -0.0 is an identity of float addition: (-0.0) + 0.0 is +0.0.
    return (
        not negative_zero
        or not node.type.dtype.is_float
        or bool(np.all(np.signbit(node.attrs["value"])))
    )


def _identity_operand(node: Node) -> Node | None:
    """Return x for x + 0, x - 0, x * 1, x / 1 (either side where the op commutes)."""
    if node.op not in _IDENTITY_VALUE:
        return None
    value = _IDENTITY_VALUE[node.op]
    signed = node.op == "add"
    a, b = node.inputs
    if _constant_equal_to(b, value, signed) and _same_shape(a.type.shape, node.type.shape):
        return a
    commutes = node.op in ("add", "mul")
    if (
        commutes
        and _constant_equal_to(a, value, signed)
        and _same_shape(b.type.shape, node.type.shape)
    ):
        return b
    return None


def _rebuilt(node: Node, inputs: list[Node], op: str | None = None, attrs=None) -> Node:
    return make_node(
        op or node.op,
        inputs,
        node.attrs if attrs is None else attrs,
        location=node.location,
        name=node.name,
    )


def _unbroadcast_operands(node: Node) -> Node | None:
    """Return the elementwise node with broadcast_to operands replaced by their sources."""
    inputs = list(node.inputs)
    changed = False
    for position, source in enumerate(inputs):
        if source.op != "broadcast_to":
            continue
        trial = [*inputs[:position], source.inputs[0], *inputs[position + 1 :]]
        try:
            shape = broadcast_shapes(*(n.type.shape for n in trial))
        except ShapeError:
            continue
        if _same_shape(shape, node.type.shape):
            inputs, changed = trial, True
    return _rebuilt(node, inputs) if changed else None


def _simplify(node: Node) -> Node:
    if get_op(node.op).kind == "elementwise":
        if (same := _identity_operand(node)) is not None:
            return same
        if len(node.inputs) == 1 and node.inputs[0].op == "broadcast_to":
            broadcast = node.inputs[0]
            inner = _rebuilt(node, [broadcast.inputs[0]])
            return _rebuilt(broadcast, [inner], attrs=broadcast.attrs)
        if len(node.inputs) > 1 and (unbroadcast := _unbroadcast_operands(node)) is not None:
            return unbroadcast
    if node.op in ("reshape", "broadcast_to"):
        source = node.inputs[0]
        if _same_shape(source.type.shape, node.type.shape):
            return source
        if source.op == node.op:
            return _rebuilt(node, [source.inputs[0]])
    if node.op == "permute":
        return _simplify_permute(node)
    return node


def _swap_last_two(node: Node) -> Node:
    perm = list(range(node.type.ndim))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return _simplify_permute(
        make_node("permute", [node], {"perm": tuple(perm)}, location=node.location)
    )


def _simplify_permute(node: Node) -> Node:
    """permute(permute(x)) composes; an identity permute disappears; the transpose of a
    matmul becomes the matmul of transposes, (AB)^T = B^T A^T, so a weight gradient comes
    out in the weight's own layout instead of being read transposed by its consumer."""
    perm = tuple(node.attrs["perm"])
    source = node.inputs[0]
    if source.op == "permute":
        inner = source.attrs["perm"]
        composed = tuple(inner[p] for p in perm)
        return _simplify_permute(_rebuilt(node, [source.inputs[0]], attrs={"perm": composed}))
    if list(perm) == sorted(perm):
        return source
    swaps_last_two = len(perm) >= 2 and perm == (
        *range(len(perm) - 2),
        len(perm) - 1,
        len(perm) - 2,
    )
    if swaps_last_two and source.op == "matmul":
        a, b = source.inputs
        if a.type.ndim == b.type.ndim == len(perm):
            return _rebuilt(source, [_swap_last_two(b), _swap_last_two(a)])
    return node


def simplify(graph: Graph) -> Graph:
    """Return the graph with the canonicalising identities applied."""
    return rewrite(graph, _simplify)
