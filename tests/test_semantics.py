"""Where graphc follows PyTorch's numerics (docs/semantics.md): NaN and inf handling, type
promotion with 0-d tensors, reductions over zero-size dims, integer powers, float-to-int casts,
the gradient of max(dim) with ties, torch.gather's rules and stable log_softmax. Every check
runs on every backend and compares with PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphc as gc
from graphc.dtypes import from_numpy, result_type
from graphc.errors import DTypeError, IndexingError, ShapeError

torch = pytest.importorskip("torch")

BACKENDS = ("reference", "llvm")
NAN, INF = float("nan"), float("inf")
TORCH_DTYPES = {
    gc.float32: torch.float32,
    gc.float64: torch.float64,
    gc.int32: torch.int32,
    gc.int64: torch.int64,
    gc.bool: torch.bool,
}
GRAPHC_DTYPES = {t: g for g, t in TORCH_DTYPES.items()}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def run(fn, *arrays: np.ndarray, backend: str, shapes=None):
    """Return fn's outputs computed by graphc from inputs with these values (and shapes)."""
    shapes = shapes or [a.shape for a in arrays]
    inputs = [
        gc.input(f"x{i}", shape, from_numpy(a.dtype))
        for i, (a, shape) in enumerate(zip(arrays, shapes, strict=True))
    ]
    outputs = fn(*inputs)
    many = isinstance(outputs, tuple)
    function = gc.compile(inputs, list(outputs) if many else [outputs], backend=backend)
    return function(*arrays)


def value_and_grad(fn, data: np.ndarray, backend: str, gy: np.ndarray | None = None):
    """Return (fn(x), d sum(fn(x) * gy) / dx) by graphc."""
    x = gc.input("x", data.shape, from_numpy(data.dtype))
    y = fn(x)
    weights = np.ones(y.shape, data.dtype) if gy is None else gy
    dx = gc.grad((y * gc.tensor(weights)).sum(), x)
    return gc.compile([x], [y, dx], backend=backend)(data)


def torch_value_and_grad(fn, data: np.ndarray, gy: np.ndarray | None = None):
    """Return (fn(x), d sum(fn(x) * gy) / dx) by PyTorch's autograd."""
    x = torch.tensor(data, requires_grad=True)
    y = fn(x)
    y.backward(torch.ones_like(y) if gy is None else torch.from_numpy(gy))
    return y.detach().numpy(), x.grad.numpy()


def assert_same(got: np.ndarray, want: np.ndarray, rtol: float = 1e-6, atol: float = 0.0):
    """Assert equal dtypes, shapes and values (NaN where NaN is, infinities included)."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, strict=True)


# == 9: NaN, zero standard deviations, infinite logits =========================================
def test_relu_keeps_nan_and_its_gradient(backend):
    data = np.array([NAN, -1.5, 0.0, 2.0, -0.0], np.float32)
    value, grad = value_and_grad(gc.relu, data, backend)
    want_value, want_grad = torch_value_and_grad(torch.relu, data)
    assert_same(value, want_value)
    assert_same(grad, want_grad)
    assert np.isnan(value[0])


def test_nn_relu_keeps_nan(backend):
    data = np.array([[NAN, -1.0, 3.0]], np.float64)
    got = run(lambda x: gc.nn.ReLU()(x), data, backend=backend)
    assert_same(got, torch.nn.ReLU()(torch.from_numpy(data)).numpy())


@pytest.mark.parametrize("correction", [1, 0])
def test_gradient_of_a_zero_std_is_zero(backend, correction):
    data = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0], [-3.0, -3.0, -3.0]], np.float64)
    value, grad = value_and_grad(lambda x: x.std(dim=1, correction=correction), data, backend)
    want_value, want_grad = torch_value_and_grad(
        lambda x: x.std(dim=1, correction=correction), data
    )
    assert_same(value, want_value, rtol=1e-12)
    assert_same(grad, want_grad, rtol=1e-12)
    assert np.all(grad[0] == 0) and np.all(grad[2] == 0)


def test_gradient_of_std_of_a_constant_tensor(backend):
    data = np.full((2, 3), 0.5, np.float32)
    value, grad = value_and_grad(lambda x: x.std(), data, backend)
    want_value, want_grad = torch_value_and_grad(lambda x: x.std(), data)
    assert_same(value, want_value)
    assert_same(grad, want_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_of_nan_is_zero(backend, dtype):
    data = np.array([NAN, -2.0, 0.0, -0.0, 3.0, -INF, INF], dtype)
    got = run(gc.sign, data, backend=backend)
    assert_same(got, torch.sign(torch.from_numpy(data)).numpy())
    assert got[0] == 0


# Rows holding +inf, only -inf, -inf and finite values, NaN, and ordinary values.
INF_ROWS = np.array(
    [
        [1.0, INF, 2.0],
        [-INF, -INF, -INF],
        [-INF, 0.0, 1.0],
        [NAN, 1.0, 2.0],
        [INF, INF, 0.0],
        [0.5, -1.0, 2.0],
    ],
    np.float32,
)


@pytest.mark.parametrize(
    ("name", "fn", "torch_fn"),
    [
        ("log_softmax", lambda x: x.log_softmax(1), lambda t: torch.log_softmax(t, 1)),
        ("softmax", lambda x: x.softmax(1), lambda t: torch.softmax(t, 1)),
        ("logsumexp", lambda x: x.logsumexp(1), lambda t: torch.logsumexp(t, 1)),
        ("F.log_softmax", lambda x: gc.nn.functional.log_softmax(x, 1), lambda t: t.log_softmax(1)),
    ],
)
def test_softmax_family_with_infinite_logits(backend, name, fn, torch_fn):
    got = run(fn, INF_ROWS, backend=backend)
    assert_same(got, torch_fn(torch.from_numpy(INF_ROWS)).numpy())


@pytest.mark.parametrize(
    ("fn", "torch_fn"),
    [
        (lambda x: x.clamp(-1.0, 1.0), lambda t: t.clamp(-1.0, 1.0)),
        (lambda x: gc.clamp(x, min=0.0), lambda t: torch.clamp(t, min=0.0)),
        (lambda x: x.clamp(max=1), lambda t: t.clamp(max=1)),
        (lambda x: x.clamp(2.0, 1.0), lambda t: t.clamp(2.0, 1.0)),  # min > max: max wins
    ],
    ids=["both", "min", "max", "crossed"],
)
def test_clamp_at_its_bounds_and_at_nan(backend, fn, torch_fn):
    data = np.array([NAN, -2.0, -1.0, 0.0, 1.0, 1.5, 2.0], np.float32)
    value, grad = value_and_grad(fn, data, backend)
    want_value, want_grad = torch_value_and_grad(torch_fn, data)
    assert_same(value, want_value)
    assert_same(grad, want_grad)  # 1 on the bounds, 0 at NaN


def test_clamp_with_tensor_bounds_and_their_gradients(backend):
    x = np.array([-2.0, 0.0, 3.0, 0.5, NAN], np.float64)
    lo = np.array([-1.0, 0.0, 1.0, 2.0, 0.0], np.float64)
    hi = np.array([1.0, 0.0, 2.0, 1.0, 1.0], np.float64)
    inputs = [gc.input(n, (5,), gc.float64) for n in ("x", "lo", "hi")]
    y = gc.clamp(*inputs)
    got = gc.compile(inputs, [y, *gc.grad(y.sum(), inputs)], backend=backend)(x, lo, hi)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, lo, hi)]
    ty = torch.clamp(*tensors)
    ty.sum().backward()
    for g, w in zip(got, [ty.detach(), *(t.grad for t in tensors)], strict=True):
        assert_same(g, w.numpy())


# == 10: type promotion with 0-d tensors =======================================================
DTYPES = list(TORCH_DTYPES)


def _sample(dtype: gc.DType, shape) -> np.ndarray:
    values = np.arange(2, 2 + int(np.prod(shape))).reshape(shape)
    return (values % 2 == 0) if dtype == gc.bool else values.astype(dtype.numpy)


@pytest.mark.parametrize("zero_dtype", DTYPES, ids=lambda d: d.short)
@pytest.mark.parametrize("dim_dtype", DTYPES, ids=lambda d: d.short)
def test_zero_dim_tensor_takes_part_like_torch(backend, dim_dtype, zero_dtype):
    a, b = _sample(dim_dtype, (3,)), _sample(zero_dtype, ())
    ta, tb = torch.from_numpy(a), torch.from_numpy(np.array(b))
    condition = np.array([True, False, True])
    picked = run(lambda x, y: gc.where(gc.tensor(condition), x, y), a, b, backend=backend)
    assert_same(picked, torch.where(torch.from_numpy(condition), ta, tb).numpy())
    picked = run(lambda x, y: gc.where(gc.tensor(condition), y, x), a, b, backend=backend)
    assert_same(picked, torch.where(torch.from_numpy(condition), tb, ta).numpy())
    if dim_dtype == zero_dtype == gc.bool:
        return  # bool + bool: graphc counts in int64 (docs/architecture.md), PyTorch in bool
    assert_same(run(lambda x, y: x + y, a, b, backend=backend), (ta + tb).numpy())
    assert_same(run(lambda x, y: y * x, a, b, backend=backend), (tb * ta).numpy())
    if gc.bool not in (dim_dtype, zero_dtype):
        assert_same(run(lambda x, y: x - y, a, b, backend=backend), (ta - tb).numpy())


@pytest.mark.parametrize(
    ("dim_dtype", "zero_dtype", "expected"),
    [
        (gc.float32, gc.float64, gc.float32),
        (gc.int32, gc.int64, gc.int32),
        (gc.int32, gc.float64, gc.float64),  # a higher category: promoted as between tensors
        (gc.int64, gc.float32, gc.float32),
        (gc.bool, gc.int64, gc.int64),
        (gc.bool, gc.int32, gc.int32),
        (gc.float64, gc.int64, gc.float64),
    ],
)
def test_result_type_ranks_dims_then_zero_dim_then_scalars(dim_dtype, zero_dtype, expected):
    assert result_type([dim_dtype], [zero_dtype]) == expected
    want = torch.ones(3, dtype=TORCH_DTYPES[dim_dtype]) + torch.ones(
        (), dtype=TORCH_DTYPES[zero_dtype]
    )
    if expected != gc.bool:
        assert GRAPHC_DTYPES[want.dtype] == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.short)
@pytest.mark.parametrize("scalar", [True, 3, 2.5])
def test_python_scalars_rank_below_zero_dim_tensors(dtype, scalar):
    zero = gc.input("z", (), dtype)
    got = (zero + scalar).dtype if not (dtype == gc.bool and scalar is True) else gc.bool
    want = torch.ones((), dtype=TORCH_DTYPES[dtype]) + scalar
    assert got == GRAPHC_DTYPES[want.dtype]
    mixed = gc.input("x", (3,), gc.int32) + zero + scalar
    want = torch.ones(3, dtype=torch.int32) + torch.ones((), dtype=TORCH_DTYPES[dtype]) + scalar
    assert mixed.dtype == GRAPHC_DTYPES[want.dtype]


def test_a_reduction_does_not_widen_what_it_is_combined_with(backend):
    x = np.array([1.5, 2.5, -4.0], np.float32)
    y = np.array([[0.25, 0.5], [1.0, 2.0]], np.float64)
    got = run(lambda a, b: a - b.sum() * a.max(), x, y, backend=backend)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert_same(got, (tx - ty.sum() * tx.max()).numpy())
    counts = np.array([3, 4], np.int32)
    got = run(lambda c, v: c - v.sum(), counts, np.array([1, 2], np.int64), backend=backend)
    assert_same(got, (torch.from_numpy(counts) - torch.tensor([1, 2]).sum()).numpy())


def test_gradients_come_back_in_each_inputs_dtype(backend):
    a_data = np.array([1.0, -2.0, 0.5], np.float32)
    b_data = np.array(3.0, np.float64)
    a, b = gc.input("a", (3,), gc.float32), gc.input("b", (), gc.float64)
    y = a * b + b
    assert y.dtype == gc.float32
    ga, gb = gc.grad((y * y).sum(), [a, b])
    assert (ga.dtype, gb.dtype) == (gc.float32, gc.float64)
    got_a, got_b = gc.compile([a, b], [ga, gb], backend=backend)(a_data, b_data)
    ta = torch.tensor(a_data, requires_grad=True)
    tb = torch.tensor(b_data, requires_grad=True)
    ty = ta * tb + tb
    (ty * ty).sum().backward()
    assert_same(got_a, ta.grad.numpy())
    assert_same(got_b, tb.grad.numpy(), rtol=1e-6)


# == 11: reductions over zero-size dims ========================================================
EMPTY = np.zeros((2, 0), np.float32)


@pytest.mark.parametrize(
    "reduce",
    [
        lambda x: x.max(dim=1),
        lambda x: x.min(dim=-1, keepdim=True),
        lambda x: x.argmax(dim=1),
        lambda x: gc.argmin(x, 1),
        lambda x: x.max(),
        lambda x: x.argmax(),
        lambda x: x.amax(1),
        lambda x: x.amin(),
    ],
    ids=["max_dim", "min_dim", "argmax_dim", "argmin_dim", "max", "argmax", "amax", "amin"],
)
def test_max_over_a_static_empty_dim_is_an_error_when_built(reduce):
    with pytest.raises((IndexError, RuntimeError)):  # "... to have non-zero size"
        reduce(torch.zeros(2, 0))
    with pytest.raises(ShapeError, match="non-zero size"):
        reduce(gc.input("x", (2, 0), gc.float32))


@pytest.mark.parametrize(
    "reduce",
    [lambda x: x.max(dim=0), lambda x: x.min(dim=0).values, lambda x: x.max(0, keepdim=True)],
    ids=["max_pair", "min_values", "max_keep"],
)
def test_max_over_a_symbolic_dim_that_is_empty_raises_when_run(backend, reduce):
    with pytest.raises(IndexError):
        reduce(torch.zeros(0, 3))
    with pytest.raises(IndexingError):
        run(reduce, np.zeros((0, 3), np.float32), backend=backend, shapes=[("B", 3)])
    data = np.array([[1.0, 5.0, -2.0], [4.0, 0.0, 3.0]], np.float32)
    got = run(reduce, data, backend=backend, shapes=[("B", 3)])
    want = reduce(torch.from_numpy(data))
    if not isinstance(want, tuple):
        got, want = (got,), (want,)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w.numpy())


@pytest.mark.parametrize("backend_name", ["reference", "llvm"])
@pytest.mark.parametrize(
    "reduce",
    [lambda x: x.argmax(dim=0), lambda x: x.max(), lambda x: x.amin(0)],
    ids=["argmax", "max_all", "amin"],
)
def test_argmax_and_full_max_of_a_symbolic_empty_dim_raise_when_run(backend_name, reduce):
    with pytest.raises((IndexError, RuntimeError)):
        reduce(torch.zeros(0, 3))
    with pytest.raises(IndexingError):
        run(reduce, np.zeros((0, 3), np.float32), backend=backend_name, shapes=[("B", 3)])


@pytest.mark.parametrize(
    ("fn", "torch_fn"),
    [
        (lambda x: x.softmax(1), lambda t: torch.softmax(t, 1)),
        (lambda x: x.log_softmax(1), lambda t: torch.log_softmax(t, 1)),
        (lambda x: x.logsumexp(1), lambda t: torch.logsumexp(t, 1)),
        (lambda x: x.logsumexp(1, keepdim=True), lambda t: torch.logsumexp(t, 1, keepdim=True)),
        (lambda x: x.var(dim=1), lambda t: t.var(dim=1)),
        (lambda x: x.std(dim=1), lambda t: t.std(dim=1)),
        (lambda x: x.var(dim=1, correction=0), lambda t: t.var(dim=1, correction=0)),
        (lambda x: x.mean(dim=1), lambda t: t.mean(dim=1)),
    ],
    ids=["softmax", "log_softmax", "logsumexp", "logsumexp_keep", "var", "std", "var_c0", "mean"],
)
@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
def test_reductions_over_an_empty_dim_compute_what_torch_does(backend, fn, torch_fn, symbolic):
    got = run(fn, EMPTY, backend=backend, shapes=[(2, "N")] if symbolic else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # var(): degrees of freedom is <= 0
        want = torch_fn(torch.from_numpy(EMPTY)).numpy()
    assert_same(got, want)


@pytest.mark.parametrize("correction", [2, 3])
def test_variance_with_no_degrees_of_freedom_left(backend, correction):
    data = np.array([[1.0, 2.0], [3.0, 3.0]], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want_var = torch.from_numpy(data).var(dim=1, correction=correction).numpy()
        want_std = torch.from_numpy(data).std(dim=1, correction=correction).numpy()
    got_var, got_std = run(
        lambda x: (x.var(dim=1, correction=correction), x.std(dim=1, correction=correction)),
        data,
        backend=backend,
    )
    assert_same(got_var, want_var)
    assert_same(got_std, want_std)
    assert np.isinf(got_var[0]) and np.isnan(got_var[1])


# == 12: integer powers with negative exponents, float-to-int casts ============================
BASES = np.array([1, -1, 2, 0, -1, 3, -2, -1, 1, 5, 2], np.int64)
EXPONENTS = np.array([-1, -1, -1, -1, -2, -3, -3, -7, -8, 2, 0], np.int64)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_integer_to_a_negative_integer_tensor_power(backend, dtype):
    bases, exponents = BASES.astype(dtype), EXPONENTS.astype(dtype)
    got = run(lambda a, b: a**b, bases, exponents, backend=backend)
    assert_same(got, (torch.from_numpy(bases) ** torch.from_numpy(exponents)).numpy())
    np.testing.assert_array_equal(got[:4], [1, -1, 0, 0])


def test_python_int_base_to_a_negative_integer_tensor_power(backend):
    got = run(lambda b: 2**b, EXPONENTS, backend=backend)
    assert_same(got, (2 ** torch.from_numpy(EXPONENTS)).numpy())
    got = run(lambda b: (-1) ** b, EXPONENTS, backend=backend)
    assert_same(got, ((-1) ** torch.from_numpy(EXPONENTS)).numpy())


def test_integer_tensor_to_a_negative_python_int_is_an_error():
    with pytest.raises(RuntimeError, match="negative integer powers"):
        torch.tensor([2, 3]) ** -1
    with pytest.raises(DTypeError, match="negative integer powers"):
        gc.input("x", (2,), gc.int64) ** -1
    x = gc.input("x", (2,), gc.int32)
    assert (x**-1.0).dtype == gc.float32  # a float exponent is fine
    assert (x**3).dtype == gc.int32


OUT_OF_RANGE = [1e10, -1e10, NAN, INF, -INF, 3.7, -3.7, 2.0**31, -(2.0**31), 2.0**63, -(2.0**63)]


@pytest.mark.parametrize("source", [np.float32, np.float64])
@pytest.mark.parametrize("target", [gc.int32, gc.int64], ids=lambda d: d.short)
def test_float_to_int_cast_of_values_out_of_range(backend, source, target):
    data = np.array(OUT_OF_RANGE + [2147483520.0, -2147483520.0, 0.99, -0.99], source)
    got = run(lambda x: x.to(target), data, backend=backend)
    assert_same(got, torch.from_numpy(data).to(TORCH_DTYPES[target]).numpy())
    assert got[2] == np.iinfo(target.numpy).min  # NaN


# == 13: max(dim) with ties, torch.gather ======================================================
TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0], [5.0, 1.0, 5.0, 5.0]], np.float64)
GY = np.array([1.0, -2.0, 0.5])


@pytest.mark.parametrize(
    ("fn", "torch_fn", "gy"),
    [
        (lambda x: x.max(dim=1).values, lambda t: t.max(dim=1).values, GY),
        (lambda x: x.min(dim=0)[0], lambda t: t.min(dim=0)[0], np.array([1.0, 2.0, 3.0, 4.0])),
        (lambda x: x.max(1, keepdim=True).values, lambda t: t.max(1, keepdim=True).values, None),
        (lambda x: x.amax(dim=1), lambda t: t.amax(dim=1), GY),
        (lambda x: x.amin(dim=(0, 1)), lambda t: t.amin(dim=(0, 1)), None),
        (lambda x: x.max(), lambda t: t.max(), None),
        (lambda x: gc.max(x, 1)[0], lambda t: torch.max(t, 1)[0], GY),
    ],
    ids=["max_dim", "min_dim", "max_dim_keep", "amax", "amin", "max_all", "gc_max"],
)
def test_gradient_of_max_with_ties_follows_torch(backend, fn, torch_fn, gy):
    value, grad = value_and_grad(fn, TIES, backend, gy)
    want_value, want_grad = torch_value_and_grad(torch_fn, TIES, gy)
    assert_same(value, want_value)
    assert_same(grad, want_grad)


def test_max_dim_values_and_indices_with_nan(backend):
    data = np.array([[1.0, NAN, 3.0], [2.0, 7.0, -1.0]], np.float32)
    values, indices = run(lambda x: tuple(x.max(dim=1)), data, backend=backend)
    want = torch.from_numpy(data).max(dim=1)
    assert_same(values, want.values.numpy())
    assert_same(indices, want.indices.numpy())


X34 = np.arange(12, dtype=np.float64).reshape(3, 4) / 4


@pytest.mark.parametrize(
    ("dim", "index"),
    [
        (1, [[0, 1], [2, 3]]),  # fewer rows than the input: torch reads the first ones
        (1, [[3, 3, 0, 1, 2, 2]]),  # more columns along dim, one row
        (0, [[2, 0, 1]]),
        (0, [[2, 0, 1, 1], [0, 0, 0, 0], [1, 2, 2, 0], [2, 2, 2, 2]]),  # more rows along dim
        (-1, [[1], [0], [3]]),
    ],
)
def test_gather_follows_torch(backend, dim, index):
    index = np.array(index, np.int64)
    value, grad = value_and_grad(lambda x: gc.gather(x, dim, gc.tensor(index)), X34, backend)
    want_value, want_grad = torch_value_and_grad(
        lambda t: torch.gather(t, dim, torch.from_numpy(index)), X34
    )
    assert_same(value, want_value)
    assert_same(grad, want_grad)
    got = run(lambda x, i: x.gather(dim, i), X34, index, backend=backend)
    assert_same(got, want_value)


def test_gather_index_larger_than_the_input_is_a_shape_error():
    index = np.zeros((4, 2), np.int64)
    with pytest.raises(RuntimeError, match="no larger than"):
        torch.gather(torch.from_numpy(X34), 1, torch.from_numpy(index))
    with pytest.raises(ShapeError, match="no larger than"):
        gc.gather(gc.tensor(X34), 1, gc.tensor(index))
    with pytest.raises(ShapeError, match="as many dims"):
        gc.gather(gc.tensor(X34), 1, gc.tensor(np.zeros(2, np.int64)))


@pytest.mark.parametrize("bad", [4, -1, -5])
def test_gather_index_out_of_range_raises_when_run(backend, bad):
    index = np.array([[0, 1], [bad, 0], [3, 2]], np.int64)
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.gather(torch.from_numpy(X34), 1, torch.from_numpy(index))
    with pytest.raises(IndexingError, match="out of bounds"):
        run(lambda x, i: gc.gather(x, 1, i), X34, index, backend=backend)


def test_gather_with_a_symbolic_index_dim(backend):
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    index = np.array([[3, 0], [1, 1]], np.int64)
    got = run(lambda a, i: gc.gather(a, 1, i), x, index, backend=backend, shapes=[(5, 4), ("B", 2)])
    assert_same(got, torch.gather(torch.from_numpy(x), 1, torch.from_numpy(index)).numpy())
    with pytest.raises(IndexingError):  # B = 6 rows of index, but the input has 5
        run(
            lambda a, i: gc.gather(a, 1, i),
            x,
            np.zeros((6, 2), np.int64),
            backend=backend,
            shapes=[(5, 4), ("B", 2)],
        )


# == 14: log_softmax and cross entropy of large logits =========================================
def test_log_softmax_and_logsumexp_of_large_logits_are_exact(backend):
    rng = np.random.default_rng(3)
    data = (1e4 + rng.standard_normal((4, 10)) * 3).astype(np.float32)
    got, total = run(lambda x: (x.log_softmax(1), x.logsumexp(1)), data, backend=backend)
    exact = torch.log_softmax(torch.from_numpy(data).double(), 1).numpy()
    want = torch.log_softmax(torch.from_numpy(data), 1).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=0, atol=4e-6)
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-6)
    assert_same(total, torch.logsumexp(torch.from_numpy(data), 1).numpy())
    # The gradient of logsumexp is softmax: PyTorch's float32 one, exp(x - logsumexp(x)), is
    # off by 4e-4 here (logsumexp near 1e4 is rounded); graphc's, exp(x - max) / sum, is exact.
    _, grad = value_and_grad(lambda x: x.logsumexp(1), data, backend)
    _, exact_grad = torch_value_and_grad(lambda t: t.logsumexp(1), data.astype(np.float64))
    np.testing.assert_allclose(grad, exact_grad.astype(np.float32), rtol=1e-5, atol=1e-7)


def test_log_softmax_of_huge_equal_logits(backend):
    data = np.array([[3e38, 3e38, 0.0], [-3e38, 3e38, 1.0]], np.float32)
    got = run(lambda x: gc.log_softmax(x, -1), data, backend=backend)
    want = torch.log_softmax(torch.from_numpy(data), -1).numpy()
    assert_same(got, want)
    np.testing.assert_allclose(got[0, :2], [-np.log(2)] * 2, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_of_large_logits(backend, reduction):
    logits = np.array([[1e4, 1e4 + 0.5, 1e4 - 1.0], [2e4, 2e4, 2e4 + 1.0]], np.float32)
    target = np.array([0, 1], np.int64)
    loss = gc.nn.CrossEntropyLoss(reduction=reduction)
    got = run(lambda x, t: loss(x, t), logits, target, backend=backend)
    want = torch.nn.CrossEntropyLoss(reduction=reduction)(
        torch.from_numpy(logits), torch.from_numpy(target)
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "reduce",
    [
        lambda x: x.max(),
        lambda x: x.min(),
        lambda x: x.max(dim=1).values,
        lambda x: x.min(dim=0).values,
        lambda x: x.amax(0),
        lambda x: x.amin(1),
    ],
    ids=["max", "min", "max_dim", "min_dim", "amax", "amin"],
)
def test_extrema_of_bools_are_bools(backend, reduce):
    data = np.array([[True, False, True], [False, False, False]])
    got = run(reduce, data, backend=backend)
    want = reduce(torch.from_numpy(data)).numpy()
    assert got.dtype == want.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
