"""Every differentiable op-table entry through the finite-difference checker, on every
backend; second derivatives for the elementwise, matmul, reduction and movement entries."""

from __future__ import annotations

import numpy as np
import pytest
from op_table import OpCase, differentiable_cases

import graphc as gc
from graphc.testing import check_grad

CASES = differentiable_cases()
# Entries whose second derivative is checked: elementwise math, matmul, reductions, movement.
SECOND_ORDER_PREFIXES = (
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "sin",
    "mul(",
    "div(",
    "pow_two",
    "matmul_",
    "sum_",
    "prod_",
    "mean_",
    "var_",
    "std_",
    "softmax",
    "log_softmax",
    "logsumexp",
    "reshape",
    "permute",
    "transpose",
    "broadcast_to",
    "expand",
    "pad_",
    "getitem_",
    "cat_",
    "stack_",
    "gather_",
)
SECOND_ORDER = [c for c in CASES if c.name.startswith(SECOND_ORDER_PREFIXES)]


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
def test_second_derivative_matches_finite_differences(case, rng):
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
            backend="reference",
        )
        < 1e-3 * case.tol
    )


def rng_fixed(shape) -> np.ndarray:
    """Return a fixed projection of shape (the same one for every build of the graph)."""
    return np.random.default_rng(5).standard_normal(tuple(int(d) for d in shape))
