"""One CUDA kernel function: the arguments every generated kernel takes, its dialect, and
expression emission whose run-time errors are claimed atomically.

Every kernel is `void name(i8** table, i64* sizes, i64* error, ...)`, the dialect's arguments
after those: the same three pointers as a CPU kernel, so one argument array serves every launch
of a program. A kernel does nothing if an earlier one recorded an error, so, as on the CPU, no
kernel after a failing one writes anything.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.cuda.dialect import KernelDialect
from graphc.backends.llvm.expressions import I64, ExpressionEmitter, Scope
from graphc.backends.llvm.kernels import FunctionEmitter, KernelContext

POINTER_ARGS = ("table", "sizes", "error")
POINTER_TYPES = (ir.IntType(8).as_pointer().as_pointer(), I64.as_pointer(), I64.as_pointer())


class CudaExpressions(ExpressionEmitter):
    """The CPU backend's expression emitter, with an index error recorded by whichever thread
    claims the record first: many threads may find a bad index at once, and the record must
    name one of them whole."""

    def __init__(self, emitter: FunctionEmitter, math) -> None:
        super().__init__(
            emitter.ctx.module,
            emitter.builder,
            emitter.pointer,
            emitter.size,
            emitter.error,
            math,
            emitter.loop,
        )

    def record_index_error(self, index: ir.Value, size: ir.Value, axis: int) -> None:
        """Emit: claim the error record (flag 0 -> 1) and, if this thread won it, write the
        bad index, the dim's size and the axis into it."""
        b = self.builder
        record = self.error_pointer
        claim = b.cmpxchg(
            record, ir.Constant(I64, 0), ir.Constant(I64, 1), "monotonic", "monotonic"
        )
        with b.if_then(b.extract_value(claim, 1)):
            fields = (index, size, ir.Constant(I64, axis))
            for position, value in enumerate(fields, start=1):
                b.store(value, b.gep(record, [ir.Constant(I64, position)]))


class KernelFunction:
    """A kernel being emitted: its function, builder, expressions and dialect."""

    def __init__(
        self,
        ctx: KernelContext,
        name: str,
        buffers: list[str],
        dialect: type[KernelDialect],
        block: int,
    ) -> None:
        # A PTX name may not contain '.', which the names of a loop's body kernels do.
        name = name.replace(".", "$")
        names = (*POINTER_ARGS, *(arg for arg, _ in dialect.EXTRA_ARGS))
        types = (*POINTER_TYPES, *(ty for _, ty in dialect.EXTRA_ARGS))
        self.emitter = FunctionEmitter(
            ctx, name, ir.FunctionType(ir.VoidType(), types), names, buffers=buffers
        )
        self.name = name
        self.block = block
        self.builder = self.emitter.builder
        self.dialect = dialect(self.emitter, block)
        math = lambda op, dtype: ctx.math(ctx.module, op, dtype.short)  # noqa: E731
        self.expr = CudaExpressions(self.emitter, math)
        self.emitter.expr = self.expr
        b = self.builder
        failed = b.icmp_signed("!=", b.load(self.emitter.error), ir.Constant(I64, 0))
        with b.if_then(failed, likely=False):
            b.ret_void()
        self.dialect.begin()

    def finish(self) -> str:
        """End the body, make the kernel launchable and return the symbol to launch."""
        self.dialect.end()
        return self.dialect.publish(self.emitter.finish())

    def store(self, buffer: str, offset: ir.Value, value: ir.Value) -> None:
        """Store value (in registers) to buffer[offset]."""
        self.emitter.store(buffer, offset, value)

    def pointer(self, buffer: str) -> ir.Value:
        """Return the typed pointer of a buffer."""
        return self.emitter.pointer(buffer)


def product(b: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
    """Return the product of i64 values (1 for none)."""
    total: ir.Value = ir.Constant(I64, 1)
    for value in values:
        total = b.mul(total, value)
    return total


def bind_indices(
    b: ir.IRBuilder, scope: Scope, variables, extents: list[ir.Value], flat: ir.Value
) -> None:
    """Bind variables (row-major over extents) to the position of a flat index; the outermost
    takes what is left, so no extent divides it."""
    remaining = flat
    for depth in reversed(range(len(variables))):
        if depth == 0:
            scope.values[variables[0]] = remaining
            break
        scope.values[variables[depth]] = b.srem(
            remaining, extents[depth], name=variables[depth].name
        )
        remaining = b.sdiv(remaining, extents[depth])
