"""A loop opened and closed by separate calls, so code can be emitted between them by any
caller: thread regions whose phases a barrier splits, and grid-stride loops."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

I64 = ir.IntType(64)


class OpenLoop:
    """`for index = start; index < end; index += step`, carrying values; emit the body after
    creating it, then call close() with the carried values' next ones."""

    def __init__(
        self,
        builder: ir.IRBuilder,
        start: ir.Value,
        end: ir.Value,
        step: ir.Value | int,
        name: str,
        carried: Sequence[ir.Value] = (),
    ) -> None:
        self._builder = b = builder
        function = b.function
        before = b.block
        self._head = function.append_basic_block(f"{name}.head")
        body = function.append_basic_block(f"{name}.body")
        self._done = function.append_basic_block(f"{name}.done")
        self._step = ir.Constant(I64, step) if isinstance(step, int) else step
        b.branch(self._head)
        b.position_at_end(self._head)
        self.index = b.phi(I64, name=name)
        self.index.add_incoming(start, before)
        self.carried = []
        for position, value in enumerate(carried):
            phi = b.phi(value.type, name=f"{name}.acc{position}")
            phi.add_incoming(value, before)
            self.carried.append(phi)
        b.cbranch(b.icmp_signed("<", self.index, end), body, self._done)
        b.position_at_end(body)

    def close(self, carried: Sequence[ir.Value] = ()) -> list[ir.Value]:
        """End the body (the builder's current block branches back) and continue after the
        loop; return the carried values as the loop leaves them."""
        b = self._builder
        latch = b.block
        self.index.add_incoming(b.add(self.index, self._step), latch)
        for phi, value in zip(self.carried, carried, strict=True):
            phi.add_incoming(value, latch)
        b.branch(self._head)
        b.position_at_end(self._done)
        return list(self.carried)
