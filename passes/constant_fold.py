"""Constant folding: a node whose inputs are all small constants becomes a constant."""

from __future__ import annotations

import numpy as np

from graphc.dims import is_static
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.passes.rewrite import rewrite

# Larger results stay as computations: folding them would bloat the graph and the binary.
MAX_FOLDED_ELEMENTS = 1024
_NOT_FOLDED_KINDS = frozenset({"source", "random"})


def constant_fold(graph: Graph, max_elements: int = MAX_FOLDED_ELEMENTS) -> Graph:
    """Return the graph with small all-constant subcomputations evaluated."""

    def fold(node: Node) -> Node:
        op = get_op(node.op)
        if op.kind in _NOT_FOLDED_KINDS or not node.inputs:
            return node
        if not all(source.op == "constant" for source in node.inputs):
            return node
        if not is_static(node.type.shape) or np.prod(node.type.shape) > max_elements:
            return node
        args = [source.attrs["value"] for source in node.inputs]
        with np.errstate(all="ignore"):
            value = np.asarray(op.reference(args, node.attrs, {}))
        value = np.array(value, dtype=node.type.dtype.numpy, order="C")
        value.setflags(write=False)
        return Node("constant", (), {"value": value}, node.type, node.location, node.name)

    return rewrite(graph, fold)
