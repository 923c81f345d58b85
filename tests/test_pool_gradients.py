"""Pooling gradients. Where the windows do not overlap along a dim (stride at least the
window's extent) each input position lies in at most one window, so its gradient reads that
window alone instead of summing over every tap; where they overlap, max pooling records each
window's first maximum once (the pool_argmax tier) and the gradient reads the records.
Compared with PyTorch, and for ties and NaNs (where the gradient goes to the window's first
maximum, or first NaN) with the reference backend's unrewritten max_pool2d_grad, on every
backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TOL = {"rtol": 1e-10, "atol": 1e-12}

# input shape, kernel, stride, padding, dilation, ceil_mode
GEOMETRIES = [
    pytest.param((2, 3, 8, 8), 2, 2, 0, 1, False, id="2x2_exact"),
    pytest.param((2, 2, 7, 5), 2, 2, 0, 1, False, id="2x2_uncovered_last_row_and_col"),
    pytest.param((1, 2, 8, 9), 2, 3, 0, 1, False, id="stride_over_kernel_gaps"),
    pytest.param((1, 2, 9, 9), 2, 3, 0, 2, False, id="dilation_fills_the_stride"),
    pytest.param((1, 2, 9, 8), 2, 4, 0, 2, False, id="dilation_with_gaps"),
    pytest.param((2, 2, 6, 7), 2, 2, 1, 1, False, id="padding"),
    pytest.param((1, 2, 5, 5), 2, 2, 0, 1, True, id="ceil_mode_partial_window"),
    pytest.param((1, 2, 7, 8), (2, 3), (2, 1), 0, 1, False, id="one_dim_overlapping"),
    pytest.param((2, 2, 7, 7), 3, 1, 1, 1, False, id="3x3_stride_1_overlapping"),
    pytest.param((2, 2, 9, 8), 3, 2, 1, 1, False, id="3x3_stride_2_overlapping"),
    pytest.param((1, 2, 8, 8), 3, 2, 1, 1, True, id="3x3_stride_2_ceil_overlapping"),
    pytest.param((1, 2, 9, 9), 2, 1, 0, 2, False, id="dilated_overlapping"),
]


def _gradient(backend, forward, x_value: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = gc.input("x", x_value.shape, gc.float64)
    (g,) = gc.grad((forward(x) * gc.tensor(weight)).sum(), [x])
    return gc.compile([x], [g], backend=backend)(x_value)


def _torch_gradient(forward, x_value: np.ndarray, weight: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x_value, requires_grad=True)
    (forward(xt) * torch.from_numpy(weight)).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", GEOMETRIES)
def test_max_pool2d_gradient_matches_torch(
    backend, rng, shape, kernel, stride, padding, dilation, ceil_mode
):
    options = (kernel, stride, padding, dilation, ceil_mode)
    x_value = rng.standard_normal(shape)
    weight = rng.standard_normal(TF.max_pool2d(torch.from_numpy(x_value), *options).shape)
    got = _gradient(backend, lambda x: F.max_pool2d(x, *options), x_value, weight)
    want = _torch_gradient(lambda x: TF.max_pool2d(x, *options), x_value, weight)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", GEOMETRIES)
def test_avg_pool2d_gradient_matches_torch(
    backend, rng, shape, kernel, stride, padding, dilation, ceil_mode
):
    if dilation != 1:
        pytest.skip("avg_pool2d has no dilation")
    options = (kernel, stride, padding, ceil_mode)
    x_value = rng.standard_normal(shape)
    weight = rng.standard_normal(TF.avg_pool2d(torch.from_numpy(x_value), *options).shape)
    got = _gradient(backend, lambda x: F.avg_pool2d(x, *options), x_value, weight)
    want = _torch_gradient(lambda x: TF.avg_pool2d(x, *options), x_value, weight)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize(
    "options",
    [(2, 2, 0, 1, False), (3, 2, 1, 1, False), (2, 3, 0, 2, True), (3, 1, 1, 1, False)],
)
def test_max_pool2d_gradient_of_ties_and_nans_goes_to_the_first(backend, rng, options):
    # Few distinct values, so most windows hold several maxima; and a few NaNs.
    x_value = rng.integers(0, 3, (2, 2, 9, 9)).astype(np.float64)
    x_value[0, 0, 1, 1] = x_value[1, 1, 4, 5] = np.nan
    weight = rng.standard_normal(TF.max_pool2d(torch.from_numpy(x_value), *options).shape)
    got = _gradient(backend, lambda x: F.max_pool2d(x, *options), x_value, weight)
    # The reference backend's max_pool2d_grad, searching each window itself (no rewrite).
    x = gc.input("x", x_value.shape, gc.float64)
    (g,) = gc.grad((F.max_pool2d(x, *options) * gc.tensor(weight)).sum(), [x])
    want = gc.compile([x], [g], backend="reference", optimize=False)(x_value)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (3, 2, 1), (2, 2, 1), (2, 3, 2)])
def test_every_max_pool_gradient_reads_recorded_maxima(kernel, stride, dilation):
    x = gc.input("x", (1, 2, 9, 9))
    (g,) = gc.grad(F.max_pool2d(x, kernel, stride, 0, dilation).sum(), [x])
    ops = {node.op for node in gc.compile([x], [g], backend="reference").graph.nodes}
    assert {"max_pool2d_argmax", "max_pool2d_routed"} <= ops
    assert "max_pool2d_grad" not in ops
