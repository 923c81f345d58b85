"""DType promotion (PyTorch's rules, weak Python scalars), as_dtype, and symbolic Dim arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.dims import (
    Sym,
    as_dim,
    as_shape,
    dim_div,
    dim_mul,
    dim_prod,
    dims_equal,
    evaluate_dim,
    evaluate_shape,
    format_shape,
)
from graphc.dtypes import as_dtype, promote, promote_with_scalar
from graphc.errors import DTypeError, ShapeError

B = Sym.named("B")
T = Sym.named("T")

ALL = [gc.float32, gc.float64, gc.int32, gc.int64, gc.bool]


def sample(dtype: gc.DType, shape=(2, 3)) -> np.ndarray:
    """Return small nonzero values of dtype (nonzero so division is well defined)."""
    values = np.arange(1, 1 + int(np.prod(shape))).reshape(shape)
    if dtype == gc.bool:
        return values % 2 == 1
    return values.astype(dtype.numpy)


# -- promotion between two tensors ------------------------------------------------------------

TENSOR_PAIRS = [
    (gc.float32, gc.float32, gc.float32),
    (gc.float32, gc.float64, gc.float64),
    (gc.int32, gc.int64, gc.int64),
    (gc.int64, gc.int32, gc.int64),
    (gc.int64, gc.float32, gc.float32),
    (gc.int32, gc.float64, gc.float64),
    (gc.bool, gc.int32, gc.int32),
    (gc.bool, gc.float32, gc.float32),
    (gc.bool, gc.bool, gc.bool),
]


@pytest.mark.parametrize(("a", "b", "expected"), TENSOR_PAIRS)
def test_promote_function(a, b, expected):
    assert promote(a, b) == expected
    assert promote(b, a) == expected


@pytest.mark.parametrize(("a", "b", "expected"), TENSOR_PAIRS)
def test_tensor_tensor_add_promotes_and_computes(a, b, expected):
    xa, xb = sample(a), sample(b)
    result = gc.tensor(xa, dtype=a) + gc.tensor(xb, dtype=b)
    if expected == gc.bool:
        # PyTorch: bool + bool is logical or and stays bool.
        assert result.dtype in (gc.bool, gc.int64)
        return
    assert result.dtype == expected
    value = result.numpy()
    assert value.dtype == expected.numpy
    np.testing.assert_array_equal(value, xa.astype(expected.numpy) + xb.astype(expected.numpy))


def test_int32_plus_int64_gives_int64():
    a = gc.tensor(np.array([1, 2], np.int32))
    b = gc.tensor(np.array([3, 4], np.int64))
    assert a.dtype == gc.int32
    assert (a + b).dtype == gc.int64
    np.testing.assert_array_equal((a + b).numpy(), np.array([4, 6], np.int64))


# -- weak Python scalars -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensor_dtype", "scalar", "expected"),
    [
        (gc.float32, 2, gc.float32),
        (gc.float32, 2.5, gc.float32),
        (gc.float64, 2.5, gc.float64),
        (gc.int32, 2, gc.int32),
        (gc.int64, 2, gc.int64),
        (gc.int32, 2.5, gc.float32),
        (gc.int64, 2.5, gc.float32),
        (gc.bool, 2, gc.int64),
        (gc.bool, 2.5, gc.float32),
        (gc.bool, True, gc.bool),
        (gc.int32, True, gc.int32),
    ],
)
def test_promote_with_scalar(tensor_dtype, scalar, expected):
    assert promote_with_scalar(tensor_dtype, scalar) == expected


def test_float32_times_int_scalar_stays_float32():
    x = gc.tensor([1.5, 2.5])
    for result in (x * 2, 2 * x):
        assert result.dtype == gc.float32
        np.testing.assert_array_equal(result.numpy(), np.array([3.0, 5.0], np.float32))


def test_float32_times_float_scalar_stays_float32():
    x = gc.tensor([1.5, 2.5])
    result = x * 0.1
    assert result.dtype == gc.float32
    np.testing.assert_allclose(result.numpy(), np.array([0.15, 0.25], np.float32), rtol=1e-6)


def test_int_tensor_divided_by_int_gives_float32():
    x = gc.tensor([1, 2, 3])
    assert x.dtype == gc.int64
    result = x / 2
    assert result.dtype == gc.float32
    np.testing.assert_allclose(result.numpy(), np.array([0.5, 1.0, 1.5], np.float32))
    reflected = 3 / x
    assert reflected.dtype == gc.float32
    np.testing.assert_allclose(reflected.numpy(), np.array([3.0, 1.5, 1.0], np.float32))


def test_int_tensor_divided_by_int_tensor_gives_float32():
    result = gc.tensor([1, 2, 3]) / gc.tensor([2, 2, 2])
    assert result.dtype == gc.float32
    np.testing.assert_allclose(result.numpy(), [0.5, 1.0, 1.5])


def test_int32_tensor_true_division_gives_float32():
    result = gc.tensor([3, 4], dtype=gc.int32) / 2
    assert result.dtype == gc.float32


def test_int64_plus_float_scalar_gives_float32():
    x = gc.tensor([1, 2])
    result = x + 0.5
    assert result.dtype == gc.float32
    np.testing.assert_array_equal(result.numpy(), np.array([1.5, 2.5], np.float32))
    assert (0.5 + x).dtype == gc.float32


def test_int32_plus_int_scalar_stays_int32():
    x = gc.tensor([1, 2], dtype=gc.int32)
    result = x + 100
    assert result.dtype == gc.int32
    np.testing.assert_array_equal(result.numpy(), np.array([101, 102], np.int32))


def test_bool_plus_int_scalar_gives_int64():
    x = gc.tensor([True, False, True])
    assert x.dtype == gc.bool
    result = x + 1
    assert result.dtype == gc.int64
    np.testing.assert_array_equal(result.numpy(), np.array([2, 1, 2], np.int64))


def test_bool_times_float_scalar_gives_float32():
    result = gc.tensor([True, False]) * 1.5
    assert result.dtype == gc.float32
    np.testing.assert_array_equal(result.numpy(), np.array([1.5, 0.0], np.float32))


def test_float64_tensor_with_float32_numpy_array_is_float64():
    x = gc.tensor(np.array([1.0, 2.0]), dtype=gc.float64)
    result = x + np.array([0.5, 0.5], np.float32)
    assert result.dtype == gc.float64


def test_float32_tensor_with_float64_numpy_array_is_strongly_typed():
    # A numpy array is a tensor operand, not a weak scalar: float64 wins as in torch.
    result = gc.tensor([1.0, 2.0]) + np.array([0.5, 0.5])
    assert result.dtype == gc.float64
    np.testing.assert_array_equal(result.numpy(), np.array([1.5, 2.5]))


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64, gc.int32, gc.int64])
@pytest.mark.parametrize("op", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparisons_give_bool(dtype, op):
    a = sample(dtype)
    b = a[::-1, ::-1].copy()
    x, y = gc.tensor(a, dtype=dtype), gc.tensor(b, dtype=dtype)
    python_op = {
        "eq": lambda p, q: p == q,
        "ne": lambda p, q: p != q,
        "lt": lambda p, q: p < q,
        "le": lambda p, q: p <= q,
        "gt": lambda p, q: p > q,
        "ge": lambda p, q: p >= q,
    }[op]
    for result, expected in (
        (python_op(x, y), python_op(a, b)),
        (python_op(x, 3), python_op(a, 3)),
        (python_op(x, 2.5), python_op(a, 2.5)),
    ):
        assert result.dtype == gc.bool
        value = result.numpy()
        assert value.dtype == np.bool_
        np.testing.assert_array_equal(value, expected)


def test_comparison_across_dtypes_gives_bool():
    result = gc.tensor([1, 2, 3]) < gc.tensor([1.5, 1.5, 3.5])
    assert result.dtype == gc.bool
    np.testing.assert_array_equal(result.numpy(), [True, False, True])


def test_float_function_of_int_tensor_gives_float32():
    x = gc.tensor([1, 4, 9])
    assert x.sqrt().dtype == gc.float32
    np.testing.assert_allclose(x.sqrt().numpy(), [1.0, 2.0, 3.0])
    assert x.exp().dtype == gc.float32


# -- as_dtype --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (gc.float32, gc.float32),
        ("float32", gc.float32),
        ("float64", gc.float64),
        ("int32", gc.int32),
        ("int64", gc.int64),
        ("bool", gc.bool),
        ("float", gc.float32),
        ("double", gc.float64),
        ("long", gc.int64),
        ("int", gc.int32),
        (np.float32, gc.float32),
        (np.float64, gc.float64),
        (np.int32, gc.int32),
        (np.int64, gc.int64),
        (np.bool_, gc.bool),
        (np.dtype("float64"), gc.float64),
        (float, gc.float32),
        (int, gc.int64),
        (bool, gc.bool),
    ],
)
def test_as_dtype(value, expected):
    assert as_dtype(value) == expected


@pytest.mark.parametrize("value", ["complex64", np.complex128, "float16x", object, "str"])
def test_as_dtype_rejects_unsupported(value):
    with pytest.raises(DTypeError, match="graphc supports"):
        as_dtype(value)


def test_dtype_aliases_follow_torch():
    assert gc.float is gc.float32
    assert gc.double is gc.float64
    assert gc.long is gc.int64
    assert gc.int is gc.int32
    assert gc.bool == gc.bool_


def test_dtype_properties():
    assert gc.float32.numpy == np.float32
    assert gc.float32.itemsize == 4
    assert gc.float64.itemsize == 8
    assert gc.float32.is_float and not gc.float32.is_int
    assert gc.int32.is_int and not gc.int32.is_bool
    assert gc.bool.is_bool
    assert repr(gc.float32) == "gc.float32"
    assert gc.float32.short == "f32"


@pytest.mark.parametrize("dtype", ALL)
def test_tensor_dtype_keyword(dtype):
    x = gc.tensor([0, 1, 2], dtype=dtype)
    assert x.dtype == dtype
    value = x.numpy()
    assert value.dtype == dtype.numpy
    np.testing.assert_array_equal(value, np.array([0, 1, 2]).astype(dtype.numpy))


# -- symbolic dims --------------------------------------------------------------------------


def test_sym_named_prints_its_name():
    assert str(B) == "B"
    assert repr(B) == "B"
    assert B.single_symbol == "B"


def test_sym_named_rejects_non_identifiers():
    with pytest.raises(ShapeError):
        Sym.named("2B")
    with pytest.raises(ShapeError):
        Sym.named("B C")


def test_b_times_5_prints_and_evaluates():
    d = B * 5
    assert isinstance(d, Sym)
    assert str(d) == "B*5"
    assert d.single_symbol is None
    assert evaluate_dim(d, {"B": 3}) == 15
    assert dims_equal(5 * B, d)
    assert dims_equal(dim_mul(B, 5), d)


def test_dim_arithmetic_identities():
    assert dims_equal(B + B, B * 2)
    assert B - B == 0
    assert dims_equal(B * 1, B)
    assert B * 0 == 0
    assert dims_equal((B * 10) // 5, B * 2)
    assert dims_equal((B * T) // T, B)
    assert dims_equal(B * T, T * B)
    assert not dims_equal(B, T)
    assert not dims_equal(B, 5)
    assert dims_equal(4, 4)
    assert not dims_equal(4, 5)


def test_dim_sum_evaluates():
    d = B * T + 1
    assert evaluate_dim(d, {"B": 2, "T": 7}) == 15
    assert evaluate_dim(B - 1, {"B": 10}) == 9
    assert dims_equal(d - 1, B * T)


def test_dim_prod():
    assert dim_prod([]) == 1
    assert dim_prod([2, 3, 4]) == 24
    assert dims_equal(dim_prod([B, 5, 2]), B * 10)
    assert evaluate_dim(dim_prod([B, T, 3]), {"B": 2, "T": 5}) == 30


def test_dim_div_exact_and_not():
    assert dim_div(12, 4) == 3
    assert dims_equal(dim_div(B * 6, 3), B * 2)
    with pytest.raises(ShapeError, match="not divisible"):
        dim_div(B * 5, 10)
    with pytest.raises(ShapeError, match="not divisible"):
        dim_div(B, T)
    with pytest.raises(ShapeError):
        dim_div(10, 3)
    with pytest.raises(ShapeError):
        dim_div(10, 0)


def test_evaluate_dim_unbound_symbol_raises():
    with pytest.raises(ShapeError, match="T"):
        evaluate_dim(B * T, {"B": 2})


def test_evaluate_shape_and_format():
    shape = (B, B * 5, 3)
    assert evaluate_shape(shape, {"B": 4}) == (4, 20, 3)
    assert format_shape(shape) == "[B,B*5,3]"
    assert format_shape(()) == "[]"


def test_as_dim_and_as_shape():
    assert as_dim(3) == 3
    assert as_dim(np.int64(3)) == 3
    assert dims_equal(as_dim("B"), B)
    assert as_dim(B) is B
    assert as_shape(["B", 3]) == (B, 3)
    with pytest.raises(ShapeError):
        as_dim(True)
    with pytest.raises(ShapeError):
        as_dim(2.5)
    with pytest.raises(ShapeError, match="negative"):
        as_shape([2, -3])


def test_reshape_with_symbol_and_minus_one():
    x = gc.input("x", ("B", 5, 2))
    y = x.reshape(-1, 10)
    assert len(y.shape) == 2
    assert dims_equal(y.shape[0], B)
    assert y.shape[1] == 10
    assert str(y.node.type) == "f32[B,10]"
    data = np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    np.testing.assert_array_equal(y.eval({x: data}), data.reshape(-1, 10))


def test_reshape_to_b_times_5():
    x = gc.input("x", ("B", 5, 2))
    y = x.reshape(-1, 2)
    assert dims_equal(y.shape[0], B * 5)
    assert str(y.shape[0]) == "B*5"
    assert str(y.node.type) == "f32[B*5,2]"
    data = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    np.testing.assert_array_equal(y.eval({x: data}), data.reshape(-1, 2))


def test_flatten_with_symbol():
    x = gc.input("x", ("B", 3, 4))
    assert str(x.flatten(1).node.type) == "f32[B,12]"
    assert str(x.flatten().node.type) == "f32[B*12]"
    data = np.ones((2, 3, 4), np.float32)
    assert x.flatten().eval({x: data}).shape == (24,)


def test_reshape_back_to_symbol():
    x = gc.input("x", ("B", 5, 2))
    y = x.reshape(-1).reshape(-1, 5, 2)
    assert dims_equal(y.shape[0], B)
    assert y.shape[1:] == (5, 2)


def test_reshape_non_divisible_minus_one_raises():
    x = gc.input("x", ("B", 5, 2))
    with pytest.raises(ShapeError, match="divisible"):
        x.reshape(-1, 3)
    with pytest.raises(ShapeError):
        gc.zeros(5, 2).reshape(-1, 3)


def test_reshape_wrong_total_size_raises():
    with pytest.raises(ShapeError):
        gc.zeros(5, 2).reshape(3, 3)
    with pytest.raises(ShapeError):
        gc.input("x", ("B", 5)).reshape("B", 6)


def test_two_minus_ones_raise():
    with pytest.raises(ShapeError, match="-1"):
        gc.zeros(4, 4).reshape(-1, -1)


def test_symbolic_numel():
    x = gc.input("x", ("B", 5, 2))
    assert dims_equal(x.numel(), B * 10)
    assert str(x.numel()) == "B*10"
    assert gc.zeros(3, 4).numel() == 12


def test_dim_printing_reads_like_the_expression():
    # a listing shows x[:-1] of f32[B,3] as f32[B-1,3]: symbols first, the constant last
    assert str(B - 1) == "B-1"
    assert str(B * T + 1) == "B*T+1"
    assert str(B * 2 + T) == "B*2+T"
    x = gc.input("x", ("B", 3))
    assert str(x[:-1].node.type) == "f32[B-1,3]"
