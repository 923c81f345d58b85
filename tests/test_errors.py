"""One test per error type, asserting the whole message: the op, the shapes, the failing axis,
and the user's file:line (this file and the line that built the bad node).

Messages are compared whole, so a swapped pair of sizes, a wrong axis or a wrong input name fails;
a regex (anchored with re.fullmatch) stands in only for text graphc does not write itself, such as
numpy's reason for refusing a value or a node's running id."""

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


def split_message(error: BaseException) -> tuple[str, str | None]:
    """Return the error's message without its location line, and the location (or None)."""
    message, mark, location = str(error).partition("\n  at ")
    return message, (location if mark else None)


def assert_message(error: BaseException, expected: str, line: int | None = None) -> None:
    """Assert the message is exactly `expected` and, given a line, located at that line here."""
    message, location = split_message(error)
    assert message == expected
    if line is not None:
        assert location == f"{FILE}:{line}", str(error)


def assert_message_matches(error: BaseException, pattern: str, line: int | None = None) -> None:
    """Assert the whole message matches `pattern` and, given a line, is located at that line."""
    message, location = split_message(error)
    assert re.fullmatch(pattern, message), message
    if line is not None:
        assert location == f"{FILE}:{line}", str(error)


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
    assert_message(
        info.value, "add: cannot broadcast shapes [2,3] and [4,3]: axis -2 has sizes 2 and 4", line
    )


def test_broadcast_mismatch_in_a_longer_expression_points_at_its_line():
    x = gc.ones(5, 7)
    y = x * 2 + 1
    z = gc.ones(7, 5)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        y.exp() - z
    assert_message(
        info.value, "sub: cannot broadcast shapes [5,7] and [7,5]: axis -2 has sizes 5 and 7", line
    )


def test_broadcast_with_numpy_operand_reports_shapes():
    x = gc.zeros(3, 4)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x * np.ones((3, 5), np.float32)
    assert_message(
        info.value, "mul: cannot broadcast shapes [3,4] and [3,5]: axis -1 has sizes 4 and 5", line
    )


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
    # The second sentence explains why a symbol does not broadcast with 5.
    assert_message(
        info.value,
        "add: cannot broadcast shapes [B,3] and [5,3]: axis -2 has sizes B and 5; "
        "a symbolic dim only broadcasts with 1 or the same symbol "
        "(graphc decides broadcasting when the graph is built)",
        line,
    )


def test_two_different_symbols_are_rejected_at_build_time():
    x = gc.input("x", ("B", 3))
    n = gc.input("n", ("N", 3))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x * n
    assert_message(
        info.value,
        "mul: cannot broadcast shapes [B,3] and [N,3]: axis -2 has sizes B and N; "
        "a symbolic dim only broadcasts with 1 or the same symbol "
        "(graphc decides broadcasting when the graph is built)",
        line,
    )


def test_where_broadcast_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.where(gc.zeros(2, 3) > 0, gc.zeros(2, 3), gc.zeros(4, 1))
    assert_message(
        info.value,
        "where: cannot broadcast shapes [2,3] and [2,3] and [4,1]: axis -2 has sizes 2 and 4",
        line,
    )


# -- ShapeError: matmul, reshape, concat, axes --------------------------------------------------


def test_matmul_contraction_mismatch():
    a, b = gc.zeros(2, 3), gc.zeros(4, 5)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        a @ b
    assert_message(
        info.value,
        "matmul: contraction dims differ in [2,3] @ [4,5]: "
        "the left's last dim is 3, the right's second-to-last dim is 4",
        line,
    )


def test_matmul_contraction_with_symbols():
    x = gc.input("x", ("B", 784))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.matmul(x, gc.zeros(256, 10))
    assert_message(
        info.value,
        "matmul: contraction dims differ in [B,784] @ [256,10]: "
        "the left's last dim is 784, the right's second-to-last dim is 256",
        line,
    )


def test_matmul_batch_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.zeros(2, 3, 4) @ gc.zeros(5, 4, 6)
    assert_message(
        info.value,
        "matmul: batch dims of [2,3,4] @ [5,4,6] do not broadcast: axis -3 has sizes 2 and 5",
        line,
    )


def test_reshape_size_mismatch():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.reshape(4, 2)
    assert_message(
        info.value, "reshape: cannot reshape [2,3] (6 elements) to [4,2] (8 elements)", line
    )


def test_reshape_not_divisible():
    x = gc.input("x", ("B", 5, 2))
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.view(-1, 3)
    assert_message(
        info.value,
        "reshape: cannot reshape [B,5,2] (B*10 elements) to [-1,3]: B*10 is not divisible by 3",
        line,
    )


def test_concat_mismatch():
    with pytest.raises(ShapeError) as info:
        line = next_line()
        gc.cat([gc.zeros(2, 3), gc.zeros(2, 4)], dim=0)
    assert_message(
        info.value,
        "concat: sizes must match except in dim 0, but dim 1 is 3 in tensor 0 [2,3] and 4 in "
        "tensor 1 [2,4]",
        line,
    )


def test_reduction_axis_out_of_range():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.sum(dim=2)
    assert_message(
        info.value,
        "sum: dim 2 is out of range for a 2-d tensor of shape [2,3] (expected a dim in [-2, 1])",
        line,
    )


def test_transpose_axis_out_of_range():
    x = gc.zeros(2, 3)
    with pytest.raises(ShapeError) as info:
        line = next_line()
        x.transpose(0, 5)
    assert_message(
        info.value,
        "transpose: dim 5 is out of range for a 2-d tensor of shape [2,3] "
        "(expected a dim in [-2, 1])",
        line,
    )


# -- DTypeError -------------------------------------------------------------------------------


def test_matmul_of_bools_is_a_dtype_error():
    m = gc.tensor([[True, False], [False, True]])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        m @ m
    assert_message(info.value, "matmul: the operands must be float or int, got bool[2,2]", line)


def test_negating_a_bool_tensor_is_a_dtype_error():
    flags = gc.tensor([True, False])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        _ = -flags
    assert_message(
        info.value,
        "neg: not defined for bool tensors (Tensor(bool[2], constant)); use ~x or .long()",
        line,
    )


def test_mean_of_int_tensor_is_a_dtype_error():
    counts = gc.tensor([1, 2, 3])
    with pytest.raises(DTypeError) as info:
        line = next_line()
        counts.mean()
    assert_message(
        info.value,
        "mean: needs a floating-point tensor, got Tensor(i64[3], constant); call .float() first",
        line,
    )


def test_unsupported_dtype_name():
    with pytest.raises(DTypeError) as info:
        gc.zeros(2, dtype="complex64")
    assert_message(
        info.value,
        "unsupported dtype 'complex64'; graphc supports float32, float64, int32, int64, bool",
    )


def test_tensor_from_strings_is_a_dtype_error():
    with pytest.raises(DTypeError) as info:
        line = next_line()
        gc.tensor(["a", "b"])
    assert_message(info.value, "tensor(): cannot make a tensor from <U1 data", line)


# -- GraphError -------------------------------------------------------------------------------


def test_evaluating_unfed_input_names_it_and_the_line():
    x = gc.input("images", ("B", 3))
    y = x.sum(dim=1)
    with pytest.raises(GraphError) as info:
        line = next_line()
        y.numpy()
    assert_message(
        info.value,
        "the outputs depend on input 'images' f32[B,3], which is not fed; "
        "add it to inputs (or to the feed dict of .eval())",
        line,
    )


def test_compiling_without_a_needed_input_names_it():
    x = gc.input("x", (3,))
    y = gc.input("y", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x], [x + y])
    assert_message(
        info.value,
        "the outputs depend on input 'y' f32[3], which is not fed; "
        "add it to inputs (or to the feed dict of .eval())",
        line,
    )


def test_compile_inputs_must_be_placeholders():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x * 2], [x])
    assert_message(
        info.value, "inputs must be placeholders made by gc.input(), got Tensor(f32[3], mul)", line
    )


def test_only_variables_can_be_updated():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([x], [x], updates={x: x + 1})
    assert_message(info.value, "only Variables can be updated, got Tensor(f32[3], input)", line)


def test_update_with_wrong_shape():
    w = gc.Variable(np.zeros(3, np.float32), name="w")
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([], [w.sum()], updates={w: gc.zeros(4)})
    assert_message(info.value, "update of variable 'w' f32[3] has shape [4]", line)


def test_truth_value_of_tensor():
    x = gc.tensor([1.0, 2.0])
    with pytest.raises(GraphError) as info:
        line = next_line()
        if x > 1:
            pass
    assert_message(
        info.value,
        "the truth value of Tensor(bool[2], gt) is not known while the graph is built; "
        "use gc.where(cond, a, b) in the graph, or .item() to evaluate it now",
        line,
    )


def test_unknown_backend():
    x = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        gc.compile([x], [x], backend="nope")
    available = ", ".join(gc.available_backends())
    assert_message(info.value, f"unknown backend 'nope'; available: {available}")


def test_repeated_input_names():
    a = gc.input("x", (3,))
    b = gc.input("x", (3,))
    with pytest.raises(GraphError) as info:
        line = next_line()
        gc.compile([a, b], [a + b])
    assert_message(info.value, "inputs have repeated names: ['x', 'x']", line)


# -- IndexingError ----------------------------------------------------------------------------


def test_index_out_of_bounds_names_dim_size_and_line():
    x = gc.zeros(5, 3)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[:, 3]
    assert_message(
        info.value, "index 3 is out of bounds for dim 1 with size 3 of a f32[5,3] tensor", line
    )


def test_too_many_indices():
    x = gc.zeros(5, 3)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[0, 0, 0]
    assert_message(
        info.value, "too many indices for a f32[5,3] tensor: it has 2 dims, 3 indexed", line
    )


def test_boolean_mask_suggests_where():
    x = gc.arange(6).float()
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[x > 2]
    assert_message(
        info.value,
        "boolean-mask indexing selects a data-dependent number of elements, "
        "which a static graph cannot type; "
        "use gc.where(mask, x, 0) (or multiply by the mask) to keep the shape",
        line,
    )


def test_negative_slice_step():
    x = gc.zeros(5)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[::-1]
    assert_message(
        info.value, "slice step must be a positive int (as in PyTorch), got -1 on dim 0", line
    )


def test_float_index_array():
    x = gc.zeros(5)
    with pytest.raises(IndexingError) as info:
        line = next_line()
        x[np.array([0.5, 1.0])]
    assert_message(info.value, "index arrays must hold integers, got float64 for dim 0", line)


# -- InputError: validation at call time -----------------------------------------------------


@pytest.fixture
def batch_function():
    x = gc.input("x", ("B", 3))
    y = gc.input("y", ("B",), gc.int64)
    return gc.compile([x, y], [x.sum(dim=1) + y])


def test_input_count(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float32))
    assert_message(info.value, "expected 2 arrays (x, y), got 1")


def test_input_dtype(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float64), np.zeros(4, np.int64))
    assert_message(
        info.value,
        "input 'x' is f32[B,3], got an array of dtype float64; convert it with .astype(np.float32)",
    )


def test_input_int_dtype(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float32), np.zeros(4, np.int32))
    assert_message(
        info.value,
        "input 'y' is i64[B], got an array of dtype int32; convert it with .astype(np.int64)",
    )


def test_input_ndim(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3, 1), np.float32), np.zeros(4, np.int64))
    assert_message(info.value, "input 'x' is f32[B,3] (2-d), got an array of shape [4,3,1]")


def test_input_static_dim(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 5), np.float32), np.zeros(4, np.int64))
    assert_message(info.value, "input 'x' f32[B,3]: dim 1 should be 3, got 5 (array shape [4,5])")


def test_inconsistent_symbolic_dim_across_inputs(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(np.zeros((4, 3), np.float32), np.zeros(5, np.int64))
    # The message ends with where B was bound.
    assert_message(
        info.value,
        "input 'y' i64[B]: dim 0 should be B = 4, got 5 (array shape [5]); "
        "B=4 from input 'x' dim 0",
    )


def test_symbolic_expression_dim_is_checked():
    x = gc.input("x", ("B", 2))
    z = gc.input("z", (Sym.named("B") * 2,))
    f = gc.compile([x, z], [x.sum() + z.sum()])
    total = f(np.ones((3, 2), np.float32), np.ones(6, np.float32))
    np.testing.assert_allclose(total, 12.0)
    with pytest.raises(InputError) as info:
        f(np.ones((3, 2), np.float32), np.ones(5, np.float32))
    assert_message(
        info.value,
        "input 'z' f32[B*2]: dim 0 should be B*2 = 6, got 5 (array shape [5]); "
        "B=3 from input 'x' dim 0",
    )


def test_feeding_a_tensor_is_an_input_error(batch_function):
    with pytest.raises(InputError) as info:
        batch_function(gc.zeros(4, 3), np.zeros(4, np.int64))
    assert_message(
        info.value, "input 'x' must be fed a numpy array, got Tensor(f32[4,3], broadcast_to)"
    )


def test_unconvertible_input(batch_function):
    with pytest.raises(InputError) as info:
        batch_function([["a", "b", "c"]], [1])
    # The reason after "cannot convert value: " is numpy's own words.
    assert_message_matches(info.value, r"input 'x' f32\[B,3\]: cannot convert value: .+")


def test_python_int_out_of_range_is_an_input_error():
    n = gc.input("n", (), gc.int64)
    k = gc.input("k", (2,), gc.int32)
    f = gc.compile([n, k], [n + 1, k * 2])
    total, doubled = f(2**63 - 2, [3, -4])
    assert total == 2**63 - 1
    np.testing.assert_array_equal(doubled, [6, -8])
    # The parenthesised reason is numpy's own words, which vary between numpy versions.
    n_overflow = r"input 'n' i64\[\]: the value does not fit in int64 \(.+\)"
    k_overflow = r"input 'k' i32\[2\]: the value does not fit in int32 \(.+\)"
    with pytest.raises(InputError) as info:
        f(2**63, [1, 2])
    assert_message_matches(info.value, n_overflow)
    with pytest.raises(InputError) as info:
        f(-(2**70), [1, 2])
    assert_message_matches(info.value, n_overflow)
    with pytest.raises(InputError) as info:
        f(1, [1, 2**40])
    assert_message_matches(info.value, k_overflow)
    # A numpy scalar is range-checked like the number it holds, not wrapped to 0.
    with pytest.raises(InputError) as info:
        f(1, [1, np.int64(2**32)])
    assert_message_matches(info.value, k_overflow)
    s = gc.input("s", (), gc.int32)
    with pytest.raises(InputError) as info:
        gc.compile([s], [s * 1])(np.int64(2**32))
    assert_message_matches(info.value, r"input 's' i32\[\]: the value does not fit in int32 \(.+\)")


def test_masked_array_is_an_input_error(backend):
    x = gc.input("x", (2, 2))
    f = gc.compile([x], [x.sum(dim=1)], backend=backend)
    masked = np.ma.masked_array(np.ones((2, 2), np.float32), mask=[[True, False], [False, False]])
    with pytest.raises(InputError) as info:
        f(masked)
    assert_message(
        info.value,
        "input 'x' f32[2,2] was fed a masked array; a graph has no masked values, so feed "
        ".filled(value) (masked entries replaced) or .data (ignoring the mask)",
    )
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
    with pytest.raises(InputError) as info:
        g(np.matrix([1.0, 2.0, 3.0, 4.0], np.float32))
    assert_message(
        info.value,
        "input 'row' is f32[4] (1-d), got an array of shape [1,4] (an np.matrix is always 2-d)",
    )


def test_input_error_in_eval():
    x = gc.input("x", (2,))
    with pytest.raises(InputError) as info:
        (x * 2).eval({x: np.zeros(3, np.float32)})
    assert_message(info.value, "input 'x' f32[2]: dim 0 should be 2, got 3 (array shape [3])")


# -- all or nothing ------------------------------------------------------------------------------


def test_failed_call_changes_no_variable():
    w = gc.Variable(np.array([1.0, 2.0, 3.0], np.float32), name="w")
    step_count = gc.Variable(np.array(0, np.int64), name="steps")
    x = gc.input("x", ("B", 3))
    loss = (x * w).sum()
    f = gc.compile([x], [loss], updates={w: w - 0.5, step_count: step_count + 1})
    with pytest.raises(InputError) as info:
        f(np.ones((2, 4), np.float32))
    assert_message(info.value, "input 'x' f32[B,3]: dim 1 should be 3, got 4 (array shape [2,4])")
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])
    assert step_count.numpy() == 0
    loss_value = f(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(loss_value, 12.0)
    np.testing.assert_array_equal(w.numpy(), [0.5, 1.5, 2.5])
    assert step_count.numpy() == 1


# What the reference backend says of bad_constant((3,)); the node's number is a running id.
BAD_CONSTANT_MESSAGE = (
    r"reference constant produced shape \(2,\), its type says \(3,\) "
    r"\(node Node#\d+\(constant: f32\[3\]\) at here\.py:1\)"
)


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
    assert_message_matches(info.value, BAD_CONSTANT_MESSAGE)


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
    with pytest.raises(CompileError) as info:
        f()
    assert_message_matches(info.value, BAD_CONSTANT_MESSAGE)
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
        (
            (shared, shared),  # two outputs in one array
            "out[1] shares memory with out[0]; each output needs an out array of its own",
        ),
        (
            (w.storage.value, np.empty(3, np.float32)),  # an output in the Variable
            "out[0] shares memory with Variable 'w'; a Function changes Variables only through "
            "its updates, so give the output an array of its own "
            "(Variable.assign() copies a value in)",
        ),
        (
            (np.empty(3, np.float32), np.empty(4, np.float32)),  # a wrong shape
            "out[1] must be a writeable C-contiguous float32 array of shape [3], "
            "got a float32 array "
            "of shape [4]",
        ),
        (
            (np.empty(3, np.float64), np.empty(3, np.float32)),  # a wrong dtype
            "out[0] must be a writeable C-contiguous float32 array of shape [3], "
            "got a float64 array "
            "of shape [3]",
        ),
    ]
    for out, expected in rejected:
        with pytest.raises(InputError) as info:
            f(data, out=out)
        assert_message(info.value, expected)
        np.testing.assert_array_equal(w.numpy(), [1.0, 2.0, 3.0])
        assert steps.numpy() == 0
    np.testing.assert_array_equal(shared, np.full(3, -1.0))
    products, sums = f(data, out=(np.empty(3, np.float32), np.empty(3, np.float32)))
    np.testing.assert_array_equal(products, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sums, [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(w.numpy(), [2.0, 4.0, 6.0])
    assert steps.numpy() == 1
