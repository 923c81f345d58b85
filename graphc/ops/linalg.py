"""matmul with numpy semantics: 1-D operands, batched operands, broadcast batch dims."""

from __future__ import annotations

import numpy as np

from graphc.dims import dims_equal, format_shape
from graphc.errors import ShapeError
from graphc.ops.grad_helpers import sum_to
from graphc.ops.registry import define_op, grad_rule
from graphc.ops.shape_rules import broadcast_shapes, require_dtype, same_dtype
from graphc.types import TensorType


def matmul_shape(a_shape, b_shape):
    """Return numpy's matmul result shape, raising ShapeError on a contraction mismatch."""
    if not a_shape or not b_shape:
        raise ShapeError(
            f"both operands need at least one dim, got {format_shape(a_shape)} @ "
            f"{format_shape(b_shape)}"
        )
    a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    if not dims_equal(a2[-1], b2[-2]):
        raise ShapeError(
            f"contraction dims differ in {format_shape(a_shape)} @ {format_shape(b_shape)}: "
            f"the left's last dim is {a2[-1]}, the right's "
            f"{'only' if len(b_shape) == 1 else 'second-to-last'} dim is {b2[-2]}"
        )
    try:
        batch = broadcast_shapes(a2[:-2], b2[:-2])
    except ShapeError as error:
        # Name the axis as the user counts it in the operands, not within the batch dims.
        axis = _first_batch_mismatch(a2[:-2], b2[:-2])
        detail = f"axis {axis - 2} has sizes {a2[axis - 2]} and {b2[axis - 2]}"
        if "symbolic" in str(error):
            detail += "; a symbolic dim only broadcasts with 1 or the same symbol"
        raise ShapeError(
            f"batch dims of {format_shape(a_shape)} @ {format_shape(b_shape)} do not broadcast: "
            f"{detail}"
        ) from None
    out = (*batch, a2[-2], b2[-1])
    if len(a_shape) == 1:
        out = (*out[:-2], out[-1])
    if len(b_shape) == 1:
        out = out[:-1]
    return out


def _first_batch_mismatch(a_batch, b_batch) -> int:
    """Return the negative batch axis (counted from the end) where the batch dims clash."""
    for axis in range(-min(len(a_batch), len(b_batch)), 0):
        a, b = a_batch[axis], b_batch[axis]
        if not (a == 1 or b == 1 or dims_equal(a, b)):
            return axis
    raise AssertionError("the batch dims broadcast")


def _matmul_infer(types, attrs):
    a, b = types
    dtype = same_dtype(types, "both operands")
    require_dtype(a, "float,int", "the operands")
    return TensorType(matmul_shape(a.shape, b.shape), dtype)


def _matmul_fusion(node) -> str:
    # Float products run in the packed GEMM; integer ones in a generic loop kernel.
    return "matmul" if node.type.dtype.is_float else "root"


define_op(
    "matmul",
    "matmul",
    _matmul_infer,
    lambda args, attrs, env: np.matmul(*args),
    fusion=_matmul_fusion,
)


# -- gradients -------------------------------------------------------------------------------
@grad_rule("matmul")
def _matmul_grad(xs, out, g, attrs):
    # Work on the 2-d (or batched) forms: a 1-d left operand is a row, a 1-d right one a column.
    a, b = xs
    a2 = a.reshape(1, *a.shape) if a.ndim == 1 else a
    b2 = b.reshape(*b.shape, 1) if b.ndim == 1 else b
    g2 = g.reshape(*matmul_shape(a2.shape, b2.shape))
    grad_a = sum_to(g2 @ b2.mT, a2.shape).reshape(*a.shape)
    grad_b = sum_to(a2.mT @ g2, b2.shape).reshape(*b.shape)
    return [grad_a, grad_b]
