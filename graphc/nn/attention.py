"""Scaled dot-product attention (torch.nn.functional.scaled_dot_product_attention) and the
pieces nn.MultiheadAttention shares with it: the causal mask and the attention core.

Masks follow PyTorch: a bool mask says which keys a query may attend to (True: it may), a
float mask is added to the scores. A query that may attend to no key gets zero weights and a
zero output, as torch's scaled_dot_product_attention gives (a plain softmax would give NaN).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import graphc as gc
from graphc.dims import Dim, same_dims
from graphc.nn._checks import (
    dtype_error,
    float_arg,
    graph_error,
    shape_error,
    shape_text,
    tensor_arg,
)
from graphc.nn.pointwise import dropout
from graphc.tensor import Tensor


def causal_mask(target: Dim, source: Dim) -> Tensor:
    """Return the bool (target, source) mask of `is_causal`: query i may attend to keys j <= i
    (the lower triangle, aligned at the top left as in PyTorch)."""
    return gc.arange(target).unsqueeze(1) >= gc.arange(source)


def _safe_softmax(scores: Tensor) -> Tensor:
    """Return softmax over the last dim, with zeros for a row that is -inf throughout."""
    peak = gc.stop_gradient(scores.amax(-1, keepdim=True))
    exp = (scores - gc.where(peak == -math.inf, 0.0, peak)).exp()
    total = exp.sum(-1, keepdim=True)
    return exp / gc.where(total == 0, 1.0, total)


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scale: float,
    drop: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (output, weights): weights = softmax(query @ key^T * scale, masked by a bool
    mask or plus a float one), dropped by `drop` if given, and output = weights @ value."""
    scores = (query @ key.mT) * scale
    if mask is not None:
        scores = gc.where(mask, scores, -math.inf) if mask.dtype == gc.bool else scores + mask
    weights = _safe_softmax(scores)
    if drop is not None:
        weights = drop(weights)
    return weights @ value, weights


def check_mask(mask: object, scores: Tensor, role: str) -> Tensor:
    """Return mask as a bool or float Tensor, or raise naming the role and its dtype."""
    m = tensor_arg(mask, role)
    if m.dtype != gc.bool and not m.dtype.is_float:
        raise dtype_error(f"{role} must be bool or floating point, got {m!r}")
    return m if m.dtype == gc.bool else m.to(scores.dtype)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Return softmax(query @ key^T * scale + mask) @ value for query (..., L, E), key
    (..., S, E) and value (..., S, Ev): shape (..., L, Ev).

    attn_mask broadcasts to (..., L, S): bool (True where a query may attend to a key) or
    float (added to the scores). is_causal applies `causal_mask(L, S)` instead (the two
    cannot be combined, as in PyTorch). scale defaults to 1 / sqrt(E). dropout_p drops
    attention weights; without a step to advance it, a compiled Function draws the same mask
    on every call (nn.MultiheadAttention draws a fresh one).
    """
    q = float_arg(query, "scaled_dot_product_attention: the query")
    k = float_arg(key, "scaled_dot_product_attention: the key")
    v = float_arg(value, "scaled_dot_product_attention: the value")
    if (
        min(q.ndim, k.ndim, v.ndim) < 2
        or not same_dims(q.shape[-1:], k.shape[-1:])
        or not same_dims(k.shape[-2:-1], v.shape[-2:-1])
    ):
        raise shape_error(
            "scaled_dot_product_attention: needs query (..., L, E), key (..., S, E) and value "
            f"(..., S, Ev), got {shape_text(q.shape)}, {shape_text(k.shape)} and "
            f"{shape_text(v.shape)}"
        )
    if scale is None:
        if not isinstance(q.shape[-1], int):
            raise shape_error("scaled_dot_product_attention: a symbolic E needs a given scale")
        scale = 1 / math.sqrt(q.shape[-1])
    mask = None
    if is_causal:
        if attn_mask is not None:
            raise graph_error(
                "scaled_dot_product_attention: give attn_mask or is_causal=True, not both"
            )
        mask = causal_mask(q.shape[-2], k.shape[-2])
    elif attn_mask is not None:
        mask = check_mask(attn_mask, q, "scaled_dot_product_attention: attn_mask")
    drop = functools.partial(dropout, p=dropout_p) if dropout_p else None
    output, _ = attend(q, k, v, mask, scale, drop)
    return output
