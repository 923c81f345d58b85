"""The fold tier: a node whose inputs are all small constants becomes a constant."""

from __future__ import annotations

import math

import numpy as np

from graphc.dims import is_static, static_shape
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.passes.rewrite import Rewrite, Tier, run_tier

# Larger results stay as computations: folding them would bloat the graph and the binary.
MAX_FOLDED_ELEMENTS = 1024
# Sources have nothing to fold, a random draw is a fresh value on every call, and a loop's
# results are a tuple (and its steps may be many); a collective is a call every process of
# the world makes when the graph runs.
_NOT_FOLDED_KINDS = frozenset({"source", "random", "loop", "collective"})


def folding(max_elements: int = MAX_FOLDED_ELEMENTS) -> Rewrite:
    """Return the rewrite that evaluates an all-constant node of at most max_elements."""

    def fold_constant(node: Node) -> Node | None:
        op = get_op(node.op)
        if op.kind in _NOT_FOLDED_KINDS or not node.inputs:
            return None
        if not all(source.op == "constant" for source in node.inputs):
            return None
        shape = node.type.shape
        if not is_static(shape) or math.prod(static_shape(shape)) > max_elements:
            return None
        args = [source.attrs["value"] for source in node.inputs]
        with np.errstate(all="ignore"):
            value = np.asarray(op.reference(args, node.attrs, {}))
        value = np.array(value, dtype=node.type.dtype.numpy, order="C")
        value.setflags(write=False)
        return Node("constant", (), {"value": value}, node.type, node.location, node.name)

    return Rewrite("fold_constant", fold_constant)


FOLD = Tier("fold", (folding(),))


def constant_fold(graph: Graph, max_elements: int = MAX_FOLDED_ELEMENTS) -> Graph:
    """Return the graph with small all-constant subcomputations evaluated."""
    tier = FOLD if max_elements == MAX_FOLDED_ELEMENTS else Tier("fold", (folding(max_elements),))
    return run_tier(tier, graph)[0]
