"""Evaluate a graph op by op with each op's numpy reference implementation.

This is the reference backend's interpreter, and the reference implementation of a loop
(`scan`) runs its body with it once per step. Every result is checked against its node's
type, evaluated with the call's symbol sizes, so a reference implementation that disagrees
with its type rule is a CompileError rather than a wrong answer further on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphc.dims import evaluate_shape
from graphc.errors import CompileError, IndexingError, located
from graphc.graph import Graph, Node
from graphc.ops.registry import get_op
from graphc.types import TupleType


def evaluate(
    graph: Graph, feeds: Sequence[np.ndarray], bindings: Mapping[str, int]
) -> dict[int, Any]:
    """Return every node's value by id (a tuple of arrays for a node of several results),
    with graph.inputs fed in order."""
    values: dict[int, Any] = {
        node.id: array for node, array in zip(graph.inputs, feeds, strict=True)
    }
    for node in graph.nodes:
        if node.id in values:
            continue
        args = [values[source.id] for source in node.inputs]
        try:
            with np.errstate(all="ignore"):
                result = get_op(node.op).reference(args, node.attrs, bindings)
        except IndexingError as error:
            detail = f"{node.op}: {error} (sizes {dict(bindings)})" if bindings else error
            raise IndexingError(located(f"{detail}", node.location)) from None
        values[node.id] = checked(node, node.type, result, bindings)
    return values


def checked(node: Node, declared: Any, result: Any, bindings: Mapping[str, int]) -> Any:
    """Return result in the declared type's dtype, after checking its shape (each item's, for
    a tuple); raise CompileError where the reference disagrees with the type rule."""
    if isinstance(declared, TupleType):
        return tuple(
            checked(node, item, value, bindings)
            for item, value in zip(declared.items, result, strict=True)
        )
    result = np.asarray(result)
    expected = evaluate_shape(declared.shape, bindings)
    if result.shape != expected:
        raise CompileError(
            f"reference {node.op} produced shape {result.shape}, its type says {expected}"
            f" (node {node!r} at {node.location})"
        )
    return result.astype(declared.dtype.numpy, copy=False)
