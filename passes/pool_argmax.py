"""The pool_argmax tier: the gradient of a max pool reads where each window's maximum is from
an index buffer instead of searching the windows again.

max_pool2d_grad(x, gy) computes, for each input position, the first maximum of every window
that covers it: with 3x3 windows and stride 1 that is 9 windows of 9 taps per position, and
even where windows do not overlap, each position searches its window again (a 2x2 window is
searched by all four of its positions). It becomes max_pool2d_routed(max_pool2d_argmax(x),
gy): one pass records each window's first maximum (as PyTorch's forward records its indices)
and the gradient compares each covering window's record with the position. The MNIST-style
CNN step of benchmarks/cnn.py (2x2 pools, stride 2) measured 4-6% faster at batch 32 and 128
(AVX-512, one thread) than with the search kept for windows that do not overlap.
"""

from __future__ import annotations

from graphc.graph import Node
from graphc.ops.registry import make_node
from graphc.passes.rewrite import Tier, node_rewrite


@node_rewrite("max_pool2d_grad")
def max_pool2d_grad_from_argmax(node: Node) -> Node | None:
    """max_pool2d_grad(x, gy) -> max_pool2d_routed(max_pool2d_argmax(x), gy)."""
    x, gy = node.inputs
    first_max = make_node("max_pool2d_argmax", [x], dict(node.attrs), location=node.location)
    routed = {**node.attrs, "input_hw": tuple(x.type.shape[2:])}
    result = make_node("max_pool2d_routed", [first_max, gy], routed, location=node.location)
    return Node(result.op, result.inputs, result.attrs, result.type, result.location, node.name)


POOL_ARGMAX = Tier("pool_argmax", (max_pool2d_grad_from_argmax,))
