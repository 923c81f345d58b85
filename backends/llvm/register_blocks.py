"""Square blocks of elements held in vector registers, one vector per row."""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm.expressions import I32


def transpose_block(irb: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Return the transpose of a square block held as one vector per row: at each stage, row
    pairs b apart swap their off-diagonal b-lane blocks (b = L/2, L/4, ..., 1)."""
    size = len(rows)
    rows = list(rows)
    step = size // 2
    while step:
        for i in range(size):
            if (i // step) % 2:
                continue
            j = i + step
            keep = [lane if (lane // step) % 2 == 0 else size + lane - step for lane in range(size)]
            take = [lane + step if (lane // step) % 2 == 0 else size + lane for lane in range(size)]
            rows[i], rows[j] = (
                irb.shuffle_vector(rows[i], rows[j], _lane_mask(keep)),
                irb.shuffle_vector(rows[i], rows[j], _lane_mask(take)),
            )
        step //= 2
    return rows


def _lane_mask(lanes: list[int]) -> ir.Constant:
    """Return a shufflevector mask picking the given lanes of the two vectors' concatenation."""
    return ir.Constant(ir.VectorType(I32, len(lanes)), lanes)
