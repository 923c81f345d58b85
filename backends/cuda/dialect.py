"""How a GPU kernel generator's thread structure becomes code: on the device, or emulated.

A generator writes the code of one block of `block` threads. Uniform code (the same for every
thread of the block: the block index, loops over rows or tiles) lies outside thread regions;
inside a region (`with dialect.threads():`) code runs per thread. In a region, `barrier()`
separates phases and `shuffle_down()` passes values between the lanes of a warp. A value that
lives across a phase boundary is kept in a private slot, block-wide data in shared arrays.

DeviceDialect emits NVPTX: every thread runs the whole body, uniform code included; a barrier is
bar.sync, a shuffle shfl.sync, a slot a register, a shared array `.shared` memory.

EmulatedDialect emits host code running the grid's blocks one after another. Each phase is a
loop over the block's threads, from the last to the first, so a barrier ends one loop and starts
the next; without it a thread runs on before the others have written what it reads (block
reductions publish their result from the last warp, which therefore runs before its readers).
A shuffle ends the phase and gives each lane its partner's slot value. Slots are arrays indexed
by thread; shared arrays and slots are filled with NaN bytes when each block starts, so reading
what no thread wrote shows. A thread region ends at a uniform loop's edge, so the emulator cannot
see a barrier missing there: generators never rely on one (the GEMM double-buffers its tiles).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

from graphc.backends.cuda.loops import OpenLoop
from graphc.backends.llvm.expressions import I8, I32, I64, declare
from graphc.backends.llvm.kernels import FunctionEmitter
from graphc.errors import CompileError

WARP = 32
FULL_MASK = ir.Constant(I32, -1)
SHARED_ALIGNMENT = 16


def _element_bytes(value_type: ir.Type) -> int:
    """Return the size of a scalar LLVM type in bytes."""
    if isinstance(value_type, ir.IntType):
        return max(1, value_type.width // 8)
    return 8 if isinstance(value_type, ir.DoubleType) else 4


class Slot:
    """A per-thread value kept across phases (`exchange`: where the emulator puts the value
    a shuffle brings)."""

    __slots__ = ("exchange", "storage", "type")

    def __init__(self, storage: ir.Value, value_type: ir.Type) -> None:
        self.storage = storage
        self.type = value_type
        self.exchange: Slot | None = None


class KernelDialect:
    """What generators call to express threads, phases and memory spaces."""

    # Arguments a kernel takes after (table, sizes, error), with their types.
    EXTRA_ARGS: tuple[tuple[str, ir.Type], ...] = ()

    def __init__(self, emitter: FunctionEmitter, block: int) -> None:
        self.emitter = emitter
        self.block = block
        # Bytes of block-shared memory the kernel declares (each array 16-byte aligned).
        self.shared_bytes = 0
        self.builder: ir.IRBuilder = emitter.builder
        self.module: ir.Module = emitter.function.module

    def _entry(self) -> ir.IRBuilder:
        """Return a builder at the start of the function, where allocas belong."""
        builder = ir.IRBuilder(self.emitter.function.entry_basic_block)
        builder.position_at_start(self.emitter.function.entry_basic_block)
        return builder

    def lane(self) -> ir.Value:
        """Return the thread's lane in its warp."""
        return self.builder.and_(self.thread_index(), ir.Constant(I64, WARP - 1), name="lane")

    def warp(self) -> ir.Value:
        """Return the index of the thread's warp in its block."""
        return self.builder.lshr(self.thread_index(), ir.Constant(I64, 5), name="warp")

    def begin(self) -> None:
        """Start the kernel body (after the arguments are unpacked)."""

    def end(self) -> None:
        """Finish the kernel body."""
        self.builder.ret_void()

    def publish(self, function: ir.Function) -> str:
        """Make function launchable; return the symbol a driver launches."""
        raise NotImplementedError

    def block_index(self) -> ir.Value:
        """Return the block's index in the grid (uniform)."""
        raise NotImplementedError

    def grid_size(self) -> ir.Value:
        """Return the number of blocks in the grid (uniform)."""
        raise NotImplementedError

    @contextmanager
    def threads(self) -> Iterator[None]:
        """Emit the body as per-thread code."""
        yield

    def thread_index(self) -> ir.Value:
        """Return the thread's index in its block (inside a thread region)."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every thread of the block has reached this point."""
        raise NotImplementedError

    def private(self, value_type: ir.Type, name: str) -> Slot:
        """Return a new per-thread slot."""
        raise NotImplementedError

    def get(self, slot: Slot) -> ir.Value:
        """Return the thread's value of a slot."""
        return self.builder.load(self._address(slot))

    def set(self, slot: Slot, value: ir.Value) -> None:
        """Write the thread's value of a slot."""
        self.builder.store(value, self._address(slot))

    def _address(self, slot: Slot) -> ir.Value:
        raise NotImplementedError

    def shared(self, value_type: ir.Type, count: int, name: str) -> ir.Value:
        """Return a pointer to the first of `count` block-shared elements."""
        nbytes = count * _element_bytes(value_type)
        self.shared_bytes += -(-nbytes // SHARED_ALIGNMENT) * SHARED_ALIGNMENT
        return self._shared(value_type, count, name)

    def _shared(self, value_type: ir.Type, count: int, name: str) -> ir.Value:
        raise NotImplementedError

    def shuffle_down(self, slots: Sequence[Slot], offset: int) -> list[ir.Value]:
        """Return, for each slot, the value of the lane `offset` above this one in the warp
        (this lane's own where there is none)."""
        raise NotImplementedError


class DeviceDialect(KernelDialect):
    """NVPTX code: one thread's view of the block."""

    def publish(self, function: ir.Function) -> str:
        function.calling_convention = "ptx_kernel"
        # ptxas may then give each thread up to 65536 / block registers.
        self.module.add_named_metadata(
            "nvvm.annotations", [function, "maxntidx", ir.Constant(I32, self.block)]
        )
        return function.name

    def _special(self, register: str) -> ir.Value:
        reader = declare(self.module, f"llvm.nvvm.read.ptx.sreg.{register}", I32, [])
        return self.builder.zext(self.builder.call(reader, []), I64, name=register)

    def block_index(self) -> ir.Value:
        return self._special("ctaid.x")

    def grid_size(self) -> ir.Value:
        return self._special("nctaid.x")

    def thread_index(self) -> ir.Value:
        return self._special("tid.x")

    def barrier(self) -> None:
        self.builder.call(declare(self.module, "llvm.nvvm.barrier0", ir.VoidType(), []), [])

    def private(self, value_type: ir.Type, name: str) -> Slot:
        return Slot(self._entry().alloca(value_type, name=name), value_type)

    def _address(self, slot: Slot) -> ir.Value:
        return slot.storage

    def _shared(self, value_type: ir.Type, count: int, name: str) -> ir.Value:
        array = ir.ArrayType(value_type, count)
        symbol = self.module.get_unique_name(f"{self.emitter.name}.{name}")
        variable = ir.GlobalVariable(self.module, array, symbol, addrspace=3)
        variable.linkage = "internal"
        variable.initializer = ir.Constant(array, ir.Undefined)
        variable.align = SHARED_ALIGNMENT
        return variable.gep([ir.Constant(I32, 0), ir.Constant(I32, 0)])

    def shuffle_down(self, slots: Sequence[Slot], offset: int) -> list[ir.Value]:
        b = self.builder
        shuffle = declare(self.module, "llvm.nvvm.shfl.sync.down.i32", I32, [I32] * 4)
        distance, clamp = ir.Constant(I32, offset), ir.Constant(I32, WARP - 1)
        results = []
        for slot in slots:
            words = _to_words(b, self.get(slot))
            moved = [b.call(shuffle, [FULL_MASK, w, distance, clamp]) for w in words]
            results.append(_from_words(b, moved, slot.type))
        return results


class EmulatedDialect(KernelDialect):
    """Host code: blocks in turn, and each phase a loop over the block's threads."""

    EXTRA_ARGS = (("grid", I64),)

    def __init__(self, emitter: FunctionEmitter, block: int) -> None:
        super().__init__(emitter, block)
        self._blocks: OpenLoop | None = None
        self._region: OpenLoop | None = None
        self._thread: ir.Value = ir.Constant(I64, 0)
        self._poison: ir.IRBuilder | None = None

    def begin(self) -> None:
        b = self.builder
        self._blocks = OpenLoop(b, ir.Constant(I64, 0), self.grid_size(), 1, "block")
        # Filled as shared arrays and slots appear: NaN bytes at the start of every block.
        poison = b.append_basic_block("block.poison")
        work = b.append_basic_block("block.work")
        b.branch(poison)
        self._poison = ir.IRBuilder(poison)
        self._poison.branch(work)
        self._poison.position_at_start(poison)
        b.position_at_end(work)

    def end(self) -> None:
        assert self._blocks is not None and self._region is None
        self._blocks.close()
        self.builder.ret_void()

    def publish(self, function: ir.Function) -> str:
        """Add `<name>.launch(i64 grid, i8** params)`, taking the arguments as cuLaunchKernel
        does: params[i] points at argument i."""
        # Emulated kernels are checked, not timed: optimising for size compiles them ~4x faster.
        function.attributes.add("optsize")
        function.attributes.add("minsize")
        i8_pointer = I8.as_pointer()
        launcher = ir.Function(
            self.module,
            ir.FunctionType(ir.VoidType(), [I64, i8_pointer.as_pointer()]),
            f"{function.name}.launch",
        )
        grid, params = launcher.args
        b = ir.IRBuilder(launcher.append_basic_block("entry"))
        values = []
        for position, ty in enumerate(function.function_type.args[:-1]):
            raw = b.load(b.gep(params, [ir.Constant(I64, position)]))
            values.append(b.load(b.bitcast(raw, ty.as_pointer())))
        b.call(function, [*values, grid])
        b.ret_void()
        return launcher.name

    def block_index(self) -> ir.Value:
        assert self._blocks is not None
        return self._blocks.index

    def grid_size(self) -> ir.Value:
        return self.emitter.args["grid"]

    @contextmanager
    def threads(self) -> Iterator[None]:
        if self._region is not None:
            raise CompileError(f"{self.emitter.name}: a thread region inside a thread region")
        self._open()
        yield
        assert self._region is not None
        self._region.close()
        self._region = None

    def _open(self) -> None:
        b = self.builder
        self._region = OpenLoop(b, ir.Constant(I64, 0), ir.Constant(I64, self.block), 1, "step")
        self._thread = b.sub(ir.Constant(I64, self.block - 1), self._region.index, name="thread")

    def thread_index(self) -> ir.Value:
        if self._region is None:
            raise CompileError(f"{self.emitter.name}: a thread index outside a thread region")
        return self._thread

    def barrier(self) -> None:
        if self._region is None:
            raise CompileError(f"{self.emitter.name}: a barrier outside a thread region")
        self._region.close()
        self._open()

    def private(self, value_type: ir.Type, name: str) -> Slot:
        storage = self._entry().alloca(ir.ArrayType(value_type, self.block), name=name)
        self._fill_with_nan(storage)
        return Slot(storage, value_type)

    def _address(self, slot: Slot) -> ir.Value:
        return self.builder.gep(slot.storage, [ir.Constant(I32, 0), self.thread_index()])

    def _shared(self, value_type: ir.Type, count: int, name: str) -> ir.Value:
        entry = self._entry()
        storage = entry.alloca(ir.ArrayType(value_type, count), name=name)
        self._fill_with_nan(storage)
        return entry.gep(storage, [ir.Constant(I32, 0), ir.Constant(I32, 0)])

    def _fill_with_nan(self, storage: ir.Value) -> None:
        assert self._poison is not None
        p = self._poison
        memset = self.module.declare_intrinsic("llvm.memset", [I8.as_pointer(), I64])
        array = storage.type.pointee
        size = array.count * _bytes(array.element)
        raw = p.bitcast(storage, I8.as_pointer())
        nan_bytes, volatile = ir.Constant(I8, 0xFF), ir.Constant(ir.IntType(1), 0)
        p.call(memset, [raw, nan_bytes, ir.Constant(I64, size), volatile])

    def shuffle_down(self, slots: Sequence[Slot], offset: int) -> list[ir.Value]:
        """End the phase, copy each lane's partner value into an exchange array in a loop
        over the block's threads, and start the next phase reading it."""
        if self._region is None:
            raise CompileError(f"{self.emitter.name}: a shuffle outside a thread region")
        self._region.close()
        exchanges = [self._exchange_of(slot) for slot in slots]
        self._open()
        b = self.builder
        lane = self.lane()
        inside = b.icmp_signed("<", b.add(lane, ir.Constant(I64, offset)), ir.Constant(I64, WARP))
        here = self.thread_index()
        source = b.select(inside, b.add(here, ir.Constant(I64, offset)), here)
        for slot, exchange in zip(slots, exchanges, strict=True):
            value = b.load(b.gep(slot.storage, [ir.Constant(I32, 0), source]))
            b.store(value, self._address(exchange))
        self._region.close()
        self._open()
        return [self.get(exchange) for exchange in exchanges]

    def _exchange_of(self, slot: Slot) -> Slot:
        if slot.exchange is None:
            slot.exchange = self.private(slot.type, "exchange")
        return slot.exchange


def _bytes(ty: ir.Type) -> int:
    """Return the bytes one element of a scalar type takes in memory."""
    if isinstance(ty, ir.IntType):
        return max(1, ty.width // 8)
    return 4 if isinstance(ty, ir.FloatType) else 8


def _to_words(b: ir.IRBuilder, value: ir.Value) -> list[ir.Value]:
    """Return a value as the 32-bit words a shuffle moves."""
    ty = value.type
    if isinstance(ty, ir.IntType) and ty.width < 32:
        return [b.zext(value, I32)]
    if isinstance(ty, ir.IntType) and ty.width == 32:
        return [value]
    if isinstance(ty, ir.FloatType):
        return [b.bitcast(value, I32)]
    bits = b.bitcast(value, I64) if isinstance(ty, ir.DoubleType) else value
    return [b.trunc(bits, I32), b.trunc(b.lshr(bits, ir.Constant(I64, 32)), I32)]


def _from_words(b: ir.IRBuilder, words: list[ir.Value], ty: ir.Type) -> ir.Value:
    """Return the value of type ty that _to_words split into words."""
    if isinstance(ty, ir.IntType) and ty.width < 32:
        return b.trunc(words[0], ty)
    if isinstance(ty, ir.IntType) and ty.width == 32:
        return words[0]
    if isinstance(ty, ir.FloatType):
        return b.bitcast(words[0], ty)
    low, high = (b.zext(w, I64) for w in words)
    bits = b.or_(low, b.shl(high, ir.Constant(I64, 32)))
    return b.bitcast(bits, ty) if isinstance(ty, ir.DoubleType) else bits
