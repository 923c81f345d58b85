"""graphc.nn.utils.clip_grad: gradient clipping (torch.nn.utils.clip_grad_norm_) in the graph.

PyTorch clips the `.grad` tensors in place between `backward()` and `step()`. graphc has no
`.grad` state: gradients are values of the graph (`gc.grad`), so clipping takes them and
returns the clipped values. `opt.minimize(loss, max_grad_norm=...)` applies it inside a
compiled training step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import graphc as gc
from graphc.nn._checks import graph_error
from graphc.tensor import Tensor


def _norm(x: Tensor, norm_type: float) -> Tensor:
    """Return the vector norm of every element of x (torch.linalg.vector_norm)."""
    if norm_type == math.inf:
        return x.abs().amax()
    if norm_type == 2:
        return (x * x).sum().sqrt()
    return (x.abs() ** norm_type).sum() ** (1 / norm_type)


def clip_grad_norm(
    grads: Sequence[Tensor | None], max_norm: float, norm_type: float = 2.0
) -> tuple[list[Tensor | None], Tensor]:
    """Return (the gradients scaled so their total norm is at most max_norm, the total norm
    before clipping), as torch.nn.utils.clip_grad_norm_ computes them.

    The total norm is the norm_type-norm of the gradients' norms (every element of every
    gradient as one vector; norm_type may be math.inf). Each gradient is multiplied by
    min(max_norm / (total + 1e-6), 1). None entries (parameters without a gradient) stay
    None and take no part.
    """
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise graph_error(f"clip_grad_norm: norm_type must be positive, got {norm_type}")
    present = [g for g in grads if g is not None]
    if not present:
        raise graph_error("clip_grad_norm: no gradient to clip (every entry is None)")
    total = _norm(gc.stack([_norm(g, norm_type) for g in present]), norm_type)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return [None if g is None else g * scale.to(g.dtype) for g in grads], total
