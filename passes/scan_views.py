"""Loops read weights in the layout each use wants: a body that transposes back a transposed
implicit input reads the untransposed buffer instead.

An LSTM reads W_hh.T in its step (h @ W_hh.T); the loop's implicit input is that transpose,
materialised once per call. The backward step's h gradient is dgates @ W_hh, which the body
writes as the transpose of its implicit input: a GEMM operand with strided columns, packed one
element at a time on every step. Here, when a scan's implicit input is `permute(w)` and the body
permutes it back to w's layout, the body reads w itself, as one more implicit input.
"""

from __future__ import annotations

from graphc.graph import Graph, Node
from graphc.ops.registry import make_node
from graphc.ops.scan import placeholder
from graphc.passes.rewrite import Rewrite, Tier, substitute


def _undoes(outer: Node, inner: Node) -> bool:
    """Return whether permuting by inner's perm after outer's gives back outer's input."""
    if outer.op != "permute" or inner.op != "permute":
        return False
    first, then = outer.attrs["perm"], inner.attrs["perm"]
    return all(first[axis] == position for position, axis in enumerate(then))


def _read_untransposed(node: Node) -> Node | None:
    attrs = node.attrs
    body: Graph = attrs["body"]
    fixed = attrs["num_carry"] + attrs["num_xs"]
    sources = list(node.inputs[fixed:])
    slots = list(body.inputs[fixed:])
    users = body.users()
    replacements: dict[int, Node] = {}
    for slot, source in zip(body.inputs[fixed:], node.inputs[fixed:], strict=True):
        for user in users[slot.id]:
            if not _undoes(source, user):
                continue
            base = source.inputs[0]
            known = [position for position, outer in enumerate(sources) if outer is base]
            if not known:
                known = [len(sources)]
                sources.append(base)
                slots.append(placeholder(f"{slot.name}_untransposed", base.type))
            replacements[user.id] = slots[known[0]]
    if not replacements:
        return None
    new_body = substitute(Graph((*body.inputs[:fixed], *slots), body.outputs), replacements)
    return make_node(
        "scan",
        [*node.inputs[:fixed], *sources],
        {**attrs, "body": new_body},
        location=node.location,
    )


read_untransposed = Rewrite("read_untransposed", _read_untransposed, frozenset({"scan"}))
LOOP_VIEWS = Tier("loop_views", (read_untransposed,))
