"""Graphs with zero-size dims compile and compute what numpy computes, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BACKENDS = ["reference", "llvm"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_matmul_with_empty_result_and_an_epilogue_reading_its_operand(backend):
    a = gc.input("a", (3, 4), gc.int64)
    x = gc.input("x", (4, 5), gc.int64)
    b = x[:, :0]
    f = gc.compile([a, x], [a @ b + b[:1]], backend=backend)
    a_data = np.arange(12).reshape(3, 4)
    x_data = np.arange(20).reshape(4, 5)
    result = f(a_data, x_data)
    expected = a_data @ x_data[:, :0] + x_data[:1, :0]
    assert result.shape == expected.shape == (3, 0)
    assert result.dtype == np.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_with_an_empty_gather(backend):
    x = gc.input("x", (3, 4), gc.float32)
    idx = gc.input("idx", (3, 0), gc.int64)
    w = gc.input("w", (3, 2), gc.float32)
    f = gc.compile([x, idx, w], [gc.cat([gc.gather(x, 1, idx), w], 1)], backend=backend)
    w_data = np.arange(6, dtype=np.float32).reshape(3, 2)
    result = f(np.ones((3, 4), np.float32), np.zeros((3, 0), np.int64), w_data)
    np.testing.assert_array_equal(result, w_data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_of_pieces_that_are_all_empty(backend):
    x = gc.input("x", (3, 0), gc.float32)
    f = gc.compile([x], [gc.cat([x, x * 2.0], 1) + 1.0], backend=backend)
    assert f(np.ones((3, 0), np.float32)).shape == (3, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_through_an_empty_strided_slice(backend):
    torch = pytest.importorskip("torch")
    data = np.arange(15, dtype=np.float64).reshape(5, 3)
    x = gc.input("x", (5, 3), gc.float64)
    loss = x[2:1:2, ::2].sum() + (x * x).sum() + x[1:4:2, ::2].sum()
    (grad,) = gc.grad(loss, [x])
    result = gc.compile([x], [grad], backend=backend)(data)

    t = torch.tensor(data, requires_grad=True)
    (t[2:1:2, ::2].sum() + (t * t).sum() + t[1:4:2, ::2].sum()).backward()
    assert result.shape == (5, 3)
    np.testing.assert_allclose(result, t.grad.numpy())
