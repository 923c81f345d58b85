"""The pool_argmax tier: the gradient of a max pool whose windows overlap reads where each
window's maximum is from an index buffer instead of searching every covering window again.

max_pool2d_grad(x, gy) computes, for each input position, the first maximum of every window
that covers it: with 3x3 windows and stride 1 that is 9 windows of 9 taps per position. Where
windows overlap it becomes max_pool2d_routed(max_pool2d_argmax(x), gy): one pass records each
window's first maximum (as PyTorch's forward records its indices) and the gradient compares
each covering window's record with the position. Windows that do not overlap keep
max_pool2d_grad, which finds a position's one window by division and reads it once.
"""

from __future__ import annotations

from graphc.graph import Node
from graphc.ops.registry import make_node
from graphc.passes.rewrite import Tier, node_rewrite


def overlapping(attrs) -> bool:
    """Return True when some spatial dim's windows overlap (stride below the window's
    extent), so an input position can lie in more than one window."""
    dilation = attrs.get("dilation", (1, 1))
    return any(
        s < (k - 1) * d + 1
        for k, s, d in zip(attrs["kernel"], attrs["stride"], dilation, strict=True)
    )


@node_rewrite("max_pool2d_grad")
def max_pool2d_grad_from_argmax(node: Node) -> Node | None:
    """max_pool2d_grad(x, gy) -> max_pool2d_routed(max_pool2d_argmax(x), gy)."""
    if not overlapping(node.attrs):
        return None
    x, gy = node.inputs
    first_max = make_node("max_pool2d_argmax", [x], dict(node.attrs), location=node.location)
    routed = {**node.attrs, "input_hw": tuple(x.type.shape[2:])}
    result = make_node("max_pool2d_routed", [first_max, gy], routed, location=node.location)
    return Node(result.op, result.inputs, result.attrs, result.type, result.location, node.name)


POOL_ARGMAX = Tier("pool_argmax", (max_pool2d_grad_from_argmax,))
