"""BLIS-style packed GEMM emitted as LLVM IR: C = A @ B (or C += A @ B) for float32 and float64.

The loop nest is BLIS's (Van Zee and van de Geijn, 2015), with its names: columns of C go in
blocks of NC (loop jc); the depth in blocks of KC (loop pc), for which B is packed into
zero-padded KC x NR panels; rows in blocks of MC (loop ic), for which A is packed into MR-row
panels. The macro-kernel (loops jr, ir) then keeps one MR x NR micro-tile of C in vector
registers while it walks KC rank-1 updates: broadcast A[i, k], multiply by B's row k, FMA.
Edge tiles are written with masked loads and stores, so no shape needs padding by the caller.

The sizes come from a plan per dtype and CPU target (`gemm_plan`, from the target's vector
registers and cache sizes), and every emitted function is named after its plan, so modules for
different targets never define the same name differently.

Every function is single-threaded and keeps no global state: callers parallelise by giving each
thread its own workspace and a disjoint block of columns (offset B and C pointers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm.target import CpuTarget, selected_target
from graphc.errors import DTypeError

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
I8_PTR = ir.IntType(8).as_pointer()


@dataclass(frozen=True, slots=True)
class GemmPlan:
    """Micro-tile and cache-block sizes of one dtype's GEMM on one target, counted in elements."""

    short: str
    scalar: ir.Type
    itemsize: int
    lanes: int  # elements per vector register
    mr: int  # rows of the micro-tile
    vectors: int  # vectors per micro-tile row
    kc: int  # depth of a packed block (a multiple of unroll)
    mc: int  # rows of a packed A block (a multiple of mr)
    nc: int  # columns of a packed B block (a multiple of nr)
    unroll: int  # rank-1 updates per trip of the micro-kernel's loop
    fused: bool  # the target has FMA: llvm.fma, else llvm.fmuladd (fused only where cheap)

    @property
    def nr(self) -> int:
        """Return the columns of the micro-tile."""
        return self.lanes * self.vectors

    @property
    def name(self) -> str:
        """Return the exported function's name, e.g. graphc_gemm_f32_6x64: one per plan."""
        return f"graphc_gemm_{self.short}_{self.mr}x{self.nr}"

    @property
    def vector(self) -> ir.VectorType:
        """Return the LLVM vector type of one register of C."""
        return ir.VectorType(self.scalar, self.lanes)

    @property
    def vector_align(self) -> int:
        """Return the alignment of packed B's vectors: the workspace's 64, or one vector if less."""
        return min(64, self.lanes * self.itemsize)

    @property
    def packed_b_elements(self) -> int:
        """Return the size of the packed B block: KC x NC."""
        return self.kc * self.nc

    @property
    def packed_a_elements(self) -> int:
        """Return the size of the packed A block: MC x KC."""
        return self.mc * self.kc


# The micro-tile is MR x (vectors x lanes). MR = 6 rows give 6 x vectors independent FMA
# chains, enough to cover the FMA latency; vectors is the most of 4, 2, 1 for which the tile
# (MR x vectors accumulators), one row of B (vectors) and the broadcast A element fit in the
# vector registers: 24 + 4 + 1 of AVX-512's and NEON's 32, 12 + 2 + 1 of AVX2's and SSE2's 16.
MR = 6
UNROLL = 4
# Cache blocks, from the target's cache sizes (s = bytes per element, NR = vectors x lanes):
#   KC: a KC x NR micro-panel of packed B takes at most 1/8 of L2, and KC <= KC_MAX;
#   MC: the MC x KC packed A block takes at most 1/4 of L2 (MC a multiple of 2 x MR);
#   NC: the KC x NC packed B block takes at most 1/8 of L3 (its share on an 8-core CCX),
#       NC <= NC_MAX.
# On Zen 4 (L2 1 MiB, L3 32 MiB) this gives the sizes tuned there with benchmarks/gemm_kernel.py
# for the 6 x 64 f32 and 6 x 32 f64 tiles: KC 512, MC 120 (f32) / 60 (f64), NC 2048 / 1024, i.e.
# a 128 KiB B micro-panel, a 240 KiB A block and a 4 MiB B block; sizes near these (KC 384-768,
# MC 72-120) measured within ~2% there. KC_MAX and the 2 x MR step of MC are what make the
# formula land on the tuned sizes; the AVX2 6 x 16 tile on Zen 4 measured the same, within
# noise, with KC from 256 to 2048. NC_MAX keeps a large L3 from growing the workspace: packing
# B is amortised over the M rows, not over NC.
KC_MAX = 512
NC_MAX = 4096
_SCALARS = {"f32": (ir.FloatType(), 4), "f64": (ir.DoubleType(), 8)}
_ALIASES = {"float32": "f32", "float64": "f64", "float": "f32", "double": "f64"}


def gemm_plan(dtype: str, target: CpuTarget | None = None) -> GemmPlan:
    """Return the tile and block sizes for 'f32'/'float32' or 'f64'/'float64' on target
    (default: the selected target, see target.selected_target)."""
    short = _ALIASES.get(dtype, dtype)
    if short not in _SCALARS:
        raise DTypeError(f"gemm: no CPU kernel for dtype {dtype!r}; expected float32 or float64")
    return _plan(short, target if target is not None else selected_target())


@functools.cache
def _plan(short: str, target: CpuTarget) -> GemmPlan:
    scalar, itemsize = _SCALARS[short]
    lanes = max(1, target.vector_bits // (8 * itemsize))
    vectors = next((v for v in (4, 2) if MR * v + v + 1 <= target.vector_registers), 1)
    nr = lanes * vectors
    kc = _multiple_below(min(KC_MAX, target.l2_bytes // 8 // (nr * itemsize)), UNROLL)
    mc = _multiple_below(target.l2_bytes // 4 // (kc * itemsize), 2 * MR, least=MR)
    nc = _multiple_below(min(NC_MAX, target.l3_bytes // 8 // (kc * itemsize)), nr)
    fused = target.isa in ("avx512", "avx2", "neon")
    return GemmPlan(short, scalar, itemsize, lanes, MR, vectors, kc, mc, nc, UNROLL, fused)


def _multiple_below(value: int, step: int, least: int | None = None) -> int:
    """Return the largest multiple of step at most value, but at least `least` (default step)."""
    least = step if least is None else least
    return max(least, value // step * step)


def workspace_bytes(dtype: str, target: CpuTarget | None = None) -> int:
    """Return the scratch bytes one call of the dtype's GEMM needs on target (packed A and B
    blocks), rounded up to 64 so that consecutive workspaces stay 64-byte aligned."""
    plan = gemm_plan(dtype, target)
    size = (plan.packed_b_elements + plan.packed_a_elements) * plan.itemsize
    return -(-size // 64) * 64


def gemm_function(module: ir.Module, dtype: str, target: CpuTarget | None = None) -> ir.Function:
    """Return the plan's GEMM (`GemmPlan.name`, e.g. `graphc_gemm_f32_6x64`) in the module,
    emitting it (and its helpers) on first use.

    Signature (C calling convention; strides in elements):
        void graphc_gemm_f32_6x64(i64 M, i64 N, i64 K,
                                  float* A, i64 a_row_stride, i64 a_col_stride,
                                  float* B, i64 b_row_stride, i64 b_col_stride,
                                  float* C, i64 c_row_stride,
                                  float* workspace, i32 accumulate)
    computes C[M, N] = A[M, K] @ B[K, N], or C += A @ B when accumulate != 0. A and B are read
    through both strides, so transposed operands need no copy; C's columns are contiguous.
    workspace holds workspace_bytes(dtype, target) bytes, 64-byte aligned, private to the call.
    """
    plan = gemm_plan(dtype, target)
    if plan.name in module.globals:
        return module.globals[plan.name]
    micro_kernel = _emit_micro_kernel(module, plan)
    macro_kernel = _emit_macro_kernel(module, plan, micro_kernel)
    pack_a = _emit_pack_a(module, plan)
    pack_b = _emit_pack_b(module, plan)
    return _emit_driver(module, plan, plan.name, pack_a, pack_b, macro_kernel)


# --- IR emission helpers ------------------------------------------------------------------------

LoopBody = Callable[[ir.Value, list[ir.Value]], Sequence[ir.Value]]


class _Emitter:
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


def _define(
    module: ir.Module, plan: GemmPlan, name: str, signature: str, internal: bool = True
) -> tuple[ir.Function, _Emitter]:
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
    return fn, _Emitter(fn, plan)


@dataclass(frozen=True, slots=True)
class _Matrix:
    """A strided matrix in the IR: element pointer, row stride and column stride (in elements)."""

    ptr: ir.Value
    row_stride: ir.Value
    col_stride: ir.Value

    def offset(self, e: _Emitter, row: int | ir.Value, col: int | ir.Value, name: str) -> ir.Value:
        """Return the element offset of [row, col]."""
        b = e.builder
        row_at = b.mul(e.const(row), self.row_stride, name=f"{name}.row")
        col_at = b.mul(e.const(col), self.col_stride, name=f"{name}.col")
        return b.add(row_at, col_at, name=name)

    def block(self, e: _Emitter, row: int | ir.Value, col: int | ir.Value, name: str) -> _Matrix:
        """Return the sub-matrix starting at [row, col]."""
        start = e.element(self.ptr, self.offset(e, row, col, f"{name}_at"), name=name)
        return _Matrix(start, self.row_stride, self.col_stride)

    def select(self, e: _Emitter, condition: ir.Value, other: _Matrix, name: str) -> _Matrix:
        """Return this matrix where condition holds, else other."""
        suffixes = ("", "_row_stride", "_col_stride")
        values = [
            e.builder.select(condition, mine, theirs, name=f"{name}{suffix}")
            for mine, theirs, suffix in zip(self, other, suffixes, strict=True)
        ]
        return _Matrix(*values)

    def __iter__(self) -> Iterator[ir.Value]:
        """Yield pointer, row stride and column stride: the order of the functions' parameters."""
        return iter((self.ptr, self.row_stride, self.col_stride))

    @property
    def T(self) -> _Matrix:
        """Return the transpose: the same memory with the strides swapped."""
        return _Matrix(self.ptr, self.col_stride, self.row_stride)


# --- packing ------------------------------------------------------------------------------------


def _emit_pack_b(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit pack_b: copy B[kc, nc] into kc x NR panels, zero-padding the last panel's columns."""
    signature = (
        "i64 kc, i64 nc, ptr noalias b, i64 b_row_stride, i64 b_col_stride, ptr noalias b_packed"
    )
    fn, e = _define(module, plan, f"{plan.name}_pack_b", signature)
    kc, nc, b_ptr, row_stride, col_stride, packed = fn.args
    b = _Matrix(b_ptr, row_stride, col_stride)

    def panel(jr: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        columns = e.builder.sub(nc, jr, name="columns")
        dest = e.element(packed, e.builder.mul(jr, kc), name="panel")
        source = b.block(e, 0, jr, name="b_panel")
        contiguous = e.builder.icmp_signed("==", col_stride, e.const(1), name="contiguous")
        with e.builder.if_else(contiguous) as (then, otherwise):
            with then:
                _pack_b_rows(e, kc, columns, source, dest)
            with otherwise:
                _pack_b_columns(e, kc, columns, source, dest)
        return []

    e.loop("jr", 0, nc, plan.nr, panel)
    e.builder.ret_void()
    return fn


def _pack_b_rows(e: _Emitter, kc: ir.Value, columns: ir.Value, b: _Matrix, dest: ir.Value) -> None:
    """Copy a panel whose columns are contiguous a row of vectors at a time, masked past nc."""
    plan = e.plan
    masks = e.column_masks(columns, name="column_mask")
    zero = ir.Constant(plan.vector, None)

    def row(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        src_row = e.builder.mul(k, b.row_stride, name="b_row")
        dest_row = e.builder.mul(k, e.const(plan.nr), name="packed_row")
        for v, mask in enumerate(masks):
            src_at = e.builder.add(src_row, e.const(v * plan.lanes), name="b_at")
            value = e.masked_load(e.vector_at(b.ptr, src_at, "b"), mask, zero, name=f"b{v}")
            dest_at = e.builder.add(dest_row, e.const(v * plan.lanes), name="packed_at")
            e.builder.store(value, e.vector_at(dest, dest_at, "packed"), align=plan.vector_align)
        return []

    e.loop("k", 0, kc, 1, row)


def _pack_b_columns(
    e: _Emitter, kc: ir.Value, columns: ir.Value, b: _Matrix, dest: ir.Value
) -> None:
    """Copy a panel of strided B (e.g. transposed) column by column; zero the padding columns."""
    plan = e.plan
    present = e.min(columns, plan.nr, name="present")

    # k outer, j inner: the panel is written in order and the NR source rows being read
    # stay in L1 across consecutive k (the other order misses on every write of a large KC).
    def row(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        dest_row = e.builder.mul(k, e.const(plan.nr), name="packed_row")

        def element(j: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            src = e.element(b.ptr, b.offset(e, k, j, "b_at"), "b")
            value = e.builder.load(src, name="b_elem", typ=plan.scalar)
            dest_at = e.builder.add(dest_row, j, name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
            return []

        def padding(j: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            dest_at = e.builder.add(dest_row, j, name="packed_at")
            e.builder.store(ir.Constant(plan.scalar, 0.0), e.element(dest, dest_at, "packed"))
            return []

        e.loop("j", 0, present, 1, element)
        e.loop("j_pad", present, plan.nr, 1, padding)
        return []

    e.loop("k", 0, kc, 1, row)


def _emit_pack_a(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit pack_a: copy A[mc, kc] into MR-row panels stored k-major, zero-padding missing rows."""
    signature = (
        "i64 mc, i64 kc, ptr noalias a, i64 a_row_stride, i64 a_col_stride, ptr noalias a_packed"
    )
    fn, e = _define(module, plan, f"{plan.name}_pack_a", signature)
    mc, kc, a_ptr, row_stride, col_stride, packed = fn.args
    a = _Matrix(a_ptr, row_stride, col_stride)

    def panel(ir_start: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        rows = e.builder.sub(mc, ir_start, name="rows")
        dest = e.element(packed, e.builder.mul(ir_start, kc), name="panel")
        source = a.block(e, ir_start, 0, name="a_panel")
        full = e.builder.icmp_signed(">=", rows, e.const(plan.mr), name="full_panel")
        with e.builder.if_else(full) as (then, otherwise):
            with then:
                _pack_a_full(e, kc, source, dest)
            with otherwise:
                _pack_a_partial(e, kc, rows, source, dest)
        return []

    e.loop("ir", 0, mc, plan.mr, panel)
    e.builder.ret_void()
    return fn


def _pack_a_full(e: _Emitter, kc: ir.Value, a: _Matrix, dest: ir.Value) -> None:
    """Copy a panel of MR rows: for each k, the MR elements of column k, unrolled."""
    plan = e.plan

    def column(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        dest_col = e.builder.mul(k, e.const(plan.mr), name="packed_col")
        for i in range(plan.mr):
            src = e.element(a.ptr, a.offset(e, i, k, "a_at"), "a")
            value = e.builder.load(src, name=f"a{i}", typ=plan.scalar)
            dest_at = e.builder.add(dest_col, e.const(i), name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
        return []

    e.loop("k", 0, kc, 1, column)


def _pack_a_partial(e: _Emitter, kc: ir.Value, rows: ir.Value, a: _Matrix, dest: ir.Value) -> None:
    """Copy the last panel of fewer than MR rows: zero it, then copy the rows that exist."""
    plan = e.plan

    def clear(n: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        e.builder.store(ir.Constant(plan.scalar, 0.0), e.element(dest, n, "packed"))
        return []

    e.loop("n", 0, e.builder.mul(kc, e.const(plan.mr)), 1, clear)

    def row(i: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        def element(k: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            src = e.element(a.ptr, a.offset(e, i, k, "a_at"), "a")
            value = e.builder.load(src, name="a_elem", typ=plan.scalar)
            dest_at = e.builder.add(e.builder.mul(k, e.const(plan.mr)), i, name="packed_at")
            e.builder.store(value, e.element(dest, dest_at, "packed"))
            return []

        e.loop("k", 0, kc, 1, element)
        return []

    e.loop("i", 0, rows, 1, row)


# --- kernels ------------------------------------------------------------------------------------


def _emit_micro_kernel(module: ir.Module, plan: GemmPlan) -> ir.Function:
    """Emit the micro-kernel: C[mr, nr] (+)= A panel @ B panel with the tile in registers."""
    signature = (
        "i64 kc, ptr noalias a_panel, ptr noalias b_panel, ptr noalias c, i64 c_row_stride,"
        " i64 mr, i64 nr, i1 beta"
    )
    fn, e = _define(module, plan, f"{plan.name}_micro_kernel", signature)
    kc, a_panel, b_panel, c, c_row_stride, mr, nr, beta = fn.args
    zero = ir.Constant(plan.vector, None)
    tile = [(f"c{i}_{v}", zero) for i in range(plan.mr) for v in range(plan.vectors)]

    def unrolled(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        for u in range(plan.unroll):
            k_u = e.builder.add(k, e.const(u), name=f"k{u}") if u else k
            acc = _rank1_update(e, a_panel, b_panel, k_u, acc)
        return acc

    def single(k: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        return _rank1_update(e, a_panel, b_panel, k, acc)

    _prefetch_tile(e, c, c_row_stride, mr)
    k_rest = e.builder.srem(kc, e.const(plan.unroll), name="k_rest")
    k_main = e.builder.sub(kc, k_rest, name="k_main")
    acc = e.loop("k", 0, k_main, plan.unroll, unrolled, tile)
    tail = [(f"{name}.tail", value) for (name, _), value in zip(tile, acc, strict=True)]
    acc = e.loop("k_tail", k_main, kc, 1, single, tail)
    _store_tile(e, acc, c, c_row_stride, mr, nr, beta)
    e.builder.ret_void()
    return fn


def _prefetch_tile(e: _Emitter, c: ir.Value, c_row_stride: ir.Value, mr: ir.Value) -> None:
    """Prefetch the tile's rows of C for writing, so its update does not wait on L3 or DRAM."""
    plan = e.plan
    last_row = e.builder.sub(mr, e.const(1), name="last_row")
    for i in range(plan.mr):
        # Prefetches cannot fault, but rows past mr would only waste bandwidth: re-fetch the last.
        row = e.min(e.const(i), last_row, name=f"prefetch_row{i}")
        row_at = e.builder.mul(row, c_row_stride, name=f"prefetch_row{i}_at")
        for line in range(-(-plan.nr * plan.itemsize // 64)):
            at = e.builder.add(row_at, e.const(line * 64 // plan.itemsize), name="prefetch_at")
            e.prefetch_for_write(e.element(c, at, "c"))


def _rank1_update(
    e: _Emitter, a_panel: ir.Value, b_panel: ir.Value, k: ir.Value, acc: list[ir.Value]
) -> list[ir.Value]:
    """Emit tile += A[:, k] (outer) B[k, :] and return the new accumulators (row-major order)."""
    plan = e.plan
    b_row = e.builder.mul(k, e.const(plan.nr), name="b_row")
    b_vecs = []
    for v in range(plan.vectors):
        b_at = e.builder.add(b_row, e.const(v * plan.lanes), name="b_at")
        ptr = e.vector_at(b_panel, b_at, "b")
        b_vecs.append(e.builder.load(ptr, name=f"b{v}", align=plan.vector_align, typ=plan.vector))
    a_col = e.builder.mul(k, e.const(plan.mr), name="a_col")
    out = []
    for i in range(plan.mr):
        a_at = e.builder.add(a_col, e.const(i), name="a_at")
        a_elem = e.builder.load(e.element(a_panel, a_at, "a"), name=f"a{i}.elem", typ=plan.scalar)
        a_value = e.splat(a_elem, name=f"a{i}")
        for v, b_vec in enumerate(b_vecs):
            out.append(e.fma(a_value, b_vec, acc[i * plan.vectors + v], name=f"c{i}_{v}"))
    return out


def _store_tile(
    e: _Emitter,
    acc: list[ir.Value],
    c: ir.Value,
    c_row_stride: ir.Value,
    mr: ir.Value,
    nr: ir.Value,
    beta: ir.Value,
) -> None:
    """Write the first mr rows and nr columns of the tile to C, adding C's old values if beta."""
    plan, b = e.plan, e.builder
    store_masks = e.column_masks(nr, name="store_mask")
    beta_lanes = e.splat(beta, name="beta_lanes")
    # With beta false the load mask is empty: C is not read, so NaNs in fresh memory cannot leak,
    # and masked-off lanes read -0.0, the identity of fadd (+0.0 would turn -0.0 into +0.0).
    load_masks = [b.and_(m, beta_lanes, name=f"load_mask{v}") for v, m in enumerate(store_masks)]
    negative_zero = ir.Constant(plan.vector, [-0.0] * plan.lanes)
    done = b.append_basic_block("store.done")
    for i in range(plan.mr):
        if i:
            row_block = b.append_basic_block(f"store.row{i}")
            b.cbranch(b.icmp_signed(">", mr, e.const(i), name=f"has_row{i}"), row_block, done)
            b.position_at_end(row_block)
        row = b.mul(e.const(i), c_row_stride, name=f"c_row{i}")
        for v in range(plan.vectors):
            name = f"c{i}_{v}"
            ptr = e.vector_at(c, b.add(row, e.const(v * plan.lanes), name="c_at"), f"{name}.ptr")
            old = e.masked_load(ptr, load_masks[v], negative_zero, name=f"{name}.old")
            new = b.fadd(acc[i * plan.vectors + v], old, name=f"{name}.new")
            e.masked_store(new, ptr, store_masks[v])
    b.branch(done)
    b.position_at_end(done)


def _emit_macro_kernel(module: ir.Module, plan: GemmPlan, micro_kernel: ir.Function) -> ir.Function:
    """Emit the macro-kernel: sweep micro-tiles over packed A[mc, kc] and packed B[kc, nc]."""
    signature = (
        "i64 mc, i64 nc, i64 kc, ptr noalias a_packed, ptr noalias b_packed, ptr noalias c,"
        " i64 c_row_stride, i1 beta"
    )
    fn, e = _define(module, plan, f"{plan.name}_macro_kernel", signature)
    mc, nc, kc, a_packed, b_packed, c_ptr, c_row_stride, beta = fn.args
    c = _Matrix(c_ptr, c_row_stride, e.const(1))

    def column_panel(jr: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        nr = e.min(e.builder.sub(nc, jr), plan.nr, name="nr")
        b_panel = e.element(b_packed, e.builder.mul(jr, kc), name="b_panel")

        def row_panel(ir_start: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            mr = e.min(e.builder.sub(mc, ir_start), plan.mr, name="mr")
            a_panel = e.element(a_packed, e.builder.mul(ir_start, kc), name="a_panel")
            c_tile = c.block(e, ir_start, jr, name="c_tile").ptr
            e.builder.call(micro_kernel, [kc, a_panel, b_panel, c_tile, c_row_stride, mr, nr, beta])
            return []

        e.loop("ir", 0, mc, plan.mr, row_panel)
        return []

    e.loop("jr", 0, nc, plan.nr, column_panel)
    e.builder.ret_void()
    return fn


def _transpose_column_output(
    e: _Emitter, m: ir.Value, n: ir.Value, a: _Matrix, b: _Matrix, c_row_stride: ir.Value
) -> tuple[ir.Value, ir.Value, _Matrix, _Matrix]:
    """Return (M, N, A, B), swapped to compute C.T = B.T @ A.T when C is a contiguous column.

    A contiguous column C[M, 1] is also a row C.T[1, M]; as a row it fills one micro-tile row in
    MR instead of one column in NR (matrix @ vector measured 1.6x faster). The products and
    their order over k are the same, so the result is bitwise the same.
    """
    irb = e.builder
    one_column = irb.icmp_signed("==", n, e.const(1), name="one_column")
    contiguous = irb.icmp_signed("==", c_row_stride, e.const(1), name="contiguous_column")
    several_rows = irb.icmp_signed(">", m, e.const(1), name="several_rows")
    swap = irb.and_(irb.and_(one_column, contiguous), several_rows, name="transpose_c")
    return (
        irb.select(swap, n, m, name="m"),
        irb.select(swap, m, n, name="n"),
        b.T.select(e, swap, a, name="a_operand"),
        a.T.select(e, swap, b, name="b_operand"),
    )


def _emit_driver(
    module: ir.Module,
    plan: GemmPlan,
    name: str,
    pack_a: ir.Function,
    pack_b: ir.Function,
    macro_kernel: ir.Function,
) -> ir.Function:
    """Emit the exported entry: the NC / KC / MC block loops around packing and the macro-kernel."""
    signature = (
        "i64 M, i64 N, i64 K, ptr a, i64 a_row_stride, i64 a_col_stride,"
        " ptr b, i64 b_row_stride, i64 b_col_stride, ptr c, i64 c_row_stride,"
        " ptr workspace, i32 accumulate"
    )
    fn, e = _define(module, plan, name, signature, internal=False)
    m, n, k, a_ptr, a_rs, a_cs, b_ptr, b_rs, b_cs, c_ptr, c_rs, workspace, accumulate = fn.args
    m, n, a, b = _transpose_column_output(
        e, m, n, _Matrix(a_ptr, a_rs, a_cs), _Matrix(b_ptr, b_rs, b_cs), c_rs
    )
    c = _Matrix(c_ptr, c_rs, e.const(1))
    b_packed = workspace
    a_packed = e.element(workspace, plan.packed_b_elements, name="a_packed")
    irb = e.builder
    accumulate_old = irb.icmp_signed("!=", accumulate, ir.Constant(I32, 0), name="accumulate")
    # K = 0 still makes one depth block (of depth 0), so C is overwritten with zeros.
    k_end = irb.select(irb.icmp_signed(">", k, e.const(0)), k, e.const(1), name="k_end")

    def column_block(jc: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
        nc = e.min(irb.sub(n, jc), plan.nc, name="nc")

        def depth_block(pc: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            kc = e.min(irb.sub(k, pc), plan.kc, name="kc")
            b_block = b.block(e, pc, jc, name="b_block")
            irb.call(pack_b, [kc, nc, *b_block, b_packed])
            later_depth = irb.icmp_signed(">", pc, e.const(0), name="later_depth")
            beta = irb.or_(accumulate_old, later_depth, name="beta")

            def row_block(ic: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
                mc = e.min(irb.sub(m, ic), plan.mc, name="mc")
                a_block = a.block(e, ic, pc, name="a_block")
                irb.call(pack_a, [mc, kc, *a_block, a_packed])
                c_block = c.block(e, ic, jc, name="c_block").ptr
                irb.call(macro_kernel, [mc, nc, kc, a_packed, b_packed, c_block, c_rs, beta])
                return []

            e.loop("ic", 0, m, plan.mc, row_block)
            return []

        e.loop("pc", 0, k_end, plan.kc, depth_block)
        return []

    e.loop("jc", 0, n, plan.nc, column_block)
    irb.ret_void()
    return fn
