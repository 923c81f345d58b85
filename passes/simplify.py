"""The canonicalise and simplify tiers: rewrites that never change NaN or inf results.

canonicalize puts movement and broadcasting in one form:
- a reshape, broadcast_to or permute that moves nothing disappears; chained reshapes and
  chained broadcasts collapse; permute(permute(x)) composes;
- the transpose of a matmul becomes the matmul of the transposes, (AB)^T = B^T A^T (a weight
  gradient then comes out in the weight's layout; the GEMM reads transposes through strides);
- an elementwise op applied to broadcast_to(y) works on y (binary ops broadcast inside the
  op; unary ops move the broadcast after them).

simplify drops operations with an identity constant, which constant folding often exposes:
x + (-0.0), x - 0, x * 1, x / 1 and x ** 1 become x when x already has the result's shape
(+ 0.0 is not an identity for floats, as (-0.0) + 0.0 is +0.0); x ** 2 becomes x * x.

x * 0 -> 0 is deliberately absent: it changes inf and NaN inputs (a fast-math rewrite).
"""

from __future__ import annotations

import numpy as np

from graphc.dims import same_dims
from graphc.errors import ShapeError
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.ops.registry import make_node
from graphc.ops.shape_rules import broadcast_shapes
from graphc.passes.rewrite import Tier, node_rewrite, run_tier


def _rebuilt(node: Node, inputs: list[Node], attrs=None, op: str | None = None) -> Node:
    """Return a node computing what node computed, from new inputs, at node's source line."""
    attrs = node.attrs if attrs is None else attrs
    return make_node(op or node.op, inputs, attrs, location=node.location, name=node.name)


# -- canonicalize ---------------------------------------------------------------------------
# Each rewrite runs only on nodes of the ops its decorator names (passes/rewrite.py), so the
# tests below are of the patterns beneath the node.


@node_rewrite("reshape")
def noop_reshape(node: Node) -> Node | None:
    """reshape(x) to x's own shape -> x."""
    if same_dims(node.inputs[0].type.shape, node.type.shape):
        return node.inputs[0]
    return None


@node_rewrite("broadcast_to")
def noop_broadcast(node: Node) -> Node | None:
    """broadcast_to(x) to x's own shape -> x."""
    if same_dims(node.inputs[0].type.shape, node.type.shape):
        return node.inputs[0]
    return None


@node_rewrite("permute")
def identity_permute(node: Node) -> Node | None:
    """permute(x, (0, 1, ..., n-1)) -> x."""
    if list(node.attrs["perm"]) == sorted(node.attrs["perm"]):
        return node.inputs[0]
    return None


@node_rewrite("reshape")
def reshape_of_reshape(node: Node) -> Node | None:
    """reshape(reshape(x)) -> reshape(x)."""
    if node.inputs[0].op == "reshape":
        return _rebuilt(node, [node.inputs[0].inputs[0]])
    return None


@node_rewrite("broadcast_to")
def broadcast_of_broadcast(node: Node) -> Node | None:
    """broadcast_to(broadcast_to(x)) -> broadcast_to(x)."""
    if node.inputs[0].op == "broadcast_to":
        return _rebuilt(node, [node.inputs[0].inputs[0]])
    return None


@node_rewrite("permute")
def permute_of_permute(node: Node) -> Node | None:
    """permute(permute(x, p), q) -> permute(x, p[q]), or x where they cancel."""
    if node.inputs[0].op != "permute":
        return None
    inner = node.inputs[0]
    composed = tuple(inner.attrs["perm"][p] for p in node.attrs["perm"])
    if list(composed) == sorted(composed):
        return inner.inputs[0]
    return _rebuilt(node, [inner.inputs[0]], attrs={"perm": composed})


def _swap_last_two(node: Node, location: str | None) -> Node:
    perm = list(range(node.type.ndim))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return make_node("permute", [node], {"perm": tuple(perm)}, location=location)


@node_rewrite("permute")
def transpose_of_matmul(node: Node) -> Node | None:
    """permute(a @ b) swapping the last two dims -> b^T @ a^T, so a weight gradient comes out
    in the weight's own layout instead of being read transposed by its consumer."""
    if node.inputs[0].op != "matmul":
        return None
    perm = tuple(node.attrs["perm"])
    rank = len(perm)
    if rank < 2 or perm != (*range(rank - 2), rank - 1, rank - 2):
        return None
    matmul = node.inputs[0]
    a, b = matmul.inputs
    if not a.type.ndim == b.type.ndim == rank:
        return None
    operands = [_swap_last_two(b, node.location), _swap_last_two(a, node.location)]
    return _rebuilt(node, operands, attrs=matmul.attrs, op="matmul")


def _is_elementwise(node: Node) -> bool:
    return get_op(node.op).kind == "elementwise"


@node_rewrite()
def broadcast_after_unary(node: Node) -> Node | None:
    """f(broadcast_to(y)) -> broadcast_to(f(y)) for an elementwise f of one operand."""
    if len(node.inputs) != 1 or node.inputs[0].op != "broadcast_to" or not _is_elementwise(node):
        return None
    broadcast = node.inputs[0]
    inner = make_node(node.op, [broadcast.inputs[0]], node.attrs, location=node.location)
    return _rebuilt(node, [inner], attrs=broadcast.attrs, op="broadcast_to")


@node_rewrite()
def unbroadcast_operands(node: Node) -> Node | None:
    """An elementwise op of several operands reads a broadcast_to operand's source, where the
    op's own broadcasting gives the same result shape."""
    if len(node.inputs) < 2 or not _is_elementwise(node):
        return None
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
        if same_dims(shape, node.type.shape):
            inputs, changed = trial, True
    return _rebuilt(node, inputs) if changed else None


CANONICALIZE = Tier(
    "canonicalize",
    (
        noop_reshape,
        noop_broadcast,
        identity_permute,
        reshape_of_reshape,
        broadcast_of_broadcast,
        permute_of_permute,
        transpose_of_matmul,
        broadcast_after_unary,
        unbroadcast_operands,
    ),
)


# -- simplify -------------------------------------------------------------------------------


def _constant_is(node: Node, value: int, negative: bool | None = None) -> bool:
    """Whether node is a constant equal to value everywhere; for a float zero, `negative` asks
    for the sign bit too."""
    if node.op != "constant":
        return False
    array = node.attrs["value"]
    # A scalar compares without np.all's overhead: this runs on every constant, every walk.
    equal = bool(array == value) if array.size == 1 else bool(np.all(array == value))
    if not equal:
        return False
    if negative is None or not node.type.dtype.is_float:
        return True
    return bool(np.all(np.signbit(array) == negative))


def _other_operand(
    node: Node, value: int, *, commutes: bool, negative: bool | None = None
) -> Node | None:
    """Return x for the binary node op(x, c), or op(c, x) where op commutes, with c a constant
    equal to value and x already of the result's shape (so dropping the op drops no
    broadcast)."""
    a, b = node.inputs
    if _constant_is(b, value, negative) and same_dims(a.type.shape, node.type.shape):
        return a
    if commutes and _constant_is(a, value, negative) and same_dims(b.type.shape, node.type.shape):
        return b
    return None


@node_rewrite("add")
def add_zero(node: Node) -> Node | None:
    """x + (-0.0) -> x (any zero for integers); x + 0.0 is kept, since (-0.0) + 0.0 is +0.0."""
    return _other_operand(node, 0, commutes=True, negative=True)


@node_rewrite("sub")
def sub_zero(node: Node) -> Node | None:
    """x - 0.0 -> x; x - (-0.0) is kept, since (-0.0) - (-0.0) is +0.0."""
    return _other_operand(node, 0, commutes=False, negative=False)


@node_rewrite("mul")
def mul_one(node: Node) -> Node | None:
    """x * 1 -> x and 1 * x -> x."""
    return _other_operand(node, 1, commutes=True)


@node_rewrite("div")
def div_one(node: Node) -> Node | None:
    """x / 1 -> x."""
    return _other_operand(node, 1, commutes=False)


@node_rewrite("pow")
def small_power(node: Node) -> Node | None:
    """x ** 1 -> x and x ** 2 -> x * x for floats: both exact for every x, NaN, inf and
    signed zeros included (a squared error and its gradient then need no pow)."""
    base, exponent = node.inputs
    if not node.type.dtype.is_float or base.type.dtype != node.type.dtype:
        return None
    if not same_dims(base.type.shape, node.type.shape):
        return None
    if _constant_is(exponent, 1):
        return base
    if _constant_is(exponent, 2):
        return _rebuilt(node, [base, base], {}, op="mul")
    return None


SIMPLIFY = Tier("simplify", (add_zero, sub_zero, mul_one, div_one, small_power))


def canonicalize(graph: Graph) -> Graph:
    """Return the graph with the canonicalize tier run to its fixed point."""
    return run_tier(CANONICALIZE, graph)[0]


def simplify(graph: Graph) -> Graph:
    """Return the graph with the simplify tier run to its fixed point."""
    return run_tier(SIMPLIFY, graph)[0]
