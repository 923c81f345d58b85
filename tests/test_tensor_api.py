"""The Tensor builder API of section 3: creation, methods, operators, reductions, indexing,
evaluation and Variables, each checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.dims import Sym, dims_equal
from graphc.errors import GraphcError, GraphError, IndexingError, InputError, ShapeError

B = Sym.named("B")

RNG = np.random.default_rng(1234)
# Distinct values so max/min/argmax/argmin have no ties.
X234 = RNG.permutation(24).reshape(2, 3, 4).astype(np.float32) / 4 - 3
POS234 = np.abs(X234) + 0.5
INT234 = RNG.integers(-9, 10, size=(2, 3, 4)).astype(np.int64)


def check(t: gc.Tensor, expected, dtype=None, rtol=1e-6, atol=1e-6) -> np.ndarray:
    """Evaluate t and compare it with numpy's expected value (shape, dtype and values)."""
    expected = np.asarray(expected)
    value = t.numpy()
    assert isinstance(value, np.ndarray)
    assert value.shape == expected.shape, (value.shape, expected.shape)
    assert tuple(t.shape) == expected.shape
    if dtype is not None:
        assert t.dtype == dtype
        assert value.dtype == dtype.numpy
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(value, expected)
    else:
        np.testing.assert_allclose(value, expected, rtol=rtol, atol=atol)
    return value


# -- creation --------------------------------------------------------------------------------


def test_tensor_from_nested_int_list_is_int64():
    t = gc.tensor([[1, 2], [3, 4]])
    check(t, np.array([[1, 2], [3, 4]], np.int64), gc.int64)


def test_tensor_from_float_list_is_float32():
    t = gc.tensor([[1.0, 2.5], [3.0, 4.0]])
    check(t, np.array([[1.0, 2.5], [3.0, 4.0]], np.float32), gc.float32)


def test_tensor_from_mixed_int_float_list_is_float32():
    check(gc.tensor([1, 2.5]), np.array([1.0, 2.5], np.float32), gc.float32)


def test_tensor_from_bools_is_bool():
    check(gc.tensor([True, False]), np.array([True, False]), gc.bool)


def test_tensor_from_scalars():
    check(gc.tensor(3), np.array(3, np.int64), gc.int64)
    check(gc.tensor(2.5), np.array(2.5, np.float32), gc.float32)
    check(gc.tensor(True), np.array(True), gc.bool)
    assert gc.tensor(3).shape == ()


@pytest.mark.parametrize("np_dtype", [np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_tensor_from_numpy_keeps_dtype(np_dtype):
    data = (np.arange(6).reshape(2, 3) % 4).astype(np_dtype)
    t = gc.tensor(data)
    assert t.dtype.numpy == np.dtype(np_dtype)
    check(t, data)


def test_tensor_dtype_keyword():
    check(gc.tensor([[1, 2], [3, 4]], dtype=gc.float32), np.array([[1, 2], [3, 4]], np.float32))
    assert gc.tensor([[1, 2], [3, 4]], dtype=gc.float32).dtype == gc.float32
    check(gc.tensor([1.0, 2.0], dtype=gc.float64), np.array([1.0, 2.0]), gc.float64)
    check(gc.tensor([1, 0, 2], dtype="bool"), np.array([True, False, True]), gc.bool)
    check(gc.tensor([1.9, -1.9], dtype=gc.int64), np.array([1, -1], np.int64), gc.int64)


def test_tensor_does_not_alias_numpy_input():
    data = np.array([1.0, 2.0], np.float32)
    t = gc.tensor(data)
    data[0] = 100.0
    check(t, np.array([1.0, 2.0], np.float32))


def test_zeros_ones_full():
    check(gc.zeros(2, 3), np.zeros((2, 3), np.float32), gc.float32)
    check(gc.zeros((2, 3)), np.zeros((2, 3), np.float32), gc.float32)
    check(gc.ones(4), np.ones(4, np.float32), gc.float32)
    check(gc.ones(2, 2, dtype=gc.int64), np.ones((2, 2), np.int64), gc.int64)
    check(gc.full((2, 3), 7), np.full((2, 3), 7, np.int64), gc.int64)
    check(gc.full((2, 3), 1.5), np.full((2, 3), 1.5, np.float32), gc.float32)
    check(gc.full((3,), 2, dtype=gc.float64), np.full(3, 2.0), gc.float64)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((5,), np.arange(5)),
        ((1, 16), np.arange(1, 16)),
        ((2, 11, 3), np.arange(2, 11, 3)),
        ((10, 0, -2), np.arange(10, 0, -2)),
    ],
)
def test_arange_ints_is_int64(args, expected):
    check(gc.arange(*args), expected.astype(np.int64), gc.int64)


def test_arange_floats_is_float32():
    check(gc.arange(0, 1, 0.25), np.arange(0, 1, 0.25).astype(np.float32), gc.float32)
    check(gc.arange(0.0, 3.0), np.arange(0.0, 3.0).astype(np.float32), gc.float32)
    check(gc.arange(4, dtype=gc.float64), np.arange(4.0), gc.float64)


def test_arange_reshape_from_tutorial():
    check(gc.arange(1, 16).reshape(5, 3), np.arange(1, 16).reshape(5, 3))


def test_eye():
    check(gc.eye(3), np.eye(3, dtype=np.float32), gc.float32)
    check(gc.eye(2, 4), np.eye(2, 4, dtype=np.float32))
    check(gc.eye(3, dtype=gc.int64), np.eye(3, dtype=np.int64), gc.int64)


def test_linspace():
    check(gc.linspace(0, 1, 5), np.linspace(0, 1, 5).astype(np.float32), gc.float32)
    check(gc.linspace(-2, 2, 9, dtype=gc.float64), np.linspace(-2, 2, 9), gc.float64)


def test_rand_is_uniform_in_unit_interval():
    gc.manual_seed(0)
    t = gc.rand(100, 100)
    assert t.shape == (100, 100)
    assert t.dtype == gc.float32
    value = t.numpy()
    assert value.dtype == np.float32
    assert value.min() >= 0.0
    assert value.max() < 1.0
    assert abs(value.mean() - 0.5) < 0.02
    assert abs(value.var() - 1 / 12) < 0.01


def test_randn_is_standard_normal():
    gc.manual_seed(0)
    t = gc.randn(100, 100)
    assert t.shape == (100, 100)
    value = t.numpy()
    assert value.dtype == np.float32
    assert np.isfinite(value).all()
    assert abs(value.mean()) < 0.05
    assert abs(value.std() - 1.0) < 0.05


def test_rand_float64():
    t = gc.rand(3, dtype=gc.float64)
    assert t.dtype == gc.float64
    assert t.numpy().dtype == np.float64


def test_manual_seed_reproduces_draws():
    gc.manual_seed(42)
    first_a, first_b = gc.rand(5).numpy(), gc.randn(2, 3).numpy()
    gc.manual_seed(42)
    second_a, second_b = gc.rand(5).numpy(), gc.randn(2, 3).numpy()
    np.testing.assert_array_equal(first_a, second_a)
    np.testing.assert_array_equal(first_b, second_b)


def test_successive_draws_and_seeds_differ():
    gc.manual_seed(42)
    a, b = gc.rand(50).numpy(), gc.rand(50).numpy()
    assert not np.array_equal(a, b)
    gc.manual_seed(43)
    c = gc.rand(50).numpy()
    assert not np.array_equal(a, c)


def test_random_tensor_value_is_fixed_once_built():
    t = gc.rand(10)
    np.testing.assert_array_equal(t.numpy(), t.numpy())


def test_zeros_like_ones_like():
    x = gc.tensor(INT234)
    check(gc.zeros_like(x), np.zeros_like(INT234), gc.int64)
    check(gc.ones_like(gc.tensor(X234)), np.ones_like(X234), gc.float32)
    check(gc.ones_like(x, dtype=gc.float32), np.ones((2, 3, 4), np.float32), gc.float32)


def test_zeros_like_of_symbolic_input():
    x = gc.input("x", ("B", 3))
    z = gc.zeros_like(x)
    assert z.shape == (B, 3)
    np.testing.assert_array_equal(z.eval({x: np.ones((5, 3), np.float32)}), np.zeros((5, 3)))


def test_input_placeholder():
    x = gc.input("x", ("B", 784), gc.float32)
    assert x.shape == (B, 784)
    assert x.dtype == gc.float32
    assert x.ndim == 2
    y = gc.input("y", ("B",), gc.int64)
    assert y.dtype == gc.int64


# -- type properties -------------------------------------------------------------------------


def test_shape_dtype_ndim_numel():
    a = gc.tensor([[1, 2], [3, 4]], dtype=gc.float32)
    assert a.shape == (2, 2)
    assert a.dtype == gc.float32
    assert a.ndim == 2
    assert a.numel() == 4
    assert gc.tensor(1.0).ndim == 0
    assert gc.tensor(1.0).numel() == 1
    assert a.size() == (2, 2)
    assert a.size(1) == 2
    assert a.dim() == 2
    assert len(gc.zeros(3, 2)) == 3


def test_symbolic_numel():
    x = gc.input("x", ("B", 5, 2))
    assert x.shape[0] == B
    assert dims_equal(x.numel(), B * 10)
    assert str(x.numel()) == "B*10"


def test_repr_shows_type_and_op():
    x = gc.input("x", ("B", 784))
    w = gc.zeros(784, 10)
    assert repr(x @ w) == "Tensor(f32[B,10], matmul)"
    assert repr(gc.tensor([1, 2])) == "Tensor(i64[2], constant)"
    assert repr(x) == "Tensor(f32[B,784], input)"


def test_tensor_truth_value_raises():
    with pytest.raises(GraphError, match="where"):
        bool(gc.tensor([1.0]) > 0)


# -- operators ------------------------------------------------------------------------------

A = np.array([[1.5, -2.0, 3.0], [4.0, -5.5, 6.0]], np.float32)
C = np.array([[2.0, 3.0, -1.5], [0.5, 2.0, -4.0]], np.float32)
IA = np.array([[7, -8, 9], [-10, 11, 12]], np.int64)
IC = np.array([[2, 3, -4], [5, -3, 7]], np.int64)

BINARY_OPERATORS = {
    "+": lambda p, q: p + q,
    "-": lambda p, q: p - q,
    "*": lambda p, q: p * q,
    "/": lambda p, q: p / q,
    "//": lambda p, q: p // q,
    "%": lambda p, q: p % q,
}


@pytest.mark.parametrize("name", list(BINARY_OPERATORS))
def test_float_operators_tensor_tensor(name):
    op = BINARY_OPERATORS[name]
    check(op(gc.tensor(A), gc.tensor(C)), op(A, C), gc.float32, rtol=1e-5)


@pytest.mark.parametrize("name", list(BINARY_OPERATORS))
@pytest.mark.parametrize("scalar", [3, 2.5, -1.5])
def test_float_operators_with_python_scalar_either_side(name, scalar):
    op = BINARY_OPERATORS[name]
    x = gc.tensor(A)
    check(op(x, scalar), op(A, np.float32(scalar)), gc.float32, rtol=1e-5)
    check(op(scalar, x), op(np.float32(scalar), A), gc.float32, rtol=1e-5)


@pytest.mark.parametrize("name", list(BINARY_OPERATORS))
def test_float_operators_with_numpy_array_either_side(name):
    op = BINARY_OPERATORS[name]
    x = gc.tensor(A)
    left, right = op(x, C), op(C, x)
    assert isinstance(left, gc.Tensor)
    assert isinstance(right, gc.Tensor)
    check(left, op(A, C), gc.float32, rtol=1e-5)
    check(right, op(C, A), gc.float32, rtol=1e-5)


@pytest.mark.parametrize("name", ["+", "-", "*", "//", "%"])
def test_int_operators_follow_floor_semantics(name):
    op = BINARY_OPERATORS[name]
    check(op(gc.tensor(IA), gc.tensor(IC)), op(IA, IC), gc.int64)
    check(op(gc.tensor(IA), 3), op(IA, 3), gc.int64)
    check(op(-7, gc.tensor(IC)), op(-7, IC), gc.int64)
    check(op(IA, gc.tensor(IC)), op(IA, IC), gc.int64)


def test_int_true_division():
    check(gc.tensor(IA) / gc.tensor(IC), (IA / IC).astype(np.float32), gc.float32)
    check(gc.tensor(IA) / 4, (IA / 4).astype(np.float32), gc.float32)


def test_power_operator():
    x = gc.tensor(POS234)
    check(x**2, POS234**2, gc.float32, rtol=1e-5)
    check(x**0.5, np.sqrt(POS234), gc.float32, rtol=1e-5)
    check(2**x, 2.0**POS234, gc.float32, rtol=1e-5)
    check(x**x, POS234**POS234, gc.float32, rtol=1e-5)
    check(gc.tensor(IA) ** 2, IA**2, gc.int64)
    check(x.pow(3), POS234**3, gc.float32, rtol=1e-5)
    check(x.pow(POS234), POS234**POS234, gc.float32, rtol=1e-5)


def test_broadcasting_operators():
    row = np.array([10.0, 20.0, 30.0], np.float32)
    col = np.array([[1.0], [2.0]], np.float32)
    check(gc.tensor(A) + gc.tensor(row), A + row)
    check(gc.tensor(col) * gc.tensor(row), col * row)
    check(gc.tensor(X234) - gc.tensor(X234[0]), X234 - X234[0])


def test_unary_operators():
    x = gc.tensor(A)
    check(-x, -A, gc.float32)
    check(+x, A, gc.float32)
    check(abs(x), np.abs(A), gc.float32)
    check(-gc.tensor(IA), -IA, gc.int64)
    check(abs(gc.tensor(IA)), np.abs(IA), gc.int64)


def test_comparison_operators():
    x, y = gc.tensor(A), gc.tensor(C)
    check(x < y, A < C, gc.bool)
    check(x <= y, A <= C, gc.bool)
    check(x > 0, A > 0, gc.bool)
    check(x >= 3, A >= 3, gc.bool)
    check(x == y, A == C, gc.bool)
    check(x != y, A != C, gc.bool)
    # scalars and arrays on the left go through the reflected comparison
    check(0 < x, A > 0, gc.bool)  # noqa: SIM300
    check(C < x, C < A, gc.bool)  # noqa: SIM300
    check(gc.tensor(IA) == 9, IA == 9, gc.bool)


def test_logical_operators():
    p = np.array([True, True, False, False])
    q = np.array([True, False, True, False])
    check(gc.tensor(p) & gc.tensor(q), p & q, gc.bool)
    check(gc.tensor(p) | gc.tensor(q), p | q, gc.bool)
    check(~gc.tensor(p), ~p, gc.bool)


def test_matmul_operator_and_functions():
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((4, 5)).astype(np.float32)
    expected = a @ b
    check(gc.tensor(a) @ gc.tensor(b), expected, gc.float32, rtol=1e-5, atol=1e-5)
    check(gc.matmul(gc.tensor(a), gc.tensor(b)), expected, rtol=1e-5, atol=1e-5)
    check(gc.tensor(a).matmul(gc.tensor(b)), expected, rtol=1e-5, atol=1e-5)
    check(a @ gc.tensor(b), expected, rtol=1e-5, atol=1e-5)
    check(gc.tensor(a) @ b, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [
        ((4,), (4,)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((2, 3, 4), (2, 4, 5)),
        ((2, 3, 4), (4, 5)),
        ((4,), (2, 4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),
    ],
)
def test_matmul_numpy_semantics(a_shape, b_shape):
    a = RNG.standard_normal(a_shape).astype(np.float32)
    b = RNG.standard_normal(b_shape).astype(np.float32)
    check(gc.tensor(a) @ gc.tensor(b), np.matmul(a, b), gc.float32, rtol=1e-5, atol=1e-5)


def test_int_matmul():
    check(gc.tensor(IA) @ gc.tensor(IC.T.copy()), IA @ IC.T, gc.int64)


def test_matmul_with_symbolic_batch():
    x = gc.input("x", ("B", 4))
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    y = x @ gc.tensor(w)
    assert y.shape == (B, 3)
    data = RNG.standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_allclose(y.eval({x: data}), data @ w, rtol=1e-5, atol=1e-5)


# -- elementwise methods --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "reference", "data"),
    [
        ("exp", np.exp, A),
        ("log", np.log, POS234),
        ("sqrt", np.sqrt, POS234),
        ("tanh", np.tanh, A),
        ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), A),
        ("relu", lambda v: np.maximum(v, 0), A),
        ("abs", np.abs, A),
    ],
)
def test_unary_methods_and_functions(method, reference, data):
    x = gc.tensor(data)
    expected = reference(data.astype(np.float64)).astype(np.float32)
    check(getattr(x, method)(), expected, gc.float32, rtol=1e-5)
    check(getattr(gc, method)(x), expected, gc.float32, rtol=1e-5)


def test_relu_of_int_tensor():
    check(gc.tensor(IA).relu(), np.maximum(IA, 0), gc.int64)


def test_sigmoid_is_stable_for_large_inputs():
    data = np.array([-100.0, -30.0, 0.0, 30.0, 100.0], np.float32)
    check(gc.tensor(data).sigmoid(), 1 / (1 + np.exp(-data.astype(np.float64))), rtol=1e-6)


def test_clamp():
    x = gc.tensor(A)
    check(x.clamp(-1.0, 2.0), np.clip(A, -1.0, 2.0), gc.float32)
    check(x.clamp(min=0), np.maximum(A, 0), gc.float32)
    check(x.clamp(max=1.5), np.minimum(A, 1.5), gc.float32)
    check(gc.clamp(x, -2, 2), np.clip(A, -2, 2), gc.float32)
    check(gc.tensor(IA).clamp(-5, 5), np.clip(IA, -5, 5), gc.int64)


def test_maximum_minimum():
    x, y = gc.tensor(A), gc.tensor(C)
    check(gc.maximum(x, y), np.maximum(A, C), gc.float32)
    check(gc.minimum(x, y), np.minimum(A, C), gc.float32)
    check(x.maximum(y), np.maximum(A, C))
    check(x.minimum(0.0), np.minimum(A, 0.0))
    check(gc.max(x, y), np.maximum(A, C))
    check(gc.min(x, y), np.minimum(A, C))


PUBLIC_ELEMENTWISE = [op for op in gc.ops.OPS.values() if op.api]


def test_elementwise_functions_and_methods_come_from_the_op_definitions():
    """gc.<api> and Tensor.<api> exist for every elementwise op with a public name, carry the
    op's doc and build the op; PyTorch has the same names."""
    torch = pytest.importorskip("torch")
    names = {op.api for op in PUBLIC_ELEMENTWISE}
    assert {"exp", "log1p", "expm1", "atan2", "remainder", "eq", "logical_not"} <= names
    for op in PUBLIC_ELEMENTWISE:
        function, method = getattr(gc, op.api), getattr(gc.Tensor, op.api)
        assert function.__doc__ == method.__doc__ == op.doc and op.doc
        operands = [gc.input(f"x{i}", (3,), gc.float32) for i in range(op.arity)]
        assert function(*operands).node.op == op.name
        assert getattr(operands[0], op.api)(*operands[1:]).node.op == op.name
        assert hasattr(torch, op.api) and hasattr(torch.Tensor, op.api), op.api


def test_the_written_out_functions_and_methods_are_the_op_table():
    """gc.<api> and Operand.<api> (Tensor's) are written out by name, so type checkers and
    editors see them, and bound from the op table: each list names every public op exactly
    once, under its own name and with its doc."""
    from graphc.math_ops import binary_function, unary_function
    from graphc.ops.operand import Operand

    table = {op.api: op for op in PUBLIC_ELEMENTWISE}
    codes = {unary_function("neg").__code__, binary_function("add").__code__}
    functions = {
        name: value for name, value in vars(gc).items() if getattr(value, "__code__", 0) in codes
    }
    methods = {
        name: value
        for name, value in vars(Operand).items()
        if not name.startswith("_") and getattr(value, "__qualname__", "") == f"Operand.{name}"
    }
    assert set(functions) == set(methods) == set(table)
    for name, op in table.items():
        assert functions[name].__name__ == methods[name].__name__ == name
        assert functions[name].__doc__ == methods[name].__doc__ == op.doc
        assert getattr(gc.Tensor, name) is methods[name]
        assert functions[name].__code__.co_argcount == op.arity
        assert methods[name].__code__.co_argcount == op.arity


_NUMERIC = (gc.int32, gc.int64, gc.float32, gc.float64)


@pytest.mark.parametrize("op", PUBLIC_ELEMENTWISE, ids=lambda op: op.api)
def test_elementwise_result_dtypes_are_pytorchs(op):
    """The promotion policy of each op (OpDef.promotion) gives PyTorch's result dtype for
    every combination of integer and float operands (bool operands: see the decisions in
    docs/architecture.md)."""
    torch = pytest.importorskip("torch")
    combos = (
        [(d,) for d in _NUMERIC] if op.arity == 1 else [(a, b) for a in _NUMERIC for b in _NUMERIC]
    )
    for combo in combos:
        ours = getattr(gc, op.api)(*[gc.input(f"x{i}", (3,), d) for i, d in enumerate(combo)])
        theirs = getattr(torch, op.api)(
            *[torch.ones(3, dtype=getattr(torch, d.name)) for d in combo]
        )
        assert ours.dtype.name == str(theirs.dtype).removeprefix("torch."), (op.api, combo)


def test_log1p_expm1_atan2_methods_and_functions():
    x, y = gc.tensor(A), gc.tensor(C)
    small = np.array([1e-8, -1e-6, 0.25, -0.5], np.float32)
    check(gc.log1p(gc.tensor(small)), np.log1p(small), gc.float32, rtol=1e-6, atol=0)
    check(gc.tensor(small).expm1(), np.expm1(small), gc.float32, rtol=1e-6, atol=0)
    check(gc.atan2(x, y), np.arctan2(A, C), gc.float32, rtol=1e-6)
    check(x.atan2(-1.0), np.arctan2(A, np.float32(-1.0)), gc.float32, rtol=1e-6)
    check(gc.log1p(gc.tensor(IA).abs()), np.log1p(np.abs(IA)).astype(np.float32), gc.float32)


def test_where():
    cond = A > C
    check(gc.where(gc.tensor(cond), gc.tensor(A), gc.tensor(C)), np.where(cond, A, C), gc.float32)
    check(gc.where(gc.tensor(A) > 0, gc.tensor(A), 0.0), np.where(A > 0, A, 0.0), gc.float32)
    check(gc.where(gc.tensor(A) > 0, 1.0, -1.0), np.where(A > 0, 1.0, -1.0).astype(np.float32))
    check(gc.tensor(A).where(gc.tensor(cond), gc.tensor(C)), np.where(cond, A, C))
    row = np.array([True, False, True])
    check(gc.where(gc.tensor(row), gc.tensor(A), gc.tensor(C)), np.where(row, A, C))


def test_where_promotes_branches():
    t = gc.where(gc.tensor([True, False]), gc.tensor([1, 2]), gc.tensor([0.5, 0.5]))
    check(t, np.array([1.0, 0.5], np.float32), gc.float32)


def test_casts():
    data = np.array([-1.7, -0.2, 0.0, 2.7], np.float32)
    x = gc.tensor(data)
    # float -> int truncates toward zero (C and PyTorch semantics).
    check(x.long(), np.array([-1, 0, 0, 2], np.int64), gc.int64)
    check(x.int(), np.array([-1, 0, 0, 2], np.int32), gc.int32)
    check(x.to(gc.int64), np.array([-1, 0, 0, 2], np.int64), gc.int64)
    check(x.bool(), data != 0, gc.bool)
    check(x.to(gc.float64), data.astype(np.float64), gc.float64)
    check(x.double(), data.astype(np.float64), gc.float64)
    check(gc.tensor([1, 2]).float(), np.array([1.0, 2.0], np.float32), gc.float32)
    check(gc.tensor([True, False]).long(), np.array([1, 0], np.int64), gc.int64)
    check(gc.tensor([0, 3]).bool(), np.array([False, True]), gc.bool)
    check(gc.cast(x, "float64"), data.astype(np.float64), gc.float64)
    assert x.to(gc.float32) is x


# -- movement ---------------------------------------------------------------------------------


def test_reshape_and_view():
    x = gc.tensor(X234)
    check(x.reshape(4, 6), X234.reshape(4, 6))
    check(x.reshape((6, 4)), X234.reshape(6, 4))
    check(x.reshape(-1), X234.reshape(-1))
    check(x.reshape(3, -1, 2), X234.reshape(3, -1, 2))
    check(x.view(2, 12), X234.reshape(2, 12))
    check(x.view(-1, 4), X234.reshape(-1, 4))
    check(gc.reshape(x, (12, 2)), X234.reshape(12, 2))


def test_transpose_permute_t_mt():
    x = gc.tensor(X234)
    check(x.transpose(0, 1), X234.transpose(1, 0, 2))
    check(x.transpose(-1, 0), np.swapaxes(X234, -1, 0))
    check(gc.transpose(x, 1, 2), np.swapaxes(X234, 1, 2))
    check(x.permute(2, 0, 1), X234.transpose(2, 0, 1))
    check(x.permute((1, 2, 0)), X234.transpose(1, 2, 0))
    check(gc.permute(x, (2, 1, 0)), X234.transpose(2, 1, 0))
    check(x.T, X234.T)
    check(gc.tensor(A).T, A.T)
    check(x.mT, np.swapaxes(X234, -1, -2))
    check(gc.tensor(A).mT, A.T)


def test_flatten():
    x = gc.tensor(X234)
    check(x.flatten(), X234.reshape(-1))
    check(x.flatten(1), X234.reshape(2, 12))
    check(x.flatten(0, 1), X234.reshape(6, 4))
    check(x.flatten(start_dim=-2, end_dim=-1), X234.reshape(2, 12))
    check(gc.flatten(x, 1, 2), X234.reshape(2, 12))
    check(gc.tensor(3.0).flatten(), np.array([3.0], np.float32))


def test_squeeze_unsqueeze():
    data = X234.reshape(2, 1, 3, 1, 4)
    x = gc.tensor(data)
    check(x.squeeze(), data.squeeze())
    check(x.squeeze(1), data.squeeze(1))
    check(x.squeeze(-2), data.squeeze(-2))
    check(x.squeeze(0), data)  # a dim that is not 1 stays, as in PyTorch
    check(gc.squeeze(x, 3), data.squeeze(3))
    y = gc.tensor(X234)
    check(y.unsqueeze(0), X234[None])
    check(y.unsqueeze(1), X234[:, None])
    check(y.unsqueeze(-1), X234[..., None])
    check(gc.unsqueeze(y, 3), X234[..., None])


def test_expand_and_broadcast_to():
    col = np.array([[1.0], [2.0], [3.0]], np.float32)
    x = gc.tensor(col)
    check(x.expand(3, 4), np.broadcast_to(col, (3, 4)))
    check(x.expand(-1, 4), np.broadcast_to(col, (3, 4)))
    check(x.expand(2, 3, 4), np.broadcast_to(col, (2, 3, 4)))
    check(x.broadcast_to((2, 3, 5)), np.broadcast_to(col, (2, 3, 5)))
    check(gc.broadcast_to(x, (3, 2)), np.broadcast_to(col, (3, 2)))
    check(x.expand_as(gc.zeros(3, 6)), np.broadcast_to(col, (3, 6)))


def test_expand_rejects_non_singleton():
    with pytest.raises(ShapeError):
        gc.zeros(3, 2).expand(3, 4)


def test_cat_and_stack():
    a, c = gc.tensor(A), gc.tensor(C)
    check(gc.cat([a, c]), np.concatenate([A, C]))
    check(gc.cat([a, c], dim=1), np.concatenate([A, C], axis=1))
    check(gc.cat((a, c, a), dim=-1), np.concatenate([A, C, A], axis=-1))
    check(gc.stack([a, c]), np.stack([A, C]))
    check(gc.stack([a, c], dim=1), np.stack([A, C], axis=1))
    check(gc.stack([a, c], dim=2), np.stack([A, C], axis=2))
    check(gc.stack([a, c], dim=-1), np.stack([A, C], axis=-1))


def test_cat_promotes_dtypes():
    t = gc.cat([gc.tensor([1, 2]), gc.tensor([0.5])])
    check(t, np.array([1.0, 2.0, 0.5], np.float32), gc.float32)


def test_cat_shape_mismatch_raises():
    with pytest.raises(ShapeError):
        gc.cat([gc.zeros(2, 3), gc.zeros(2, 4)])


def test_split():
    x = gc.tensor(X234)
    pieces = x.split(3, dim=2)
    assert len(pieces) == 2
    check(pieces[0], X234[:, :, :3])
    check(pieces[1], X234[:, :, 3:])
    pieces = x.split([1, 2], dim=1)
    assert len(pieces) == 2
    check(pieces[0], X234[:, :1])
    check(pieces[1], X234[:, 1:])
    pieces = gc.split(x, 1)
    assert len(pieces) == 2
    check(pieces[1], X234[1:])
    with pytest.raises(ShapeError):
        x.split([1, 1], dim=1)


def test_chunk():
    x = gc.tensor(X234)
    pieces = x.chunk(2, dim=1)
    expected = [X234[:, :2], X234[:, 2:]]  # torch.chunk: ceil-sized chunks, the last smaller
    assert len(pieces) == 2
    for piece, want in zip(pieces, expected, strict=True):
        check(piece, want)
    pieces = gc.chunk(x, 4, dim=-1)
    assert len(pieces) == 4
    for i, piece in enumerate(pieces):
        check(piece, X234[..., i : i + 1])


# -- reductions -------------------------------------------------------------------------------

DIMS = [None, 0, 1, -1, (0, 2), (1,)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS)
def test_sum_mean_prod(dim, keepdim):
    x = gc.tensor(X234)
    check(x.sum(dim=dim, keepdim=keepdim), X234.sum(axis=dim, keepdims=keepdim), rtol=1e-5)
    check(x.mean(dim=dim, keepdim=keepdim), X234.mean(axis=dim, keepdims=keepdim), rtol=1e-5)
    check(gc.sum(x, dim, keepdim), X234.sum(axis=dim, keepdims=keepdim), rtol=1e-5)
    check(gc.mean(x, dim, keepdim), X234.mean(axis=dim, keepdims=keepdim), rtol=1e-5)
    small = gc.tensor(POS234 / 2)
    check(
        small.prod(dim=dim, keepdim=keepdim),
        (POS234 / 2).prod(axis=dim, keepdims=keepdim),
        rtol=1e-5,
    )


def test_sum_with_dtype():
    x = gc.tensor(INT234)
    check(x.sum(dim=1, dtype=gc.float64), INT234.sum(axis=1).astype(np.float64), gc.float64)
    check(gc.tensor(A).sum(dtype=gc.float64), np.array(A.astype(np.float64).sum()), gc.float64)


def test_sum_of_all_is_0d():
    t = gc.tensor(X234).sum()
    assert t.shape == ()
    np.testing.assert_allclose(t.item(), X234.sum(), rtol=1e-5)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("correction", [0, 1])
def test_std_var(dim, keepdim, correction):
    x = gc.tensor(X234)
    check(
        x.var(dim=dim, keepdim=keepdim, correction=correction),
        X234.astype(np.float64).var(axis=dim, keepdims=keepdim, ddof=correction),
        rtol=1e-5,
    )
    check(
        x.std(dim=dim, keepdim=keepdim, correction=correction),
        X234.astype(np.float64).std(axis=dim, keepdims=keepdim, ddof=correction),
        rtol=1e-5,
    )


def test_std_var_larger_correction():
    x = gc.tensor(X234)
    expected = X234.astype(np.float64).var(axis=(0, 2), ddof=3)
    check(x.var(dim=(0, 2), correction=3), expected, rtol=1e-5)
    check(x.std(dim=(0, 2), correction=3), np.sqrt(expected), rtol=1e-5)


def test_std_var_default_correction_is_bessel():
    x = gc.tensor(X234)
    check(x.var(), X234.astype(np.float64).var(ddof=1), rtol=1e-5)
    check(x.std(dim=1), X234.astype(np.float64).std(axis=1, ddof=1), rtol=1e-5)
    check(gc.std(x, 0), X234.astype(np.float64).std(axis=0, ddof=1), rtol=1e-5)
    check(gc.var(x, 2), X234.astype(np.float64).var(axis=2, ddof=1), rtol=1e-5)


def test_int_sum_and_prod_are_int64():
    x = gc.tensor(INT234.astype(np.int32))
    check(x.sum(dim=1), INT234.sum(axis=1), gc.int64)
    check(gc.tensor([True, True, False]).sum(), np.array(2, np.int64), gc.int64)
    check(gc.tensor([[1, 2], [3, 4]]).prod(dim=0), np.array([3, 8]), gc.int64)


def test_reductions_on_tutorial_5x7():
    data = np.ones((5, 7), np.float32)
    x = gc.tensor(data)
    check(x.sum(dim=0), np.full(7, 5.0, np.float32))
    check(x.sum(dim=1), np.full(5, 7.0, np.float32))
    check(x.mean(dim=0), np.ones(7, np.float32))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_max_min_with_dim_return_values_and_indices(dim, keepdim):
    x = gc.tensor(X234)
    for method, values_fn, index_fn in (
        ("max", np.max, np.argmax),
        ("min", np.min, np.argmin),
    ):
        result = getattr(x, method)(dim=dim, keepdim=keepdim)
        assert isinstance(result, tuple)
        assert result._fields == ("values", "indices")  # a namedtuple, like torch's
        values, indices = result
        assert result.values is values
        assert result.indices is indices
        check(values, values_fn(X234, axis=dim, keepdims=keepdim), gc.float32)
        check(indices, index_fn(X234, axis=dim, keepdims=keepdim).astype(np.int64), gc.int64)
        positional = getattr(x, method)(dim, keepdim)
        check(positional.values, values_fn(X234, axis=dim, keepdims=keepdim))


def test_max_min_functions_with_dim():
    x = gc.tensor(X234)
    values, indices = gc.max(x, dim=1)
    check(values, X234.max(axis=1))
    check(indices, X234.argmax(axis=1))
    values, indices = gc.min(x, 2)
    check(values, X234.min(axis=2))
    check(indices, X234.argmin(axis=2))


def test_max_min_without_dim():
    x = gc.tensor(X234)
    check(x.max(), np.array(X234.max()), gc.float32)
    check(x.min(), np.array(X234.min()), gc.float32)
    check(gc.max(x), np.array(X234.max()))
    check(gc.tensor(INT234).max(), np.array(INT234.max()), gc.int64)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_argmax_argmin(dim, keepdim):
    x = gc.tensor(X234)
    check(x.argmax(dim=dim, keepdim=keepdim), X234.argmax(axis=dim, keepdims=keepdim), gc.int64)
    check(x.argmin(dim=dim, keepdim=keepdim), X234.argmin(axis=dim, keepdims=keepdim), gc.int64)
    check(gc.argmax(x, dim), X234.argmax(axis=dim))
    check(gc.argmin(x, dim), X234.argmin(axis=dim))


def test_argmax_argmin_flattened():
    x = gc.tensor(X234)
    check(x.argmax(), np.array(X234.argmax()), gc.int64)
    check(x.argmin(), np.array(X234.argmin()), gc.int64)


def np_logsumexp(data, axis, keepdims=False):
    data = data.astype(np.float64)
    return np.log(np.exp(data).sum(axis=axis, keepdims=keepdims))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1, (0, 2)])
def test_logsumexp(dim, keepdim):
    x = gc.tensor(X234)
    check(x.logsumexp(dim, keepdim), np_logsumexp(X234, dim, keepdim), gc.float32, rtol=1e-5)
    check(gc.logsumexp(x, dim=dim, keepdim=keepdim), np_logsumexp(X234, dim, keepdim), rtol=1e-5)


def test_logsumexp_does_not_overflow():
    data = np.array([[1000.0, 1000.0], [-1000.0, -1000.0]], np.float32)
    expected = np.array([1000.0 + np.log(2), -1000.0 + np.log(2)])
    check(gc.tensor(data).logsumexp(dim=1), expected, rtol=1e-6)


def np_softmax(data, axis):
    data = data.astype(np.float64)
    e = np.exp(data - data.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax(dim):
    x = gc.tensor(X234)
    check(x.softmax(dim), np_softmax(X234, dim), gc.float32, rtol=1e-5)
    check(gc.softmax(x, dim=dim), np_softmax(X234, dim), rtol=1e-5)
    check(x.log_softmax(dim), np.log(np_softmax(X234, dim)), gc.float32, rtol=1e-5, atol=1e-5)
    check(gc.log_softmax(x, dim), np.log(np_softmax(X234, dim)), rtol=1e-5, atol=1e-5)


def test_softmax_of_large_values_is_finite():
    data = np.array([[1000.0, 0.0], [50.0, 50.0]], np.float32)
    check(gc.tensor(data).softmax(dim=1), np.array([[1.0, 0.0], [0.5, 0.5]]))


def test_reductions_with_symbolic_batch():
    x = gc.input("x", ("B", 4))
    data = RNG.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(x.mean(dim=0).eval({x: data}), data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(x.mean().eval({x: data}), data.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        x.std(dim=0).eval({x: data}), data.astype(np.float64).std(axis=0, ddof=1), rtol=1e-5
    )


# -- indexing ---------------------------------------------------------------------------------

X5 = np.arange(5 * 3 * 4).reshape(5, 3, 4).astype(np.float32)

BASIC_INDICES = [
    0,
    -1,
    (slice(None), 0, 0),
    (0, -1),
    (-2, 1, -3),
    slice(1, 4),
    slice(None, None, 2),
    slice(-3, None),
    (slice(1, None, 2), slice(None, None, 2), slice(3, 0, -1)),
    (slice(None), slice(0, 3, 2), 1),
    None,
    (None, 0),
    (slice(None), None, 1),
    Ellipsis,
    (Ellipsis, 0),
    (Ellipsis, None),
    (0, Ellipsis, 2),
    (Ellipsis, slice(1, 3), None),
    (slice(10, 20),),
    (slice(-100, 100),),
]


@pytest.mark.parametrize("index", BASIC_INDICES, ids=repr)
def test_basic_indexing(index):
    if isinstance(index, tuple) and any(isinstance(i, slice) and (i.step or 1) < 0 for i in index):
        # PyTorch rejects negative steps; graphc follows it.
        with pytest.raises(IndexingError):
            gc.tensor(X5)[index]
        return
    check(gc.tensor(X5)[index], X5[index])


def test_tutorial_indexing_3x2x2():
    data = np.arange(12).reshape(3, 2, 2)
    x = gc.tensor(data)
    check(x[0], data[0])
    check(x[:, 0, 0], data[:, 0, 0])
    check(x[0, 1, 1], data[0, 1, 1])
    assert x[0, 1, 1].item() == data[0, 1, 1]
    assert isinstance(x[0, 1, 1].item(), int)


def test_tutorial_indexing_5x3():
    data = np.arange(1, 16).reshape(5, 3)
    x = gc.tensor(data)
    check(x[[0, 2, 4]], data[[0, 2, 4]])
    check(x[:, 1], data[:, 1])
    check(x[1:3], data[1:3])


ARRAY_INDICES = [
    [0, 2, 4],
    [-1, 0, -1],
    [[0, 1], [4, 3]],
    (slice(None), [2, 0]),
    (slice(None), slice(None), [3, 3, 0, 1]),
    (1, [0, 2]),
    (slice(None), [0, 2], 1),
    (Ellipsis, [1, 2]),
    ([4, 0], Ellipsis, 1),
]


@pytest.mark.parametrize("index", ARRAY_INDICES, ids=repr)
def test_int_list_indexing(index):
    check(gc.tensor(X5)[index], X5[index])


def _as_kind(index, kind):
    def convert(item):
        if not isinstance(item, list):
            return item
        array = np.array(item, dtype=np.int64)
        return array if kind == "numpy" else gc.tensor(array)

    if isinstance(index, tuple):
        return tuple(convert(i) for i in index)
    return convert(index)


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("index", ARRAY_INDICES, ids=repr)
def test_int_array_and_tensor_indexing(index, kind):
    check(gc.tensor(X5)[_as_kind(index, kind)], X5[index])


@pytest.mark.parametrize("np_dtype", [np.int32, np.int64])
def test_numpy_int_array_index(np_dtype):
    index = np.array([3, 1], dtype=np_dtype)
    check(gc.tensor(X5)[index], X5[index])


def test_computed_int_tensor_index():
    x = gc.tensor(X5)
    order = gc.tensor(X5[:, 0, 0]).argmax(keepdim=False)
    check(x[order], X5[X5[:, 0, 0].argmax()])
    idx = gc.arange(5) % 2
    check(x[idx], X5[np.arange(5) % 2])


def test_indexing_symbolic_batch():
    x = gc.input("x", ("B", 3, 4))
    data = RNG.standard_normal((6, 3, 4)).astype(np.float32)
    for index in [(slice(None), 0, 0), (slice(None), -1), (Ellipsis, 1), (slice(1, None),)]:
        y = x[index]
        np.testing.assert_array_equal(y.eval({x: data}), data[index])
    for index in [-1, 0, slice(-2, None), slice(None, -1), (slice(1, None), 0), (-2, Ellipsis)]:
        np.testing.assert_array_equal(x[index].eval({x: data}), data[index])
    assert x[:, 0, 0].shape == (B,)
    assert x[:, [0, 2]].shape == (B, 2, 4)
    np.testing.assert_array_equal(x[:, [0, 2]].eval({x: data}), data[:, [0, 2]])


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_slices_bounded_by_a_symbolic_dim(backend):
    # A position table cut to the fed length, as a Transformer's positions are: x.shape[1] is
    # a bound, on a fixed dim and on a symbolic one; gradients flow back into the table.
    x = gc.input("x", ("B", "T"))
    table = gc.Variable(RNG.standard_normal((16, 4)).astype(np.float32))
    length = x.shape[1]
    y = table[:length] + table[1 : length + 1] * 2 + x.sum() * 0
    assert y.shape == (length, 4)
    (grad,) = gc.grad(y.sum(), [table])
    f = gc.compile([x], [y, grad], backend=backend)
    values = table.numpy()
    for t in (3, 15):
        got, got_grad = f(np.zeros((2, t), np.float32))
        np.testing.assert_allclose(got, values[:t] + values[1 : t + 1] * 2, rtol=1e-6)
        want_grad = np.zeros_like(values)
        want_grad[:t] += 1
        want_grad[1 : t + 1] += 2
        np.testing.assert_array_equal(got_grad, want_grad)
    with pytest.raises(IndexingError, match="reads elements 1..16 of a dim of size 16"):
        f(np.zeros((2, 16), np.float32))
    z = gc.input("z", ("T", 4))
    assert z[1:length].shape == (length - 1, 4)
    with pytest.raises(IndexingError, match="slice bounds must be ints or symbolic dims"):
        table[: gc.tensor(3)]


def test_index_out_of_range_raises():
    x = gc.tensor(X5)
    with pytest.raises(IndexingError, match="out of bounds"):
        x[5]
    with pytest.raises(IndexingError, match="out of bounds"):
        x[:, -4]
    with pytest.raises(IndexingError, match="out of bounds"):
        x[[0, 7]]
    with pytest.raises(IndexingError):
        x[0, 0, 0, 0]


def test_index_errors_are_index_errors():
    with pytest.raises(IndexError):
        gc.tensor(X5)[9]


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda x: x > 3,
        lambda x: np.array([True, False, True, False, True]),
        lambda x: [True, False, True, False, True],
        lambda x: gc.tensor([True, False, True, False, True]),
    ],
    ids=["tensor-compare", "numpy-bool", "list-bool", "tensor-bool"],
)
def test_boolean_mask_indexing_raises_and_suggests_where(make_mask):
    x = gc.tensor(X5)
    with pytest.raises(IndexingError, match="where"):
        x[make_mask(x)]


# -- evaluation -------------------------------------------------------------------------------


def test_numpy_item_tolist():
    a = gc.tensor([[1, 2], [3, 4]], dtype=gc.float32)
    value = (a @ a).sum(dim=0).numpy()
    expected = (np.array([[1, 2], [3, 4]], np.float32) @ np.array([[1, 2], [3, 4]])).sum(axis=0)
    np.testing.assert_array_equal(value, expected)
    assert value.dtype == np.float32
    total = a.sum().item()
    assert total == 10.0
    assert isinstance(total, float)
    assert isinstance(gc.tensor([[7]]).item(), int)
    assert isinstance((gc.tensor(1) > 0).item(), bool)
    assert gc.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]


def test_item_of_many_elements_raises():
    with pytest.raises(GraphcError, match="one-element"):
        gc.tensor([1, 2]).item()


def test_eval_with_feed():
    x = gc.input("x", ("B", 3))
    y = gc.input("y", (3,))
    z = (x * 2 + y).sum(dim=1)
    xa = RNG.standard_normal((4, 3)).astype(np.float32)
    ya = RNG.standard_normal(3).astype(np.float32)
    np.testing.assert_allclose(z.eval({x: xa, y: ya}), (xa * 2 + ya).sum(axis=1), rtol=1e-5)
    # the cached compiled function serves another batch size
    xb = RNG.standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_allclose(z.eval({x: xb, y: ya}), (xb * 2 + ya).sum(axis=1), rtol=1e-5)


def test_eval_without_inputs_is_numpy():
    t = gc.tensor(A) * 2
    np.testing.assert_array_equal(t.eval(), A * 2)


def test_evaluating_unfed_input_names_it():
    x = gc.input("pixels", ("B", 3))
    y = gc.input("labels", ("B",))
    z = x.sum(dim=1) + y
    with pytest.raises(GraphError, match="pixels"):
        x.sum().numpy()
    with pytest.raises(GraphError, match="labels"):
        z.eval({x: np.zeros((2, 3), np.float32)})
    with pytest.raises(GraphError, match="pixels"):
        z.item()


def test_evaluation_after_failure_still_works():
    x = gc.input("x", (2,))
    with pytest.raises(GraphError):
        (x + 1).numpy()
    np.testing.assert_array_equal((x + 1).eval({x: np.array([1, 2], np.float32)}), [2, 3])


def test_eval_feed_with_non_input_key_raises():
    t = gc.tensor([1.0])
    with pytest.raises(GraphError):
        (t * 2).eval({t: np.array([2.0], np.float32)})


# -- Variables --------------------------------------------------------------------------------


def test_variable_value_numpy_assign():
    init = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    w = gc.Variable(init, name="w")
    assert isinstance(w, gc.Tensor)
    assert w.shape == (2, 2)
    assert w.dtype == gc.float32
    np.testing.assert_array_equal(w.value, init)
    np.testing.assert_array_equal(w.numpy(), init)
    init[0, 0] = 100.0  # the Variable holds its own copy
    assert w.numpy()[0, 0] == 1.0
    copy = w.numpy()
    copy[0, 0] = -1.0  # numpy() is a copy too
    assert w.numpy()[0, 0] == 1.0
    with pytest.raises(ValueError):
        w.value[0, 0] = 5.0  # value is read-only
    w.assign(np.full((2, 2), 9.0, np.float32))
    np.testing.assert_array_equal(w.numpy(), np.full((2, 2), 9.0))
    w.assign([[1, 2], [3, 4]])
    np.testing.assert_array_equal(w.value, init * 0 + np.array([[1, 2], [3, 4]]))


def test_variable_in_expression_reads_current_value():
    w = gc.Variable(np.array([1.0, 2.0], np.float32), name="w")
    y = w * 10
    np.testing.assert_array_equal(y.numpy(), [10.0, 20.0])
    w.assign(np.array([3.0, 4.0], np.float32))
    np.testing.assert_array_equal(y.numpy(), [30.0, 40.0])


def test_variable_dtype_defaults():
    assert gc.Variable([1.0, 2.0]).dtype == gc.float32
    assert gc.Variable(np.zeros(2)).dtype == gc.float64
    assert gc.Variable([1, 2]).dtype == gc.int64
    assert gc.Variable([1, 2], dtype=gc.float32).dtype == gc.float32
    assert gc.Variable(gc.ones(3)).dtype == gc.float32
    np.testing.assert_array_equal(gc.Variable(gc.ones(3)).numpy(), np.ones(3))


def test_variable_assign_wrong_shape_raises_and_keeps_value():
    w = gc.Variable(np.zeros((2, 2), np.float32), name="w")
    with pytest.raises(InputError, match="shape"):
        w.assign(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(w.numpy(), np.zeros((2, 2)))
