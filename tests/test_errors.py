"""One test per error type, asserting what the message says: the op, the shapes, the failing
axis, and the user's file:line (this file and the line that built the bad node)."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import graphc as gc
from graphc.dims import Sym
from graphc.errors import (
    CompileError,
    DTypeError,
    GraphcError,
    GraphError,
    IndexingError,
    InputError,
    ShapeError,
)
from graphc.graph import Node
from graphc.types import TensorType

FILE = "test_errors.py"


def next_line() -> int:
    """Return the line number after the caller's line (where the bad node is built)."""
    return inspect.currentframe().f_back.f_lineno + 1


def assert_located(error: BaseException, line: int) -> None:
    """Assert the message points at this test file and line, and nothing inside graphc."""
    message = str(error)
    assert f"{FILE}:{line}" in message, message
    for internal in ("tensor.py", "registry.py", "math_ops.py", "shaping.py", "indexing.py"):
        assert internal not in message, message


# -- hierarchy --------------------------------------------------------------------------------


def test_error_hierarchy():
    for error in (ShapeError, DTypeError, GraphError, InputError, CompileError):
        assert issubclass(error, GraphcError)
    assert issubclass(IndexingError, ShapeError)
    assert issubclass(IndexingError, IndexError)
    assert issubclass(ShapeError, ValueError)
    assert issubclass(DTypeError, TypeError)
    assert issubclass(InputError, ValueError)


# -- ShapeError: broadcasting -----------------------------------------------------------------


def test_broadcast_mismatch_names_op_shapes_axis_and_line():
    a, b = gc.zeros(2, 3), gc.zeros(4, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        a + b
    message = str(info.value)
    assert "add" in message
    assert "[2,3]" in message and "[4,3]" in message
    assert re.search(r"axis (-2|0)\b", message), message
    assert re.search(r"\b2\b.*\b4\b", message), message
    assert_located(info.value, line)


def test_broadcast_mismatch_in_a_longer_expression_points_at_its_line():
    x = gc.ones(5, 7)
    y = x * 2 + 1
    z = gc.ones(7, 5)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        y.exp() - z
    assert "sub" in str(info.value)
    assert "[5,7]" in str(info.value) and "[7,5]" in str(info.value)
    assert_located(info.value, line)


def test_broadcast_with_numpy_operand_reports_shapes():
    x = gc.zeros(3, 4)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x * np.ones((3, 5), np.float32)
    assert "mul" in str(info.value)
    assert "[3,4]" in str(info.value) and "[3,5]" in str(info.value)
    assert_located(info.value, line)


def test_symbolic_dim_broadcasts_with_one_and_itself():
    x = gc.input("x", ("B", 3))
    assert (x + gc.zeros(1, 3)).shape == x.shape
    assert (x + gc.zeros(3)).shape == x.shape
    assert (x + x).shape == x.shape
    y = gc.input("y", ("B", 1))
    assert (x * y).shape == x.shape
    w = gc.input("w", (1, 3))
    assert (y + w).shape == x.shape
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    col = np.array([[10.0], [20.0]], np.float32)
    np.testing.assert_array_equal((x * y).eval({x: data, y: col}), data * col)


def test_symbolic_dim_against_concrete_size_is_rejected_at_build_time():
    x = gc.input("x", ("B", 3))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x + gc.zeros(5, 3)
    message = str(info.value)
    assert "add" in message
    assert "[B,3]" in message and "[5,3]" in message
    assert "B" in message and "5" in message
    assert "symbolic" in message  # explains why a symbol does not broadcast with 5
    assert_located(info.value, line)


def test_two_different_symbols_are_rejected_at_build_time():
    x = gc.input("x", ("B", 3))
    n = gc.input("n", ("N", 3))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x * n
    message = str(info.value)
    assert "mul" in message
    assert "[B,3]" in message and "[N,3]" in message
    assert "symbolic" in message
    assert_located(info.value, line)


def test_where_broadcast_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.where(gc.zeros(2, 3) > 0, gc.zeros(2, 3), gc.zeros(4, 1))
    assert "where" in str(info.value)
    assert "[4,1]" in str(info.value)
    assert_located(info.value, line)


# -- ShapeError: matmul, reshape, concat, axes --------------------------------------------------


def test_matmul_contraction_mismatch():
    a, b = gc.zeros(2, 3), gc.zeros(4, 5)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        a @ b
    message = str(info.value)
    assert "matmul" in message
    assert "[2,3]" in message and "[4,5]" in message
    assert re.search(r"\b3\b", message) and re.search(r"\b4\b", message)
    assert "contraction" in message
    assert_located(info.value, line)


def test_matmul_contraction_with_symbols():
    x = gc.input("x", ("B", 784))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.matmul(x, gc.zeros(256, 10))
    assert "[B,784]" in str(info.value) and "[256,10]" in str(info.value)
    assert_located(info.value, line)


def test_matmul_batch_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.zeros(2, 3, 4) @ gc.zeros(5, 4, 6)
    message = str(info.value)
    assert "matmul" in message
    assert "[2,3,4]" in message and "[5,4,6]" in message
    assert_located(info.value, line)


def test_reshape_size_mismatch():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.reshape(4, 2)
    message = str(info.value)
    assert "reshape" in message
    assert "[2,3]" in message and "[4,2]" in message
    assert_located(info.value, line)


def test_reshape_not_divisible():
    x = gc.input("x", ("B", 5, 2))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.view(-1, 3)
    message = str(info.value)
    assert "reshape" in message
    assert "[B,5,2]" in message
    assert "divisible" in message
    assert_located(info.value, line)


def test_concat_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.cat([gc.zeros(2, 3), gc.zeros(2, 4)], dim=0)
    message = str(info.value)
    assert "concat" in message or "cat" in message
    assert "[2,3]" in message and "[2,4]" in message
    assert re.search(r"dim 1|axis 1", message), message
    assert_located(info.value, line)


def test_reduction_axis_out_of_range():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.sum(dim=2)
    message = str(info.value)
    assert "sum" in message
    assert "[2,3]" in message
    assert "dim 2" in message
    assert_located(info.value, line)


def test_transpose_axis_out_of_range():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.transpose(0, 5)
    message = str(info.value)
    assert "transpose" in message or "permute" in message
    assert "[2,3]" in message
    assert "5" in message
    assert_located(info.value, line)


# -- DTypeError -------------------------------------------------------------------------------


def test_matmul_of_bools_is_a_dtype_error():
    m = gc.tensor([[True, False], [False, True]])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        m @ m
    message = str(info.value)
    assert "matmul" in message
    assert "bool[2,2]" in message
    assert_located(info.value, line)


def test_negating_a_bool_tensor_is_a_dtype_error():
    flags = gc.tensor([True, False])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        _ = -flags
    message = str(info.value)
    assert "neg" in message
    assert "bool[2]" in message
    assert_located(info.value, line)


def test_mean_of_int_tensor_is_a_dtype_error():
    counts = gc.tensor([1, 2, 3])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        counts.mean()
    message = str(info.value)
    assert "mean" in message
    assert "i64[3]" in message
    assert "float" in message
    assert_located(info.value, line)


def test_unsupported_dtype_name():
    with pytest.raises(DTypeError, match="complex64"):
        gc.zeros(2, dtype="complex64")


def test_tensor_from_strings_is_a_dtype_error():
    with pytest.raises(DTypeError) as info:
        line = next_line()
        gc.tensor(["a", "b"])
    assert_located(info.value, line)


# -- GraphError -------------------------------------------------------------------------------


def test_evaluating_unfed_input_names_it_and_the_line():
    x = gc.input("images", ("B", 3))
    y = x.sum(dim=1)
    with pytest.raises(GraphError) as info:
        line = next_line()
        y.numpy()
    message = str(info.value)
    assert "'images'" in message
    assert "f32[B,3]" in message
    assert_located(info.value, line)


def test_compiling_without_a_needed_input_names_it():
    x = gc.input("x", (3,))
    y = gc.input("y", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x], [x + y])
    assert "'y'" in str(info.value)
    assert_located(info.value, line)


def test_compile_inputs_must_be_placeholders():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x * 2], [x])
    assert "gc.input" in str(info.value)
    assert_located(info.value, line)


def test_only_variables_can_be_updated():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x], [x], updates={x: x + 1})
    assert "Variable" in str(info.value)
    assert_located(info.value, line)


def test_update_with_wrong_shape():
    w = gc.Variable(np.zeros(3, np.float32), name="w")
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([], [w.sum()], updates={w: gc.zeros(4)})
    message = str(info.value)
    assert "'w'" in message
    assert "[3]" in message and "[4]" in message
    assert_located(info.value, line)


def test_truth_value_of_tensor():
    x = gc.tensor([1.0, 2.0])
    with pytest.raises(GraphError) as info:
        line = next_line()
        if x > 1:
            pass
    assert "where" in str(info.value)
    assert_located(info.value, line)


def test_unknown_backend():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError, match="nope"):
        gc.compile([x], [x], backend="nope")


def test_repeated_input_names():
    a = gc.input("x", (3,))
    b = gc.input("x", (3,))
    with pytest.raises(GraphError, match="x"):
        gc.compile([a, b], [a + b])


# -- IndexingError ----------------------------------------------------------------------------


def test_index_out_of_bounds_names_dim_size_and_line():
    x = gc.zeros(5, 3)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[:, 3]
    message = str(info.value)
    assert "index 3" in message
    assert "dim 1" in message
    assert "size 3" in message
    assert_located(info.value, line)


def test_too_many_indices():
    x = gc.zeros(5, 3)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[0, 0, 0]
    assert "too many indices" in str(info.value)
    assert_located(info.value, line)


def test_boolean_mask_suggests_where():
    x = gc.arange(6).float()
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[x > 2]
    message = str(info.value)
    assert "where" in message
    assert "boolean" in message
    assert_located(info.value, line)


def test_negative_slice_step():
    x = gc.zeros(5)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[::-1]
    assert "step" in str(info.value)
    assert_located(info.value, line)


def test_float_index_array():
    x = gc.zeros(5)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[np.array([0.5, 1.0])]
    assert "integer" in str(info.value)
    assert_located(info.value, line)


# -- InputError: validation at call time -----------------------------------------------------


@pytest.fixture
def batch_function():
    x = gc.input("x", ("B", 3))
    y = gc.input("y", ("B",), gc.int64)
    return gc.compile([x, y], [x.sum(dim=1) + y])


def test_input_count(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float32))
    message = str(info.value)
    assert "2" in message and "1" in message
    assert "x" in message and "y" in message


def test_input_dtype(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float64), np.zeros(4, np.int64))
    message = str(info.value)
    assert "'x'" in message
    assert "float64" in message
    assert "f32" in message or "float32" in message


def test_input_int_dtype(batch_function):
    with pytest.raises(InputError, match="'y'.*int32"):
        batch_function(np.zeros((4, 3), np.float32), np.zeros(4, np.int32))


def test_input_ndim(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3, 1), np.float32), np.zeros(4, np.int64))
    message = str(info.value)
    assert "'x'" in message
    assert "[4,3,1]" in message or "(4, 3, 1)" in message
    assert "2-d" in message or "ndim" in message


def test_input_static_dim(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 5), np.float32), np.zeros(4, np.int64))
    message = str(info.value)
    assert "'x'" in message
    assert "dim 1" in message
    assert "3" in message and "5" in message


def test_inconsistent_symbolic_dim_across_inputs(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float32), np.zeros(5, np.int64))
    message = str(info.value)
    assert "'y'" in message
    assert "dim 0" in message
    assert "B" in message
    assert "4" in message and "5" in message
    assert "'x'" in message  # where B was bound


def test_symbolic_expression_dim_is_checked():
    x = gc.input("x", ("B", 2))
    z = gc.input("z", (Sym.named("B") * 2,))
    f = gc.compile([x, z], [x.sum() + z.sum()])
    total = f(np.ones((3, 2), np.float32), np.ones(6, np.float32))
    np.testing.assert_allclose(total, 12.0)
    with pytest.raises(InputError) as info:
        f(np.ones((3, 2), np.float32), np.ones(5, np.float32))
    assert "'z'" in str(info.value)
    assert "6" in str(info.value) and "5" in str(info.value)


def test_feeding_a_tensor_is_an_input_error(batch_function):
    with pytest.raises(InputError, match="'x'.*numpy"):
        batch_function(gc.zeros(4, 3), np.zeros(4, np.int64))


def test_unconvertible_input(batch_function):
    with pytest.raises(InputError, match="'x'"):
        batch_function([["a", "b", "c"]], [1])


def test_python_int_out_of_range_is_an_input_error():
    n = gc.input("n", (), gc.int64)
    k = gc.input("k", (2,), gc.int32)
    f = gc.compile([n, k], [n + 1, k * 2])
    total, doubled = f(2**63 - 2, [3, -4])
    assert total == 2**63 - 1
    np.testing.assert_array_equal(doubled, [6, -8])
    with pytest.raises(InputError, match="'n'.*does not fit in int64"):
        f(2**63, [1, 2])
    with pytest.raises(InputError, match="'n'.*does not fit in int64"):
        f(-(2**70), [1, 2])
    with pytest.raises(InputError, match="'k'.*does not fit in int32"):
        f(1, [1, 2**40])
    # A numpy scalar is range-checked like the number it holds, not wrapped to 0.
    with pytest.raises(InputError, match="'k'.*does not fit in int32"):
        f(1, [1, np.int64(2**32)])
    s = gc.input("s", (), gc.int32)
    with pytest.raises(InputError, match="'s'.*does not fit in int32"):
        gc.compile([s], [s * 1])(np.int64(2**32))


def test_masked_array_is_an_input_error(backend):
    x = gc.input("x", (2, 2))
    f = gc.compile([x], [x.sum(dim=1)], backend=backend)
    masked = np.ma.masked_array(np.ones((2, 2), np.float32), mask=[[True, False], [False, False]])
    with pytest.raises(InputError, match="'x'.*masked array.*filled"):
        f(masked)
    np.testing.assert_array_equal(f(masked.filled(0.0)), [1.0, 2.0])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_numpy_subclasses_are_read_as_plain_arrays(backend):
    x = gc.input("x", (2, 2))
    f = gc.compile([x], [x * x, x.sum(dim=1)], backend=backend)
    values = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    squares, sums = f(np.matrix(values))
    assert type(squares) is np.ndarray and type(sums) is np.ndarray
    np.testing.assert_array_equal(squares, values * values)  # elementwise, not matrix product
    np.testing.assert_array_equal(sums, [3.0, 7.0])
    row = gc.input("row", (4,))
    g = gc.compile([row], [row * 2], backend=backend)
    with pytest.raises(InputError, match="'row'.*np.matrix is always 2-d"):
        g(np.matrix([1.0, 2.0, 3.0, 4.0], np.float32))


def test_input_error_in_eval():
    x = gc.input("x", (2,))
    with pytest.raises(InputError, match="'x'"):
        (x * 2).eval({x: np.zeros(3, np.float32)})


# -- all or nothing ------------------------------------------------------------------------------


def test_failed_call_changes_no_variable():
    w = gc.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="w")
    step_count = gc.Variable(np.array(0, np.int64), name="steps")
    x = gc.input("x", ("B", 3))
    loss = (x * w).sum()
    f = gc.compile([x], [loss], updates={w: w - 0.5, step_count: step_count + 1})
    with pytest.raises(InputError):
        f(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])
    assert step_count.numpy() == 0
    loss_value = f(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(loss_value, 12.0)
    np.testing.assert_array_equal(w.numpy(), [0.5, 1.5, 2.5])
    assert step_count.numpy() == 1


def bad_constant(declared: tuple[int, ...]) -> gc.Tensor:
    """Return a tensor whose node claims a shape its value does not have."""
    value = np.zeros(2, np.float32)
    value.setflags(write=False)
    node = Node("constant", (), {"value": value}, TensorType(declared, gc.float32), "here.py:1")
    return gc.Tensor(node)


def test_compile_error_from_backend_names_the_op_and_shapes():
    bad = bad_constant((3,))
    # The reference backend checks every result against its node's type.
    f = gc.compile([], [bad * 1.0], optimize=False, backend="reference")
    with pytest.raises(CompileError) as info:
        f()
    message = str(info.value)
    assert "constant" in message
    assert "(2,)" in message and "(3,)" in message


def test_failure_while_running_changes_no_variable():
    first = gc.Variable(np.zeros(3, np.float32), name="first")
    second = gc.Variable(np.zeros(3, np.float32), name="second")
    f = gc.compile(
        [],
        [first.sum()],
        updates={first: first + 1, second: bad_constant((3,))},
        optimize=False,
        backend="reference",
    )
    with pytest.raises(GraphcError):
        f()
    np.testing.assert_array_equal(first.numpy(), np.zeros(3))
    np.testing.assert_array_equal(second.numpy(), np.zeros(3))


def test_rejected_out_arrays_change_no_variable(backend):
    w = gc.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="w")
    steps = gc.Variable(np.array(0, np.int64), name="steps")
    x = gc.input("x", (3,))
    f = gc.compile([x], [x * w, x + w], updates={w: w * 2, steps: steps + 1}, backend=backend)
    data = np.ones(3, np.float32)
    shared = np.full(3, -1.0, np.float32)
    rejected = [
        (shared, shared),  # two outputs in one array
        (w.storage.value, np.empty(3, np.float32)),  # an output in the Variable
        (np.empty(3, np.float32), np.empty(4, np.float32)),  # a wrong shape
        (np.empty(3, np.float64), np.empty(3, np.float32)),  # a wrong dtype
    ]
    for out in rejected:
        with pytest.raises(InputError, match="out"):
            f(data, out=out)
        np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])
        assert steps.numpy() == 0
    np.testing.assert_array_equal(shared, np.full(3, -1.0))
    products, sums = f(data, out=(np.empty(3, np.float32), np.empty(3, np.float32)))
    np.testing.assert_array_equal(products, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sums, [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(w.numpy(), [2.0, 4.0, 6.0])
    assert steps.numpy() == 1
