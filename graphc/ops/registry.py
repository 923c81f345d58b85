"""The op registry: one OpDef per primitive, holding everything about that op.

An OpDef carries its type rule (shape and dtype inference with clear errors), its numpy
reference implementation, its gradient rule and its lowerings, and the facts the rest of
graphc asks about an op: how the Tensor API types its operands, the name it has there, its
role in fusion, how it reads its input as a strided view, and the checks it needs once the
symbol sizes are known. The autodiff pass, the passes, the backends and the Tensor API look
ops up here and keep no lists of op names of their own; what still names ops elsewhere is the
graph's placeholders (`input`, `variable`, `constant` as a literal), the patterns of rewrites,
and each backend's lowering of an op.
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
# view(node, input shape, input strides) -> the node's strides as a view of its input's memory,
# or None where no strides express it (a reshape of a non-contiguous view).
ViewRule = Callable[[Node, tuple, tuple], tuple | None]
# call_check(node) -> a check run on every call with the symbol sizes (raising IndexingError),
# or None when the node's validity was settled when it was built.
CallCheck = Callable[[Node], Callable[[Mapping[str, int]], None] | None]

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
    "loop",
    "collective",
)

# How the Tensor API (math_ops.elementwise) types the operands of an op before building it.
PROMOTIONS = {
    "arithmetic": "PyTorch's promotion; two bool operands count in int64, one alone is refused",
    "float": "PyTorch's promotion, then integer and bool operands give float32 (exp, div)",
    "integral": "integer and bool operands are integral already and come back unchanged",
    "compare": "PyTorch's promotion of the operands; the result is bool",
    "logical": "the operands become bool (nonzero is True)",
    "power": "arithmetic, and an integer base to a negative Python int exponent is refused",
}

# What fusion (passes/fusion.py) does with a node of the op.
FUSION_ROLES = {
    "buffer": "its value is in memory before any kernel runs (inputs, variables)",
    "inline": "index arithmetic, inlined into every consumer (movement, casts, scalars)",
    "fuse": "joins its consumers' kernel when they are all one kernel (elementwise, reduce)",
    "root": "starts a loop kernel of its own (convolution, pooling)",
    "disjoint_windows": (
        "starts a loop kernel of its own whose windows never overlap (a 2x2 pool with stride"
        " 2): the elementwise ops only it reads join it, each element computed once, in the"
        " one window that reads it"
    ),
    "windows": "starts a loop kernel of its own that reads its input from memory (flat_im2col)",
    "matmul": "starts a GEMM kernel of its own, reading its operands as strided views",
    "scatter_add": "starts a scatter-add kernel of its own",
    "loop": "runs a body graph once per step (scan): a kernel of its own reading buffers",
    "result": "one result of a loop (tuple_get): a buffer the loop's kernel stores",
    "collective": "a call into the MPI library (all_reduce): a kernel of its own on buffers",
}
# The role an op of each kind has unless its definition says otherwise.
_KIND_FUSION = {
    "source": "buffer",
    "elementwise": "fuse",
    "reduce": "fuse",
    "random": "fuse",
    "movement": "inline",
    "gather": "inline",
    "matmul": "matmul",
    "conv": "root",
    "pool": "root",
    "loop": "loop",
    "collective": "collective",
}


@dataclass(slots=True, eq=False)
class OpDef:
    """Everything graphc knows about one primitive op.

    - `promotion` (a key of PROMOTIONS), `api` and `arity`: an elementwise op with all three is
      exposed as `gc.<api>(...)` and `Tensor.<api>(...)`, documented by `doc`, with no code of
      its own; an elementwise op of one or two operands lowers to the kernel IR's Unary or
      Binary node of its name unless a backend registers another lowering.
    - `fusion`: a key of FUSION_ROLES, or a function of the node for ops whose role depends on
      it (a scalar constant is inlined, a larger one is a buffer).
    - `grad_order`: how many times graphc differentiates it correctly (its gradient rule is
      built from ops that are themselves differentiable); 0 for ops without a gradient. The op
      table checks derivatives up to this order.
    - `view`: for movement ops that read their input as a strided view (no copy); `call_check`:
      for ops whose validity depends on the symbol sizes of a call.
    """

    name: str
    kind: str
    infer: InferRule
    reference: ReferenceImpl
    differentiable: bool = True
    grad: GradRule | None = None
    lowerings: dict[str, Any] = field(default_factory=dict)
    promotion: str | None = None
    api: str | None = None
    doc: str = ""
    arity: int | None = None
    fusion: str | Callable[[Node], str] | None = None
    grad_order: int | None = None
    view: ViewRule | None = None
    call_check: CallCheck | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name}: unknown kind {self.kind!r}")
        if self.promotion is not None and self.promotion not in PROMOTIONS:
            raise ValueError(f"op {self.name}: unknown promotion {self.promotion!r}")
        if self.fusion is None:
            self.fusion = _KIND_FUSION[self.kind]
        if isinstance(self.fusion, str) and self.fusion not in FUSION_ROLES:
            raise ValueError(f"op {self.name}: unknown fusion role {self.fusion!r}")
        if self.grad_order is None:
            self.grad_order = 2 if self.differentiable else 0

    def fusion_role(self, node: Node) -> str:
        """Return what fusion does with node (a key of FUSION_ROLES)."""
        if callable(self.fusion):
            return self.fusion(node)
        return self.fusion or _KIND_FUSION[self.kind]


OPS: dict[str, OpDef] = {}


def define_op(
    name: str,
    kind: str,
    infer: InferRule,
    reference: ReferenceImpl,
    *,
    differentiable: bool = True,
    **facts: Any,
) -> OpDef:
    """Register a primitive op and return its definition; `facts` sets the other OpDef fields
    (promotion, api, doc, arity, fusion, grad_order, view, call_check)."""
    if name in OPS:
        raise ValueError(f"op {name} is defined twice")
    op = OpDef(name, kind, infer, reference, differentiable, **facts)
    OPS[name] = op
    return op


def fusion_role(node: Node) -> str:
    """Return what fusion does with node (a key of FUSION_ROLES)."""
    return get_op(node.op).fusion_role(node)


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
