"""Run a kernel over its work range, on the calling thread or split into chunks over the
thread pool (thread_pool.py) when the work is large enough to pay for waking workers."""

from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir

from graphc.backends.llvm.expressions import I8, I32, I64
from graphc.backends.llvm.kernels import KERNEL_TYPE, FunctionEmitter
from graphc.backends.llvm.runtime_library import parallel_declaration

# Below this much work (elements times a cost estimate) a kernel stays on the calling thread:
# waking a second thread costs more than it saves on small steps.
PARALLEL_THRESHOLD = 1 << 20
# The same inside a loop's body (gc.scan). Its kernels run back to back, step after step, so
# the pool's workers are awake from the step's matmuls and a split costs no wake-up: an LSTM
# step's gate and cell kernels (32 x 1024 elements) are split there. LSTM Adam step at 2
# threads, paired runs: 34.9-36.8 -> 32.7-34.2 ms (outside loops 2^20 stays: the MLP step
# at batch 16 got 5-10% slower when its kernels were split at 2^16).
LOOP_PARALLEL_THRESHOLD = 1 << 16
# A matmul's work is its flops, which run several to a cycle: outside loops it splits from
# 2^19. The digits CNN's convolution (8 x 9 @ 9 x 4608, 11 us on one thread) then splits:
# inference at batch 64 on 2 threads, Zen 3, both compiled in one process, 41.6 -> 37.3 us;
# the MLP, CNN, LSTM and Transformer steps and the MNIST models within noise.
MATMUL_PARALLEL_THRESHOLD = 1 << 19
# Chunks per thread: more let the caller take over a late worker's share; fewer repeat less
# per-chunk work.
CHUNKS_PER_THREAD = 4
# Chunks are a multiple of this many elements, so vector loops stay whole (kernels with
# reductions split in whole rows or single elements instead, see kernels.loop_split).
CHUNK_GRAIN = 64
# The grain of a matmul whose range is shorter than CHUNK_GRAIN.
SHORT_GRAIN = 8
# The record each chunk reads: table, sizes, error, work range, kernel, chunk size.
RECORD_TYPE = ir.LiteralStructType(
    [
        I8.as_pointer().as_pointer(),
        I64.as_pointer(),
        I64.as_pointer(),
        I64,
        KERNEL_TYPE.as_pointer(),
        I64,
    ]
)
_RUN_ARGS = (
    "kernel",
    "table",
    "sizes",
    "error",
    "total",
    "amount",
    "threshold",
    "threads",
    "chunks",
    "grain",
)


class Work(NamedTuple):
    """A kernel's work range [0, total), its cost per element, whether each chunk of the
    range repeats work (a matmul packs one operand whole in every chunk: all of B for a block
    of rows, all of A for a block of columns), and the multiple chunks are made of."""

    total: ir.Value
    cost: ir.Value | int
    repeats_per_chunk: bool = False
    grain: ir.Value | int = CHUNK_GRAIN


def chunk_task(module: ir.Module) -> ir.Function:
    """Return `void graphc_chunk(i8* record, i64 chunk, i64 thread)`: run the kernel over
    chunk number `chunk` of the record's work range."""
    name = "graphc_chunk"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8.as_pointer(), I64, I64]), name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    record = b.bitcast(fn.args[0], RECORD_TYPE.as_pointer())
    table, sizes, error, total, kernel, size = (
        b.load(b.gep(record, [ir.Constant(I32, 0), ir.Constant(I32, i)])) for i in range(6)
    )
    lo = b.mul(fn.args[1], size)
    hi = b.add(lo, size)
    hi = b.select(b.icmp_signed("<", hi, total), hi, total)
    b.call(kernel, [table, sizes, error, lo, hi, fn.args[2]])
    b.ret_void()
    return fn


def emit_run(
    entry: FunctionEmitter,
    function: ir.Function,
    work: Work,
    threads: ir.Value | None,
    table: ir.Value,
    sizes: ir.Value,
    error: ir.Value,
    in_loop: bool = False,
) -> None:
    """Call function over its work range; when threads is given and total * cost reaches
    PARALLEL_THRESHOLD (LOOP_PARALLEL_THRESHOLD in a loop's body), hand it to the pool in
    chunks (through the module's one `graphc_run`, so a call site is one call, not a copy of
    the split)."""
    b = entry.builder
    total, cost, repeats_per_chunk, grain = work
    if threads is None or (isinstance(cost, int) and cost == 0):
        zero = ir.Constant(I64, 0)
        b.call(function, [table, sizes, error, zero, total, zero])
        return
    amount = b.mul(total, _value(cost))
    threshold = _value(_threshold(in_loop, matmul=repeats_per_chunk))
    chunks, grain = _value(CHUNKS_PER_THREAD), _value(grain)
    if repeats_per_chunk:
        chunks, grain = _matmul_split(b, total, threads)
    b.call(
        run_task(entry.ctx.module),
        [function, table, sizes, error, total, amount, threshold, threads, chunks, grain],
    )


def _threshold(in_loop: bool, matmul: bool) -> int:
    """Return the work from which a kernel splits over threads."""
    if in_loop:
        return LOOP_PARALLEL_THRESHOLD
    return MATMUL_PARALLEL_THRESHOLD if matmul else PARALLEL_THRESHOLD


def _value(value: ir.Value | int) -> ir.Value:
    """Return an i64 value: an int as a constant."""
    return ir.Constant(I64, value) if isinstance(value, int) else value


def _matmul_split(b: ir.IRBuilder, total: ir.Value, threads: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Return the chunks per thread and the grain of work that repeats per chunk (a matmul's
    packing): one chunk per thread where the range has two grains per thread, so one chunk
    each stays even (on 2 threads this took an LSTM training step from 36.6 to 32.6 ms, a
    Transformer block's from 23.2 to 19.7, and 32 x 1024 @ 1024 x 256 from 95 to 82 us);
    one chunk per thread of SHORT_GRAIN rows or columns where the range is shorter than one
    grain (a convolution's weight gradient, 16 x 9 over a depth of 100k, ran on one thread);
    else CHUNKS_PER_THREAD (144 columns split 64 + 64 + 16, not 128 + 16)."""
    grain = ir.Constant(I64, CHUNK_GRAIN)
    long_range = b.icmp_signed(">=", total, b.mul(threads, ir.Constant(I64, 2 * CHUNK_GRAIN)))
    short_range = b.icmp_signed("<", total, grain)
    one_each = b.or_(long_range, short_range)
    chunks = b.select(one_each, ir.Constant(I64, 1), ir.Constant(I64, CHUNKS_PER_THREAD))
    return chunks, b.select(short_range, ir.Constant(I64, SHORT_GRAIN), grain)


def run_task(module: ir.Module) -> ir.Function:
    """Return `void graphc_run(kernel, table, sizes, error, total, amount, threshold,
    threads, chunks, grain)`: run the kernel over [0, total) on this thread, or over the pool
    in `chunks` chunks per thread, each a multiple of `grain` elements, when `amount` (its
    work times a cost per element) reaches `threshold` and there is more than one thread.
    Kept out of line: inlined, it would repeat the split at every kernel's call."""
    name = "graphc_run"
    if name in module.globals:
        return module.globals[name]
    arguments = [KERNEL_TYPE.as_pointer(), *KERNEL_TYPE.args[:3], *[I64] * 6]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), arguments), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for arg, label in zip(fn.args, _RUN_ARGS, strict=True):
        arg.name = label
    kernel, table, sizes, error, total, amount, threshold, threads, chunks_per_thread, grain = (
        fn.args
    )
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    big = b.icmp_signed(">=", amount, threshold)
    wide = b.and_(big, b.icmp_signed(">", threads, ir.Constant(I64, 1)))
    with b.if_else(wide) as (pooled, alone):
        with pooled:
            size = _chunk_size(b, total, b.mul(threads, chunks_per_thread), grain)
            chunks = b.sdiv(b.add(total, b.sub(size, ir.Constant(I64, 1))), size)
            record = b.alloca(RECORD_TYPE)
            fields = (table, sizes, error, total, kernel, size)
            for position, value in enumerate(fields):
                b.store(value, b.gep(record, [ir.Constant(I32, 0), ir.Constant(I32, position)]))
            b.call(
                parallel_declaration(module),
                [chunk_task(module), b.bitcast(record, I8.as_pointer()), chunks, threads],
            )
        with alone:
            zero = ir.Constant(I64, 0)
            b.call(kernel, [table, sizes, error, zero, total, zero])
    b.ret_void()
    return fn


def _chunk_size(b: ir.IRBuilder, total: ir.Value, pieces: ir.Value, grain: ir.Value) -> ir.Value:
    """Return ceil(total / pieces) rounded up to a multiple of grain."""
    one = ir.Constant(I64, 1)
    size = b.sdiv(b.add(total, b.sub(pieces, one)), pieces)
    return b.mul(b.sdiv(b.add(size, b.sub(grain, one)), grain), grain)
