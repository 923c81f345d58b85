"""gc.scan: a loop as one node of the graph, as jax.lax.scan.

`fn(carry, x) -> (carry, y)` is called once, on placeholders, and what it builds becomes the
body graph of a `scan` node (`graphc/ops/scan.py`). Values the body reads from outside it
(weights, closures over other tensors) become the body's implicit inputs: each is a
placeholder inside and an input of the scan node outside, so gradients reach them and the
backends see every value a step reads. Constants stay inside the body.

Carries and per-step values may be single tensors or tuples and lists of them, nested.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphc.dims import Dim, dims_equal
from graphc.errors import GraphError, ShapeError, located, user_location
from graphc.graph import Graph, Node, topological_nodes
from graphc.math_ops import as_tensor
from graphc.ops.registry import make_node
from graphc.ops.scan import placeholder, tuple_items
from graphc.tensor import Tensor
from graphc.types import TensorType

# How a tree of tuples and lists holds its leaves: None for a leaf, else (list or tuple,
# the children's structures).
Structure = Any


def _flatten(tree: Any, path: str, leaves: list[Any], paths: list[str]) -> Structure:
    """Append tree's leaves and their paths (`carry[1][0]`) in order; return its structure."""
    if isinstance(tree, (tuple, list)):
        kind = list if isinstance(tree, list) else tuple
        return kind, tuple(
            _flatten(item, f"{path}[{i}]", leaves, paths) for i, item in enumerate(tree)
        )
    leaves.append(tree)
    paths.append(path)
    return None


def _rebuild(structure: Structure, leaves: Any) -> Any:
    """Return the tree of the given structure holding the next leaves of an iterator."""
    if structure is None:
        return next(leaves)
    kind, children = structure
    return kind(_rebuild(child, leaves) for child in children)


def _leaves(tree: Any, path: str) -> tuple[list[Any], list[str], Structure]:
    leaves: list[Any] = []
    paths: list[str] = []
    structure = _flatten(tree, path, leaves, paths)
    return leaves, paths, structure


def scan(
    fn: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    reverse: bool = False,
) -> tuple[Any, Any]:
    """Return (final carry, ys): fn applied along the leading dim of xs, as jax.lax.scan.

    Step t computes `carry, y = fn(carry, x)` with x the t-th slice of every tensor in xs
    (from the last slice to the first when reverse); ys stacks each step's y along a new
    leading dim, at the index of the x it came from. The carry must keep its type. The
    length is xs's leading dim, which may be symbolic: one compiled Function serves every
    length. Without xs, `length` (an int) gives the number of steps and x is None.
    """
    location = user_location()
    init_leaves, init_paths, init_structure = _leaves(init, "carry")
    init_nodes = [as_tensor(leaf).node for leaf in init_leaves]
    x_leaves, _, x_structure = _leaves(() if xs is None else xs, "xs")
    x_nodes = [as_tensor(leaf).node for leaf in x_leaves]
    steps = _length(x_nodes, length, location)

    carry_slots = [placeholder(f"carry{i}", node.type) for i, node in enumerate(init_nodes)]
    x_slots = [
        placeholder(f"x{j}", TensorType(node.type.shape[1:], node.type.dtype))
        for j, node in enumerate(x_nodes)
    ]
    carry_in = _rebuild(init_structure, iter(map(Tensor, carry_slots)))
    x_in = None if xs is None else _rebuild(x_structure, iter(map(Tensor, x_slots)))
    result = fn(carry_in, x_in)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GraphError(
            located(f"scan: fn must return (carry, y), got {type(result).__name__}", location)
        )
    carry_out, y_out = result
    out_leaves, _, out_structure = _leaves(carry_out, "carry")
    if out_structure != init_structure:
        raise GraphError(
            located(
                f"scan: fn returned a carry of another structure than init: "
                f"{_describe(out_structure)} against {_describe(init_structure)}",
                location,
            )
        )
    carry_results = [
        as_tensor(leaf, None if isinstance(leaf, Tensor) else node.type.dtype).node
        for leaf, node in zip(out_leaves, init_nodes, strict=True)
    ]
    y_leaves, _, y_structure = _leaves(() if y_out is None else y_out, "y")
    y_results = [as_tensor(leaf).node for leaf in y_leaves]

    outputs, implicit_slots, implicit = _cut([*carry_results, *y_results], [*carry_slots, *x_slots])
    body = Graph((*carry_slots, *x_slots, *implicit_slots), tuple(outputs))
    attrs = {
        "body": body,
        "num_carry": len(init_nodes),
        "num_xs": len(x_nodes),
        "length": steps,
        "reverse": bool(reverse),
        "carry_names": tuple(init_paths),
    }
    node = make_node("scan", [*init_nodes, *x_nodes, *implicit], attrs, location=location)
    results = [Tensor(item) for item in tuple_items(node)]
    final = _rebuild(init_structure, iter(results[: len(init_nodes)]))
    ys = None if y_out is None else _rebuild(y_structure, iter(results[len(init_nodes) :]))
    return final, ys


def _length(x_nodes: Sequence[Node], length: Any, location: str) -> Dim:
    """Return the number of steps: the leading dim every xs shares, or `length`."""
    if not x_nodes:
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise GraphError(
                located(f"scan: without xs, length must be an int >= 0, got {length!r}", location)
            )
        return length
    for node in x_nodes:
        if node.type.ndim == 0:
            raise ShapeError(
                located(
                    f"scan: each xs needs a leading dim to step along, got {node.type}", location
                )
            )
    steps = x_nodes[0].type.shape[0]
    for node in x_nodes[1:]:
        if not dims_equal(node.type.shape[0], steps):
            raise ShapeError(
                located(
                    f"scan: every xs needs the same leading dim, got {x_nodes[0].type} and "
                    f"{node.type}",
                    location,
                )
            )
    if length is not None and not dims_equal(length, steps):
        raise ShapeError(
            located(f"scan: length={length} but xs have a leading dim of {steps}", location)
        )
    return steps


def _cut(
    outputs: Sequence[Node], slots: Sequence[Node]
) -> tuple[list[Node], list[Node], list[Node]]:
    """Return the body's outputs with every value it reads from outside replaced by a new
    placeholder, those placeholders, and the outside values they stand for. Constants stay.

    The nodes that depend on a slot are the body; they are rebuilt (same op, attributes and
    type) on the new placeholders, in id order, so the body stays in topological order."""
    inside = {slot.id for slot in slots}
    order = topological_nodes(outputs)
    for node in order:
        if any(source.id in inside for source in node.inputs):
            inside.add(node.id)
    rebuilt: dict[int, Node] = {slot.id: slot for slot in slots}
    implicit_slots: list[Node] = []
    implicit: list[Node] = []

    def in_body(node: Node) -> Node:
        """Return what the body reads for node: its rebuilt self, a constant, or a slot."""
        if node.id not in rebuilt:
            if node.op == "constant":
                rebuilt[node.id] = node
            else:
                rebuilt[node.id] = placeholder(f"implicit{len(implicit)}", node.type)
                implicit_slots.append(rebuilt[node.id])
                implicit.append(node)
        return rebuilt[node.id]

    for node in order:
        if node.id in inside and node.id not in rebuilt:
            inputs = tuple(in_body(source) for source in node.inputs)
            same = all(a is b for a, b in zip(inputs, node.inputs, strict=True))
            rebuilt[node.id] = (
                node
                if same
                else Node(node.op, inputs, node.attrs, node.type, node.location, node.name)
            )
    return [in_body(node) for node in outputs], implicit_slots, implicit


def _describe(structure: Structure) -> str:
    if structure is None:
        return "a tensor"
    kind, children = structure
    inner = ", ".join(_describe(child) for child in children)
    return f"[{inner}]" if kind is list else f"({inner})"
