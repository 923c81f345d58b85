"""Dropout with an in-graph random mask that changes on every call of a compiled step."""

from __future__ import annotations

import numpy as np

from graphc.nn import functional as F
from graphc.nn._checks import graph_error
from graphc.nn.module import Module
from graphc.tensor import Tensor
from graphc.variable import Variable


class Dropout(Module):
    """Zero each element with probability p in training and scale the rest by 1/(1-p);
    the identity in eval mode.

    The mask is drawn in the graph (gc.rand) at a counter offset moved by a step Variable,
    a non-persistent buffer. Each train-mode call records `step + 1` as a state update, so
    a Function compiled with `model.state_updates(loss)` (or an optimizer's minimize(loss))
    draws a fresh mask on every call.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise graph_error(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace
        step = Variable(np.int64(0), name=self.variable_name("step"), trainable=False)
        self.register_buffer("step", step, persistent=False)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input with dropout applied in training, input itself in eval mode."""
        if not self.training or self.p == 0.0:
            return F.dropout(input, self.p, training=False)
        y = F.dropout(input, self.p, training=True, step=self.step)
        self.add_state_update(self.step, lambda current: current + 1, y)
        return y

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"p={self.p}, inplace={self.inplace}"
