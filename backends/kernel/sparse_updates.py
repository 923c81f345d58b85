"""Sparse updates: an SGD-style step on an embedding touches only the rows a batch looked up.

The gradient of a gather (an embedding lookup, `W[idx]`) is a scatter-add into zeros of W's
shape, and the optimiser's update `W - lr * grad` then reads every element of it. For a
vocabulary of V rows and a batch of B lookups that is V rows cleared, B added, V updated per
step; with V >> B nearly all of it leaves W as it was. This pass pairs a scatter-add with the
in-place update that alone reads its output into one SparseUpdateKernel, which a backend may
run over the scattered elements only (see the kernel's doc for when that gives the same bits).

A pair qualifies when the scatter's output is a temporary only the update reads; the update
is one store into a variable's own memory (an in-place update) of `variable - scale * grad`
or `variable + scale * grad` (either order of the product; float32 or float64) over a flat
domain of the scatter's size, both read at the element stored; `scale` reads no element index
(a learning rate); and no kernel between the two writes a variable in place (the pair runs
where the update ran, and a failing scatter must still change no variable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import KernelProgram
from graphc.dtypes import float32, float64


def sparse_updates(program: KernelProgram, in_place: Mapping[str, str]) -> KernelProgram:
    """Return program with each qualifying scatter-add and its update as one kernel;
    `in_place` maps update buffers computed in their variable's memory to the variable."""
    kernels = list(program.kernels)
    readers: dict[str, list[int]] = {}
    for position, kernel in enumerate(kernels):
        for name in k.buffers_used(kernel):
            readers.setdefault(name, []).append(position)
    merged: dict[int, k.SparseUpdateKernel] = {}
    dropped: set[int] = set()
    for position, scatter in enumerate(kernels):
        if not isinstance(scatter, k.ScatterAddKernel):
            continue
        users = [p for p in readers[scatter.out] if p != position]
        spec = program.buffers[scatter.out]
        if len(users) != 1 or spec.role != "temp" or scatter.out in program.outputs:
            continue
        (later,) = users
        update = kernels[later]
        pair = _pair(scatter, update, in_place) if isinstance(update, k.LoopKernel) else None
        if pair is None or any(
            _writes_in_place(kernels[p], in_place) for p in range(position + 1, later)
        ):
            continue
        merged[later] = pair
        dropped.add(position)
    if not merged:
        return program
    kept = [merged.get(p, kernel) for p, kernel in enumerate(kernels) if p not in dropped]
    return replace(program, kernels=kept)


def _pair(
    scatter: k.ScatterAddKernel, update: k.LoopKernel, in_place: Mapping[str, str]
) -> k.SparseUpdateKernel | None:
    """Return the scatter and its update as one kernel, or None unless they qualify."""
    if len(update.stores) != 1 or update.domain != (scatter.out_size,):
        return None
    (store,) = update.stores
    variable = in_place.get(store.buffer)
    value = store.value
    if variable is None or not isinstance(value, k.Binary) or value.op not in ("sub", "add"):
        return None
    if value.dtype not in (float32, float64):
        return None
    (element,) = update.vars
    if value.a != k.Load(variable, element, value.dtype) or not isinstance(value.b, k.Binary):
        return None
    product = value.b
    gradient = k.Load(scatter.out, element, value.dtype)
    if product.op != "mul" or gradient not in (product.a, product.b):
        return None
    scale = product.b if product.a == gradient else product.a
    if k.free_vars(scale) or any(isinstance(e, k.Reduce) for e in k.subexpressions(scale)):
        return None
    name = f"sparse_{update.name}"
    covers = scatter.covers + update.covers
    return k.SparseUpdateKernel(name, scatter, update, scale, value.op == "sub", covers)


def _writes_in_place(kernel: k.Kernel, in_place: Mapping[str, str]) -> bool:
    """Return whether a kernel writes a variable's memory."""
    return any(name in in_place for name in k.buffers_used(kernel))
