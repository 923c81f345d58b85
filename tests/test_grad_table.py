"""Every differentiable op-table entry through the finite-difference checker, on every
backend; second derivatives for every entry of grad_order 2."""

from __future__ import annotations

import numpy as np
import pytest
from op_table import OpCase, derived_grad_order, differentiable_cases, find

import graphc as gc
from graphc.testing import check_grad

CASES = differentiable_cases()
# Entries whose second derivative is checked: those whose ops promise it (OpCase.grad_order,
# derived from OpDef.grad_order unless the entry states it).
SECOND_ORDER = [c for c in CASES if c.grad_order >= 2]


def _single_output(case: OpCase):
    def fn(*tensors):
        out = case.fn(*tensors)
        return out[0] if isinstance(out, tuple) else out

    return fn


def _inputs(case: OpCase, rng: np.random.Generator) -> list[np.ndarray]:
    return case.make_arrays(rng)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_first_derivative_matches_finite_differences(case, backend, rng):
    error = check_grad(
        _single_output(case),
        _inputs(case, rng),
        atol=1e-6 * case.tol,
        rtol=1e-5 * case.tol,
        backend=backend,
    )
    assert error < 1e-4 * case.tol


@pytest.mark.parametrize("case", SECOND_ORDER, ids=lambda case: case.id)
def test_second_derivative_matches_finite_differences(case, backend, rng):
    fn = _single_output(case)
    arrays = _inputs(case, rng)
    floats = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    direction = [rng.standard_normal(arrays[i].shape) for i in floats]

    def directional_derivative(*tensors):
        out = fn(*tensors)
        projection = gc.tensor(rng_fixed(out.shape), dtype=gc.float64)
        grads = gc.grad(
            (out * projection).sum(), [tensors[i] for i in floats], materialize_grads=True
        )
        total = None
        for g, d in zip(grads, direction, strict=True):
            term = (g * gc.tensor(d, dtype=gc.float64)).sum()
            total = term if total is None else total + term
        return total

    assert (
        check_grad(
            directional_derivative,
            arrays,
            atol=1e-5 * case.tol,
            rtol=1e-4 * case.tol,
            backend=backend,
        )
        < 1e-3 * case.tol
    )


def rng_fixed(shape) -> np.ndarray:
    """Return a fixed projection of shape (the same one for every build of the graph)."""
    return np.random.default_rng(5).standard_normal(tuple(int(d) for d in shape))


def test_an_entrys_order_comes_from_its_ops(monkeypatch):
    """An entry's grad_order is the lowest OpDef.grad_order of the ops its gradient flows
    through; ops that pass no gradient (the comparison in a where's condition) do not count."""
    case = find("where(3,1)(1,4)(3,4)-f64")
    assert gc.ops.get_op("gt").grad_order == 0
    assert case.grad_order == derived_grad_order(case) == 2
    monkeypatch.setattr(gc.ops.get_op("where"), "grad_order", 1)
    assert derived_grad_order(case) == 1
