"""MultiheadAttention and the Transformer's encoder and decoder layers and stacks, as in
torch.nn.

Parameter names and layouts are PyTorch's (`in_proj_weight` (3*E, E) holding the query, key
and value projections, `in_proj_bias`, `out_proj`; `self_attn`, `multihead_attn`, `linear1`,
`linear2`, `norm1`... in a layer; `layers.0...` in a stack), so torch's state dicts load as
they are. Attention itself is nn.attention's core, shared with
F.scaled_dot_product_attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import graphc as gc
from graphc.dims import dims_equal, same_dims
from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn._checks import float_arg, graph_error, shape_error, shape_text
from graphc.nn.attention import attend, causal_mask, check_mask
from graphc.nn.containers import ModuleList
from graphc.nn.dropout import Dropout
from graphc.nn.linear import Linear, new_parameter
from graphc.nn.module import Module
from graphc.nn.norm import LayerNorm
from graphc.tensor import Tensor


class MultiheadAttention(Module):
    """Attention with num_heads heads over embed_dim features, as torch.nn.MultiheadAttention
    (without kdim/vdim, add_bias_kv and add_zero_attn).

    query (L, N, E), key and value (S, N, E), or batch-first (N, L, E), or unbatched (L, E).
    Each head attends with its own slice of the projected features; the heads' outputs are
    concatenated and projected by out_proj.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise graph_error(
                f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads "
                f"{num_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.in_proj_weight = new_parameter(self, "in_proj_weight", (3 * embed_dim, embed_dim))
        if bias:
            self.in_proj_bias = new_parameter(self, "in_proj_bias", (3 * embed_dim,))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        if self.dropout:
            self.weight_dropout = Dropout(self.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw PyTorch's initial values: a Xavier-uniform in_proj_weight, zero biases."""
        init.xavier_uniform_(self.in_proj_weight)
        for bias in (self.in_proj_bias, self.out_proj.bias):
            if bias is not None:
                init.zeros_(bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Return (output, weights): output shaped like query, weights (N, L, S) averaged over
        the heads, or (N, num_heads, L, S), or None without need_weights. A query whose keys
        are all masked gets zero weights (torch gives zeros without need_weights, NaN with).

        key_padding_mask (N, S): True (or -inf) for a key to ignore. attn_mask (L, S) or
        (N * num_heads, L, S): True (or -inf) where a query may not attend to a key; float
        masks are added to the scores. is_causal without attn_mask masks the future keys
        (with one, attn_mask is taken to be causal, as PyTorch takes it).
        """
        given = [
            float_arg(t, f"MultiheadAttention: the {role}")
            for t, role in ((query, "query"), (key, "key"), (value, "value"))
        ]
        unbatched = given[0].ndim == 2
        if unbatched:
            q, k, v = (t.unsqueeze(0) for t in given)
        else:
            q, k, v = (t if self.batch_first else t.transpose(0, 1) for t in given)
        self._check_inputs(q, k, v, given[0])
        q_heads, k_heads, v_heads = (self._heads(x) for x in self._project(q, k, v))
        mask = self._mask(q_heads, k_heads, key_padding_mask, attn_mask, is_causal, unbatched)
        drop = self.weight_dropout if self.dropout else None
        scale = 1 / math.sqrt(self.head_dim)
        output, weights = attend(q_heads, k_heads, v_heads, mask, scale, drop)
        batch, length = q.shape[0], q.shape[1]
        output = self.out_proj(output.transpose(1, 2).reshape(batch, length, self.embed_dim))
        if unbatched:
            output = output.squeeze(0)
        elif not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        if average_attn_weights:
            weights = weights.mean(1)
        return output, weights.squeeze(0) if unbatched else weights

    def _check_inputs(self, q: Tensor, k: Tensor, v: Tensor, query: Tensor) -> None:
        """Raise unless q, k and v are (N, L or S, E) with one N and k and v of one S."""
        fits = all(t.ndim == 3 and same_dims(t.shape[2:], (self.embed_dim,)) for t in (q, k, v))
        if not (
            fits and same_dims(k.shape[:2], v.shape[:2]) and dims_equal(q.shape[0], k.shape[0])
        ):
            layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
            raise shape_error(
                f"{self!r} expects query, key and value {layout} or (L, E) with "
                f"E={self.embed_dim}, key and value of one length; got query "
                f"{shape_text(query.shape)}, key {shape_text(k.shape)}, value "
                f"{shape_text(v.shape)} (in (N, S, E) order)"
            )

    def _project(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the query, key and value projections (N, L or S, E)."""
        if q.node is k.node and k.node is v.node:
            # Self-attention: one product for the three projections.
            projected = F.linear(q, self.in_proj_weight, self.in_proj_bias)
            return tuple(gc.chunk(projected, 3, dim=-1))  # type: ignore[return-value]
        weights = gc.chunk(self.in_proj_weight, 3, dim=0)
        biases = [None] * 3 if self.in_proj_bias is None else gc.chunk(self.in_proj_bias, 3)
        return tuple(  # type: ignore[return-value]
            F.linear(x, w, b) for x, w, b in zip((q, k, v), weights, biases, strict=True)
        )

    def _heads(self, x: Tensor) -> Tensor:
        """Return (N, T, E) split into heads: (N, num_heads, T, head_dim)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(
        self,
        q: Tensor,
        k: Tensor,
        key_padding_mask: Any,
        attn_mask: Any,
        is_causal: bool,
        unbatched: bool,
    ) -> Tensor | None:
        """Return the float mask added to the (N, num_heads, L, S) scores, or None."""
        mask = None
        if attn_mask is not None:
            mask = _additive(check_mask(attn_mask, q, "MultiheadAttention: attn_mask"), q)
            if mask.ndim == 3:
                mask = mask.reshape(-1, self.num_heads, mask.shape[1], mask.shape[2])
        elif is_causal:
            mask = _additive(~causal_mask(q.shape[2], k.shape[2]), q)
        if key_padding_mask is not None:
            role = "MultiheadAttention: key_padding_mask"
            padding = _additive(check_mask(key_padding_mask, q, role), q)
            if unbatched:
                padding = padding.unsqueeze(0)
            padding = padding.unsqueeze(1).unsqueeze(1)
            mask = padding if mask is None else mask + padding
        return mask

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr."""
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}"
        )


def _additive(mask: Tensor, scores: Tensor) -> Tensor:
    """Return a mask as scores to add, in the scores' dtype: a bool mask (True: masked out)
    as -inf and 0."""
    if mask.dtype != gc.bool:
        return mask
    return gc.where(mask, -math.inf, 0.0).to(scores.dtype)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: their sub-modules in torch's order
    (`self_attn`, the decoder's `multihead_attn`, `linear1`, `dropout`, `linear2`, then
    `norm1`... and `dropout1`... one per block), the feed-forward block and the residual
    connection around each block, normalised after the sum or, with norm_first, before the
    block. `blocks` counts the blocks: self-attention, (cross-attention,) feed-forward."""

    blocks = 2

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(activation, str) and activation not in _ACTIVATIONS:
            raise graph_error(
                f"{type(self).__name__}: activation must be 'relu', 'gelu' or a function, got "
                f"{activation!r}"
            )
        # The arguments, so a TransformerEncoder or TransformerDecoder can build copies.
        self.arguments: dict[str, Any] = {
            "d_model": d_model,
            "nhead": nhead,
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
            "activation": activation,
            "layer_norm_eps": layer_norm_eps,
            "batch_first": batch_first,
            "norm_first": norm_first,
            "bias": bias,
        }
        for name in ("self_attn", "multihead_attn")[: self.blocks - 1]:
            attention = MultiheadAttention(
                d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first
            )
            self.add_module(name, attention)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        for block in range(1, self.blocks + 1):
            self.add_module(f"norm{block}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        for block in range(1, self.blocks + 1):
            self.add_module(f"dropout{block}", Dropout(dropout))
        self.activation = _ACTIVATIONS[activation] if isinstance(activation, str) else activation

    def _residual(self, x: Tensor, block: int, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """Return x plus the block's dropped-out result, with the block's layer norm."""
        norm, drop = getattr(self, f"norm{block}"), getattr(self, f"dropout{block}")
        if self.norm_first:
            return x + drop(compute(norm(x)))
        return norm(x + drop(compute(x)))

    @staticmethod
    def _attend(
        attention: MultiheadAttention,
        x: Tensor,
        memory: Tensor,
        mask: Tensor | None,
        padding: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        output, _ = attention(
            x,
            memory,
            memory,
            key_padding_mask=padding,
            need_weights=False,
            attn_mask=mask,
            is_causal=is_causal,
        )
        return output

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention and a feed-forward block, each with a residual connection and layer
    norm (after the residual, or before the block with norm_first), as
    torch.nn.TransformerEncoderLayer."""

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Return the layer's output for src, shaped like it. src_mask and
        src_key_padding_mask are MultiheadAttention's attn_mask and key_padding_mask;
        is_causal without src_mask masks the future positions."""
        x = self._residual(
            src,
            1,
            lambda x: self._attend(self.self_attn, x, x, src_mask, src_key_padding_mask, is_causal),
        )
        return self._residual(x, 2, self._feed_forward)


class TransformerDecoderLayer(_TransformerLayer):
    """Self-attention over the target, attention to the encoder's output (memory) and a
    feed-forward block, each with a residual connection and layer norm, as
    torch.nn.TransformerDecoderLayer."""

    blocks = 3

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Return the layer's output for tgt, shaped like it; the masks are those of the
        self-attention (tgt_...) and of the attention to memory (memory_...)."""
        x = self._residual(
            tgt,
            1,
            lambda x: self._attend(
                self.self_attn, x, x, tgt_mask, tgt_key_padding_mask, tgt_is_causal
            ),
        )
        x = self._residual(
            x,
            2,
            lambda x: self._attend(
                self.multihead_attn,
                x,
                memory,
                memory_mask,
                memory_key_padding_mask,
                memory_is_causal,
            ),
        )
        return self._residual(x, 3, self._feed_forward)


def _copies(layer: _TransformerLayer, kind: type[_TransformerLayer], count: int) -> ModuleList:
    """Return count new layers built with layer's arguments, each starting from its weights
    and in its mode, as PyTorch's deep copies of the layer start."""
    if type(layer) is not kind:
        stack = kind.__name__.removesuffix("Layer")
        raise graph_error(f"{stack}: needs a {kind.__name__}, got {type(layer).__name__}")
    state = layer.state_dict()
    copies = []
    for _ in range(count):
        copy = kind(**layer.arguments)
        copy.load_state_dict(state)
        copies.append(copy.train(layer.training))
    return ModuleList(copies)


class TransformerEncoder(Module):
    """num_layers copies of an encoder layer, applied in turn, then an optional norm."""

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: Module | None = None,
    ) -> None:
        super().__init__()
        self.layers = _copies(encoder_layer, TransformerEncoderLayer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        """Return src through every layer (and the norm), with the same masks in each."""
        x = src
        for layer in self.layers:
            x = layer(x, mask, src_key_padding_mask, bool(is_causal))
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """num_layers copies of a decoder layer, applied in turn, then an optional norm."""

    def __init__(
        self,
        decoder_layer: TransformerDecoderLayer,
        num_layers: int,
        norm: Module | None = None,
    ) -> None:
        super().__init__()
        self.layers = _copies(decoder_layer, TransformerDecoderLayer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """Return tgt through every layer (and the norm), each attending to memory."""
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask,
                memory_mask,
                tgt_key_padding_mask,
                memory_key_padding_mask,
                bool(tgt_is_causal),
                memory_is_causal,
            )
        return x if self.norm is None else self.norm(x)
