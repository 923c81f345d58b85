"""Emit a collective (`CollectiveKernel`) as a call of the MPI library's `MPI_Allreduce`.

The call goes to the library mpi4py loaded, so graphc and the user's own mpi4py calls share
one MPI: `register_collectives` looks `MPI_Allreduce` up in it with ctypes and registers its
address under `graphc_MPI_Allreduce`, as the GEMM library's functions are registered. The
handles the call takes (the communicator, the datatype, the reduction) are values of the
process, not of the code: in MPICH they are integers, in Open MPI addresses. They live in a
table registered as `graphc_mpi_handles`, which the kernel reads when it runs, so the compiled
code holds no handle and modules cached on disk serve every process.

`MPI_Allreduce(send, recv, count, datatype, op, comm)` is declared with 64-bit handle
arguments: an MPI library whose handles are 32-bit `int`s (MPICH's ABI) reads the low half of
the register, which is the handle. Its `count` is an `int`, so a buffer of 2^31 elements or
more is reduced in pieces of 2^30. The call runs on the calling thread, without Python (the
native call released the GIL); the kernel returns when every process has contributed, so a
process that never arrives holds the others there until the MPI launcher ends the job (see
docs/architecture.md, "Data parallelism over MPI").
"""

from __future__ import annotations

import ctypes
import threading

from llvmlite import binding as llvm
from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I8, I64, Scope
from graphc.backends.llvm.kernels import FunctionEmitter, KernelContext
from graphc.errors import CompileError
from graphc.ops.collectives import world

ALLREDUCE_NAME = "graphc_MPI_Allreduce"
HANDLES_NAME = "graphc_mpi_handles"
# The handles table: the communicator, a datatype per dtype, a reduction per op.
_DATATYPES = {"f32": "FLOAT", "f64": "DOUBLE", "i32": "INT32_T", "i64": "INT64_T"}
_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}
_SLOTS = {
    name: position
    for position, name in enumerate(["comm", *_DATATYPES, *(f"op_{op}" for op in _OPS)])
}
_PIECE = 1 << 30
_ARGS = ("table", "sizes", "error", "threads")

_lock = threading.Lock()
# The world whose handles are registered, and every table registered so far: a module
# already loaded keeps reading the table it was linked against.
_registered: dict[str, object] = {}
_tables: list[ctypes.Array] = []


def emit_collective_kernel(
    ctx: KernelContext, caller: FunctionEmitter, kernel: k.CollectiveKernel
) -> ir.Function:
    """Return the function running the collective, of the caller's type (table, sizes, error,
    threads), which the entry point calls on its own thread."""
    if kernel.dtype.short not in _DATATYPES:
        raise CompileError(f"{kernel.name}: all_reduce has no MPI datatype for {kernel.dtype}")
    fe = FunctionEmitter(ctx, kernel.name, caller.function.function_type, _ARGS)
    b = fe.builder
    module = ctx.module
    i8_pointer = I8.as_pointer()
    allreduce = module.globals.get(ALLREDUCE_NAME)
    if allreduce is None:
        signature = ir.FunctionType(
            ir.IntType(32), [i8_pointer, i8_pointer, ir.IntType(32), I64, I64, I64]
        )
        allreduce = ir.Function(module, signature, ALLREDUCE_NAME)
    handles = module.globals.get(HANDLES_NAME)
    if handles is None:
        handles = ir.GlobalVariable(module, ir.ArrayType(I64, len(_SLOTS)), HANDLES_NAME)
        handles.linkage = "external"

    def handle(slot: str) -> ir.Value:
        index = [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), _SLOTS[slot])]
        return b.load(b.gep(handles, index), name=slot)

    comm, datatype = handle("comm"), handle(kernel.dtype.short)
    reduction = handle(f"op_{kernel.op}")
    source, out = fe.pointer(kernel.source), fe.pointer(kernel.out)
    count = fe.expr.index(kernel.count, Scope())

    piece_size = ir.Constant(I64, _PIECE)
    pieces = b.udiv(b.add(count, ir.Constant(I64, _PIECE - 1)), piece_size)

    def step(index: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
        offset = b.mul(index, piece_size)
        left = b.sub(count, offset)
        size = b.select(b.icmp_signed("<", left, piece_size), left, piece_size)
        send = b.bitcast(b.gep(source, [offset]), i8_pointer)
        receive = b.bitcast(b.gep(out, [offset]), i8_pointer)
        b.call(allreduce, [send, receive, b.trunc(size, ir.IntType(32)), datatype, reduction, comm])
        return []

    fe.counted(ir.Constant(I64, 0), pieces, [], step, "piece")
    b.ret_void()
    return fe.function


def register_collectives(kernels: list[k.Kernel]) -> None:
    """Register `MPI_Allreduce` and the handles table for a program with collectives; raise
    CompileError naming what is missing when no MPI world is installed."""
    if not any(isinstance(kernel, k.CollectiveKernel) for kernel in k.nested_kernels(kernels)):
        return
    current = world()
    with _lock:
        if _registered.get("comm") is current.comm:
            return
        if current.comm is None:
            raise CompileError(
                "all_reduce across processes needs an MPI world: call "
                "graphc.distributed.init() under mpiexec"
            )
        from mpi4py import MPI

        table = (ctypes.c_int64 * len(_SLOTS))()
        table[_SLOTS["comm"]] = _handle(current.comm)
        for short, name in _DATATYPES.items():
            table[_SLOTS[short]] = _handle(getattr(MPI, name))
        for op, name in _OPS.items():
            table[_SLOTS[f"op_{op}"]] = _handle(getattr(MPI, name))
        llvm.add_symbol(ALLREDUCE_NAME, _allreduce_address(MPI))
        llvm.add_symbol(HANDLES_NAME, ctypes.addressof(table))
        _tables.append(table)
        _registered["comm"] = current.comm


def _handle(mpi_object: object) -> int:
    """Return an mpi4py object's C handle as a signed 64-bit value."""
    from mpi4py import MPI

    value = MPI._handleof(mpi_object)
    return value - (1 << 64) if value >= 1 << 63 else value


def _allreduce_address(mpi_module: object) -> int:
    """Return the address of MPI_Allreduce in the MPI library mpi4py's extension loaded."""
    candidates: list[str | None] = [getattr(mpi_module, "__file__", None)]
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                mapped = line.split()[-1]
                if "/libmpi" in mapped and mapped not in candidates:
                    candidates.append(mapped)
    except OSError:
        pass
    for candidate in [*candidates, None]:  # None: what the process has loaded globally
        try:
            function = ctypes.CDLL(candidate).MPI_Allreduce
        except (OSError, AttributeError):
            continue
        return ctypes.cast(function, ctypes.c_void_p).value or 0
    raise CompileError("all_reduce: MPI_Allreduce was not found in the MPI library mpi4py loaded")
