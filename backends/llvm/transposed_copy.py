"""Copies that transpose (transposes.transposed_copy) in square blocks: LANES rows by LANES
columns are read as LANES vectors down the rows, where the source is contiguous, transposed in
registers and written as LANES row vectors. Element by element, the loop vectoriser built
each row vector from LANES scalar inserts, a cycle or more per element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.transposes import TILE_COLUMNS, TransposedCopy, transposed_copy
from graphc.backends.llvm.expressions import I64, memory_type
from graphc.backends.llvm.register_blocks import transpose_block
from graphc.dtypes import DType

# A block's row is one 256-bit vector (8 floats, 4 doubles); a tile is two blocks of rows, so
# its rows fill each 64-byte line they read.
BLOCK_BYTES = 32
# Lines this many bytes apart share an L1 set (32 KiB, 8 ways).
ALIASING_BYTES = 4096


class LoopEmitter(Protocol):
    """What the blocks need of a loop kernel's emitter (kernels.FunctionEmitter)."""

    builder: ir.IRBuilder
    args: dict[str, Any]

    def pointer(self, buffer: str) -> ir.Value: ...

    def counted(self, start, end, carried, body, name: str) -> list[ir.Value]: ...


def block_copy(
    kernel: k.LoopKernel, dtypes: dict[str, DType], canonical: Callable[[str], str]
) -> TransposedCopy | None:
    """Return the transposed copy a kernel makes if it can run in blocks: elements of 4 or 8
    bytes, copied unchanged into a buffer that is not the source's (`canonical` names the
    buffer a buffer shares its memory with)."""
    if len(kernel.stores) != 1:
        return None
    store = kernel.stores[0]
    dtype = dtypes[store.buffer]
    if dtype.itemsize not in (4, 8):
        return None
    copy = transposed_copy(kernel, BLOCK_BYTES // dtype.itemsize)
    if copy is None or copy.source.dtype != dtype:
        return None
    if canonical(copy.source.buffer) == canonical(store.buffer):
        return None
    return copy


def emit_transposed_copy(
    fe: LoopEmitter,
    kernel: k.LoopKernel,
    copy: TransposedCopy,
    rows: tuple[ir.Value, ir.Value],
    source_offset: Callable[[ir.Value], ir.Value],
    elementwise: Callable[[tuple[ir.Value, ir.Value]], None],
) -> None:
    """Emit this call's rows [first, end) of a transposed copy: its whole rows in whole
    blocks, and the rows before and after them (parts of rows at the range's ends) by
    `elementwise`. source_offset(row) is where the source element of a row's column 0 is."""
    b = fe.builder
    first_row, end_row = rows
    lanes = BLOCK_BYTES // copy.source.dtype.itemsize
    width = _width(kernel)
    first_whole = _divide(b, b.add(fe.args["lo"], _const(width - 1)), width)
    start = _smaller(b, _divide(b, b.add(first_whole, _const(lanes - 1)), lanes, lanes), end_row)
    stop = _larger(b, _divide(b, fe.args["hi"], width * lanes, lanes), start)
    elementwise((first_row, start))
    _emit_blocks(fe, kernel, copy, (start, stop), source_offset)
    elementwise((stop, end_row))


def _emit_blocks(
    fe: LoopEmitter,
    kernel: k.LoopKernel,
    copy: TransposedCopy,
    rows: tuple[ir.Value, ir.Value],
    source_offset: Callable[[ir.Value], ir.Value],
) -> None:
    """Emit the whole rows [start, stop) (multiples of LANES) in tiles of two blocks of rows
    by TILE_COLUMNS columns, each tile's columns in blocks and the last few one at a time."""
    b = fe.builder
    start, stop = rows
    width, step = _width(kernel), copy.step
    itemsize = copy.source.dtype.itemsize
    lanes = BLOCK_BYTES // itemsize
    vector = ir.VectorType(memory_type(copy.source.dtype), lanes)
    source, target = fe.pointer(copy.source.buffer), fe.pointer(kernel.stores[0].buffer)

    def element(pointer: ir.Value, offset: ir.Value) -> ir.Value:
        return b.gep(pointer, [offset], inbounds=True)

    def vector_at(pointer: ir.Value, offset: ir.Value) -> ir.Value:
        return b.bitcast(element(pointer, offset), vector.as_pointer())

    def columns(blocks: list[tuple[ir.Value, ir.Value]], left: int) -> None:
        """Copy columns [left, left + TILE_COLUMNS) of blocks of rows (top row, its source
        offset), all blocks of rows for a block of columns before the next, so the LANES
        lines a block of columns reads are used up before the next ones are read."""
        right = min(left + TILE_COLUMNS, width)
        whole = left + (right - left) // lanes * lanes

        def block(index: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            column = b.mul(index, _const(lanes), name="block_column")
            for top, base in blocks:
                down = []
                for j in range(lanes):
                    at = b.add(base, b.mul(b.add(column, _const(j)), _const(step)))
                    down.append(b.load(vector_at(source, at), align=itemsize))
                for i, row in enumerate(transpose_block(b, down)):
                    at = b.add(b.mul(b.add(top, _const(i)), _const(width)), column)
                    b.store(row, vector_at(target, at), align=itemsize)
            return []

        def single(column: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            for top, base in blocks:
                for i in range(lanes):
                    at = b.add(b.add(base, _const(i)), b.mul(column, _const(step)))
                    out = b.add(b.mul(b.add(top, _const(i)), _const(width)), column)
                    value = b.load(element(source, at), align=itemsize)
                    b.store(value, element(target, out), align=itemsize)
            return []

        fe.counted(_const(left // lanes), _const(whole // lanes), [], block, "column_block")
        fe.counted(_const(whole), _const(right), [], single, "last_columns")

    # A tile's blocks of rows go block of columns by block of columns, so the source lines
    # they share are used up while held (1024^2 f32: 0.81 -> 0.52 ms against one block of
    # rows after the other), except where the output's rows are a multiple of 4 KiB apart and
    # the source's lines are not: 16 rows written a piece at a time then share an L1 set, and
    # one block of rows at a time keeps them to 8 ((8, 32, 32, 64) f32 NHWC -> NCHW, rows of
    # 4 KiB: 0.21-0.23 ms block of columns by block, 0.15-0.21 one block of rows at a time, on
    # a VM whose speed drifted; Zen 3, 32 KiB 8-way L1).
    row_bytes, step_bytes = width * itemsize, step * itemsize
    rows_first = row_bytes % ALIASING_BYTES == 0 and step_bytes % ALIASING_BYTES != 0

    def tile(tops: list[ir.Value]) -> None:
        blocks = [(top, source_offset(top)) for top in tops]
        for left in range(0, width, TILE_COLUMNS):
            for group in [[block] for block in blocks] if rows_first else [blocks]:
                columns(group, left)

    def pair(index: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        top = b.add(start, b.mul(index, _const(2 * lanes)), name="tile_top")
        tile([top, b.add(top, _const(lanes))])
        return []

    pairs = _divide(b, b.sub(stop, start), 2 * lanes)
    fe.counted(_const(0), pairs, [], pair, "row_tile")
    last = b.add(start, b.mul(pairs, _const(2 * lanes)), name="last_block")
    with b.if_then(b.icmp_signed("<", last, stop)):
        tile([last])


def _width(kernel: k.LoopKernel) -> int:
    """Return the constant length of a transposed copy's rows (transposes.reads_across_rows)."""
    row = kernel.domain[-1]
    assert isinstance(row, k.IConst)
    return row.value


def _const(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def _divide(b: ir.IRBuilder, x: ir.Value, divisor: int, multiple: int = 1) -> ir.Value:
    """Return (x // divisor) * multiple for x >= 0."""
    quotient = b.sdiv(x, _const(divisor))
    return b.mul(quotient, _const(multiple)) if multiple != 1 else quotient


def _smaller(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _larger(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)
