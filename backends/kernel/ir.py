"""The loop-level kernel IR shared by the CPU and CUDA backends.

A Kernel computes one or more output buffers over an iteration domain (a row-major loop
nest). Each output element is an expression tree: loads from buffers at integer index
expressions, constants, elementwise math, and Reduce nodes that stand for an inner loop.
Index expressions are integer expressions over the loop variables and the symbolic sizes
bound at call time. Nothing here names a target: backends decide vector widths, threads
and memory spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from graphc.dtypes import DType

# -- integer (index) expressions ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Var:
    """A loop variable."""

    name: str


@dataclass(frozen=True, slots=True)
class IConst:
    """An integer constant."""

    value: int


@dataclass(frozen=True, slots=True)
class SymSize:
    """The run-time value of a symbolic dimension (a symbol name such as 'B')."""

    symbol: str


@dataclass(frozen=True, slots=True)
class IBin:
    """Integer arithmetic or comparison: add sub mul div (floor) mod min max lt le eq ne and or."""

    op: str
    a: IntExpr
    b: IntExpr


@dataclass(frozen=True, slots=True)
class ISelect:
    """cond ? a : b on integers (cond is an integer comparison)."""

    cond: IntExpr
    a: IntExpr
    b: IntExpr


@dataclass(frozen=True, slots=True)
class ValueIndex:
    """An integer index read from data (a gather index), as an index expression."""

    value: Expr


IntExpr = Var | IConst | SymSize | IBin | ISelect | ValueIndex


def iconst(value: int) -> IConst:
    return IConst(int(value))


def iadd(a: IntExpr, b: IntExpr) -> IntExpr:
    """Return a + b, folding constants and zeros."""
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(a.value + b.value)
    if isinstance(a, IConst) and a.value == 0:
        return b
    if isinstance(b, IConst) and b.value == 0:
        return a
    return IBin("add", a, b)


def imul(a: IntExpr, b: IntExpr) -> IntExpr:
    """Return a * b, folding constants, zeros and ones."""
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(a.value * b.value)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, IConst) and x.value == 0:
            return IConst(0)
        if isinstance(x, IConst) and x.value == 1:
            return y
    return IBin("mul", a, b)


def ibin(op: str, a: IntExpr, b: IntExpr) -> IntExpr:
    """Return the integer op applied to a and b, folding constants where exact."""
    if op == "add":
        return iadd(a, b)
    if op == "mul":
        return imul(a, b)
    if op == "sub" and isinstance(b, IConst):
        return iadd(a, IConst(-b.value))
    if op in ("div", "mod") and isinstance(b, IConst) and b.value == 1:
        return a if op == "div" else IConst(0)
    if isinstance(a, IConst) and isinstance(b, IConst):
        return IConst(_fold_int(op, a.value, b.value))
    return IBin(op, a, b)


def _fold_int(op: str, a: int, b: int) -> int:
    return {
        "sub": a - b,
        "div": a // b if b else 0,
        "mod": a % b if b else 0,
        "min": min(a, b),
        "max": max(a, b),
        "lt": int(a < b),
        "le": int(a <= b),
        "eq": int(a == b),
        "ne": int(a != b),
        "and": int(bool(a) and bool(b)),
        "or": int(bool(a) or bool(b)),
    }[op]


# -- value expressions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """buffer[offset], offset in elements."""

    buffer: str
    offset: IntExpr
    dtype: DType


@dataclass(frozen=True, slots=True)
class Const:
    """A scalar constant of a dtype."""

    value: Any
    dtype: DType


@dataclass(frozen=True, slots=True)
class Unary:
    """An elementwise unary op (the graph op names: exp, log, neg, ...)."""

    op: str
    a: Expr
    dtype: DType


@dataclass(frozen=True, slots=True)
class Binary:
    """An elementwise binary op (add, mul, lt, logical_and, ...)."""

    op: str
    a: Expr
    b: Expr
    dtype: DType


@dataclass(frozen=True, slots=True)
class Select:
    """cond ? a : b elementwise; cond is a bool expression."""

    cond: Expr
    a: Expr
    b: Expr
    dtype: DType


@dataclass(frozen=True, slots=True)
class Cast:
    """Conversion to dtype (float to int truncates toward zero)."""

    a: Expr
    dtype: DType


@dataclass(frozen=True, slots=True)
class IndexValue:
    """An integer index expression used as a value of dtype."""

    index: IntExpr
    dtype: DType


@dataclass(frozen=True, slots=True)
class IndexCheck:
    """A run-time index in [-size, size) (negative ones wrapped to [0, size)), or in [0, size)
    when wrap is False; anything else flags an error."""

    index: Expr
    size: IntExpr
    axis: int
    dtype: DType
    wrap: bool = True


@dataclass(frozen=True, slots=True)
class Philox:
    """Word `word` (0..3) of Philox-4x32-10 at a 64-bit counter, as a uint32 held in int64."""

    counter: IntExpr
    offset: Expr
    seed: int
    word: int
    dtype: DType


@dataclass(frozen=True, slots=True)
class Reduce:
    """An inner loop: combine `body` over vars in [0, extent) with op (sum max min prod
    argmax argmin); argmax/argmin yield the flat index (row-major over vars) of the first
    extremum."""

    op: str
    vars: tuple[Var, ...]
    extents: tuple[IntExpr, ...]
    body: Expr
    dtype: DType


Expr = Load | Const | Unary | Binary | Select | Cast | IndexValue | IndexCheck | Philox | Reduce


# -- kernels ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """Write `value` to buffer at the domain index (row-major, contiguous)."""

    buffer: str
    value: Expr


@dataclass(frozen=True, slots=True)
class LoopKernel:
    """out[i] = value(i) for every i in the domain, for each store, in order."""

    name: str
    domain: tuple[IntExpr, ...]
    vars: tuple[Var, ...]
    stores: tuple[Store, ...]
    covers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Operand:
    """A strided view of a buffer: element (i0, i1, ...) is at offset + sum(i_k * strides_k)."""

    buffer: str
    shape: tuple[IntExpr, ...]
    strides: tuple[IntExpr, ...]
    offset: IntExpr = field(default_factory=lambda: IConst(0))


# Columns a packed copy of B may take past N: a CPU GEMM packs B into panels of NR columns
# (at most 64 in any plan), the last one padded with zeros.
PACKED_B_SLACK = 64


@dataclass(frozen=True, slots=True)
class Runs:
    """A's depth or rows in runs of `length`, run r starting r * `stride` elements after the
    first. Depth (a window_matmul's kernel rows): column k of A is at (k % length) * its
    column stride + (k // length) * stride, and K is a whole number of runs. Rows (a
    window_matmul's output rows): row i is at (i % length) * its row stride + (i // length)
    * stride, M is a whole number of runs, and a run holds at least window_matmul's
    ROW_RUN_LEAST rows."""

    length: IntExpr
    stride: IntExpr


@dataclass(frozen=True, slots=True)
class MatmulKernel:
    """out[batch..., M, N] = a @ b over broadcast batch dims, then the epilogue stores (which
    may read `out` at the domain index) run over the same domain.

    packed_b names a buffer (K x (N + PACKED_B_SLACK) elements) where a loop's B, the same at
    every step, is packed once before the loop in the backend's GEMM layout (`ScanKernel`); a
    backend without one reads b. a_depth_runs and a_row_runs, where set, lay A's depth and
    rows out in runs (`Runs`); such a kernel has no packed_b."""

    name: str
    a: Operand
    b: Operand
    out: str
    batch: tuple[IntExpr, ...]
    m: IntExpr
    n: IntExpr
    k: IntExpr
    dtype: DType
    epilogue: LoopKernel | None = None
    covers: tuple[int, ...] = ()
    packed_b: str | None = None
    a_depth_runs: Runs | None = None
    a_row_runs: Runs | None = None


def packs_b_whole(kernel: MatmulKernel) -> bool:
    """Return whether a matmul's B may be packed whole ahead of its calls (`packed_b`): one
    matrix (no batch dims), A's depth not in runs (the GEMM groups such a depth itself and
    packs B per group), a float dtype."""
    return not kernel.batch and kernel.a_depth_runs is None and kernel.dtype.is_float


@dataclass(frozen=True, slots=True)
class ScatterAddKernel:
    """out = 0; then out[index(i)] += value(i) for every i of the source domain, in order."""

    name: str
    out: str
    out_size: IntExpr
    domain: tuple[IntExpr, ...]
    vars: tuple[Var, ...]
    target: IntExpr
    value: Expr
    dtype: DType
    covers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanKernel:
    """A loop: the `body` kernels run `length` times (from the last step down when reverse).

    The body reads the carry from `carry_in` and writes the next one to `carry_out`, two
    buffers of `carry_bytes` each whose addresses the loop swaps after every step; it starts
    from a copy of `init`, and the carry after the last step is copied to `final` (None
    where nothing reads it). Step t reads `x_slots` and writes `y_slots`, buffers whose
    addresses point at step t of `xs` and `ys` (`x_bytes` and `y_bytes` apart; a y nobody
    reads has no `ys` and keeps its own buffer). Everything else the body reads it reads
    from the buffers of the program around it, by name. A body matmul with `packed_b` has its
    B packed there before the first step."""

    name: str
    length: IntExpr
    reverse: bool
    body: tuple[Kernel, ...]
    init: tuple[str, ...]
    carry_in: tuple[str, ...]
    carry_out: tuple[str, ...]
    final: tuple[str | None, ...]
    carry_bytes: tuple[IntExpr, ...]
    xs: tuple[str, ...]
    x_slots: tuple[str, ...]
    x_bytes: tuple[IntExpr, ...]
    ys: tuple[str | None, ...]
    y_slots: tuple[str, ...]
    y_bytes: tuple[IntExpr, ...]
    covers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CollectiveKernel:
    """out = the elementwise `op` ("sum", "max", "min") of `source` over every process of
    the world: one all-reduce of `count` elements of `dtype`, a call into the MPI library."""

    name: str
    op: str
    source: str
    out: str
    count: IntExpr
    dtype: DType
    covers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SparseUpdateKernel:
    """A scatter-add and the in-place update that alone reads its output: `update` stores
    variable - scale * out (`subtract`) or variable + scale * out, element by element, into
    the variable's memory (sparse_updates.py). Where scale * 0 changes no element (it is +0.0
    to subtract, -0.0 to add) and the source has no more elements than out, a backend may
    clear, accumulate and update only the elements the scatter targets: the other elements
    would get variable -/+ scale * 0, the variable's own bits. Otherwise it runs the scatter,
    then the update."""

    name: str
    scatter: ScatterAddKernel
    update: LoopKernel
    scale: Expr
    subtract: bool
    covers: tuple[int, ...] = ()


Kernel = (
    LoopKernel
    | MatmulKernel
    | ScatterAddKernel
    | ScanKernel
    | CollectiveKernel
    | SparseUpdateKernel
)


def nested_kernels(kernels: Iterable[Kernel]) -> Iterator[Kernel]:
    """Yield every kernel, and after a loop the kernels of its body, after a sparse update
    its scatter and update."""
    for kernel in kernels:
        yield kernel
        if isinstance(kernel, ScanKernel):
            yield from nested_kernels(kernel.body)
        elif isinstance(kernel, SparseUpdateKernel):
            yield from (kernel.scatter, kernel.update)


def children(expr: Any) -> list[Any]:
    """Return the sub-expressions (value and index expressions) of an IR expression."""
    found: list[Any] = []
    for name in getattr(expr, "__slots__", ()):
        value = getattr(expr, name)
        items = value if isinstance(value, tuple) else (value,)
        found.extend(
            item for item in items if hasattr(item, "__slots__") and not isinstance(item, DType)
        )
    return found


def subexpressions(expr: Any) -> Iterator[Any]:
    """Yield an IR expression and every expression inside it, depth first."""
    yield expr
    for child in children(expr):
        yield from subexpressions(child)


def transformed(expr: Any, change: Callable[[Any], Any]) -> Any:
    """Return an IR expression rebuilt from the leaves up, each node passed through change
    once its children are rebuilt."""
    if not hasattr(expr, "__slots__") or isinstance(expr, DType):
        return expr
    fields = []
    for name in expr.__slots__:
        value = getattr(expr, name)
        if isinstance(value, tuple):
            fields.append(tuple(transformed(item, change) for item in value))
        else:
            fields.append(transformed(value, change))
    return change(type(expr)(*fields))


def free_vars(expr: Any) -> frozenset[Var]:
    """Return the loop variables an expression reads (Reduce binds its own)."""
    if isinstance(expr, Var):
        return frozenset({expr})
    if isinstance(expr, Reduce):
        return free_vars(expr.body) - frozenset(expr.vars) | frozenset().union(
            *(free_vars(e) for e in expr.extents)
        )
    return frozenset().union(*(free_vars(child) for child in children(expr)))


def loads(expr: Any) -> Iterator[Load]:
    """Yield every Load in an expression tree, in depth-first order."""
    if isinstance(expr, Load):
        yield expr
    for child in children(expr):
        yield from loads(child)


def buffers_used(kernel: Kernel) -> set[str]:
    """Return the names of the buffers a kernel reads or writes."""
    names: set[str] = set()

    def visit(expr: Any) -> None:
        if isinstance(expr, Load):
            names.add(expr.buffer)
        for child in children(expr):
            visit(child)

    if isinstance(kernel, LoopKernel):
        for store in kernel.stores:
            names.add(store.buffer)
            visit(store.value)
    elif isinstance(kernel, MatmulKernel):
        names |= {kernel.a.buffer, kernel.b.buffer, kernel.out}
        if kernel.packed_b is not None:
            names.add(kernel.packed_b)
        if kernel.epilogue is not None:
            names |= buffers_used(kernel.epilogue)
    elif isinstance(kernel, ScanKernel):
        for group in (
            *(kernel.init, kernel.carry_in, kernel.carry_out, kernel.final),
            *(kernel.xs, kernel.x_slots, kernel.ys, kernel.y_slots),
        ):
            names.update(name for name in group if name is not None)
        for inner in kernel.body:
            names |= buffers_used(inner)
    elif isinstance(kernel, CollectiveKernel):
        names |= {kernel.source, kernel.out}
    elif isinstance(kernel, SparseUpdateKernel):
        names |= buffers_used(kernel.scatter) | buffers_used(kernel.update)
    else:
        names.add(kernel.out)
        visit(kernel.value)
        visit(kernel.target)
    return names
