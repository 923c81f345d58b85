"""graphc.nn.utils.rnn: packed sequences (torch.nn.utils.rnn) for nn.RNN, nn.LSTM and nn.GRU.

A batch of right-padded sequences of different lengths, packed, gives each sequence the
outputs and final states it would get alone. torch stores a PackedSequence as the valid steps
of every sequence, sorted by length, in one ragged run; a static graph cannot have a shape that
depends on the lengths' values, so graphc's PackedSequence holds the padded data, time-major,
and the lengths, an int64 tensor that may be fed at call time. The recurrent layers mask each
step by the lengths (`PackedSequence.mask`): a sequence's carry stops changing after its last
step and its outputs there are zero. Sorting is a detail of torch's storage that this layout
does not need: `enforce_sorted` only decides, as in torch, whether constant lengths that are
not in decreasing order raise; lengths that are graph tensors are taken in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import graphc as gc
from graphc.dims import Dim, dims_equal, same_dims
from graphc.nn._checks import (
    dtype_error,
    graph_error,
    shape_error,
    shape_text,
    tensor_arg,
)
from graphc.tensor import Tensor


@dataclass(frozen=True, slots=True, eq=False)
class PackedSequence:
    """A batch of sequences of different lengths: `data` (T, B, *), padded and time-major
    whatever the batch_first of the call that made it, and `lengths` (B,) int64, each
    sequence's number of valid steps. Steps at t >= length are padding, whatever data holds
    there. Made by `pack_padded_sequence` and by a recurrent layer given one."""

    data: Tensor
    lengths: Tensor

    def mask(self, steps: Dim | None = None) -> Tensor:
        """Return (steps, B) bool, whether step t of sequence b is one of its valid steps
        (t < lengths[b]); steps defaults to data's leading dim."""
        steps = self.data.shape[0] if steps is None else steps
        return gc.arange(steps).unsqueeze(1) < self.lengths.unsqueeze(0)


def pack_padded_sequence(
    input: Tensor,  # noqa: A002 - PyTorch's name
    lengths: Tensor | Sequence[int] | np.ndarray,
    batch_first: bool = False,
    enforce_sorted: bool = True,
) -> PackedSequence:
    """Return the sequences of a padded batch, input (T, B, *) or with batch_first (B, T, *),
    with their lengths, for a recurrent layer, as torch.nn.utils.rnn.pack_padded_sequence.

    lengths is a list or array of ints (checked now: each in [1, T], in decreasing order
    unless enforce_sorted is False) or an integer graph tensor of shape (B,), which may be fed
    at call time and is taken as is (a length above T counts as T).
    """
    x = tensor_arg(input, "pack_padded_sequence: the input")
    if x.ndim < 2:
        raise shape_error(
            f"pack_padded_sequence expects an input (T, B, *) or with batch_first (B, T, *), got "
            f"shape {shape_text(x.shape)}"
        )
    if batch_first:
        x = x.transpose(0, 1)
    return PackedSequence(x, _lengths(lengths, x.shape[0], x.shape[1], enforce_sorted))


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (padded, lengths) for a PackedSequence, as torch.nn.utils.rnn.pad_packed_sequence:
    padded is (T, B, *), or (B, T, *) with batch_first, with padding_value at every step past a
    sequence's length.

    T is the padded length the sequence was packed with, not max(lengths) as in torch (the two
    agree when the longest sequence fills the batch), or total_length, which must be at least
    the padded length."""
    if not isinstance(sequence, PackedSequence):
        raise graph_error(
            f"pad_packed_sequence expects a PackedSequence, got {type(sequence).__name__}"
        )
    data = sequence.data
    steps = data.shape[0]
    if total_length is not None and not dims_equal(total_length, steps):
        if isinstance(steps, int) and total_length < steps:
            raise shape_error(
                f"pad_packed_sequence: total_length={total_length} is shorter than the padded "
                f"length {steps} of the sequence"
            )
        # With a symbolic padded length, padding then cutting gives a static total_length.
        fill = gc.full((total_length, *data.shape[1:]), padding_value, dtype=data.dtype)
        data = gc.cat([data, fill], dim=0)[:total_length]
    mask = sequence.mask(data.shape[0])
    for _ in range(data.ndim - 2):
        mask = mask.unsqueeze(-1)
    padded = gc.where(mask, data, gc.tensor(padding_value, dtype=data.dtype))
    return (padded.transpose(0, 1) if batch_first else padded), sequence.lengths


def _lengths(lengths: Any, steps: Dim, batch: Dim, enforce_sorted: bool) -> Tensor:
    """Return lengths as an int64 tensor (B,), checked against the padded length and the
    batch as far as their values are known."""
    if isinstance(lengths, Tensor):
        given = lengths
        values = None
    else:
        values = np.asarray(lengths)
        if values.dtype.kind not in "iu":
            raise dtype_error(
                f"pack_padded_sequence: lengths must be integers, got {values.dtype} values"
            )
        given = gc.tensor(values.astype(np.int64))
    if not given.dtype.is_int:
        raise dtype_error(f"pack_padded_sequence: lengths must be integers, got {given!r}")
    if not same_dims(given.shape, (batch,)):
        hint = (
            "; with a symbolic batch, feed the lengths as an input of shape (B,)"
            if values is not None and not isinstance(batch, int)
            else ""
        )
        raise shape_error(
            f"pack_padded_sequence: lengths must have shape (B,) = {shape_text((batch,))}, one "
            f"per sequence of the batch, got shape {shape_text(given.shape)}{hint}"
        )
    if values is not None:
        if values.size and values.min() < 1:
            raise shape_error(
                f"pack_padded_sequence: every length must be at least 1, got {values.tolist()}"
            )
        if isinstance(steps, int) and values.size and values.max() > steps:
            raise shape_error(
                f"pack_padded_sequence: lengths {values.tolist()} exceed the padded length "
                f"{steps} of the input"
            )
        if enforce_sorted and np.any(np.diff(values) > 0):
            raise graph_error(
                f"pack_padded_sequence: lengths {values.tolist()} must be in decreasing order "
                "when enforce_sorted is True; pass enforce_sorted=False for any order"
            )
    return given.long()
