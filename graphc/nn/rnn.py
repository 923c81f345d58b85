"""RNN, LSTM and GRU: PyTorch's recurrent layers, one gc.scan per layer and direction.

Parameters have PyTorch's names, shapes and gate layout (`weight_ih_l0`, `weight_hh_l0`,
`bias_ih_l0`, `bias_hh_l0`, and `..._reverse` for the backward direction; the gates stacked
along the first dim in torch's order: LSTM i, f, g, o and GRU r, z, n), so torch's state dict
loads as is. The three layers share one driver (`_RNNBase`): it stacks the layers and
directions, projects every step's input with one matmul before each loop, and runs the loop
whose body is the layer kind's recurrent step (`nn/rnn_cells.py`, shared with RNNCell,
LSTMCell and GRUCell). Given a PackedSequence (`nn/utils/rnn.py`), each step updates a
sequence's state only while it is within the sequence's length.
"""

from __future__ import annotations

from collections.abc import Sequence

import graphc as gc
from graphc.dims import same_dims
from graphc.nn._checks import graph_error, shape_error, shape_text, tensor_arg
from graphc.nn.dropout import Dropout
from graphc.nn.rnn_cells import (
    Carry,
    Cell,
    ElmanKind,
    GRUKind,
    LSTMKind,
    RecurrentWeights,
    recurrent_step,
)
from graphc.nn.utils.rnn import PackedSequence
from graphc.tensor import Tensor


class _RNNBase(RecurrentWeights):
    """The driver shared by RNN, LSTM and GRU: layers, directions and the loops; the layer's
    kind (`nn/rnn_cells.py`) gives the weights' gate blocks, the carry and the step."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(hidden_size, bias)
        if num_layers < 1:
            raise graph_error(
                f"{type(self).__name__}: num_layers must be positive, got {num_layers}"
            )
        if not 0.0 <= dropout <= 1.0:
            raise graph_error(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.input_size = input_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * directions
            for suffix in self._suffixes(layer):
                self.add_weights(suffix, width)
        if self.dropout and num_layers > 1:
            self.layer_dropout = Dropout(self.dropout)
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        """Return the parameter name suffixes of a layer: forward, then backward."""
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def _run(
        self,
        input: Tensor | PackedSequence,  # noqa: A002
        hx: Sequence[Tensor] | None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, ...]]:
        """Return the top layer's output and the final states (each stacked over the layers
        and directions) for the input and the initial states hx (each stacked so; zeros if
        None). A PackedSequence input gives a PackedSequence output, and each sequence's
        states after its last valid step."""
        name = type(self).__name__
        packed = input if isinstance(input, PackedSequence) else None
        given = tensor_arg(packed.data if packed is not None else input, f"{name}: the input")
        unbatched = packed is None and given.ndim == 2
        x = given.unsqueeze(1) if unbatched else given
        if packed is None and self.batch_first and x.ndim == 3:
            x = x.transpose(0, 1)
        if x.ndim != 3 or not same_dims(x.shape[-1:], (self.input_size,)):
            expected = (
                f"a PackedSequence of data (L, N, {self.input_size})"
                if packed is not None
                else f"an input (L, N, {self.input_size}) or (L, {self.input_size})"
                f"{' with batch_first (N, L, ...)' if self.batch_first else ''}"
            )
            raise shape_error(f"{self!r} expects {expected}, got shape {shape_text(given.shape)}")
        valid = packed.mask().unsqueeze(2) if packed is not None else None
        starts = self._initial_states(x, hx, unbatched)
        cell = self.cell()
        finals: list[Carry] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout:
                x = self.layer_dropout(x)
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                start = starts[len(finals)]
                carry, every = self._loop(cell, x, suffix, start, direction == 1, valid)
                finals.append(carry)
                outputs.append(every)
            x = outputs[0] if len(outputs) == 1 else gc.cat(outputs, dim=2)
        stacked = tuple(gc.stack(list(states), dim=0) for states in zip(*finals, strict=True))
        if packed is not None:
            return PackedSequence(x, packed.lengths), stacked
        if unbatched:
            return x.squeeze(1), tuple(s.squeeze(1) for s in stacked)
        return (x.transpose(0, 1) if self.batch_first else x), stacked

    def _loop(
        self, cell: Cell, x: Tensor, suffix: str, start: Carry, reverse: bool, valid: Tensor | None
    ) -> tuple[Carry, Tensor]:
        """Return the last carry and every step's h of one layer and direction over x. With
        valid (L, N, 1) bool, a sequence's carry changes only at its valid steps, so the last
        carry is the one after its last valid step (and a reverse loop starts at that step),
        and its h is zero at the others."""
        # One 2-d product for every step, whose weight gradient is one 2-d product too (a
        # batched one would be a product per step, then a sum over the steps).
        w_ih, w_hh, b_ih, b_hh = self.weights(suffix)
        steps = (x.reshape(-1, x.shape[2]) @ w_ih.T).reshape(x.shape[0], x.shape[1], -1)
        if b_ih is not None:
            steps = steps + b_ih

        def step(carry: Carry, projected: Tensor) -> tuple[Carry, Tensor]:
            carry = recurrent_step(cell, carry, projected, w_hh, b_hh)
            return carry, carry[0]

        def masked_step(carry: Carry, xs: tuple[Tensor, Tensor]) -> tuple[Carry, Tensor]:
            projected, now = xs
            new = recurrent_step(cell, carry, projected, w_hh, b_hh)
            kept = tuple(gc.where(now, a, b) for a, b in zip(new, carry, strict=True))
            return kept, gc.where(now, new[0], gc.zeros_like(new[0]))

        if valid is None:
            return gc.scan(step, start, steps, reverse=reverse)
        return gc.scan(masked_step, start, (steps, valid), reverse=reverse)

    def _initial_states(
        self, x: Tensor, hx: Sequence[Tensor] | None, unbatched: bool
    ) -> list[Carry]:
        """Return the initial carry of each layer and direction, in h_n's order."""
        count = self.num_layers * (2 if self.bidirectional else 1)
        expected = (count, x.shape[1], self.hidden_size)
        stacked = self.initial_carry(hx, expected, 1 if unbatched else None, x.dtype)
        return [tuple(h[i] for h in stacked) for i in range(count)]

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class _HiddenStateOnly(_RNNBase):
    """A recurrent layer whose state is h alone (RNN, GRU): hx and h_n are single tensors."""

    def forward(
        self,
        input: Tensor | PackedSequence,  # noqa: A002
        hx: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Return (output, h_n) for input and the initial states hx (zeros if None); output
        is a PackedSequence when input is one."""
        output, (h_n,) = self._run(input, None if hx is None else (hx,))
        return output, h_n


class RNN(ElmanKind, _HiddenStateOnly):
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) over a sequence, as torch.nn.RNN.

    Input (L, N, input_size), or (N, L, input_size) with batch_first, or unbatched
    (L, input_size); L may be symbolic. Returns (output, h_n): every step's top-layer state
    (both directions concatenated) and each layer's and direction's last state,
    (num_layers * num_directions, N, hidden_size).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional
        )
        self.set_nonlinearity(nonlinearity)


class LSTM(LSTMKind, _RNNBase):
    """Long short-term memory over a sequence, as torch.nn.LSTM (without proj_size).

    Per step, with gates stacked i, f, g, o in W_ih (4*hidden_size, input) and W_hh:
    i, f, o = sigmoid(...), g = tanh(...), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t).
    Input as for RNN; returns (output, (h_n, c_n)).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
    ) -> None:
        if proj_size != 0:
            raise graph_error(f"LSTM: proj_size={proj_size} is not supported; use 0")
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional
        )

    def forward(
        self,
        input: Tensor | PackedSequence,  # noqa: A002
        hx: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """Return (output, (h_n, c_n)) for input and the initial states hx = (h_0, c_0)
        (zeros if None); output is a PackedSequence when input is one."""
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise graph_error(f"LSTM: hx must be a pair (h_0, c_0), got {type(hx).__name__}")
        output, (h_n, c_n) = self._run(input, hx)
        return output, (h_n, c_n)


class GRU(GRUKind, _HiddenStateOnly):
    """Gated recurrent unit over a sequence, as torch.nn.GRU.

    Per step, with gates stacked r, z, n in W_ih (3*hidden_size, input) and W_hh:
    r, z = sigmoid(x W_i^T + b_i + h W_h^T + b_h), n = tanh(x W_in^T + b_in + r * (h W_hn^T +
    b_hn)), h_t = (1 - z) * n + z * h_{t-1}. Input and results as for RNN.
    """
