"""The primitive ops; importing this package registers every one of them."""

from graphc.ops import (
    collectives,
    conv,
    elementwise,
    linalg,
    movement,
    random,
    reduce,
    scan,
    sources,
)
from graphc.ops.registry import OPS, OpDef, define_op, get_op, grad_rule, make_node

__all__ = [
    "OPS",
    "OpDef",
    "collectives",
    "conv",
    "define_op",
    "elementwise",
    "get_op",
    "grad_rule",
    "linalg",
    "make_node",
    "movement",
    "random",
    "reduce",
    "scan",
    "sources",
]
