"""The math before a pool whose windows never overlap runs inside the pool's kernel.

A 2x2 pool with stride 2 reads each element of its input once, so the elementwise ops only
it reads (a convolution's bias and ReLU) are computed there, tap by tap, instead of in a
kernel of their own that stores an image for the pool to read back. Overlapping windows, and
math something else reads or a broadcast repeats, keep their kernel. Every case compares with
the reference backend (and PyTorch where it is installed), on LLVM and the CUDA emulator.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.nn.functional as F
from graphc.backends.cuda.driver import DRIVER_VARIABLE

COMPILED = ("llvm", "cuda")


@pytest.fixture(params=COMPILED)
def compiled_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Return a compiling backend; CUDA runs on its CPU emulator."""
    if request.param == "cuda":
        monkeypatch.setenv(DRIVER_VARIABLE, "emulate")
    return request.param


def _kernels_with_ops(function: gc.Function) -> list[set[str]]:
    return [{node.op for node in kernel.nodes} for kernel in function.kernels()]


def _check(inputs, outputs, arrays, backend: str) -> gc.Function:
    """Compile on backend, compare with the reference backend, and return the function."""
    function = gc.compile(inputs, outputs, backend=backend)
    got = function(*arrays)
    expected = gc.compile(inputs, outputs, backend="reference")(*arrays)
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    # The convolutions sum up to 144 float32 products of size ~1 in another order than numpy's
    # BLAS: an output that cancels to ~0.01 can be ~1e-6 off (seen on Zen 3), so atol is 1e-5.
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    return function


def _conv_bias_relu(batch, channels: int = 4, size: int = 8):
    x = gc.input("x", (batch, 3, size, size))
    w = gc.input("w", (channels, 3, 3, 3))
    b = gc.input("b", (channels,))
    return (x, w, b), F.relu(F.conv2d(x, w, b, padding=1))


def _conv_arrays(rng, batch: int = 2, channels: int = 4, size: int = 8):
    return [
        rng.standard_normal((batch, 3, size, size)).astype(np.float32),
        rng.standard_normal((channels, 3, 3, 3)).astype(np.float32),
        rng.standard_normal(channels).astype(np.float32),
    ]


@pytest.mark.parametrize(
    ("pool", "options"),
    [
        ("max", (2, 2)),
        ("max", (3, 3)),
        ("max", (2, 3)),  # stride past the window: taps between windows are never read
        ("avg", (2, 2)),
        ("max_dilated", (2, 4)),  # a 2-tap window of span 3 with dilation 2, stride 4
    ],
)
def test_bias_and_relu_before_a_disjoint_pool_run_inside_it(
    compiled_backend, rng, pool, options
) -> None:
    inputs, h = _conv_bias_relu("batch")
    kernel, stride = options
    if pool == "avg":
        y = F.avg_pool2d(h, kernel, stride)
    else:
        y = F.max_pool2d(h, kernel, stride, dilation=2 if pool == "max_dilated" else 1)
    function = _check(inputs, [y], _conv_arrays(rng), compiled_backend)
    if compiled_backend == "llvm":
        pooled = [ops for ops in _kernels_with_ops(function) if ops & {"max_pool2d", "avg_pool2d"}]
        assert len(pooled) == 1 and {"add", "where"} <= pooled[0], _kernels_with_ops(function)
        assert not any(ops <= {"add", "le", "where"} for ops in _kernels_with_ops(function))


def test_the_fused_pool_matches_pytorch(compiled_backend, rng) -> None:
    torch = pytest.importorskip("torch")
    inputs, h = _conv_bias_relu("batch", channels=16, size=14)
    y = F.max_pool2d(h * 0.5 - 0.25, 2, 2)
    arrays = _conv_arrays(rng, batch=3, channels=16, size=14)
    got = gc.compile(inputs, y, backend=compiled_backend)(*arrays)
    x, w, b = (torch.from_numpy(a) for a in arrays)
    conv = torch.nn.functional.conv2d(x, w, b, padding=1)
    expected = torch.nn.functional.max_pool2d(torch.relu(conv) * 0.5 - 0.25, 2, 2)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_overlapping_windows_keep_the_math_in_a_kernel_of_its_own(compiled_backend, rng) -> None:
    inputs, h = _conv_bias_relu("batch")
    y = F.max_pool2d(h, 3, 2, padding=1)
    function = _check(inputs, [y], _conv_arrays(rng), compiled_backend)
    if compiled_backend == "llvm":
        pool = next(ops for ops in _kernels_with_ops(function) if "max_pool2d" in ops)
        assert pool == {"max_pool2d"}, _kernels_with_ops(function)


def test_math_another_kernel_reads_keeps_its_kernel(compiled_backend, rng) -> None:
    inputs, h = _conv_bias_relu(2)
    function = _check(inputs, [F.max_pool2d(h, 2, 2), h.sum()], _conv_arrays(rng), compiled_backend)
    if compiled_backend == "llvm":
        pool = next(ops for ops in _kernels_with_ops(function) if "max_pool2d" in ops)
        assert pool == {"max_pool2d"}, _kernels_with_ops(function)


def test_math_a_broadcast_repeats_keeps_its_kernel(compiled_backend, rng) -> None:
    x = gc.input("x", (1, 2, 6, 6))
    z = gc.input("z", (3, 2, 6, 6))
    shared = (x * 3.0).exp()  # read by every image of the batch: computed once
    y = F.max_pool2d(shared + z, 2, 2)
    arrays = [rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 6, 6))]
    function = _check([x, z], [y], [a.astype(np.float32) for a in arrays], compiled_backend)
    if compiled_backend == "llvm":
        kernels = _kernels_with_ops(function)
        assert {"mul", "exp"} in kernels, kernels
        assert {"add", "max_pool2d"} in kernels, kernels


def test_nan_and_inf_reach_the_pooled_output(compiled_backend) -> None:
    x = gc.input("x", (1, 1, 4, 4))
    y = F.max_pool2d(F.relu(x - 1.0), 2, 2)
    data = np.zeros((1, 1, 4, 4), np.float32)
    data[0, 0, 0, 1], data[0, 0, 2, 2], data[0, 0, 3, 0] = np.nan, np.inf, -np.inf
    got = _check([x], [y], [data], compiled_backend)(data)
    assert np.isnan(got[0, 0, 0, 0]) and np.isposinf(got[0, 0, 1, 1])
    assert got[0, 0, 1, 0] == 0.0


# A convolution whose product comes out channels last (32 output channels: windows^T @
# weights^T) followed by bias, ReLU and a max pool, in a graph that trains nothing.
def _channels_last_block(pool_options: dict, batch="batch"):
    x = gc.input("x", (batch, 16, 14, 14))
    w = gc.input("w", (32, 16, 3, 3))
    b = gc.input("b", (32,))
    h = F.relu(F.conv2d(x, w, b, padding=1))
    return (x, w, b), h, F.max_pool2d(h, **pool_options)


def _block_arrays(rng, batch: int = 2):
    return [
        rng.standard_normal((batch, 16, 14, 14)).astype(np.float32),
        rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.2,
        rng.standard_normal(32).astype(np.float32),
    ]


def _torch_block(arrays, pool_options: dict):
    torch = pytest.importorskip("torch")
    x, w, b = (torch.from_numpy(a) for a in arrays)
    h = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
    return torch.nn.functional.max_pool2d(h, **pool_options).numpy()


@pytest.mark.parametrize(
    ("pool_options", "along_channels"),
    [
        ({"kernel_size": 2, "stride": 2}, True),
        ({"kernel_size": 3, "stride": 3}, True),  # 14 = 4 * 3 + 2: the last rows never read
        ({"kernel_size": 2, "stride": 3, "dilation": 2}, True),
        ({"kernel_size": 2, "stride": 2, "padding": 1}, False),  # padded taps
        ({"kernel_size": 3, "stride": 2}, False),  # overlapping windows
    ],
)
def test_a_pool_of_a_channels_last_product_runs_along_its_channels(
    compiled_backend, rng, pool_options, along_channels
) -> None:
    inputs, _, y = _channels_last_block(pool_options)
    arrays = _block_arrays(rng)
    function = gc.compile(inputs, y, backend=compiled_backend)
    np.testing.assert_allclose(
        function(*arrays), _torch_block(arrays, pool_options), rtol=1e-4, atol=1e-4
    )
    if compiled_backend == "llvm":
        kernels = _kernels_with_ops(function)
        assert any("max_pool2d" in ops for ops in kernels) != along_channels, kernels
        if along_channels:
            assert any({"maximum", "where", "add"} <= ops for ops in kernels), kernels


def test_a_pooled_value_something_else_reads_stays_a_pool(compiled_backend, rng) -> None:
    options = {"kernel_size": 2, "stride": 2}
    inputs, h, y = _channels_last_block(options, batch=2)
    arrays = _block_arrays(rng)
    function = _check(inputs, [y, h], arrays, compiled_backend)
    if compiled_backend == "llvm":
        assert any("max_pool2d" in ops for ops in _kernels_with_ops(function))


def test_nan_and_inf_pool_along_channels_as_the_pool_does(compiled_backend, rng) -> None:
    options = {"kernel_size": 2, "stride": 2}
    inputs, _, y = _channels_last_block(options, batch=1)
    arrays = _block_arrays(rng, batch=1)
    arrays[0][0, 3, 5, 6] = np.nan
    arrays[0][0, 7, 0, 0] = np.inf
    got = gc.compile(inputs, y, backend=compiled_backend)(*arrays)
    expected = _torch_block(arrays, options)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any() and np.isinf(got).any()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-4, atol=1e-4)
