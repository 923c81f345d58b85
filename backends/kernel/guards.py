"""Loads a select guards: `where(inside, x[clamp(i)], fill)` reads x only where i is inside,
so the clamp that keeps the address in bounds is there only because both sides of a select
are evaluated. A backend that skips the load where the condition is false (a branch, which
LLVM's vectoriser turns into a masked load) reads at the unclamped index instead, and a
padded window's taps then load contiguously instead of being gathered one by one."""

from __future__ import annotations

from graphc.backends.kernel.ir import IBin, IConst, IntExpr, iadd


def conjuncts(condition: IntExpr) -> set[IntExpr]:
    """Return the conditions a condition is the conjunction of (`and` of comparisons)."""
    if isinstance(condition, IBin) and condition.op == "and":
        return conjuncts(condition.a) | conjuncts(condition.b)
    return {condition}


def unclamped(offset: IntExpr, known: set[IntExpr]) -> IntExpr:
    """Return offset without the clamps that known conditions make no-ops: `max(i, 0)` where
    `0 <= i` is known, `min(i, n - 1)` where `i < n` is."""
    if not isinstance(offset, IBin):
        return offset
    a, b = unclamped(offset.a, known), unclamped(offset.b, known)
    if offset.op == "max" and b == IConst(0) and IBin("le", IConst(0), a) in known:
        return a
    if offset.op == "min" and IBin("lt", a, iadd(b, IConst(1))) in known:
        return a
    return offset if a is offset.a and b is offset.b else IBin(offset.op, a, b)
