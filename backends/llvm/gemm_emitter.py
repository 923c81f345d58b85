"""IR emission helpers shared by the GEMM's functions: an emitter with the plan's types,
loops and vector intrinsics, function definitions from a signature string, and strided
matrices."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm.gemm_plan import GemmPlan

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
I8_PTR = ir.IntType(8).as_pointer()

LoopBody = Callable[[ir.Value, list[ir.Value]], Sequence[ir.Value]]


class Emitter:
    """Emits the body of one function: an IRBuilder with the plan's types and intrinsics."""

    def __init__(self, fn: ir.Function, plan: GemmPlan) -> None:
        self.plan = plan
        self.module = fn.module
        self.builder = ir.IRBuilder(fn.append_basic_block("entry"))

    @staticmethod
    def const(value: int | ir.Value) -> ir.Value:
        """Return value as an i64 (Python ints become constants)."""
        return ir.Constant(I64, value) if isinstance(value, int) else value

    def declare(self, name: str, fnty: ir.FunctionType) -> ir.Function:
        """Return the module's declaration of `name`, adding it first if missing."""
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, fnty, name=name)

    def loop(
        self,
        name: str,
        start: int | ir.Value,
        stop: int | ir.Value,
        step: int,
        body: LoopBody,
        carried: Sequence[tuple[str, ir.Value]] = (),
    ) -> list[ir.Value]:
        """Emit `for name in range(start, stop, step)`; return the carried values' final values.

        body(index, values) emits one trip and returns the next values of the carried phis.
        """
        b = self.builder
        preheader = b.block
        header = b.append_basic_block(f"{name}.loop")
        body_block = b.append_basic_block(f"{name}.body")
        done = b.append_basic_block(f"{name}.done")
        b.branch(header)
        b.position_at_end(header)
        index = b.phi(I64, name=name)
        index.add_incoming(self.const(start), preheader)
        phis = []
        for value_name, value in carried:
            phi = b.phi(value.type, name=value_name)
            phi.add_incoming(value, preheader)
            phis.append(phi)
        more = b.icmp_signed("<", index, self.const(stop), name=f"{name}.more")
        b.cbranch(more, body_block, done)
        b.position_at_end(body_block)
        next_values = body(index, phis)
        latch = b.block
        index.add_incoming(b.add(index, self.const(step), name=f"{name}.next"), latch)
        for phi, value in zip(phis, next_values, strict=True):
            phi.add_incoming(value, latch)
        b.branch(header)
        b.position_at_end(done)
        return phis

    def min(self, a: ir.Value, b: int | ir.Value, name: str) -> ir.Value:
        """Return the signed minimum of two i64 values."""
        b = self.const(b)
        less = self.builder.icmp_signed("<", a, b, name=f"{name}.lt")
        return self.builder.select(less, a, b, name=name)

    def element(self, base: ir.Value, offset: int | ir.Value, name: str) -> ir.Value:
        """Return &base[offset] for a pointer to the plan's scalars."""
        return self.builder.gep(
            base, [self.const(offset)], inbounds=True, name=name, source_etype=self.plan.scalar
        )

    def vector_at(self, base: ir.Value, offset: int | ir.Value, name: str) -> ir.Value:
        """Return &base[offset] as a pointer to a whole vector."""
        element = self.element(base, offset, name)
        return self.builder.bitcast(element, self.plan.vector.as_pointer(), name=f"{name}.vec")

    def splat(self, value: ir.Value, name: str) -> ir.Value:
        """Return a vector of the plan's width with every lane equal to value."""
        lanes = self.plan.lanes
        undef = ir.Constant(ir.VectorType(value.type, lanes), ir.Undefined)
        first = self.builder.insert_element(undef, value, ir.Constant(I32, 0), name=f"{name}.0")
        lane0 = ir.Constant(ir.VectorType(I32, lanes), [0] * lanes)
        return self.builder.shuffle_vector(first, undef, lane0, name=name)

    def column_masks(self, columns: ir.Value, name: str) -> list[ir.Value]:
        """Return one mask per vector of a tile row: lane j of vector v is v*lanes + j < columns."""
        plan = self.plan
        limit = self.splat(columns, name=f"{name}.limit")
        masks = []
        for v in range(plan.vectors):
            ids = [v * plan.lanes + j for j in range(plan.lanes)]
            lane_ids = ir.Constant(ir.VectorType(I64, plan.lanes), ids)
            masks.append(self.builder.icmp_signed("<", lane_ids, limit, name=f"{name}{v}"))
        return masks

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value, name: str) -> ir.Value:
        """Return a * b + c on vectors: llvm.fma where the target has FMA, else llvm.fmuladd
        (llvm.fma would become a C library call per lane). Declared by hand: declare_intrinsic
        cannot declare vector intrinsics."""
        vec, plan = self.plan.vector, self.plan
        intrinsic = "fma" if plan.fused else "fmuladd"
        fn = self.declare(
            f"llvm.{intrinsic}.v{plan.lanes}{plan.short}", ir.FunctionType(vec, [vec] * 3)
        )
        return self.builder.call(fn, [a, b, c], name=name)

    def masked_load(self, ptr: ir.Value, mask: ir.Value, passthru: ir.Value, name: str) -> ir.Value:
        """Return the vector at ptr, with passthru in the lanes that mask leaves off (unread)."""
        # The old form with an alignment operand: older LLVMs need it, LLVM 22 auto-upgrades it.
        vec, plan = self.plan.vector, self.plan
        fnty = ir.FunctionType(vec, [vec.as_pointer(), I32, mask.type, vec])
        fn = self.declare(f"llvm.masked.load.v{plan.lanes}{plan.short}.p0", fnty)
        align = ir.Constant(I32, plan.itemsize)
        return self.builder.call(fn, [ptr, align, mask, passthru], name=name)

    def load_lanes(
        self, ptr: ir.Value, mask: ir.Value | None, passthru: ir.Value, name: str
    ) -> ir.Value:
        """Return the vector at ptr: all of it when mask is None, else as masked_load."""
        if mask is None:
            return self.builder.load(ptr, name=name, align=self.plan.itemsize, typ=self.plan.vector)
        return self.masked_load(ptr, mask, passthru, name)

    def store_lanes(self, value: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
        """Store all of value at ptr when mask is None, else as masked_store."""
        if mask is None:
            self.builder.store(value, ptr, align=self.plan.itemsize)
        else:
            self.masked_store(value, ptr, mask)

    def masked_store(self, value: ir.Value, ptr: ir.Value, mask: ir.Value) -> None:
        """Store the lanes of value that mask turns on."""
        vec, plan = self.plan.vector, self.plan
        fnty = ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), I32, mask.type])
        fn = self.declare(f"llvm.masked.store.v{plan.lanes}{plan.short}.p0", fnty)
        self.builder.call(fn, [value, ptr, ir.Constant(I32, plan.itemsize), mask])

    def prefetch_for_write(self, ptr: ir.Value) -> None:
        """Prefetch the cache line at ptr into L1, expecting a write (llvm.prefetch)."""
        fnty = ir.FunctionType(ir.VoidType(), [I8_PTR, I32, I32, I32])
        fn = self.declare("llvm.prefetch.p0", fnty)
        address = self.builder.bitcast(ptr, I8_PTR, name="line")
        self.builder.call(fn, [address] + [ir.Constant(I32, flag) for flag in (1, 3, 1)])


def define_function(
    module: ir.Module, plan: GemmPlan, name: str, signature: str, internal: bool = True
) -> tuple[ir.Function, Emitter]:
    """Return a void function declared like 'i64 kc, ptr noalias b, i1 beta' and its emitter.

    `ptr` is a pointer to the plan's scalars; `noalias` promises LLVM the buffer overlaps no
    other pointer parameter (packed panels never overlap the operands or C).
    """
    types = {"i1": I1, "i32": I32, "i64": I64, "ptr": plan.scalar.as_pointer()}
    params = [param.split() for param in signature.split(",")]
    fnty = ir.FunctionType(ir.VoidType(), [types[words[0]] for words in params])
    fn = ir.Function(module, fnty, name=name)
    for arg, words in zip(fn.args, params, strict=True):
        arg.name = words[-1]
        if "noalias" in words:
            arg.add_attribute("noalias")
    fn.attributes.add("nounwind")
    if internal:
        fn.linkage = "internal"
    return fn, Emitter(fn, plan)


@dataclass(frozen=True, slots=True)
class Matrix:
    """A strided matrix in the IR: element pointer, row stride and column stride (in elements)."""

    ptr: ir.Value
    row_stride: ir.Value
    col_stride: ir.Value

    def offset(self, e: Emitter, row: int | ir.Value, col: int | ir.Value, name: str) -> ir.Value:
        """Return the element offset of [row, col]."""
        b = e.builder
        row_at = b.mul(e.const(row), self.row_stride, name=f"{name}.row")
        col_at = b.mul(e.const(col), self.col_stride, name=f"{name}.col")
        return b.add(row_at, col_at, name=name)

    def block(self, e: Emitter, row: int | ir.Value, col: int | ir.Value, name: str) -> Matrix:
        """Return the sub-matrix starting at [row, col]."""
        start = e.element(self.ptr, self.offset(e, row, col, f"{name}_at"), name=name)
        return Matrix(start, self.row_stride, self.col_stride)

    def select(self, e: Emitter, condition: ir.Value, other: Matrix, name: str) -> Matrix:
        """Return this matrix where condition holds, else other."""
        suffixes = ("", "_row_stride", "_col_stride")
        values = [
            e.builder.select(condition, mine, theirs, name=f"{name}{suffix}")
            for mine, theirs, suffix in zip(self, other, suffixes, strict=True)
        ]
        return Matrix(*values)

    def __iter__(self) -> Iterator[ir.Value]:
        """Yield pointer, row stride and column stride: the order of the functions' parameters."""
        return iter((self.ptr, self.row_stride, self.col_stride))

    @property
    def T(self) -> Matrix:
        """Return the transpose: the same memory with the strides swapped."""
        return Matrix(self.ptr, self.col_stride, self.row_stride)
