"""Triangular parts of matrices: tril and triu (torch.tril/triu), over the last two dims of a
batch, built from a comparison of positions (arange) and where, so they differentiate as
where does and take symbolic sizes."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from graphc.creation import arange
from graphc.errors import GraphError, ShapeError, user_op
from graphc.math_ops import as_tensor, constant, where
from graphc.tensor import Tensor


def _triangle(x: Any, diagonal: Any, lower: bool) -> Tensor:
    """Return x with the elements off the chosen side of `diagonal` replaced by zeros."""
    x = as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(
            f"needs a tensor of at least 2 dims (a batch of matrices), got {x.node.type}"
        )
    if isinstance(diagonal, bool) or not isinstance(diagonal, (int, np.integer)):
        raise GraphError(f"diagonal must be an int, got {type(diagonal).__name__} {diagonal!r}")
    rows, cols = x.shape[-2:]
    # Element (i, j) lies on diagonal j - i: 0 is the main one, positive ones are above it.
    offset = arange(cols) - arange(rows).unsqueeze(1)
    keep = offset <= operator.index(diagonal) if lower else offset >= operator.index(diagonal)
    return where(keep, x, constant(0, x.dtype))


@user_op
def tril(input: Any, diagonal: int = 0) -> Tensor:  # noqa: A002 - PyTorch's name
    """Return the lower triangle of the last two dims of input: the elements on and below
    `diagonal` (0 the main diagonal, positive ones above it, negative ones below), zeros
    elsewhere."""
    return _triangle(input, diagonal, lower=True)


@user_op
def triu(input: Any, diagonal: int = 0) -> Tensor:  # noqa: A002 - PyTorch's name
    """Return the upper triangle of the last two dims of input: the elements on and above
    `diagonal` (0 the main diagonal, positive ones above it, negative ones below), zeros
    elsewhere."""
    return _triangle(input, diagonal, lower=False)
