"""Fusion never lets a kernel read an element of a value it computes before writing it.

A kernel that stores `y` computes element i of `y` at iteration i; any read of `y` at
another element (`y[3]`, `y.T`, a gather, a broadcast row) must come from a kernel that has
finished. Each case compares the LLVM backend with the reference backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

RNG = np.random.default_rng(11)


def _same_values(inputs, outputs, arrays):
    compiled = gc.compile(inputs, outputs, backend="llvm")
    expected = gc.compile(inputs, outputs, backend="reference")(*arrays)
    got = compiled(*arrays)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    return compiled


def _vector():
    return gc.input("x", (8,), gc.float64), RNG.standard_normal(8)


def _matrix():
    return gc.input("x", (4, 4), gc.float64), RNG.standard_normal((4, 4))


def _output_minus_its_element():
    x, data = _vector()
    y = x * 2.0
    return [x], [y, y - y[3]], [data]


def _intermediate_minus_its_element():
    x, data = _vector()
    y = (x * 4.0).round()
    return [x], [y - y[3], y[3] / x], [np.abs(data) + 1.0]


def _output_minus_its_transpose():
    x, data = _matrix()
    y = x.exp()
    return [x], [y, y - y.T], [data]


def _output_minus_its_first_column():
    x, data = _matrix()
    y = x * 3.0 + 1.0
    return [x], [y, y - y[:, :1]], [data]


def _output_plus_a_gather_of_itself():
    x, data = _vector()
    index = gc.tensor([7, 6, 5, 4, 3, 2, 1, 0])
    y = x.tanh()
    return [x], [y, y + gc.gather(y, 0, index)], [data]


def _matmul_minus_its_first_row():
    a, b = gc.input("a", (4, 3), gc.float64), gc.input("b", (3, 4), gc.float64)
    m = a @ b
    return [a, b], [m, m - m[0]], [RNG.standard_normal((4, 3)), RNG.standard_normal((3, 4))]


def _chain_reading_an_earlier_root_shifted():
    x, data = _matrix()
    y = x + 1.0
    z = y * 2.0
    return [x], [y, z, z - y.T], [data]


CASES = {
    "output_minus_its_element": _output_minus_its_element,
    "intermediate_minus_its_element": _intermediate_minus_its_element,
    "output_minus_its_transpose": _output_minus_its_transpose,
    "output_minus_its_first_column": _output_minus_its_first_column,
    "output_plus_a_gather_of_itself": _output_plus_a_gather_of_itself,
    "matmul_minus_its_first_row": _matmul_minus_its_first_row,
    "chain_reading_an_earlier_root_shifted": _chain_reading_an_earlier_root_shifted,
}


@pytest.mark.parametrize("case", CASES)
def test_reads_of_another_element_see_the_finished_value(case):
    inputs, outputs, arrays = CASES[case]()
    _same_values(inputs, outputs, arrays)


def test_reads_at_the_same_element_still_fuse():
    x, data = _vector()
    y = x * 2.0
    compiled = _same_values([x], [y, y.float().double() + 1.0, y * y], [data])
    assert len(compiled.kernels()) == 1


def test_an_update_reading_another_element_of_its_variable():
    v = gc.Variable(gc.tensor([1.0, 2.0, 3.0, 4.0], dtype=gc.float64), name="v")
    shuffled = v.reshape(2, 2).T.reshape(4)
    step = gc.compile([], [], updates=[(v, v - v[0] * 2.0 + shuffled)], backend="llvm")
    step()
    np.testing.assert_allclose(v.numpy(), [0.0, 3.0, 3.0, 6.0])


def test_the_kernel_check_turns_an_unsafe_fusion_into_an_error(monkeypatch):
    import graphc.passes.fusion as fusion

    monkeypatch.setattr(fusion, "_reads_only_at_same_index", lambda *args: True)
    x, _ = _vector()
    y = x * 2.0
    with pytest.raises(gc.errors.CompileError, match="may not have written"):
        gc.compile([x], [y, y - y[3]], backend="llvm")


def _permuted_unit_dims_of_a_comparison():
    x = gc.input("x", (1, 1), gc.float64)
    c = x > 0
    return [x], [c, c.mT.double() + 1.0], [np.array([[0.5]])]


def _transposed_unit_dims_of_a_min():
    x = gc.input("x", (2, 1, 3), gc.float64)
    v = x.min(dim=2, keepdim=True).values
    return [x], [v.transpose(1, 2).tanh(), v], [RNG.standard_normal((2, 1, 3))]


def _transposed_unit_dims_of_an_argmin():
    x = gc.input("x", (2, 1, 3), gc.float64)
    i = x.argmin(dim=2, keepdim=True)
    return [x], [i.transpose(1, 2) * 2, i], [RNG.standard_normal((2, 1, 3))]


def _matmul_epilogue_permuting_unit_dims():
    a, w = gc.input("a", (1, 1, 1), gc.float64), gc.input("w", (1, 3), gc.float64)
    return [a, w], [gc.cos((a @ w).permute(1, 0, 2))], [np.full((1, 1, 1), 2.0), RNG.random((1, 3))]


# Found by the fuzzer (seeds 201927, 202792): a permutation of size-1 dims reads the element
# being computed, though its offset is written differently; it must fuse and compile.
SAME_ELEMENT_CASES = {
    "permuted_unit_dims_of_a_comparison": _permuted_unit_dims_of_a_comparison,
    "transposed_unit_dims_of_a_min": _transposed_unit_dims_of_a_min,
    "transposed_unit_dims_of_an_argmin": _transposed_unit_dims_of_an_argmin,
    "matmul_epilogue_permuting_unit_dims": _matmul_epilogue_permuting_unit_dims,
}


@pytest.mark.parametrize("case", SAME_ELEMENT_CASES)
def test_permuting_size_one_dims_reads_the_same_element(case):
    inputs, outputs, arrays = SAME_ELEMENT_CASES[case]()
    _same_values(inputs, outputs, arrays)
