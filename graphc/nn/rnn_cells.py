"""The recurrent steps of RNN, LSTM and GRU, and the one-step modules RNNCell, LSTMCell and
GRUCell (as in torch.nn) built on them.

A step is a pure function of (carry, projected input, recurrent product) giving the next
carry: the carry is a tuple whose first item is the hidden state h (LSTM's is (h, c)), the
projected input is `x W_ih^T + b_ih` and the recurrent product `h W_hh^T + b_hh`. nn.RNN,
nn.LSTM and nn.GRU (`nn/rnn.py`) run the same steps inside gc.scan. Which step a layer takes,
and how many gate blocks its weights stack, is its kind (`ElmanKind`, `LSTMKind`,
`GRUKind`), shared by the sequence layer and the cell of that kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import graphc as gc
from graphc.dims import same_dims
from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn._checks import float_arg, graph_error, shape_error, shape_text
from graphc.nn.linear import new_parameter
from graphc.nn.module import Module
from graphc.tensor import Tensor

Carry = tuple[Tensor, ...]
Cell = Callable[[Carry, Tensor, Tensor], Carry]


def _elman_cell(act: Callable[[Tensor], Tensor]) -> Cell:
    """Return the Elman step h = act(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def cell(carry: Carry, projected: Tensor, recurrent: Tensor) -> Carry:
        return (act(projected + recurrent),)

    return cell


def _lstm_cell(carry: Carry, projected: Tensor, recurrent: Tensor) -> Carry:
    """Return the LSTM step (h, c) from the gates i, f, g, o (torch.nn.LSTM's equations)."""
    _, c = carry
    i, f, g, o = gc.chunk(projected + recurrent, 4, dim=-1)
    c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
    return gc.sigmoid(o) * gc.tanh(c), c


def _gru_cell(carry: Carry, projected: Tensor, recurrent: Tensor) -> Carry:
    """Return the GRU step h from the gates r, z, n (torch.nn.GRU's equations): the reset
    gate scales the recurrent product of n including its bias b_hn, so the two products stay
    apart until then."""
    (h,) = carry
    x_r, x_z, x_n = gc.chunk(projected, 3, dim=-1)
    h_r, h_z, h_n = gc.chunk(recurrent, 3, dim=-1)
    r = gc.sigmoid(x_r + h_r)
    z = gc.sigmoid(x_z + h_z)
    n = gc.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)


def recurrent_step(
    cell: Cell, carry: Carry, projected: Tensor, w_hh: Tensor, b_hh: Tensor | None
) -> Carry:
    """Return the next carry: cell on the projected input and h W_hh^T + b_hh."""
    recurrent = carry[0] @ w_hh.T
    return cell(carry, projected, recurrent if b_hh is None else recurrent + b_hh)


class RecurrentWeights(Module):
    """The weights of a recurrent module: `weight_ih{suffix}` (gates * hidden_size, width),
    `weight_hh{suffix}` (gates * hidden_size, hidden_size) and, with bias, `bias_ih{suffix}`
    and `bias_hh{suffix}`, drawn as PyTorch draws them. A kind sets `gates` (how many blocks
    of hidden_size rows the weights stack), `states` (how many tensors a carry holds) and
    `cell()`."""

    gates = 1
    states = 1

    def __init__(self, hidden_size: int, bias: bool) -> None:
        super().__init__()
        if hidden_size < 1:
            raise graph_error(
                f"{type(self).__name__}: hidden_size must be positive, got {hidden_size}"
            )
        self.hidden_size = hidden_size
        self.bias = bias

    def add_weights(self, suffix: str, width: int) -> None:
        """Add the weights (and biases) of one layer and direction, for inputs of width."""
        rows = self.gates * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (rows, width),
            "weight_hh": (rows, self.hidden_size),
        }
        if self.bias:
            shapes.update(bias_ih=(rows,), bias_hh=(rows,))
        for name, shape in shapes.items():
            self.register_parameter(name + suffix, new_parameter(self, name + suffix, shape))

    def weights(self, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Return (W_ih, W_hh, b_ih, b_hh) of one layer and direction (biases None without)."""
        w_ih, w_hh = getattr(self, f"weight_ih{suffix}"), getattr(self, f"weight_hh{suffix}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih{suffix}"), getattr(self, f"bias_hh{suffix}")

    def reset_parameters(self) -> None:
        """Draw every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), PyTorch's
        default."""
        bound = 1 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            init.uniform_(parameter, -bound, bound)

    def cell(self) -> Cell:
        """Return the step function of this kind."""
        raise NotImplementedError

    def initial_carry(
        self, hx: Sequence[Tensor] | None, expected: tuple, unbatched_dim: int | None, dtype: Any
    ) -> list[Tensor]:
        """Return the initial states: hx's tensors checked against the expected shape (with
        unbatched_dim inserted first when the input is unbatched), or zeros of dtype."""
        if hx is None:
            return [gc.zeros(expected, dtype=dtype)] * self.states
        states = []
        for position, state in enumerate(hx):
            what = "hx" + (f"[{position}]" if self.states > 1 else "")
            given = float_arg(state, f"{type(self).__name__}: {what}")
            h = given if unbatched_dim is None else given.unsqueeze(unbatched_dim)
            if not same_dims(h.shape, expected):
                raise shape_error(
                    f"{self!r} expects {what} of shape {shape_text(expected)}, got "
                    f"{shape_text(given.shape)}"
                )
            states.append(h)
        return states


_ACTIVATIONS = {"tanh": gc.tanh, "relu": gc.relu}


class ElmanKind(RecurrentWeights):
    """The Elman kind (RNN, RNNCell): one gate block, the state h, a tanh or relu step."""

    nonlinearity = "tanh"

    def set_nonlinearity(self, nonlinearity: str) -> None:
        """Keep the nonlinearity, or raise for one PyTorch does not have."""
        if nonlinearity not in _ACTIVATIONS:
            raise graph_error(
                f"{type(self).__name__}: unknown nonlinearity {nonlinearity!r}; use 'tanh' or "
                "'relu'"
            )
        self.nonlinearity = nonlinearity

    def cell(self) -> Cell:
        """Return the Elman step with this module's nonlinearity."""
        return _elman_cell(_ACTIVATIONS[self.nonlinearity])

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, the nonlinearity when it is not tanh."""
        text = super().extra_repr()
        if self.nonlinearity != "tanh":
            text += f", nonlinearity={self.nonlinearity!r}"
        return text


class LSTMKind(RecurrentWeights):
    """The LSTM kind: gate blocks i, f, g, o and the state (h, c)."""

    gates = 4
    states = 2

    def cell(self) -> Cell:
        """Return the LSTM step."""
        return _lstm_cell


class GRUKind(RecurrentWeights):
    """The GRU kind: gate blocks r, z, n and the state h."""

    gates = 3

    def cell(self) -> Cell:
        """Return the GRU step."""
        return _gru_cell


class _CellBase(RecurrentWeights):
    """One step of a recurrent kind on input (N, input_size) or unbatched (input_size,)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(hidden_size, bias)
        self.input_size = input_size
        self.add_weights("", input_size)
        self.reset_parameters()

    def _step(self, input: Tensor, hx: Sequence[Tensor] | None) -> Carry:  # noqa: A002
        """Return the next carry for input and the states hx (zeros if None)."""
        x = float_arg(input, f"{type(self).__name__}: the input")
        unbatched = x.ndim == 1
        batch = x.unsqueeze(0) if unbatched else x
        if batch.ndim != 2 or not same_dims(batch.shape[1:], (self.input_size,)):
            raise shape_error(
                f"{self!r} expects an input (N, {self.input_size}) or ({self.input_size},), "
                f"got shape {shape_text(x.shape)}"
            )
        expected = (batch.shape[0], self.hidden_size)
        carry = tuple(self.initial_carry(hx, expected, 0 if unbatched else None, batch.dtype))
        w_ih, w_hh, b_ih, b_hh = self.weights("")
        carry = recurrent_step(self.cell(), carry, F.linear(batch, w_ih, b_ih), w_hh, b_hh)
        return tuple(state.squeeze(0) for state in carry) if unbatched else carry

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(ElmanKind, _CellBase):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), one step, as torch.nn.RNNCell."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.set_nonlinearity(nonlinearity)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        """Return h' for input (N, input_size) and h (N, hidden_size) (zeros if None)."""
        (h,) = self._step(input, None if hx is None else (hx,))
        return h


class LSTMCell(LSTMKind, _CellBase):
    """One LSTM step, as torch.nn.LSTMCell: forward(input, (h, c)) returns (h', c')."""

    def forward(
        self,
        input: Tensor,  # noqa: A002
        hx: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Return (h', c') for input (N, input_size) and hx = (h, c) (zeros if None)."""
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise graph_error(f"LSTMCell: hx must be a pair (h, c), got {type(hx).__name__}")
        h, c = self._step(input, hx)
        return h, c


class GRUCell(GRUKind, _CellBase):
    """One GRU step, as torch.nn.GRUCell: forward(input, h) returns h'."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        """Return h' for input (N, input_size) and h (N, hidden_size) (zeros if None)."""
        (h,) = self._step(input, None if hx is None else (hx,))
        return h
