"""Hypothesis properties: broadcasting agrees with numpy, and indexing agrees with numpy
(under PyTorch's placement of an integer-array index next to integer indices)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

import graphc as gc
from graphc.dims import as_shape
from graphc.errors import ShapeError
from graphc.ops.shape_rules import broadcast_shapes

# The backend fixture is function-scoped but read-only, so sharing it across examples is safe.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Sizes 0 and 1 are the interesting ones for broadcasting, so they are drawn often.
sizes = st.sampled_from([0, 1, 1, 2, 3, 4])
shapes = st.lists(sizes, max_size=4).map(tuple)
independent_shapes = st.lists(shapes, min_size=2, max_size=3)
compatible_shapes = st.one_of(
    npst.mutually_broadcastable_shapes(num_shapes=n, max_dims=4, min_side=0, max_side=4).map(
        lambda b: list(b.input_shapes)
    )
    for n in (2, 3)
)
any_shapes = st.one_of(independent_shapes, compatible_shapes)


def _numpy_broadcast(shapes_list):
    try:
        return np.broadcast_shapes(*shapes_list)
    except ValueError:
        return None


@PROPERTY_SETTINGS
@given(shape_list=any_shapes)
def test_broadcast_shapes_agrees_with_numpy(shape_list) -> None:
    expected = _numpy_broadcast(shape_list)
    if expected is None:
        with pytest.raises(ShapeError):
            broadcast_shapes(*shape_list)
    else:
        assert broadcast_shapes(*shape_list) == expected


@PROPERTY_SETTINGS
@given(pair=st.one_of(st.lists(shapes, min_size=2, max_size=2), compatible_shapes), data=st.data())
def test_adding_tensors_broadcasts_like_numpy(backend, pair, data) -> None:
    a_shape, b_shape = pair[0], pair[-1]
    expected = _numpy_broadcast([a_shape, b_shape])
    a = gc.input("a", a_shape, gc.float64)
    b = gc.input("b", b_shape, gc.float64)
    if expected is None:
        with pytest.raises(ShapeError):
            a + b
        return
    total = a + b
    assert total.shape == expected
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x, y = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    got = gc.compile([a, b], [total], backend=backend)(x, y)
    np.testing.assert_array_equal(got, x + y)


# -- symbolic dims: a symbol broadcasts with 1 and with itself, nothing else (by design) --------
symbolic_sizes = st.sampled_from([1, 1, 2, 3, "B", "C"])
symbolic_shapes = st.lists(st.lists(symbolic_sizes, max_size=3).map(tuple), min_size=2, max_size=3)
BINDING = {"B": 4, "C": 5}  # sizes no concrete dim above has, so no match is accidental


def _bound(shape):
    return tuple(BINDING.get(d, d) for d in shape)


def _documented_rule(shape_list):
    """Return the broadcast shape by graphc's documented rule for symbols, or None."""
    ndim = max(len(s) for s in shape_list)
    result = []
    for axis in range(-ndim, 0):
        out = 1
        for shape in shape_list:
            if len(shape) < -axis or shape[axis] == 1:
                continue
            if out == 1:
                out = shape[axis]
            elif out != shape[axis]:
                return None
        result.append(out)
    return tuple(result)


@PROPERTY_SETTINGS
@given(shape_list=symbolic_shapes)
def test_symbolic_broadcasting_follows_the_rule_and_agrees_with_numpy(shape_list) -> None:
    expected = _documented_rule(shape_list)
    numpy_result = _numpy_broadcast([_bound(s) for s in shape_list])
    dims = [as_shape(s) for s in shape_list]
    inputs = [gc.input(f"x{i}", s, gc.float32) for i, s in enumerate(shape_list)]
    if expected is None:
        with pytest.raises(ShapeError):
            broadcast_shapes(*dims)
        with pytest.raises(ShapeError):
            _sum(inputs)
        return
    # Whatever graphc accepts, numpy accepts for the bound sizes, with the bound result.
    assert numpy_result == _bound(expected)
    assert broadcast_shapes(*dims) == as_shape(expected)
    assert _sum(inputs).shape == as_shape(expected)


def _sum(tensors):
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


@PROPERTY_SETTINGS
@given(shape_list=symbolic_shapes.filter(lambda s: _documented_rule(s) is not None))
def test_symbolic_sum_runs_like_numpy(backend, shape_list) -> None:
    inputs = [gc.input(f"x{i}", s, gc.float64) for i, s in enumerate(shape_list)]
    function = gc.compile(inputs, [_sum(inputs)], backend=backend)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(_bound(s)) for s in shape_list]
    np.testing.assert_array_equal(function(*arrays), sum(arrays[1:], arrays[0]))


# -- indexing ---------------------------------------------------------------------------------
index_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@st.composite
def index_expressions(draw, shape):
    """Return a tuple index: ints, slices (positive steps), None, at most one Ellipsis and at
    most one integer list, each in range for the dim it addresses."""
    ndim = len(shape)
    consuming = draw(st.integers(0, ndim))
    ellipsis_at = draw(st.none() | st.integers(0, consuming))
    list_at = draw(st.none() | st.integers(0, consuming - 1)) if consuming else None
    items = []
    for k in range(consuming):
        before = ellipsis_at is None or k < ellipsis_at
        axis = k if before else ndim - (consuming - k)
        size = shape[axis]
        if k == list_at:
            items.append(draw(st.lists(st.integers(-size, size - 1), min_size=1, max_size=3)))
            continue
        bound = st.none() | st.integers(-size - 2, size + 2)
        items.append(
            draw(
                st.one_of(
                    st.integers(-size, size - 1),
                    st.builds(slice, bound, bound, st.none() | st.integers(1, 3)),
                )
            )
        )
    if ellipsis_at is not None:
        items.insert(ellipsis_at, Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items)


def reference_getitem(x: np.ndarray, index: tuple) -> np.ndarray:
    """Return x[index] by numpy, placing the integer-list dims where PyTorch (and graphc) do:
    at the list's own position, also when integer indices are separated from it (numpy
    would move them to the front then)."""
    basic = tuple(slice(None) if isinstance(item, list) else item for item in index)
    result = x[basic]
    lists = [i for i, item in enumerate(index) if isinstance(item, list)]
    if not lists:
        return result
    consuming = sum(1 for item in index if item is not None and item is not Ellipsis)
    position = 0
    for item in index[: lists[0]]:
        if item is Ellipsis:
            position += x.ndim - consuming
        elif not isinstance(item, int):
            position += 1  # None and slices each leave one dim
    return result[(slice(None),) * position + (np.array(index[lists[0]]),)]


@PROPERTY_SETTINGS
@given(data=st.data())
def test_indexing_agrees_with_numpy(backend, data) -> None:
    shape = data.draw(index_shapes, label="shape")
    index = data.draw(index_expressions(shape), label="index")
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    expected = reference_getitem(x, index)
    if not any(isinstance(item, list) for item in index):
        np.testing.assert_array_equal(expected, x[index])  # the reference is numpy itself
    placeholder = gc.input("x", shape, gc.float32)
    result = placeholder[index]
    assert result.shape == expected.shape
    got = gc.compile([placeholder], [result], backend=backend)(x)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_indexing_reference_agrees_with_torch(data) -> None:
    torch = pytest.importorskip("torch")
    shape = data.draw(index_shapes, label="shape")
    index = data.draw(index_expressions(shape), label="index")
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(torch.from_numpy(x)[index].numpy(), reference_getitem(x, index))
