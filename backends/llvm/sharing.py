"""Emit kernels that differ only in the buffers they touch as one function.

The layers of a deep or bidirectional LSTM run the same step on other weights, and Adam updates
every parameter of a shape with the same arithmetic: in the kernel IR these kernels are equal
but for their buffers' names. Each kernel function is a wrapper that loads its buffers'
addresses from the pointer table and calls a body taking them as `noalias` pointers
(`FunctionEmitter`), so such kernels can share one body, each keeping a wrapper of its own
name: LLVM optimises and compiles the body once (a 2-layer bidirectional LSTM's training step
has 103 loop kernels and 37 distinct bodies).

A kernel's *template* is its IR with the buffers renamed in the order the IR mentions them
(after resolving aliases, so kernels sharing memory differently never match) and with its name
and covers dropped; two kernels share a body when their templates and their buffers' dtypes
are equal, which is everything the body's code depends on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from graphc.backends.kernel import ir as k
from graphc.backends.llvm.expressions import I64
from graphc.backends.llvm.kernels import KERNEL_ARGS, KERNEL_TYPE, KernelContext

# A buffer in a kernel's repr: the fields naming one (Load, Store, Operand; the output of a
# matmul or a scatter, a matmul's packed B). Names are buffer names, which hold no quotes.
_BUFFER = re.compile(r"\b(buffer|out|packed_b)='([^']*)'")
# A matmul's body also takes the GEMM workspace, which is the same table entry for every kernel.
_WORKSPACE = "workspace"


class SharedBodies:
    """The kernel bodies emitted so far into one module, by template."""

    def __init__(self, ctx: KernelContext) -> None:
        self.ctx = ctx
        # template -> (the body, the template's buffers in order of mention)
        self._bodies: dict[tuple[str, tuple[str, ...]], tuple[ir.Function, list[str]]] = {}

    def function(
        self, kernel: Any, emit: Callable[[KernelContext, Any], ir.Function]
    ) -> ir.Function:
        """Return the function of kernel: emitted by emit(ctx, kernel) the first time its
        template is seen, else a wrapper calling the body emitted then."""
        template, buffers = self._template(kernel)
        found = self._bodies.get(template)
        if found is not None:
            body, first_buffers = found
            return self._wrapper(kernel.name, body, dict(zip(first_buffers, buffers, strict=True)))
        function = emit(self.ctx, kernel)
        body = self.ctx.module.globals.get(f"{kernel.name}.body")
        parameters = [arg.name for arg in body.args[len(KERNEL_ARGS) :]] if body else []
        if body is not None and sorted(set(buffers)) == sorted(parameters):
            self._bodies[template] = (body, buffers)
        return function

    def _template(self, kernel: Any) -> tuple[tuple[str, tuple[str, ...]], list[str]]:
        """Return (template, the kernel's buffers in order of mention): the template is the
        kernel's IR text with buffers numbered by first mention, and their dtypes."""
        numbers: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            buffer = self.ctx.canonical(match.group(2))
            return f"{match.group(1)}='b{numbers.setdefault(buffer, len(numbers))}'"

        anonymous: dict[str, Any] = {"name": "", "covers": ()}
        if isinstance(kernel, k.MatmulKernel):
            anonymous["epilogue"] = None  # emitted as a kernel of its own
        text = _BUFFER.sub(number, repr(dataclasses.replace(kernel, **anonymous)))
        if isinstance(kernel, k.MatmulKernel):
            numbers.setdefault(_WORKSPACE, len(numbers))
        buffers = list(numbers)
        dtypes = tuple(self.ctx.dtypes[name].name for name in buffers)
        return (text, dtypes), buffers

    def _wrapper(self, name: str, body: ir.Function, buffers: dict[str, str]) -> ir.Function:
        """Emit `name`, a kernel function passing its own buffers (buffers maps each buffer
        of the body's first kernel to this kernel's) to body, which stops being inlined."""
        body.attributes.discard("alwaysinline")
        body.attributes.add("noinline")
        wrapper = ir.Function(self.ctx.module, KERNEL_TYPE, name)
        wrapper.attributes.add("noinline")
        b = ir.IRBuilder(wrapper.append_basic_block("entry"))
        pointers = []
        for parameter in body.args[len(KERNEL_ARGS) :]:
            buffer = buffers[parameter.name]
            entry = b.gep(wrapper.args[0], [ir.Constant(I64, self.ctx.slots[buffer])])
            pointers.append(b.bitcast(b.load(entry, name=f"{buffer}.raw"), parameter.type))
        b.call(body, [*wrapper.args, *pointers])
        b.ret_void()
        return wrapper
