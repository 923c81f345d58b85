"""Reductions in fewer passes over memory: how many kernels a graph becomes, and that every
such kernel computes what the reference backend does.

- A reduction of a reduction of the same op (a gradient summed over the batch dim, then over
  the spatial dims) is one loop nest over the source.
- Reduction kernels over the same elements (BatchNorm's per-channel sums, LayerNorm's
  per-feature gradients, a mean next to a sum) are one kernel, and reductions in a kernel with
  equal extents share one loop with an accumulator each.
- A row reduction whose body the kernel also stores (softmax's exp) keeps it in the output
  row while it reduces, and the row's elements read it back: right for rows that threads
  split, and never for an update computed in the memory the kernel reads.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.backends.kernel.ir import LoopKernel, Reduce
from graphc.backends.kernel.reductions import outermost_reductions, reduction_groups, row_cache

RNG = np.random.default_rng(5)


def _compiled(inputs, outputs, arrays, rtol=1e-12):
    """Return the LLVM Function of outputs, after checking its values against the reference."""
    compiled = gc.compile(inputs, outputs, backend="llvm")
    got, want = compiled(*arrays), gc.compile(inputs, outputs, backend="reference")(*arrays)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-12)
    return compiled


def _kernels(function) -> list[LoopKernel]:
    return list(function._executable.program.kernels)


def test_a_sum_of_a_sum_is_one_loop_nest():
    x = gc.input("x", (8, 4, 6, 6), gc.float64)
    total = x.sum(dim=0).sum(dim=(1, 2), keepdim=True)
    f = _compiled([x], [total], [RNG.standard_normal((8, 4, 6, 6))])
    (kernel,) = _kernels(f)
    (store,) = kernel.stores
    assert isinstance(store.value, Reduce) and len(store.value.vars) == 3


def test_a_reduction_read_twice_is_not_folded_into_both():
    x = gc.input("x", (8, 4, 6), gc.float64)
    partial = x.amax(dim=0)
    f = _compiled([x], [partial.amax(dim=1), partial.amin(dim=1)], [RNG.random((8, 4, 6))])
    # partial is a kernel of its own; its maximum and minimum share the second.
    assert len(f.kernels()) == 2


def test_a_mean_and_a_sum_of_the_same_rows_are_one_kernel():
    x = gc.input("x", (16, 32), gc.float64)
    f = _compiled([x], [x.mean(dim=1), x.sum(dim=1), x.var(dim=1)], [RNG.standard_normal((16, 32))])
    # The variance reads the mean, so it is a second kernel; the sum joins the mean's.
    assert len(f.kernels()) == 2
    first = _kernels(f)[0]
    groups = reduction_groups(outermost_reductions(s.value for s in first.stores))
    assert len(groups) == 1 and len(groups[0]) == 2


def _batch_norm_backward():
    x = gc.input("x", (8, 4, 6, 6), gc.float64)
    p = gc.input("p", (8, 4, 6, 6), gc.float64)
    bn = nn.BatchNorm2d(4)
    loss = (bn(x) * p).sum()
    arrays = [RNG.standard_normal((8, 4, 6, 6)), RNG.standard_normal((8, 4, 6, 6))]
    return [x, p], list(gc.grad(loss, [x, *bn.parameters()])), arrays


def _layer_norm_backward():
    x = gc.input("x", (16, 32), gc.float64)
    p = gc.input("p", (16, 32), gc.float64)
    ln = nn.LayerNorm(32)
    loss = (ln(x) * p).sum()
    arrays = [RNG.standard_normal((16, 32)), RNG.standard_normal((16, 32))]
    return [x, p], list(gc.grad(loss, [x, *ln.parameters()])), arrays


def _cross_axis_gradients():
    # The gradients of a (B, 1) and a (1, B) operand: sums over different axes into domains
    # of the same elements, one kernel storing each at its own layout.
    a, b = gc.input("a", ("B", 1), gc.float64), gc.input("b", (1, "B"), gc.float64)
    p = gc.input("p", ("B", "B"), gc.float64)
    arrays = [RNG.random((5, 1)), RNG.random((1, 5)), RNG.standard_normal((5, 5))]
    return [a, b, p], list(gc.grad((a * b * p).sum(), [a, b])), arrays


# Kernels each graph becomes (it was 21, 5 and 2 with a kernel per reduction).
COUNTS = {
    "batch_norm_backward": (_batch_norm_backward, 12),
    "layer_norm_backward": (_layer_norm_backward, 4),
    "cross_axis_gradients": (_cross_axis_gradients, 1),
}


@pytest.mark.parametrize("case", COUNTS)
def test_reductions_over_the_same_elements_share_a_kernel(case):
    build, count = COUNTS[case]
    inputs, outputs, arrays = build()
    assert len(_compiled(inputs, outputs, arrays).kernels()) == count


def test_layer_norm_backward_sums_share_one_loop():
    inputs, outputs, arrays = _layer_norm_backward()
    f = _compiled(inputs, outputs, arrays)
    shared = [
        group
        for kernel in _kernels(f)
        for group in reduction_groups(outermost_reductions(s.value for s in kernel.stores))
        if len(group) > 1
    ]
    assert shared, "the row sums of dx and the column sums of the parameter gradients share loops"


def _softmax_kernel(function) -> tuple[LoopKernel, Reduce]:
    (kernel,) = _kernels(function)
    groups = reduction_groups(outermost_reductions(s.value for s in kernel.stores))
    return kernel, groups[-1][0]


def test_softmax_keeps_its_exponentials_in_the_output_row():
    x = gc.input("x", (6, 40), gc.float32)
    f = _compiled(
        [x], [gc.softmax(x, dim=1)], [RNG.standard_normal((6, 40)).astype(np.float32)], 1e-6
    )
    kernel, total = _softmax_kernel(f)
    dtypes = {s.buffer: gc.float32 for s in kernel.stores}
    cache = row_cache(kernel, total, dtypes, lambda name: name)
    assert cache is not None and cache.buffer == kernel.stores[0].buffer


def test_softmax_rows_split_between_threads(monkeypatch):
    # Rows of 1000 and chunks of a multiple of 64 elements: most chunks start mid-row, where
    # another thread writes the row's first part.
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "4")
    x = gc.input("x", (700, 1000), gc.float32)
    data = (RNG.standard_normal((700, 1000)) * 4).astype(np.float32)
    got = gc.compile([x], [gc.softmax(x, dim=1)], backend="llvm")(data)
    want = np.exp(data - data.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(axis=1, keepdims=True), rtol=2e-6, atol=1e-9)


def test_an_update_in_its_variable_memory_is_not_a_cache():
    # v <- v + softmax(x): the kernel reads v at each element after the row's sum, so the
    # exponentials must not be kept in v's memory.
    v = gc.Variable(RNG.standard_normal((3, 50)), name="v")
    x = gc.input("x", (3, 50), gc.float64)
    data = RNG.standard_normal((3, 50))
    before = v.numpy().copy()
    gc.compile([x], [], updates=[(v, v + gc.softmax(x, dim=1))], backend="llvm")(data)
    e = np.exp(data - data.max(axis=1, keepdims=True))
    np.testing.assert_allclose(v.numpy(), before + e / e.sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_long_argmax_and_argmin_find_the_first_extremum_or_nan(op):
    # Rows long enough for the two-pass form (the extremum, then the first index holding it),
    # with ties, NaNs, infinities and signed zeros.
    data = RNG.integers(-2, 3, (9, 40)).astype(np.float64)
    data[1, [5, 30]] = np.nan
    data[2, :] = -np.inf
    data[3, :] = np.inf
    data[4, 7] = np.inf
    data[5, :] = 0.0
    data[5, ::3] = -0.0
    data[6, :] = np.nan
    data[7, 0] = np.nan
    x = gc.input("x", (9, 40), gc.float64)
    indices = getattr(x, op)(dim=1)
    _compiled([x], [indices, getattr(x, op)(dim=0), x.max(dim=1).values], [data])
