"""The op registry: one OpDef per primitive, holding everything about that op.

An OpDef carries its type rule (shape and dtype inference with clear errors), its numpy
reference implementation, its gradient rule and its lowerings; the autodiff pass and the
backends look ops up here and never special-case an op elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.errors import GraphcError, GraphError, located, user_location
from graphc.graph import Node
from graphc.types import TensorType

# infer(input types, attrs) -> output type; raises ShapeError/DTypeError with a plain message.
InferRule = Callable[[Sequence[TensorType], Mapping[str, Any]], TensorType]
# reference(input arrays, attrs, symbol bindings) -> output array.
ReferenceImpl = Callable[[Sequence[np.ndarray], Mapping[str, Any], Mapping[str, int]], np.ndarray]
# grad(input tensors, output tensor, output gradient, attrs) -> one gradient (or None) per input.
GradRule = Callable[..., Sequence[Any]]

KINDS = (
    "source",
    "elementwise",
    "reduce",
    "movement",
    "gather",
    "matmul",
    "conv",
    "pool",
    "random",
)


@dataclass(slots=True, eq=False)
class OpDef:
    """Everything graphc knows about one primitive op."""

    name: str
    kind: str
    infer: InferRule
    reference: ReferenceImpl
    differentiable: bool = True
    grad: GradRule | None = None
    lowerings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name}: unknown kind {self.kind!r}")


OPS: dict[str, OpDef] = {}


def define_op(
    name: str,
    kind: str,
    infer: InferRule,
    reference: ReferenceImpl,
    *,
    differentiable: bool = True,
) -> OpDef:
    """Register a primitive op and return its definition."""
    if name in OPS:
        raise ValueError(f"op {name} is defined twice")
    op = OpDef(name, kind, infer, reference, differentiable)
    OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    """Return the definition of a registered op."""
    try:
        return OPS[name]
    except KeyError:
        raise GraphError(f"unknown op {name!r}") from None


def grad_rule(name: str) -> Callable[[GradRule], GradRule]:
    """Decorator that attaches a gradient rule to a registered op."""

    def attach(rule: GradRule) -> GradRule:
        get_op(name).grad = rule
        return rule

    return attach


def make_node(
    op: str,
    inputs: Sequence[Node],
    attrs: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    location: str | None = None,
) -> Node:
    """Build a node, inferring its type now so a mistake raises at the user's line."""
    definition = get_op(op)
    attrs = dict(attrs or {})
    location = location or user_location()
    try:
        out_type = definition.infer([n.type for n in inputs], attrs)
    except GraphcError as error:
        raise type(error)(located(f"{op}: {error}", location)) from None
    return Node(op, tuple(inputs), attrs, out_type, location, name)


def infer_again(node: Node) -> TensorType:
    """Re-run a node's type rule (used by the verification pass)."""
    return get_op(node.op).infer([n.type for n in node.inputs], node.attrs)
