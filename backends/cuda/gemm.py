"""A tiled shared-memory GEMM for MatmulKernel: f32 and f64, batched, strided operands, with
the matmul's epilogue applied to each element as it is stored.

Each block computes a 64x64 tile of the output (grid-stride over the batch's tiles): its 256
threads each hold a 4x4 accumulator (rows ty + 16 r, columns tx + 16 c, so stores and shared
reads are consecutive across a warp). The K dim goes by in steps of 16: all threads copy the
next 64x16 slice of A and 16x64 slice of B into shared memory, wait at a barrier, and multiply
out of it. Slices alternate between two buffers (counting steps over all the block's tiles), so
the copy of step t + 1 never overwrites what a slow thread still reads in step t, and one
barrier per step is enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.cuda.dialect import Slot
from graphc.backends.cuda.kernel_function import KernelFunction, bind_indices, product
from graphc.backends.cuda.loops import OpenLoop
from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I64, Scope, declare, register_type
from graphc.dtypes import float32, float64
from graphc.errors import CompileError

TILE = 64  # output rows and columns per block
DEPTH = 16  # K elements per step
THREAD_TILE = 4  # rows and columns each thread accumulates
BLOCK = (TILE // THREAD_TILE) ** 2
SIDE = TILE // THREAD_TILE  # threads along a tile's side


def _i(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


@dataclass(frozen=True)
class _Tile:
    """The uniform values every phase of a tile reads (emitted outside thread regions)."""

    m: ir.Value
    n: ir.Value
    depth: ir.Value
    a_strides: tuple[ir.Value, ir.Value]  # between rows, between columns
    b_strides: tuple[ir.Value, ir.Value]
    matrix: ir.Value  # the tile's matrix in the batch
    row0: ir.Value
    col0: ir.Value
    a_base: ir.Value  # the offset of the matrix's first element in A
    b_base: ir.Value
    epilogue_extents: list[ir.Value]
    scope: Scope
    a_runs: tuple[ir.Value, ir.Value] | None  # A's depth runs' length and stride, if in runs
    a_row_runs: tuple[ir.Value, ir.Value] | None  # A's row runs' length and stride, if in runs


def emit_gemm(kf: KernelFunction, kernel: k.MatmulKernel) -> None:
    """Emit the tiled GEMM of a (batched) matmul and its epilogue."""
    if kernel.dtype not in (float32, float64):
        raise CompileError(
            f"{kernel.name}: the CUDA backend multiplies float32 and float64 matrices, "
            f"not {kernel.dtype.name}"
        )
    if kf.block != BLOCK:
        raise CompileError(f"{kernel.name}: the GEMM needs blocks of {BLOCK} threads")
    d, b, index = kf.dialect, kf.builder, kf.expr.index
    ty = register_type(kernel.dtype)
    uniform = Scope()
    m, n, depth = (index(x, uniform) for x in (kernel.m, kernel.n, kernel.k))
    a_strides = tuple(index(x, uniform) for x in kernel.a.strides[-2:])
    b_strides = tuple(index(x, uniform) for x in kernel.b.strides[-2:])
    batch = [index(x, uniform) for x in kernel.batch]
    epilogue = kernel.epilogue.domain if kernel.epilogue is not None else ()
    extents = [index(x, uniform) for x in epilogue]
    tiles_n = b.sdiv(b.add(n, _i(TILE - 1)), _i(TILE))
    per_matrix = b.mul(b.sdiv(b.add(m, _i(TILE - 1)), _i(TILE)), tiles_n)
    steps = b.sdiv(b.add(depth, _i(DEPTH - 1)), _i(DEPTH))
    a_tiles = d.shared(ty, 2 * DEPTH * TILE, "a_tiles")
    b_tiles = d.shared(ty, 2 * DEPTH * TILE, "b_tiles")
    accumulators = [d.private(ty, f"acc{i}") for i in range(THREAD_TILE * THREAD_TILE)]

    count = b.mul(product(b, batch), per_matrix)
    tiles = OpenLoop(b, d.block_index(), count, d.grid_size(), "tile", [_i(0)])
    matrix = b.sdiv(tiles.index, per_matrix, name="matrix")
    within = b.srem(tiles.index, per_matrix)
    row0 = b.mul(b.sdiv(within, tiles_n), _i(TILE), name="row0")
    col0 = b.mul(b.srem(within, tiles_n), _i(TILE), name="col0")
    scope = uniform.child()
    a_base, b_base = _batch_offsets(kf, kernel, batch, matrix, scope)
    runs, row_runs = (
        None if found is None else (index(found.length, uniform), index(found.stride, uniform))
        for found in (kernel.a_depth_runs, kernel.a_row_runs)
    )
    tile = _Tile(
        m,
        n,
        depth,
        a_strides,
        b_strides,
        matrix,
        row0,
        col0,
        a_base,
        b_base,
        extents,
        scope,
        runs,
        row_runs,
    )
    with d.threads():
        for slot in accumulators:
            d.set(slot, ir.Constant(ty, 0.0))
    step = OpenLoop(b, _i(0), steps, 1, "step")
    k0 = b.mul(step.index, _i(DEPTH), name="k0")
    # Counted over the block's tiles too: the first step of a tile fills the buffer that its
    # previous tile's last step did not read.
    parity = b.and_(b.add(b.mul(tiles.carried[0], steps), step.index), _i(1))
    half = b.mul(parity, _i(DEPTH * TILE), name="half")
    buffers = b.gep(a_tiles, [half]), b.gep(b_tiles, [half])
    with d.threads():
        _copy_slices(kf, kernel, tile, k0, buffers)
        d.barrier()
        _multiply(kf, kernel, accumulators, buffers)
    step.close()
    with d.threads():
        _store_tile(kf, kernel, tile, accumulators)
    tiles.close([b.add(tiles.carried[0], _i(1))])


def _batch_offsets(
    kf: KernelFunction,
    kernel: k.MatmulKernel,
    batch: list[ir.Value],
    matrix: ir.Value,
    scope: Scope,
) -> list[ir.Value]:
    """Return the element offsets of the matrix-th A and B matrices of the batch."""
    b, index = kf.builder, kf.expr.index
    positions = [k.Var(f"batch{i}") for i in range(len(batch))]
    bind_indices(b, scope, positions, batch, matrix)
    offsets = []
    for operand in (kernel.a, kernel.b):
        offset = index(operand.offset, scope)
        for position, stride in zip(positions, operand.strides[:-2], strict=True):
            offset = b.add(offset, b.mul(scope.values[position], index(stride, scope)))
        offsets.append(offset)
    return offsets


def _copy_slices(
    kf: KernelFunction,
    kernel: k.MatmulKernel,
    tile: _Tile,
    k0: ir.Value,
    buffers: tuple[ir.Value, ir.Value],
) -> None:
    """Copy this step's A slice (64 rows x 16) and B slice (16 x 64 columns) into shared
    memory, zeros outside the matrices; A goes in transposed, so both are read by k."""
    d, b = kf.dialect, kf.builder
    zero = ir.Constant(register_type(kernel.dtype), 0.0)

    def along(position, stride, runs) -> ir.Value:
        """Return the offset of a row or column, `runs` (length, stride) apart if in runs."""
        if runs is None:
            return b.mul(position, stride)
        length, run_stride = runs
        run, within = b.sdiv(position, length), b.srem(position, length)
        return b.add(b.mul(within, stride), b.mul(run, run_stride))

    def copy(pointer, base, strides, row, column, inside, target, runs=(None, None)) -> None:
        places = zip((row, column), strides, runs, strict=True)
        at_row, at_column = (along(*place) for place in places)
        offset = b.add(base, b.add(at_row, at_column))
        # An element outside reads the matrix's first instead (always there), then is zeroed.
        value = b.load(b.gep(pointer, [b.select(inside, offset, base)]))
        b.store(b.select(inside, value, zero), target)

    for part in range(DEPTH * TILE // BLOCK):
        element = b.add(d.thread_index(), _i(part * BLOCK))
        row, kk = b.lshr(element, _i(4)), b.and_(element, _i(DEPTH - 1))
        i, k_a = b.add(tile.row0, row), b.add(k0, kk)
        inside = b.and_(b.icmp_signed("<", i, tile.m), b.icmp_signed("<", k_a, tile.depth))
        target = b.gep(buffers[0], [b.add(b.mul(kk, _i(TILE)), row)])
        copy(
            kf.pointer(kernel.a.buffer),
            tile.a_base,
            tile.a_strides,
            i,
            k_a,
            inside,
            target,
            (tile.a_row_runs, tile.a_runs),
        )
        kk, column = b.lshr(element, _i(6)), b.and_(element, _i(TILE - 1))
        k_b, j = b.add(k0, kk), b.add(tile.col0, column)
        inside = b.and_(b.icmp_signed("<", k_b, tile.depth), b.icmp_signed("<", j, tile.n))
        target = b.gep(buffers[1], [b.add(b.mul(kk, _i(TILE)), column)])
        copy(kf.pointer(kernel.b.buffer), tile.b_base, tile.b_strides, k_b, j, inside, target)


def _thread_position(kf: KernelFunction) -> tuple[ir.Value, ir.Value]:
    """Return the thread's (column, row) among the tile's 16 x 16 threads."""
    b, tid = kf.builder, kf.dialect.thread_index()
    return b.and_(tid, _i(SIDE - 1)), b.lshr(tid, _i(4))


def _multiply(
    kf: KernelFunction,
    kernel: k.MatmulKernel,
    accumulators: list[Slot],
    buffers: tuple[ir.Value, ir.Value],
) -> None:
    """Add this step's products to the thread's accumulators."""
    d, b = kf.dialect, kf.builder
    ty = register_type(kernel.dtype)
    fma = declare(kf.emitter.ctx.module, f"llvm.fma.{kernel.dtype.short}", ty, [ty] * 3)
    tx, ty_ = _thread_position(kf)
    sums = [d.get(slot) for slot in accumulators]
    for kk in range(DEPTH):
        rows = [
            b.load(b.gep(buffers[0], [b.add(ty_, _i(kk * TILE + SIDE * r))]))
            for r in range(THREAD_TILE)
        ]
        columns = [
            b.load(b.gep(buffers[1], [b.add(tx, _i(kk * TILE + SIDE * c))]))
            for c in range(THREAD_TILE)
        ]
        pairs = [(a, c) for a in rows for c in columns]
        sums = [b.call(fma, [a, c, s]) for (a, c), s in zip(pairs, sums, strict=True)]
    for slot, value in zip(accumulators, sums, strict=True):
        d.set(slot, value)


def _store_tile(
    kf: KernelFunction, kernel: k.MatmulKernel, tile: _Tile, accumulators: list[Slot]
) -> None:
    """Store the thread's accumulators inside the output, each followed by the epilogue's
    stores at that element (which may read it)."""
    d, b = kf.dialect, kf.builder
    tx, ty_ = _thread_position(kf)
    base = b.mul(tile.matrix, b.mul(tile.m, tile.n))
    for r in range(THREAD_TILE):
        i = b.add(tile.row0, b.add(ty_, _i(SIDE * r)))
        for c in range(THREAD_TILE):
            j = b.add(tile.col0, b.add(tx, _i(SIDE * c)))
            inside = b.and_(b.icmp_signed("<", i, tile.m), b.icmp_signed("<", j, tile.n))
            with b.if_then(inside):
                flat = b.add(base, b.add(b.mul(i, tile.n), j))
                kf.store(kernel.out, flat, d.get(accumulators[r * THREAD_TILE + c]))
                if kernel.epilogue is None:
                    continue
                scope = tile.scope.child()
                bind_indices(b, scope, kernel.epilogue.vars, tile.epilogue_extents, flat)
                for store in kernel.epilogue.stores:
                    kf.store(store.buffer, flat, kf.expr.value(store.value, scope))
