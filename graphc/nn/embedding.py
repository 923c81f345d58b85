"""Embedding: a lookup table of vectors indexed by integer ids."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn._checks import graph_error
from graphc.nn.linear import new_parameter
from graphc.nn.module import Module, Parameter
from graphc.tensor import Tensor


class Embedding(Module):
    """Rows of weight (num_embeddings, embedding_dim) looked up by integer indices.

    The padding_idx row starts at zero and receives no gradient, as in PyTorch.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        _weight: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise graph_error(
                    f"Embedding: padding_idx {padding_idx} must be within num_embeddings "
                    f"{num_embeddings}"
                )
            padding_idx %= num_embeddings
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = new_parameter(self, "weight", (num_embeddings, embedding_dim))
            self.reset_parameters()
        else:
            # A given table (from_pretrained) is kept as it is, with its padding row, and no
            # initial values are drawn, as in PyTorch.
            self.weight = Parameter(_weight, name=self.variable_name("weight"))

    def reset_parameters(self) -> None:
        """Draw the weight from N(0, 1) and zero the padding row."""
        init.normal_(self.weight)
        if self.padding_idx is not None:
            value = self.weight.numpy()
            value[self.padding_idx] = 0
            self.weight.assign(value)

    @classmethod
    def from_pretrained(
        cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None
    ) -> Embedding:
        """Return an Embedding holding a copy of the (num_embeddings, embedding_dim) table.

        The table is a numpy array or a graphc tensor (evaluated now); a float table keeps its
        dtype, another becomes float32. With freeze (the default) the weight is not trained:
        it gets no gradient and optimizers leave it alone. As in PyTorch, the padding_idx row
        keeps its values and gets no gradient.
        """
        table = embeddings.numpy() if isinstance(embeddings, Tensor) else np.array(embeddings)
        if table.dtype.kind != "f":
            table = table.astype(np.float32)
        if table.ndim != 2:
            raise graph_error(
                f"Embedding.from_pretrained: needs a 2-d table, got shape {table.shape}"
            )
        module = cls(table.shape[0], table.shape[1], padding_idx, _weight=table)
        module.weight.requires_grad_(not freeze)
        return module

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return the rows at the indices in input: shape input.shape + (embedding_dim,)."""
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text
