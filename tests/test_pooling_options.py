"""Pooling with ceil_mode and dilation, and pad with negative widths, against PyTorch: forward
values and gradients through every entry point (gc.*, nn.functional, nn modules), on every
backend.

ceil_mode follows PyTorch's rule: the output length is rounded up, but a last window that
would start past the input and its left padding is dropped. avg_pool2d divides such partial
windows by the positions they cover up to the end of the padding (count_include_pad) or in
the input.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.errors import GraphError, ShapeError
from graphc.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _torch_value_and_grad(forward, x: np.ndarray, weight: np.ndarray):
    """Return forward(x) and d(sum(forward(x) * weight))/dx, by PyTorch."""
    xt = torch.tensor(x, requires_grad=True)
    yt = forward(xt)
    (yt * torch.from_numpy(weight)).sum().backward()
    return yt.detach().numpy(), xt.grad.numpy()


def _check_entry_points(backend, shape, entry_points, torch_forward, rng):
    """Compile every entry point's output and input gradient into one function and compare
    each with PyTorch."""
    x_value = rng.standard_normal(shape)
    weight = rng.standard_normal(torch_forward(torch.from_numpy(x_value)).shape)
    want_y, want_g = _torch_value_and_grad(torch_forward, x_value, weight)
    x = gc.input("x", shape, gc.float64)
    outputs = []
    for build in entry_points.values():
        y = build(x)
        assert y.shape == want_y.shape
        outputs += [y, gc.grad((y * gc.tensor(weight)).sum(), [x])[0]]
    got = gc.compile([x], outputs, backend=backend)(x_value)
    for k, name in enumerate(entry_points):
        np.testing.assert_allclose(got[2 * k], want_y, **TOL, err_msg=f"{name}: forward")
        np.testing.assert_allclose(got[2 * k + 1], want_g, **TOL, err_msg=f"{name}: gradient")


# -- max_pool2d ------------------------------------------------------------------------------
MAX_CASES = [
    # input shape, kernel, stride, padding, dilation, ceil_mode
    pytest.param((2, 3, 5, 7), 2, 2, 0, 1, True, id="ceil_adds_window"),
    pytest.param((1, 2, 5, 6), 2, 2, 1, 1, True, id="ceil_drops_window_in_padding"),
    pytest.param((2, 2, 6, 8), 3, 2, 1, 1, True, id="ceil_window_past_padding"),
    pytest.param((1, 2, 4, 4), 2, 3, 0, 1, True, id="ceil_stride_over_kernel"),
    pytest.param((1, 3, 8, 7), 3, 1, 1, 2, False, id="dilation2"),
    pytest.param((1, 2, 9, 9), (2, 3), (2, 1), (1, 0), (3, 2), True, id="dilation_pair_ceil"),
    pytest.param((2, 1, 7, 8), 3, 3, 1, 2, True, id="dilation2_stride3_ceil"),
    pytest.param((1, 2, 7, 7), 3, 2, 1, 1, False, id="floor"),
]


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", MAX_CASES)
def test_max_pool2d_matches_torch(
    backend, rng, shape, kernel, stride, padding, dilation, ceil_mode
):
    options = (kernel, stride, padding, dilation, ceil_mode)
    module = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    entry_points = {
        "gc.max_pool2d": lambda x: gc.max_pool2d(x, *options),
        "F.max_pool2d": lambda x: F.max_pool2d(x, *options),
        "nn.MaxPool2d": module,
    }
    _check_entry_points(backend, shape, entry_points, lambda x: TF.max_pool2d(x, *options), rng)


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, dilation, ceil_mode",
    [MAX_CASES[2], MAX_CASES[5], MAX_CASES[6]],
)
def test_max_pool2d_second_derivative_matches_torch(
    backend, rng, shape, kernel, stride, padding, dilation, ceil_mode
):
    """d/dx of <d(sum(y^2 w))/dx, v>: routes v through each window's maximum
    (max_pool2d_select) and back (max_pool2d_grad)."""
    options = (kernel, stride, padding, dilation, ceil_mode)
    x_value = rng.standard_normal(shape)
    xt = torch.tensor(x_value, requires_grad=True)
    yt = TF.max_pool2d(xt, *options)
    weight, v = rng.standard_normal(yt.shape), rng.standard_normal(shape)
    (gt,) = torch.autograd.grad((yt * yt * torch.from_numpy(weight)).sum(), xt, create_graph=True)
    (want,) = torch.autograd.grad((gt * torch.from_numpy(v)).sum(), xt)

    x = gc.input("x", shape, gc.float64)
    y = F.max_pool2d(x, *options)
    (g,) = gc.grad((y * y * gc.tensor(weight)).sum(), [x])
    (gg,) = gc.grad((g * gc.tensor(v)).sum(), [x])
    got = gc.compile([x], [gg], backend=backend)(x_value)
    np.testing.assert_allclose(got, want.numpy(), **TOL)


def test_max_pool2d_of_an_unbatched_input_matches_torch(backend, rng):
    x_value = rng.standard_normal((2, 7, 6))
    x = gc.input("x", (2, 7, 6), gc.float64)
    got = gc.compile([x], [F.max_pool2d(x, 2, 2, 1, 2, True)], backend=backend)(x_value)
    want = TF.max_pool2d(torch.from_numpy(x_value), 2, 2, 1, 2, True).numpy()
    np.testing.assert_allclose(got, want, **TOL)


def test_ceil_mode_adds_a_window_but_not_one_that_starts_in_the_right_padding():
    x = gc.input("x", (1, 1, 5, 5))
    # Windows of 2, stride 2, over 5 rows: 2 whole windows, and ceil_mode keeps rows 4..5.
    assert F.max_pool2d(x, 2, 2, ceil_mode=True).shape == (1, 1, 3, 3)
    # With padding 1, rounding up would give a 4th window starting at row 6, in the padding.
    assert F.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 1, 3, 3)
    for padding in (0, 1):
        t = TF.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, padding, ceil_mode=True)
        assert tuple(t.shape) == (1, 1, 3, 3)


# -- avg_pool2d ------------------------------------------------------------------------------
AVG_CASES = [
    # input shape, kernel, stride, padding, ceil_mode
    pytest.param((2, 3, 5, 7), 2, 2, 0, True, id="ceil_adds_window"),
    pytest.param((1, 2, 5, 6), 2, 2, 1, True, id="ceil_drops_window_in_padding"),
    pytest.param((2, 2, 6, 8), 3, 2, 1, True, id="ceil_window_past_padding"),
    pytest.param((1, 2, 7, 5), (3, 2), (2, 3), 1, True, id="ceil_pairs"),
    pytest.param((1, 2, 6, 6), 3, 2, 1, False, id="floor"),
]


@pytest.mark.parametrize("divisor_override", [None, 5])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", AVG_CASES)
def test_avg_pool2d_matches_torch(
    backend, rng, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    options = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    entry_points = {
        "F.avg_pool2d": lambda x: F.avg_pool2d(x, *options),
        "nn.AvgPool2d": nn.AvgPool2d(*options),
    }
    if divisor_override is None:
        entry_points["gc.avg_pool2d"] = lambda x: gc.avg_pool2d(
            x, kernel, stride, padding, count_include_pad, ceil_mode
        )
    _check_entry_points(backend, shape, entry_points, lambda x: TF.avg_pool2d(x, *options), rng)


def test_avg_pool2d_ceil_mode_divisor_counts_padding_but_not_what_lies_past_it(backend):
    # 6 rows, windows of 3, stride 2, padding 1, ceil_mode: the 4th window covers row 5, one
    # padded row and one row past the padding, so it is divided by 2 rows, of which 1 is data.
    data_rows = np.array([2.0, 3.0, 3.0, 1.0])
    divisor_rows = np.array([3.0, 3.0, 3.0, 2.0])
    expected = np.outer(data_rows, data_rows) / np.outer(divisor_rows, divisor_rows)
    ones = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    np.testing.assert_allclose(TF.avg_pool2d(ones, 3, 2, 1, ceil_mode=True)[0, 0], expected)
    x = gc.input("x", (1, 1, 6, 6), gc.float64)
    f = gc.compile([x], [gc.avg_pool2d(x, 3, 2, 1, ceil_mode=True)], backend=backend)
    np.testing.assert_allclose(f(np.ones((1, 1, 6, 6)))[0, 0], expected, **TOL)


# -- pad with negative widths ----------------------------------------------------------------
PAD_CASES = [
    # input shape, pad (last dim first), value
    pytest.param((3, 5), (-1, 2, 1, -2), 1.5, id="crop_and_pad_2d"),
    pytest.param((2, 3, 4), (1, -2, -1, 0, 0, 1), 0.0, id="crop_and_pad_3d"),
    pytest.param((4, 5), (-1, -1, -2, -1), 0.0, id="crop_only"),
    pytest.param((2, 3), (-3, 1), 2.0, id="crop_to_empty_then_pad"),
    pytest.param((2, 3, 4, 5), (-2, 1), -1.0, id="last_dim_only"),
]


@pytest.mark.parametrize("shape, pad, value", PAD_CASES)
def test_pad_with_negative_widths_matches_torch(backend, rng, shape, pad, value):
    entry_points = {
        "F.pad": lambda x: F.pad(x, pad, value=value),
        "gc.pad": lambda x: gc.pad(x, pad, value),
    }
    _check_entry_points(backend, shape, entry_points, lambda x: TF.pad(x, pad, value=value), rng)


@pytest.mark.parametrize("batch", [3, 1])
def test_pad_cropping_a_symbolic_dim_matches_torch(backend, rng, batch):
    pad = (1, -2, -1, 1)
    x_value = rng.standard_normal((batch, 4))
    weight = rng.standard_normal((batch, 3))
    want_y, want_g = _torch_value_and_grad(lambda t: TF.pad(t, pad), x_value, weight)
    x, w = gc.input("x", ("B", 4), gc.float64), gc.input("w", ("B", 3), gc.float64)
    y = F.pad(x, pad)
    f = gc.compile([x, w], [y, gc.grad((y * w).sum(), [x])[0]], backend=backend)
    got_y, got_g = f(x_value, weight)
    np.testing.assert_allclose(got_y, want_y, **TOL)
    np.testing.assert_allclose(got_g, want_g, **TOL)


@pytest.mark.parametrize("shape", [(4,), ("B",)])
def test_padded_elements_read_at_a_constant_index(backend, shape):
    """y[0] and y[-1] lie in the padding: the lowering knows one bound check is false there."""
    x = gc.input("x", shape, gc.float64)
    y = gc.pad(x, (1, 2), value=3.0)
    got = gc.compile([x], [y - y[0], y * y[-1], y[1:-1] - y[1]], backend=backend)(np.arange(4.0))
    padded = np.pad(np.arange(4.0), (1, 2), constant_values=3.0)
    np.testing.assert_array_equal(got[0], padded - 3.0)
    np.testing.assert_array_equal(got[1], padded * 3.0)
    np.testing.assert_array_equal(got[2], padded[1:-1] - padded[1])


# -- what stays refused ----------------------------------------------------------------------
def _x(*shape):
    return gc.input("x", shape, gc.float64)


@pytest.mark.parametrize(
    "build, torch_build, message",
    [
        pytest.param(
            lambda: F.max_pool2d(_x(1, 1, 5, 5), 3, dilation=3),
            lambda: TF.max_pool2d(torch.zeros(1, 1, 5, 5), 3, dilation=3),
            r"max_pool2d: a 3x3 window \(dilation \(3, 3\)\) does not fit",
            id="dilated_window_too_large",
        ),
        pytest.param(
            lambda: F.max_pool2d(_x(1, 1, 5, 5), 2, padding=2, dilation=3),
            lambda: TF.max_pool2d(torch.zeros(1, 1, 5, 5), 2, padding=2, dilation=3),
            r"max_pool2d: padding \(2, 2\) must be .* at most half the kernel \(2, 2\)",
            id="padding_over_half_kernel",
        ),
        pytest.param(
            lambda: F.avg_pool2d(_x(1, 1, 5, 5), 2, padding=2, ceil_mode=True),
            lambda: TF.avg_pool2d(torch.zeros(1, 1, 5, 5), 2, padding=2, ceil_mode=True),
            r"avg_pool2d: padding \(2, 2\) must be",
            id="avg_padding_over_half_kernel",
        ),
        pytest.param(
            lambda: F.max_pool2d(_x(1, 1, 5, 5), 2, stride=(1, 0)),
            lambda: TF.max_pool2d(torch.zeros(1, 1, 5, 5), 2, stride=(1, 0)),
            r"max_pool2d: stride \(1, 0\) must be positive",
            id="zero_stride",
        ),
        pytest.param(
            lambda: F.pad(_x(2, 3), (-4, 2)),
            lambda: TF.pad(torch.zeros(2, 3), (-4, 2)),
            r"pad: widths \(-4, 2\) crop more than the 3 elements of dim 1",
            id="crop_past_the_input",
        ),
    ],
)
def test_impossible_configurations_are_shape_errors_as_in_torch(build, torch_build, message):
    with pytest.raises(RuntimeError):
        torch_build()
    with pytest.raises(ShapeError, match=message) as info:
        build()
    assert "test_pooling_options.py:" in str(info.value)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: nn.MaxPool2d(2, return_indices=True), "MaxPool2d: return_indices"),
        (lambda: F.max_pool2d(_x(1, 1, 4, 4), 2, return_indices=True), "return_indices"),
        (lambda: nn.AvgPool2d(2, divisor_override=0), "AvgPool2d: divisor_override"),
        (lambda: F.avg_pool2d(_x(1, 1, 4, 4), 2, divisor_override=0), "divisor_override"),
    ],
)
def test_unsupported_or_invalid_options_are_graph_errors(build, message):
    with pytest.raises(GraphError, match=message):
        build()
