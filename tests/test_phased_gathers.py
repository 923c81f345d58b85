"""Gathers by constant indices in phases (interpolation by an integer scale factor) lowered
as index arithmetic instead of index loads and run-time checks
(backends/kernel/phased_gathers.py): which indices qualify, that the compiled kernels read
no index table, and interpolation's values on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.phased_gathers import phase_shifts
from graphc.nn import functional as F


def _clipped(size: int, shifts: list[int]) -> np.ndarray:
    q = np.arange(size)[:, None] + np.array(shifts)[None, :]
    return np.clip(q, 0, size - 1).reshape(-1)


@pytest.mark.parametrize(
    "size, shifts",
    [(7, [0, 0]), (7, [-1, 0]), (7, [0, 1]), (14, [-1, 0, 0]), (5, [0, 0, 1, 1]), (3, [-1, 1])],
)
def test_indices_in_phases_give_their_shifts(size, shifts):
    assert phase_shifts(_clipped(size, shifts), size) == (shifts, 0)


@pytest.mark.parametrize(
    "size, shifts", [(7, [0, 0]), (7, [-1, 0]), (14, [-1, 0, 0]), (5, [0, 0, 1, 1])]
)
def test_the_next_indices_are_described_too(size, shifts):
    """Bilinear's upper neighbour, min(low + 1, size - 1): phase_shifts's description (maybe
    other shifts than the lower's) rebuilds it."""
    upper = np.minimum(_clipped(size, shifts) + 1, size - 1)
    found, step = phase_shifts(upper, size)
    np.testing.assert_array_equal(np.minimum(_clipped(size, found) + step, size - 1), upper)


def test_other_indices_have_no_phases():
    assert phase_shifts(np.arange(12)[::-1].copy(), 12) is None  # reversed
    assert phase_shifts(np.array([0, 2, 4, 6]), 8) is None  # downsampled: fewer than size
    assert phase_shifts(_clipped(6, [0] * 5), 6) is None  # five phases: more than MOST_PHASES
    assert phase_shifts(_clipped(6, [-1, 0]) + np.eye(1, 12, 5, dtype=int)[0], 6) is None
    assert phase_shifts(_clipped(3, [-3, 0]), 3) is None  # a shift as long as the axis


def _reads_index_tables(function) -> bool:
    program = function._executable.program
    return any(
        isinstance(e, (k.IndexCheck, k.ValueIndex))
        for kernel in program.kernels
        if isinstance(kernel, k.LoopKernel)
        for store in kernel.stores
        for e in k.subexpressions(store.value)
    )


def test_integer_scale_factors_read_no_index_table():
    x = gc.input("x", (2, 3, 6, 10))

    def tables(y) -> bool:
        return _reads_index_tables(gc.compile([x], [y], backend="llvm"))

    assert not tables(F.interpolate(x, scale_factor=2, mode="bilinear"))
    assert not tables(F.interpolate(x, scale_factor=3, mode="nearest"))
    assert not tables(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True) * 0)
    assert tables(F.interpolate(x, scale_factor=5, mode="nearest"))  # more than 4 phases
    assert tables(x[:, :, :, gc.tensor(np.array([3, 1, 4, 1]))])  # no phases


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 4), (2, 1, 2, 2), (3, 2, 14, 14)])
@pytest.mark.parametrize(
    "mode, align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)]
)
@pytest.mark.parametrize("scale", [2, 3, 4, 1.5])
def test_interpolation_matches_the_reference(backend, rng, shape, mode, align_corners, scale):
    """Bitwise against the reference backend (which gathers with numpy) and, where torch is
    installed, within float rounding of torch."""
    x = gc.input("x", ("B", *shape[1:]))
    y = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align_corners)
    xv = rng.standard_normal(shape).astype(np.float32)
    got = gc.compile([x], [y], backend=backend)(xv)
    np.testing.assert_array_equal(got, gc.compile([x], [y], backend="reference")(xv))
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.interpolate(
        torch.from_numpy(xv), scale_factor=scale, mode=mode, align_corners=align_corners
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


def test_upsampling_gradient_matches_the_reference(rng):
    x = gc.input("x", (2, 3, 5, 6))
    loss = (F.interpolate(gc.relu(x), scale_factor=2, mode="bilinear") ** 2).sum()
    (g,) = gc.grad(loss, [x])
    xv = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    got = gc.compile([x], [g], backend="llvm")(xv)
    np.testing.assert_array_equal(got, gc.compile([x], [g], backend="reference")(xv))
