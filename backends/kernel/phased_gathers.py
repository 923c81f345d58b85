"""Gathers along an axis by constant indices that come in phases: index[k * q + r] =
clip(q + shift_r, 0, size - 1) for every q and each phase r < k, or that plus one, clipped
again, as interpolation by an integer scale factor builds them (nearest: every shift 0;
bilinear x2: shifts -1, 0 for the lower neighbour, and its next for the upper). Such a
gather's position is index arithmetic on the output's position t, clamp(t // k +
shift_(t % k)), instead of a load of the index table and a run-time range check: in the
row, t // k is what divided_rows.py takes k elements a trip, and along an outer axis it is
computed once per row."""

from __future__ import annotations

import numpy as np

from graphc.backends.kernel.index import Index, clamp
from graphc.backends.kernel.ir import IConst, IntExpr, ISelect, iadd, ibin
from graphc.graph import Node

# The most phases (output positions per input position) written as index arithmetic.
MOST_PHASES = 4


def phase_shifts(index: np.ndarray, size: int) -> tuple[list[int], int] | None:
    """Return (shift_r, step) such that index[k * q + r] is clip(clip(q + shift_r) + step)
    (clip: into [0, size - 1]) for every q < size and r < k, step 0 or 1 (bilinear's upper
    neighbour is the lower one's next, min(low + 1, size - 1)), where index is k = 1 to
    MOST_PHASES times size long and each |shift_r| < size; else None."""
    phases, rest = divmod(len(index), size)
    if rest or not 1 <= phases <= MOST_PHASES:
        return None
    grid = index.reshape(size, phases)
    middle = size // 2
    q = np.arange(size)[:, None]
    for step in (0, 1):
        shifts = grid[middle] - middle - step
        if np.abs(shifts).max() >= size:
            continue
        expected = np.clip(np.clip(q + shifts[None, :], 0, size - 1) + step, 0, size - 1)
        if np.array_equal(grid, expected):
            return [int(shift) for shift in shifts], step
    return None


def phased_position(index: Node, at: Index, size: object) -> IntExpr | None:
    """Return the position a gather reads along its axis as index arithmetic, where its index
    is a constant that varies along one dim only and comes in phases of a static size; None
    otherwise (the gather loads the index and checks it at run time)."""
    if index.op != "constant" or not isinstance(size, int) or size < 1:
        return None
    value = np.asarray(index.attrs["value"])
    varying = [k for k, extent in enumerate(value.shape) if extent != 1]
    if len(varying) != 1 or value.dtype.kind not in "iu":
        return None
    phased = phase_shifts(value.reshape(-1).astype(np.int64), size)
    if phased is None:
        return None
    shifts, step = phased
    t = at.dims()[varying[0]]
    phases = len(shifts)
    q = ibin("div", t, IConst(phases))
    r = ibin("mod", t, IConst(phases))
    shift: IntExpr = IConst(shifts[-1])
    for phase in reversed(range(phases - 1)):
        if shifts[phase] != shifts[-1]:
            shift = ISelect(ibin("eq", r, IConst(phase)), IConst(shifts[phase]), shift)
    position = iadd(q, shift)
    if any(shifts):
        position = clamp(position, IConst(size))
    return clamp(iadd(position, IConst(step)), IConst(size)) if step else position
