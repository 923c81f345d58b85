"""gc.arange with symbolic bounds (the `arange` source op) and tril/triu, on every backend,
against numpy and PyTorch: values at several bound sizes from one compiled Function, dtypes,
the errors for ranges whose length is not a dim, and gradients through tril/triu."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphc as gc
from graphc.errors import DTypeError, GraphError, IndexingError, ShapeError

SIZES = (1, 4, 7)  # bound to T in turn; 1 checks a symbol bound to 1 at run time


def _fed(t: int, b: int = 2) -> np.ndarray:
    return np.zeros((b, t), np.float32)


@pytest.mark.parametrize(
    ("build", "want"),
    [
        (lambda t: gc.arange(t), lambda t: np.arange(t)),
        (lambda t: gc.arange(0, t), lambda t: np.arange(0, t)),
        (lambda t: gc.arange(3, t + 3), lambda t: np.arange(3, t + 3)),
        (lambda t: gc.arange(t, 2 * t), lambda t: np.arange(t, 2 * t)),
        (lambda t: gc.arange(t, t + 3), lambda t: np.arange(t, t + 3)),
        (lambda t: gc.arange(t - 1, -1, -1), lambda t: np.arange(t - 1, -1, -1)),
        (lambda t: gc.arange(0, 3 * t, 3), lambda t: np.arange(0, 3 * t, 3)),
        (lambda t: gc.arange(-1 * t, t), lambda t: np.arange(-t, t)),
    ],
    ids=["end", "zero-end", "shifted", "t-2t", "static-length", "reversed", "step3", "negative"],
)
def test_symbolic_arange_matches_numpy(build, want, backend: str) -> None:
    x = gc.input("x", ("B", "T"))
    y = build(x.shape[1])
    assert y.dtype == gc.int64
    f = gc.compile([x], [y], backend=backend)
    for t in SIZES:
        got = f(_fed(t))
        np.testing.assert_array_equal(got, want(t).astype(np.int64), strict=True)


@pytest.mark.parametrize("dtype", [gc.int32, gc.int64, gc.float32, gc.float64])
def test_symbolic_arange_dtype(dtype: gc.DType, backend: str) -> None:
    x = gc.input("x", ("B", "T"))
    y = gc.arange(2, x.shape[1] + 2, dtype=dtype)
    assert y.dtype == dtype and y.shape == (x.shape[1],)
    f = gc.compile([x], [y], backend=backend)
    for t in SIZES:
        np.testing.assert_array_equal(f(_fed(t)), np.arange(2, t + 2).astype(dtype.numpy), True)


def test_symbolic_arange_inside_a_kernel(backend: str) -> None:
    """Read through broadcasting and arithmetic, the range is index arithmetic in the kernel
    that reads it, for every size the Function is called with."""
    x = gc.input("x", ("B", "T"))
    t = x.shape[1]
    y = x * gc.arange(t, dtype=gc.float32) + gc.arange(x.shape[0]).unsqueeze(1)
    f = gc.compile([x], [y], backend=backend)
    rng = np.random.default_rng(0)
    for b, t in ((3, 1), (2, 5), (4, 9)):
        data = rng.standard_normal((b, t)).astype(np.float32)
        want = data * np.arange(t, dtype=np.float32) + np.arange(b)[:, None]
        np.testing.assert_allclose(f(data), want, rtol=1e-6)


def test_symbolic_arange_as_positions(backend: str) -> None:
    """A Transformer's positions: an embedding table read at arange(T), with its gradient."""
    ids = gc.input("ids", ("B", "T"), gc.int64)
    table = gc.Variable(np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32))
    y = table[gc.arange(ids.shape[1])] + ids.unsqueeze(-1)
    (grad,) = gc.grad((y * y).sum(), [table])
    f = gc.compile([ids], [y, grad], backend=backend)
    values = table.numpy()
    for t in (1, 5, 8):
        fed = np.arange(2 * t).reshape(2, t)
        got, got_grad = f(fed)
        want = values[:t] + fed[..., None]
        np.testing.assert_allclose(got, want, rtol=1e-6)
        want_grad = np.zeros_like(values)
        want_grad[:t] = (2 * want).sum(0)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-5)


def test_symbolic_arange_named_dim() -> None:
    """A symbol name stands for the dim, as in shapes."""
    x = gc.input("x", ("B", "T"))
    y = gc.arange("T") + x.sum().long() * 0
    assert y.shape == (x.shape[1],)
    np.testing.assert_array_equal(gc.compile([x], [y])(_fed(5)), np.arange(5))


def test_negative_length_at_call_time_names_the_range() -> None:
    x = gc.input("x", ("B", "T"))
    f = gc.compile([x], [gc.arange(x.shape[1] - 2)], backend="reference")
    np.testing.assert_array_equal(f(_fed(2)), np.arange(0))
    with pytest.raises(IndexingError, match=r"arange\(0, T-2, 1\).*T=1"):
        f(_fed(1))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0, "T", 2), {}, ShapeError, r"arange\(0, T, 2\).*2 does not divide T"),
        ((0.5, "T"), {}, ShapeError, "start must be an int or a dim"),
        ((0, "T", 0.5), {}, ShapeError, "step must be a nonzero int"),
        ((0, "T", "T"), {}, ShapeError, "step must be a nonzero int"),
        (("T",), {"dtype": gc.bool}, DTypeError, "bool"),
        (("bad name",), {}, ShapeError, "identifier"),
        ((0, 5, 0), {}, ShapeError, "step is 0"),
        ((0, float("inf")), {}, ShapeError, r"arange\(0, inf, 1\)"),
        ((None,), {}, GraphError, "end must be a number or a dim.*NoneType"),
        (([3],), {}, GraphError, "end must be a number or a dim.*list"),
    ],
)
def test_bad_arange_arguments_are_clear_errors(args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        gc.arange(*args, **kwargs)


def test_arange_of_a_tensor_is_a_clear_error() -> None:
    with pytest.raises(GraphError, match="end must be a number or a dim.*Tensor"):
        gc.arange(gc.tensor(3))


def test_reversed_symbolic_range_is_checked_at_call_time() -> None:
    # (1 - T) elements: a dim, negative for T > 1, so every call checks it.
    x = gc.input("x", ("B", "T"))
    y = gc.arange(1, x.shape[1], -1)
    f = gc.compile([x], [y], backend="reference")
    np.testing.assert_array_equal(f(_fed(1)), np.arange(1, 1, -1))
    with pytest.raises(IndexingError, match="wrong side"):
        f(_fed(3))


def test_static_arange_is_still_a_constant() -> None:
    y = gc.arange(2, 11, 3)
    assert y.node.op == "constant"
    np.testing.assert_array_equal(y.numpy(), np.arange(2, 11, 3))


# -- tril / triu -----------------------------------------------------------------------------
CASES = [
    ((4, 4), 0),
    ((4, 4), 1),
    ((4, 4), -1),
    ((3, 5), 2),
    ((5, 3), -2),
    ((2, 3, 4), 0),
    ((2, 2, 3, 4), -1),
    ((3, 4), 7),
    ((3, 4), -7),
]


@pytest.mark.parametrize(("shape", "diagonal"), CASES)
@pytest.mark.parametrize("name", ["tril", "triu"])
def test_triangle_matches_torch(name: str, shape, diagonal: int, backend: str) -> None:
    data = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    want = getattr(torch, name)(torch.from_numpy(data), diagonal).numpy()
    x = gc.input("x", shape)
    method = getattr(x, name)(diagonal)
    function = getattr(gc, name)(x, diagonal=diagonal)
    got_method, got_function = gc.compile([x], [method, function], backend=backend)(data)
    np.testing.assert_array_equal(got_method, want, strict=True)
    np.testing.assert_array_equal(got_function, want, strict=True)


@pytest.mark.parametrize("name", ["tril", "triu"])
@pytest.mark.parametrize("diagonal", [-1, 0, 2])
def test_triangle_of_symbolic_sizes_matches_torch(name: str, diagonal: int, backend: str) -> None:
    x = gc.input("x", ("B", "T", "S"))
    f = gc.compile([x], [getattr(x, name)(diagonal)], backend=backend)
    rng = np.random.default_rng(3)
    for shape in ((1, 1, 1), (2, 3, 5), (3, 6, 4)):
        data = rng.standard_normal(shape).astype(np.float32)
        want = getattr(torch, name)(torch.from_numpy(data), diagonal).numpy()
        np.testing.assert_array_equal(f(data), want, strict=True)


@pytest.mark.parametrize("dtype", [gc.int64, gc.bool, gc.float64])
def test_triangle_keeps_the_dtype(dtype: gc.DType) -> None:
    data = (np.arange(12).reshape(3, 4) % 3).astype(dtype.numpy)
    for name in ("tril", "triu"):
        got = getattr(gc, name)(gc.tensor(data), 1)
        assert got.dtype == dtype
        want = getattr(torch, name)(torch.from_numpy(data), 1).numpy()
        np.testing.assert_array_equal(got.numpy(), want, strict=True)


@pytest.mark.parametrize("name", ["tril", "triu"])
def test_triangle_gradient_matches_torch(name: str, backend: str) -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal((2, 3, 5))
    weights = rng.standard_normal((2, 3, 5))
    x = gc.input("x", ("B", "T", 5), gc.float64)
    w = gc.input("w", ("B", "T", 5), gc.float64)
    loss = (getattr(x, name)(-1).exp() * w).sum()
    (grad,) = gc.grad(loss, [x])
    got = gc.compile([x, w], [grad], backend=backend)(data, weights)
    xt = torch.from_numpy(data).requires_grad_()
    (getattr(xt, name)(-1).exp() * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_triangle_gradient_by_finite_differences() -> None:
    data = np.random.default_rng(5).standard_normal((3, 4))
    gc.testing.check_grad(lambda x: gc.tril(x * x, 1) + gc.triu(x, 2).sin(), [data])


def test_triangle_errors() -> None:
    with pytest.raises(ShapeError, match=r"tril: needs a tensor of at least 2 dims.*f32\[3\]"):
        gc.tril(gc.input("x", (3,)))
    with pytest.raises(GraphError, match="triu: diagonal must be an int, got float"):
        gc.input("x", (3, 3)).triu(0.5)
