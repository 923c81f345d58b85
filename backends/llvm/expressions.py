"""Emission of kernel-IR expressions as LLVM IR values, memoised per loop scope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.guards import conjuncts, unclamped
from graphc.backends.kernel.reductions import first_extremum, used_reductions
from graphc.dtypes import DType, bool_, float32, float64, int32, int64
from graphc.ops.random import PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
_REGISTER_TYPES = {float32: F32, float64: F64, int32: I32, int64: I64, bool_: I1}
_MEMORY_TYPES = {float32: F32, float64: F64, int32: I32, int64: I64, bool_: I8}
REASSOC = ("reassoc",)
_ARG_OPS = ("argmax", "argmin")
# The most elements of an argmax that stays one loop carrying (value, index): LLVM unrolls it.
_UNROLLED = 16
# A reduction loop's per-element callback, and one part [start, end) of its outermost range.
Visit = Callable[["Scope"], None]
Piece = tuple[ir.Value, ir.Value, Visit | None]


def _width(reduction: k.Reduce) -> int:
    """Return how many values a reduction carries: its accumulator, and an index for argmax
    and argmin."""
    return 2 if reduction.op in _ARG_OPS else 1


def register_type(dtype: DType) -> ir.Type:
    """Return the LLVM type a value of dtype has in registers (bool is i1)."""
    return _REGISTER_TYPES[dtype]


def memory_type(dtype: DType) -> ir.Type:
    """Return the LLVM type of one element of dtype in memory (bool is a byte)."""
    return _MEMORY_TYPES[dtype]


def declare(module: ir.Module, name: str, result: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Return the module's declaration of an external function or intrinsic, adding it once."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(result, args), name)


class Scope:
    """Values already emitted and visible here: loop variables, sizes, memoised expressions."""

    def __init__(self, parent: Scope | None = None) -> None:
        self.values: dict[Any, ir.Value] = {} if parent is None else dict(parent.values)

    def child(self) -> Scope:
        return Scope(self)


class ExpressionEmitter:
    """Emits expressions into a builder; the kernel emitter supplies buffers and loops."""

    def __init__(
        self,
        module: ir.Module,
        builder: ir.IRBuilder,
        buffer_pointer: Callable[[str], ir.Value],
        size_value: Callable[[str], ir.Value],
        error_pointer: ir.Value,
        math: Callable[[str, DType], ir.Function],
        loop: Callable[..., list[ir.Value]],
        window_extrema_by_selects: bool = False,
    ) -> None:
        self.module = module
        self.builder = builder
        self.buffer_pointer = buffer_pointer
        self.size_value = size_value
        self.error_pointer = error_pointer
        self.math = math
        self.loop = loop
        self.window_extrema_by_selects = window_extrema_by_selects

    # -- integers ---------------------------------------------------------------------------
    def index(self, e: k.IntExpr, scope: Scope) -> ir.Value:
        """Return an i64 for an index expression."""
        if e in scope.values:
            return scope.values[e]
        value = self._index(e, scope)
        scope.values[e] = value
        return value

    def _index(self, e: k.IntExpr, scope: Scope) -> ir.Value:
        b = self.builder
        if isinstance(e, k.IConst):
            return ir.Constant(I64, e.value)
        if isinstance(e, k.SymSize):
            return self.size_value(e.symbol)
        if isinstance(e, k.Var):
            raise KeyError(f"loop variable {e.name} is not bound here")
        if isinstance(e, k.ValueIndex):
            return self._to_i64(self.value(e.value, scope), e.value.dtype)
        if isinstance(e, k.ISelect):
            cond = b.icmp_signed("!=", self.index(e.cond, scope), ir.Constant(I64, 0))
            return b.select(cond, self.index(e.a, scope), self.index(e.b, scope))
        x, y = self.index(e.a, scope), self.index(e.b, scope)
        return self._int_op(e.op, x, y)

    def _int_op(self, op: str, x: ir.Value, y: ir.Value) -> ir.Value:
        b = self.builder
        if op == "add":
            return b.add(x, y)
        if op == "sub":
            return b.sub(x, y)
        if op == "mul":
            return b.mul(x, y)
        if op in ("div", "mod"):
            return self._floor_divmod(x, y, I64)[0 if op == "div" else 1]
        if op == "min":
            return b.select(b.icmp_signed("<", x, y), x, y)
        if op == "max":
            return b.select(b.icmp_signed(">", x, y), x, y)
        if op in ("and", "or"):
            x1 = b.icmp_signed("!=", x, ir.Constant(I64, 0))
            y1 = b.icmp_signed("!=", y, ir.Constant(I64, 0))
            return b.zext(b.and_(x1, y1) if op == "and" else b.or_(x1, y1), I64)
        compare = {"lt": "<", "le": "<=", "eq": "==", "ne": "!="}[op]
        return b.zext(b.icmp_signed(compare, x, y), I64)

    def _floor_divmod(self, x: ir.Value, y: ir.Value, ty: ir.IntType):
        """Return Python-style (x // y, x % y); division by 0 gives 0 like numpy, never a trap."""
        b = self.builder
        zero, one, minus_one = ir.Constant(ty, 0), ir.Constant(ty, 1), ir.Constant(ty, -1)
        y_is_zero = b.icmp_signed("==", y, zero)
        y_is_minus_one = b.icmp_signed("==", y, minus_one)
        safe = b.select(b.or_(y_is_zero, y_is_minus_one), one, y)
        q = b.sdiv(x, safe)
        r = b.srem(x, safe)
        adjust = b.and_(
            b.icmp_signed("!=", r, zero),
            b.icmp_signed("!=", b.icmp_signed("<", r, zero), b.icmp_signed("<", y, zero)),
        )
        q = b.select(adjust, b.sub(q, one), q)
        r = b.select(adjust, b.add(r, y), r)
        q = b.select(y_is_minus_one, b.sub(zero, x), q)
        r = b.select(y_is_minus_one, zero, r)
        return b.select(y_is_zero, zero, q), b.select(y_is_zero, zero, r)

    def _to_i64(self, value: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        if dtype.is_float:
            return b.fptosi(value, I64)
        if dtype == bool_:
            return b.zext(value, I64)
        return b.sext(value, I64) if dtype == int32 else value

    # -- values -----------------------------------------------------------------------------
    def value(self, e: k.Expr, scope: Scope) -> ir.Value:
        """Return the LLVM value of an expression (in registers: bool is i1)."""
        if e in scope.values:
            return scope.values[e]
        result = getattr(self, f"_emit_{type(e).__name__.lower()}")(e, scope)
        scope.values[e] = result
        return result

    def _emit_load(self, e: k.Load, scope: Scope) -> ir.Value:
        return self._load_at(e, self.index(e.offset, scope))

    def _load_at(self, e: k.Load, index: ir.Value) -> ir.Value:
        """Return the element of e's buffer at index (in registers: bool is i1)."""
        b = self.builder
        pointer = b.gep(self.buffer_pointer(e.buffer), [index], inbounds=True)
        loaded = b.load(pointer, align=max(1, e.dtype.itemsize))
        return b.trunc(loaded, I1) if e.dtype == bool_ else loaded

    def _emit_const(self, e: k.Const, scope: Scope) -> ir.Value:
        ty = register_type(e.dtype)
        if e.dtype.is_float:
            return ir.Constant(ty, float(e.value))
        return ir.Constant(ty, int(bool(e.value)) if e.dtype == bool_ else int(e.value))

    def _emit_indexvalue(self, e: k.IndexValue, scope: Scope) -> ir.Value:
        return self.from_i64(self.index(e.index, scope), e.dtype)

    def from_i64(self, value: ir.Value, dtype: DType) -> ir.Value:
        """Return an i64 (an index) as a value of dtype."""
        b = self.builder
        if dtype.is_float:
            return b.sitofp(value, register_type(dtype))
        if dtype == bool_:
            return b.icmp_signed("!=", value, ir.Constant(I64, 0))
        return b.trunc(value, I32) if dtype == int32 else value

    def _emit_cast(self, e: k.Cast, scope: Scope) -> ir.Value:
        return self.convert(self.value(e.a, scope), e.a.dtype, e.dtype)

    def convert(self, value: ir.Value, source: DType, target: DType) -> ir.Value:
        """Return value converted between dtypes with numpy's semantics."""
        b = self.builder
        if source == target:
            return value
        to = register_type(target)
        if target == bool_:
            if source.is_float:
                return b.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0))
            return b.icmp_signed("!=", value, ir.Constant(value.type, 0))
        if source == bool_:
            return b.uitofp(value, to) if target.is_float else b.zext(value, to)
        if source.is_float and target.is_float:
            return b.fptrunc(value, to) if target.bits < source.bits else b.fpext(value, to)
        if source.is_float:
            # Truncation toward zero; NaN, infinities and out-of-range values give the type's
            # minimum, as x86's cvttss2si (and so PyTorch and numpy there) does. fptosi is only
            # defined in range, so it converts 0 instead of those.
            limit = float(2 ** (to.width - 1))
            inside = b.and_(
                b.fcmp_ordered(">=", value, ir.Constant(value.type, -limit)),
                b.fcmp_ordered("<", value, ir.Constant(value.type, limit)),
            )
            converted = b.fptosi(b.select(inside, value, ir.Constant(value.type, 0.0)), to)
            return b.select(inside, converted, ir.Constant(to, -(1 << (to.width - 1))))
        if target.is_float:
            return b.sitofp(value, to)
        return b.trunc(value, to) if target.bits < source.bits else b.sext(value, to)

    def _emit_select(self, e: k.Select, scope: Scope) -> ir.Value:
        guarded = self._guarded_load(e, scope)
        if guarded is not None:
            return guarded
        return self.builder.select(
            self.value(e.cond, scope), self.value(e.a, scope), self.value(e.b, scope)
        )

    def _guarded_load(self, e: k.Select, scope: Scope) -> ir.Value | None:
        """Return `where(cond, x[i], fill)` with x read only where cond holds, at i without
        the clamps cond makes no-ops (`guards.py`), or None where the select is not one: a
        branch around the load, which the vectoriser turns into a contiguous masked load."""
        load, fill = e.a, e.b
        if not (
            isinstance(load, k.Load)
            and isinstance(fill, k.Const)
            and isinstance(e.cond, k.IndexValue)
        ):
            return None
        offset = unclamped(load.offset, conjuncts(e.cond.index))
        if offset == load.offset:
            return None
        b = self.builder
        condition = self.value(e.cond, scope)
        index = self.index(offset, scope)  # computed before the branch: it dominates later uses
        otherwise = self.value(fill, scope)
        before = b.block
        with b.if_then(condition):
            loaded = self._load_at(load, index)
            inside = b.block
        result = b.phi(otherwise.type, name="guarded")
        result.add_incoming(loaded, inside)
        result.add_incoming(otherwise, before)
        return result

    def _selected_extremum(self, op: str, dtype: DType, x: ir.Value, y: ir.Value) -> ir.Value:
        """Return llvm.maximum (minimum) of x and y, NaN if either is and +0 above -0, as
        compares and selects. x86 has no vector instruction for the intrinsic before AVX-512,
        and its cost kept the loop around a max pool's unrolled window scalar on the AVX2
        plan (6-9x slower); on AVX-512 the intrinsic is the faster of the two."""
        b = self.builder
        bits = ir.IntType(dtype.bits)
        merge = b.and_ if op == "max" else b.or_  # of +0 and -0: +0 for max, -0 for min
        tie = b.bitcast(merge(b.bitcast(x, bits), b.bitcast(y, bits)), x.type)
        wins, loses = (">", "<") if op == "max" else ("<", ">")
        result = b.select(b.fcmp_ordered("==", x, y), tie, b.fadd(x, y))  # else a NaN
        result = b.select(b.fcmp_ordered(loses, x, y), y, result)
        return b.select(b.fcmp_ordered(wins, x, y), x, result)

    def _intrinsic(self, name: str, dtype: DType, *args: ir.Value) -> ir.Value:
        """Call an overloaded float intrinsic (declared by hand: llvmlite's declare_intrinsic
        gets some two-operand signatures wrong)."""
        ty = register_type(dtype)
        full_name = f"{name}.{'f32' if dtype == float32 else 'f64'}"
        return self.builder.call(declare(self.module, full_name, ty, [ty] * len(args)), list(args))

    def _emit_unary(self, e: k.Unary, scope: Scope) -> ir.Value:
        b = self.builder
        x = self.value(e.a, scope)
        dtype = e.dtype
        ty = register_type(dtype)
        if e.op == "logical_not":
            return b.xor(x, ir.Constant(I1, 1))
        if e.op == "neg":
            return b.fneg(x) if dtype.is_float else b.sub(ir.Constant(ty, 0), x)
        if e.op == "abs":
            if dtype.is_float:
                return self._intrinsic("llvm.fabs", dtype, x)
            negative = b.icmp_signed("<", x, ir.Constant(ty, 0))
            return b.select(negative, b.sub(ir.Constant(ty, 0), x), x)
        if e.op == "sign":
            return self._sign(x, dtype)
        if e.op in ("floor", "ceil"):
            return self._intrinsic(f"llvm.{e.op}", dtype, x)
        if e.op == "round":
            return self._intrinsic("llvm.roundeven", dtype, x)
        if e.op == "sqrt":
            return self._intrinsic("llvm.sqrt", dtype, x)
        if e.op == "rsqrt":
            return b.fdiv(ir.Constant(ty, 1.0), self._intrinsic("llvm.sqrt", dtype, x))
        return b.call(self.math(e.op, dtype), [x])  # exp, log1p, tanh, ...: the math library

    def _sign(self, x: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        ty = register_type(dtype)
        one, minus_one = (
            ir.Constant(ty, 1.0 if dtype.is_float else 1),
            ir.Constant(ty, -1.0 if dtype.is_float else -1),
        )
        if dtype.is_float:
            positive = b.fcmp_ordered(">", x, ir.Constant(ty, 0.0))
            negative = b.fcmp_ordered("<", x, ir.Constant(ty, 0.0))
            # NaN and -0.0 give 0, as in PyTorch.
            zero = ir.Constant(ty, 0.0)
            return b.select(positive, one, b.select(negative, minus_one, zero))
        positive = b.icmp_signed(">", x, ir.Constant(ty, 0))
        negative = b.icmp_signed("<", x, ir.Constant(ty, 0))
        return b.select(positive, one, b.select(negative, minus_one, ir.Constant(ty, 0)))

    def _emit_binary(self, e: k.Binary, scope: Scope) -> ir.Value:
        x, y = self.value(e.a, scope), self.value(e.b, scope)
        operand = e.a.dtype
        if operand.is_float:
            return self._float_binary(e.op, x, y, operand)
        return self._int_binary(e.op, x, y, operand)

    def _float_binary(self, op: str, x, y, dtype: DType) -> ir.Value:
        b = self.builder
        simple = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv}
        if op in simple:
            return simple[op](x, y)
        if op in ("maximum", "minimum"):
            return self._intrinsic(f"llvm.{op}", dtype, x, y)
        if op in ("floordiv", "mod"):
            return self._float_divmod(x, y, dtype)[0 if op == "floordiv" else 1]
        if op == "ne":
            return b.fcmp_unordered("!=", x, y)
        compare = {"eq": "==", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
        if op in compare:
            return b.fcmp_ordered(compare[op], x, y)
        return b.call(self.math(op, dtype), [x, y])  # pow, atan2: the math library

    def _float_divmod(self, x, y, dtype: DType):
        """Return numpy's (floor_divide, remainder) for floats."""
        b = self.builder
        ty = register_type(dtype)
        zero, one, half = (ir.Constant(ty, v) for v in (0.0, 1.0, 0.5))
        mod = b.frem(x, y)
        div = b.fdiv(b.fsub(x, mod), y)
        fix = b.and_(
            b.fcmp_ordered("!=", mod, zero),
            b.icmp_unsigned("!=", b.fcmp_ordered("<", y, zero), b.fcmp_ordered("<", mod, zero)),
        )
        mod = b.select(fix, b.fadd(mod, y), mod)
        div = b.select(fix, b.fsub(div, one), div)
        floor = self._intrinsic("llvm.floor", dtype, div)
        floor = b.select(b.fcmp_ordered(">", b.fsub(div, floor), half), b.fadd(floor, one), floor)
        quotient = b.fdiv(x, y)
        by_zero = b.fcmp_ordered("==", y, zero)
        floor = b.select(by_zero, quotient, floor)
        mod = b.select(by_zero, b.frem(x, y), mod)
        return floor, mod

    def _int_binary(self, op: str, x, y, dtype: DType) -> ir.Value:
        b = self.builder
        if dtype == bool_:
            logical = {"logical_and": b.and_, "logical_or": b.or_}
            if op in logical:
                return logical[op](x, y)
            return b.icmp_unsigned("==" if op == "eq" else "!=", x, y)
        simple = {"add": b.add, "sub": b.sub, "mul": b.mul}
        if op in simple:
            return simple[op](x, y)
        if op in ("floordiv", "mod"):
            return self._floor_divmod(x, y, x.type)[0 if op == "floordiv" else 1]
        if op == "maximum":
            return b.select(b.icmp_signed(">", x, y), x, y)
        if op == "minimum":
            return b.select(b.icmp_signed("<", x, y), x, y)
        if op == "pow":
            return b.call(self._integer_power(x.type), [x, y])
        compare = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
        return b.icmp_signed(compare, x, y)

    def _integer_power(self, ty: ir.IntType) -> ir.Function:
        name = f"graphc_ipow_i{ty.width}"
        if name in self.module.globals:
            return self.module.globals[name]
        fn = ir.Function(self.module, ir.FunctionType(ty, [ty, ty]), name)
        fn.linkage = "internal"
        base, exponent = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        loop = fn.append_basic_block("square")
        done = fn.append_basic_block("done")
        entry = b.block
        b.branch(loop)
        b.position_at_end(loop)
        result = b.phi(ty)
        power = b.phi(ty)
        remaining = b.phi(ty)
        result.add_incoming(ir.Constant(ty, 1), entry)
        power.add_incoming(base, entry)
        remaining.add_incoming(exponent, entry)
        odd = b.icmp_signed("!=", b.and_(remaining, ir.Constant(ty, 1)), ir.Constant(ty, 0))
        new_result = b.select(odd, b.mul(result, power), result)
        new_power = b.mul(power, power)
        new_remaining = b.ashr(remaining, ir.Constant(ty, 1))
        result.add_incoming(new_result, loop)
        power.add_incoming(new_power, loop)
        remaining.add_incoming(new_remaining, loop)
        more = b.icmp_signed(">", new_remaining, ir.Constant(ty, 0))
        b.cbranch(more, loop, done)
        b.position_at_end(done)
        # A negative exponent gives PyTorch's integer answer: 1 for base 1, +-1 for base -1
        # by the exponent's parity, 0 for every other base.
        zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
        odd = b.icmp_signed("!=", b.and_(exponent, one), zero)
        minus_one_power = b.select(odd, ir.Constant(ty, -1), one)
        reciprocal = b.select(
            b.icmp_signed("==", base, one),
            one,
            b.select(b.icmp_signed("==", base, ir.Constant(ty, -1)), minus_one_power, zero),
        )
        negative = b.icmp_signed("<", exponent, zero)
        b.ret(b.select(negative, reciprocal, new_result))
        return fn

    def _emit_indexcheck(self, e: k.IndexCheck, scope: Scope) -> ir.Value:
        b = self.builder
        raw = self._to_i64(self.value(e.index, scope), e.index.dtype)
        size = self.index(e.size, scope)
        lowest = b.sub(ir.Constant(I64, 0), size) if e.wrap else ir.Constant(I64, 0)
        ok = b.and_(b.icmp_signed(">=", raw, lowest), b.icmp_signed("<", raw, size))
        with b.if_then(b.not_(ok), likely=False):
            self.record_index_error(raw, size, e.axis)
        wrapped = b.select(b.icmp_signed("<", raw, ir.Constant(I64, 0)), b.add(raw, size), raw)
        return self.from_i64(b.select(ok, wrapped, ir.Constant(I64, 0)), e.dtype)

    def record_index_error(self, index: ir.Value, size: ir.Value, axis: int) -> None:
        """Emit the recording of a bad index: the error record (flag, index, size, axis) that
        stops the call. A backend running many threads overrides it to claim the record."""
        b = self.builder
        fields = (ir.Constant(I64, 1), index, size, ir.Constant(I64, axis))
        for position, value in enumerate(fields):
            b.store(value, b.gep(self.error_pointer, [ir.Constant(I64, position)]))

    def _emit_philox(self, e: k.Philox, scope: Scope) -> ir.Value:
        key = ("philox", e.counter, e.offset, e.seed)
        if key not in scope.values:
            scope.values[key] = self._philox_words(e, scope)
        return self.builder.zext(scope.values[key][e.word], I64)

    def _philox_words(self, e: k.Philox, scope: Scope) -> list[ir.Value]:
        b = self.builder
        counter = b.add(
            self._to_i64(self.value(e.offset, scope), e.offset.dtype), self.index(e.counter, scope)
        )
        c = [
            b.trunc(counter, I32),
            b.trunc(b.lshr(counter, ir.Constant(I64, 32)), I32),
            ir.Constant(I32, 0),
            ir.Constant(I32, 0),
        ]
        k0, k1 = e.seed & 0xFFFFFFFF, (e.seed >> 32) & 0xFFFFFFFF
        for _ in range(PHILOX_ROUNDS):
            p0 = b.mul(ir.Constant(I64, PHILOX_M0), b.zext(c[0], I64))
            p1 = b.mul(ir.Constant(I64, PHILOX_M1), b.zext(c[2], I64))
            hi0, lo0 = b.trunc(b.lshr(p0, ir.Constant(I64, 32)), I32), b.trunc(p0, I32)
            hi1, lo1 = b.trunc(b.lshr(p1, ir.Constant(I64, 32)), I32), b.trunc(p1, I32)
            c = [
                b.xor(b.xor(hi1, c[1]), ir.Constant(I32, k0)),
                lo1,
                b.xor(b.xor(hi0, c[3]), ir.Constant(I32, k1)),
                lo0,
            ]
            k0, k1 = (k0 + PHILOX_W0) & 0xFFFFFFFF, (k1 + PHILOX_W1) & 0xFFFFFFFF
        return c

    def _emit_reduce(self, e: k.Reduce, scope: Scope) -> ir.Value:
        """Emit the inner loops of a Reduce and return its result."""
        self.reductions([e], scope)
        return scope.values[e]

    def _two_pass(self, e: k.Reduce) -> bool:
        """Return whether a Reduce is a float argmax or argmin over a range long enough to be
        the loop that vectorises. A short, constant one (a pooling window) is unrolled, and
        the loop around it vectorises the one-pass form: the two-pass one measured 2x slower
        there."""
        return e.op in _ARG_OPS and e.body.dtype.is_float and not _unrolled(e)

    def reductions(
        self, group: Sequence[k.Reduce], scope: Scope, pieces: Sequence[Piece] | None = None
    ) -> None:
        """Emit reductions with equal extents as one loop nest, one accumulator (a pair for
        argmax and argmin) each, and put their results in scope: several reductions over the
        same input read it once. The loop runs over the first reduction's vars; the others'
        vars take the same values. `pieces` splits the outermost var's range into consecutive
        parts [start, end), each with a callback run at every element before the bodies."""
        for e in group:
            # What a body reads from an enclosing scope is computed before the loop, not in it.
            for used in used_reductions(e):
                self.value(used, scope)
            if self._two_pass(e):
                scope.values[e] = self.value(first_extremum(e), scope)
        group = [e for e in group if not self._two_pass(e)]
        if not group:
            return
        first = group[0]
        extents = [self.index(x, scope) for x in first.extents]
        initial: list[ir.Value] = []
        for e in group:
            initial.append(self.identity(e.op, e.body.dtype))
            if e.op in _ARG_OPS:
                initial.append(ir.Constant(I64, 0))

        def step(visit: Visit | None):
            def combine(inner: Scope, flat: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
                for e in group[1:]:
                    for var, same in zip(e.vars, first.vars, strict=True):
                        inner.values[var] = inner.values[same]
                if visit is not None:
                    visit(inner)
                updated: list[ir.Value] = []
                for e in group:
                    state = carried[len(updated) : len(updated) + _width(e)]
                    value = self.value(e.body, inner)
                    updated += self.combine(e.op, e.body.dtype, state, value, flat, _unrolled(e))
                return updated

            return combine

        carried = initial
        if pieces is None:
            carried = self.loop(first.vars, extents, scope, carried, step(None))
        for start, end, visit in pieces or ():
            carried = self.loop(
                first.vars, [end, *extents[1:]], scope, carried, step(visit), start=start
            )
        position = 0
        for e in group:
            final = carried[position : position + _width(e)]
            scope.values[e] = self.from_i64(final[1], e.dtype) if e.op in _ARG_OPS else final[0]
            position += _width(e)

    def identity(self, op: str, dtype: DType) -> ir.Constant:
        """Return the value a reduction starts from."""
        ty = register_type(dtype)
        if dtype.is_float:
            return ir.Constant(
                ty,
                {
                    "sum": 0.0,
                    "prod": 1.0,
                    "max": float("-inf"),
                    "argmax": float("-inf"),
                    "min": float("inf"),
                    "argmin": float("inf"),
                }[op],
            )
        bits = ty.width
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return ir.Constant(
            ty, {"sum": 0, "prod": 1, "max": low, "argmax": low, "min": high, "argmin": high}[op]
        )

    def combine(
        self, op, dtype: DType, carried, value, flat, unrolled: bool = False
    ) -> list[ir.Value]:
        """Return a reduction's carried values (argmax and argmin: value and index) after one
        more element, `value` at flat index `flat`; `unrolled`: the reduction is a few
        constant steps (a pooling window), which LLVM unrolls into the loop around it."""
        b = self.builder
        acc = carried[0]
        if dtype.is_float:
            if op == "sum":
                return [b.fadd(acc, value, flags=REASSOC)]
            if op == "prod":
                return [b.fmul(acc, value, flags=REASSOC)]
            if op in ("max", "min") and unrolled and self.window_extrema_by_selects:
                return [self._selected_extremum(op, dtype, acc, value)]
            if op in ("max", "min"):
                return [self._intrinsic(f"llvm.{op}imum", dtype, acc, value)]
            better = b.fcmp_ordered(">" if op == "argmax" else "<", value, acc)
            nan_first = b.and_(
                b.fcmp_unordered("uno", value, value), b.fcmp_ordered("ord", acc, acc)
            )
            take = b.or_(better, nan_first)
        else:
            if op == "sum":
                return [b.add(acc, value)]
            if op == "prod":
                return [b.mul(acc, value)]
            bigger = b.icmp_signed(">" if op in ("max", "argmax") else "<", value, acc)
            if op in ("max", "min"):
                return [b.select(bigger, value, acc)]
            take = bigger
        return [b.select(take, value, acc), b.select(take, flat, carried[1])]


def _unrolled(e: k.Reduce) -> bool:
    """Return whether a Reduce runs a few constant steps (at most _UNROLLED), which LLVM
    unrolls into the loop around it."""
    count = 1
    for extent in e.extents:
        if not isinstance(extent, k.IConst):
            return False
        count *= extent.value
    return count <= _UNROLLED
