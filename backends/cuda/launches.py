"""The launches of a CUDA module: each kernel function's launch geometry, and a loop's launches
(its body's, run once per step), unrolled in run order for a call's symbol sizes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from graphc.backends.cuda.kernel_function import KernelFunction
from graphc.backends.kernel import ir as k
from graphc.errors import CompileError


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the kernel it belongs to, the symbol to launch, threads per block,
    the grid: enough blocks for `units` units of work at `per_block` per block (a driver
    may cap it; every kernel loops over what its grid does not cover), and the block-shared
    memory the kernel declares."""

    kernel: str
    symbol: str
    block: int
    units: k.IntExpr
    per_block: int
    shared_bytes: int
    # A matmul's epilogue on its own, launched only after cuBLAS computed the product (the
    # own GEMM kernel applies the epilogue as it stores).
    after_cublas: bool = False

    def grid(self, bindings: Mapping[str, int], max_blocks: int) -> int:
        """Return the number of blocks for these symbol sizes, at most max_blocks."""
        return min(max_blocks, max(1, -(-evaluate(self.units, bindings) // self.per_block)))

    def grid_text(self, max_blocks: int) -> str:
        """Return the grid as a formula of the symbol sizes (a number when they fix it)."""
        if isinstance(self.units, k.IConst):
            return str(self.grid({}, max_blocks))
        blocks = size_text(self.units)
        if self.per_block > 1:
            blocks = f"ceil({blocks} / {self.per_block})"
        return f"min({blocks}, {max_blocks})"


@dataclass(frozen=True)
class LoopLaunches:
    """A loop's launches: `start` once, then `step` (the body's launches and the one moving
    the loop's buffers on) `length` times, then `end`."""

    kernel: str
    length: k.IntExpr
    start: tuple[Launch, ...]
    step: tuple[Launch | LoopLaunches, ...]
    end: tuple[Launch, ...]


Launches = list[Launch | LoopLaunches]


def finish_launch(
    kernel: str, kf: KernelFunction, units: k.IntExpr, per_block: int, after_cublas: bool = False
) -> Launch:
    """Finish a kernel function and return its launch."""
    symbol = kf.finish()
    shared = kf.dialect.shared_bytes
    return Launch(kernel, symbol, kf.block, units, per_block, shared, after_cublas)


def every_launch(items: Iterable[Launch | LoopLaunches]) -> Iterator[Launch]:
    """Yield each launch once, a loop's in the order start, step, end."""
    for item in items:
        if isinstance(item, Launch):
            yield item
        else:
            yield from (*item.start, *every_launch(item.step), *item.end)


def run_order(
    items: Iterable[Launch | LoopLaunches], bindings: Mapping[str, int]
) -> Iterator[Launch]:
    """Yield the launches of a call with these symbol sizes, in order: a loop's step
    launches as many times as it has steps."""
    for item in items:
        if isinstance(item, Launch):
            yield item
            continue
        yield from item.start
        for _ in range(evaluate(item.length, bindings)):
            yield from run_order(item.step, bindings)
        yield from item.end


def evaluate(e: k.IntExpr, bindings: Mapping[str, int]) -> int:
    """Return the value of an index expression of sizes for these symbol sizes."""
    if isinstance(e, k.IConst):
        return e.value
    if isinstance(e, k.SymSize):
        return bindings[e.symbol]
    if isinstance(e, k.IBin):
        folded = k.ibin(e.op, k.IConst(evaluate(e.a, bindings)), k.IConst(evaluate(e.b, bindings)))
        assert isinstance(folded, k.IConst)
        return folded.value
    raise CompileError(f"a launch size that depends on data: {e}")


# How size_text writes the operators of index expressions, with their precedence.
_OPERATORS = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("//", 2), "mod": ("%", 2)}


def size_text(e: k.IntExpr) -> str:
    """Return an index expression of sizes as a formula, such as `(B + 63) // 64 * 4`."""
    if isinstance(e, k.IConst):
        return str(e.value)
    if isinstance(e, k.SymSize):
        return e.symbol
    if isinstance(e, k.IBin) and e.op in _OPERATORS:
        symbol, precedence = _OPERATORS[e.op]
        parts = []
        for side, operand in (("a", e.a), ("b", e.b)):
            text = size_text(operand)
            inner = _OPERATORS.get(operand.op, ("", 3))[1] if isinstance(operand, k.IBin) else 3
            if inner < precedence or (side == "b" and inner == precedence and e.op != "add"):
                text = f"({text})"
            parts.append(text)
        return f"{parts[0]} {symbol} {parts[1]}"
    if isinstance(e, k.IBin):
        return f"{e.op}({size_text(e.a)}, {size_text(e.b)})"
    raise CompileError(f"a launch size that depends on data: {e}")
