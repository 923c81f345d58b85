"""Converters of ONNX's recurrent layers RNN, GRU and LSTM: one gc.scan per direction, so the
sequence length may stay symbolic and one compiled Function serves every length.

ONNX stacks the gate blocks of W (input weights), R (recurrent weights) and B (W's bias, then
R's) in its own orders, LSTM i, o, f, c and GRU z, r, h, which differ from PyTorch's; each
step below reads them in ONNX's order. Every step's input product is one matmul before the
loop; the loop computes the recurrent product. A reverse direction scans from the last step
to the first and gives its outputs at the steps' own positions, as ONNX's Y does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import graphc as gc
from graphc.dims import dims_equal
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_math import UNARY

Activation = Callable[[gc.Tensor], gc.Tensor]
Carry = tuple[gc.Tensor, ...]

# The activations without alpha or beta, which are ONNX ops of the same name.
_ACTIVATIONS = ("Relu", "Tanh", "Sigmoid", "Softsign", "Softplus")


@dataclass(frozen=True, slots=True)
class _Direction:
    """One direction's weights, with ONNX's gate blocks along the last dim: `w` (input, G*H)
    and `r` (H, G*H) transposed for x @ w, the input bias `wb` and recurrent bias `rb`
    (G*H,) or None, the peepholes `p` (LSTM's i, o, f; 3*H) or None, and the activations."""

    w: gc.Tensor
    r: gc.Tensor
    wb: gc.Tensor | None
    rb: gc.Tensor | None
    p: gc.Tensor | None
    acts: tuple[Activation, ...]


Step = Callable[[_Direction, Carry, gc.Tensor], Carry]


def _rnn_step(d: _Direction, carry: Carry, x_part: gc.Tensor) -> Carry:
    """H = f(x W^T + Wb + H R^T + Rb)."""
    (h,) = carry
    return (d.acts[0](x_part + _with_bias(h @ d.r, d.rb)),)


def _lstm_step(d: _Direction, carry: Carry, x_part: gc.Tensor) -> Carry:
    """(H, C) from the gates i, o, f, c, with the peepholes P (i, o, f) on the cell state."""
    f_act, g_act, h_act = d.acts
    h, c = carry
    i, o, f, c_in = gc.chunk(x_part + _with_bias(h @ d.r, d.rb), 4, dim=-1)
    if d.p is not None:
        p_i, p_o, p_f = gc.chunk(d.p, 3, dim=-1)
        i, f = i + p_i * c, f + p_f * c
    c = f_act(f) * c + f_act(i) * g_act(c_in)
    if d.p is not None:
        o = o + p_o * c
    return f_act(o) * h_act(c), c


def _gru_step(linear_before_reset: bool) -> Step:
    """Return the GRU step: gates z, r, h; the reset gate scales H before the recurrent
    product of h, or (linear_before_reset) that product and its bias."""

    def step(d: _Direction, carry: Carry, x_part: gc.Tensor) -> Carry:
        f_act, g_act = d.acts
        (h,) = carry
        size = h.shape[-1]
        x_z, x_r, x_h = gc.chunk(x_part, 3, dim=-1)
        r_zr, r_h = d.r[:, : 2 * size], d.r[:, 2 * size :]
        rb_zr, rb_h = (None, None) if d.rb is None else (d.rb[: 2 * size], d.rb[2 * size :])
        h_z, h_r = gc.chunk(_with_bias(h @ r_zr, rb_zr), 2, dim=-1)
        z = f_act(x_z + h_z)
        r = f_act(x_r + h_r)
        if linear_before_reset:
            recurrent = r * _with_bias(h @ r_h, rb_h)
        else:
            recurrent = _with_bias((r * h) @ r_h, rb_h)
        candidate = g_act(x_h + recurrent)
        return ((1 - z) * candidate + z * h,)

    return step


def _with_bias(x: gc.Tensor, bias: gc.Tensor | None) -> gc.Tensor:
    return x if bias is None else x + bias


# op: (gate blocks, states in the carry, default activations per direction)
_KINDS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "RNN": (1, 1, ("Tanh",)),
    "GRU": (3, 1, ("Sigmoid", "Tanh")),
    "LSTM": (4, 2, ("Sigmoid", "Tanh", "Tanh")),
}


@converter("RNN", "GRU", "LSTM")
def recurrent(node: NodeContext) -> list[gc.Tensor]:
    """Y (every step's H of each direction), Y_h (the last H) and, for LSTM, Y_c (the last
    C); layout 1 puts the batch dim first in X, the initial states and the results."""
    gates, states, default_acts = _KINDS[node.op]
    direction = node.require(
        "direction", ("forward", "reverse", "bidirectional"), "forward", "an ONNX direction"
    )
    layout = node.require("layout", (0, 1), 0, "0 or 1")
    _refuse_options(node)
    count = 2 if direction == "bidirectional" else 1
    x = node.tensor(0)
    if layout:
        x = x.transpose(0, 1)
    w, r = node.tensor(1), node.tensor(2)
    size = r.shape[-1]
    if node.attr("hidden_size") not in (None, size):
        raise node.error(f"hidden_size={node.attr('hidden_size')} but R has {size} columns")
    _check_sequence_lens(node, x)
    acts = _activations(node, default_acts, count)
    if node.op == "GRU":
        step = _gru_step(bool(node.require("linear_before_reset", (0, 1), 0, "0 or 1")))
    else:
        step = _lstm_step if node.op == "LSTM" else _rnn_step
    initial = [_initial_state(node, index, layout) for index in (5, 6)[:states]]
    bias, peepholes = node.optional(3), node.optional(7) if node.op == "LSTM" else None
    finals, ys = [], []
    for k in range(count):
        d = _Direction(
            w=w[k].T,
            r=r[k].T,
            wb=None if bias is None else bias[k][: gates * size],
            rb=None if bias is None else bias[k][gates * size :],
            p=None if peepholes is None else peepholes[k],
            acts=acts[k],
        )
        batch = x.shape[1]
        start = tuple(
            gc.zeros((batch, size), dtype=x.dtype) if h is None else h[k] for h in initial
        )
        carry, every = _scan(step, d, x, start, reverse=direction == "reverse" or k == 1)
        finals.append(carry)
        ys.append(every)
    y = gc.stack(ys, dim=1)
    last = [gc.stack([carry[i] for carry in finals], dim=0) for i in range(states)]
    if layout:
        return [y.permute(2, 0, 1, 3), *(s.transpose(0, 1) for s in last)]
    return [y, *last]


def _scan(
    step: Step, d: _Direction, x: gc.Tensor, start: Carry, reverse: bool
) -> tuple[Carry, gc.Tensor]:
    """Return the last carry and every step's H of one direction over x (seq, batch, in)."""
    projected = (x.reshape(-1, x.shape[2]) @ d.w).reshape(x.shape[0], x.shape[1], -1)
    projected = _with_bias(projected, d.wb)

    def body(carry: Carry, x_part: gc.Tensor) -> tuple[Carry, gc.Tensor]:
        carry = step(d, carry, x_part)
        return carry, carry[0]

    carry, every = gc.scan(body, start, projected, reverse=reverse)
    return tuple(carry), every


def _refuse_options(node: NodeContext) -> None:
    """Raise for the options graphc does not implement: clip, parameterised activations and
    LSTM's coupled input and forget gates."""
    for name in ("clip", "activation_alpha", "activation_beta"):
        if node.attr(name) is not None:
            raise node.unsupported(name, node.attr(name), "not implemented")
    if node.op == "LSTM":
        node.require("input_forget", (0,), 0, "only 0: coupled gates are not implemented")


def _activations(
    node: NodeContext, defaults: Sequence[str], count: int
) -> list[tuple[Activation, ...]]:
    """Return each direction's activations, from `activations` or ONNX's defaults."""
    names = node.attr("activations") or list(defaults) * count
    if len(names) != len(defaults) * count:
        raise node.error(f"activations={names} needs {len(defaults)} per direction")
    known = {name.lower(): name for name in _ACTIVATIONS}
    functions = []
    for name in names:
        if name.lower() not in known:
            raise node.unsupported("activations", names, f"each one of {', '.join(_ACTIVATIONS)}")
        functions.append(UNARY[known[name.lower()]])
    per = len(defaults)
    return [tuple(functions[k * per : (k + 1) * per]) for k in range(count)]


def _initial_state(node: NodeContext, index: int, layout: int) -> gc.Tensor | None:
    """Return initial_h or initial_c as (directions, batch, H), or None where not given."""
    state = node.optional(index)
    return state.transpose(0, 1) if state is not None and layout else state


def _check_sequence_lens(node: NodeContext, x: gc.Tensor) -> None:
    """Refuse sequence_lens unless every length is the whole sequence: graphc's scan runs
    every batch entry for all the steps."""
    lengths = node.static(4, "sequence_lens, which graphc needs to equal the sequence length")
    if lengths is None:
        return
    steps = x.shape[0]
    if not all(dims_equal(int(n) if isinstance(n, np.integer) else n, steps) for n in lengths):
        raise node.error(
            f"sequence_lens {lengths.tolist()} differ from the sequence length {steps}: graphc "
            "runs every batch entry for the whole sequence (per-entry lengths are not supported)"
        )
