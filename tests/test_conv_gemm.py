"""Convolutions as GEMMs (passes/conv_gemm.py): conv2d, conv_transpose2d and their gradients
agree with PyTorch over a grid of groups, strides, paddings, dilations and channel counts with
a symbolic batch, on every backend; and on the LLVM backend their arithmetic runs in matmul
kernels, not in loop kernels that reduce over the windows."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pytest

import graphc as gc
from graphc.nn import functional as F
from graphc.ops.registry import make_node
from graphc.passes import optimize

torch = pytest.importorskip("torch")
# The module: graphc.passes exports a function of the same name.
conv_gemm = importlib.import_module("graphc.passes.conv_gemm")

CONV_OPS = {"conv2d", "conv2d_input_grad", "conv2d_weight_grad"}


@dataclass(frozen=True)
class Conv:
    """One convolution of the grid: x (N, C, H, W), weight (O, C/groups, kH, kW)."""

    name: str
    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    as_gemm: bool = True  # whether the rewrite replaces the direct kernels

    @property
    def options(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }


GRID = [
    Conv("same_3x3", (2, 3, 9, 9), (4, 3, 3, 3), padding=1),
    Conv("first_layer", (3, 1, 8, 8), (16, 1, 3, 3), padding=1),
    Conv("stride2", (2, 4, 9, 8), (6, 4, 3, 3), stride=2, padding=1),
    Conv("dilation2", (1, 2, 10, 9), (3, 2, 3, 3), padding=(2, 1), dilation=2),
    Conv("rectangular", (2, 3, 7, 9), (4, 3, 2, 3), (2, 1), (1, 0), (1, 2)),
    Conv("no_padding", (2, 3, 6, 7), (5, 3, 3, 3)),
    Conv("unused_rows", (1, 2, 6, 6), (2, 2, 3, 3), stride=2),
    Conv("groups2", (2, 4, 6, 6), (6, 2, 3, 3), padding=1, groups=2),
    Conv("depthwise", (2, 3, 6, 6), (3, 1, 3, 3), stride=2, padding=1, groups=3),
    Conv("pointwise", (2, 8, 5, 5), (6, 8, 1, 1)),
    Conv("pointwise_groups", (2, 8, 5, 4), (6, 4, 1, 1), groups=2),
    Conv("pointwise_stride2", (2, 4, 7, 7), (5, 4, 1, 1), stride=2),
    Conv("single_tap", (2, 3, 5, 5), (6, 1, 1, 1), groups=3, as_gemm=False),
    # 25-64 output channels in one group: the forward is windows^T @ weights^T.
    Conv("channels_last", (2, 3, 9, 9), (32, 3, 3, 3), padding=1),
    Conv("channels_last_64_stride2", (2, 5, 8, 9), (64, 5, 3, 3), stride=2, padding=1),
    Conv("channels_last_25", (1, 2, 7, 7), (25, 2, 3, 3), padding=(1, 0), dilation=(1, 2)),
    # Inference products of these read the channels-last windows in place (window_matmul):
    # rows of taps 2 apart, and a 3x1 window that reads the unpadded input itself.
    Conv("channels_last_dilated_rows", (2, 3, 9, 8), (40, 3, 3, 2), padding=1, dilation=(2, 1)),
    Conv("channels_last_column", (2, 4, 7, 6), (30, 4, 3, 1)),
    # Rows of at least 12 outputs: the window_matmul's product leaves the extra columns out.
    Conv("wide_rows", (2, 4, 6, 14), (16, 4, 3, 3), padding=1),
    Conv("wide_first_layer", (2, 1, 5, 13), (24, 1, 3, 3), padding=1),
    Conv("wide_dilated_rows", (1, 3, 9, 12), (20, 3, 3, 2), padding=1, dilation=(2, 1)),
    # 3 kernel rows of 192 taps: more than one depth block holds, so the GEMM packs the
    # weights per group of runs, not once for all the images.
    Conv("deep_wide_rows", (2, 64, 5, 12), (32, 64, 3, 3), padding=1),
]
NAMED = {conv.name: conv for conv in GRID}


def _arrays(conv: Conv, batch: int, rng: np.random.Generator, dtype=np.float32):
    x = rng.standard_normal((batch, *conv.x[1:])).astype(dtype)
    w = rng.standard_normal(conv.w).astype(dtype)
    out = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), **conv.options)
    g = rng.standard_normal(tuple(out.shape)).astype(dtype)
    return x, w, g


def _torch_conv(conv: Conv, x, w, g):
    """Return PyTorch's output and gradients of sum(conv(x, w) * g) in float64."""
    tx, tw = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w))
    y = torch.nn.functional.conv2d(tx, tw, **conv.options)
    y.backward(torch.from_numpy(g.astype(np.float64)))
    return y.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()


def _compiled_conv(conv: Conv, backend: str, dtype=gc.float32) -> gc.Function:
    x = gc.input("x", ("B", *conv.x[1:]), dtype)
    w = gc.input("w", conv.w, dtype)
    y = F.conv2d(x, w, **conv.options)
    g = gc.input("g", ("B", *y.shape[1:]), dtype)
    dx, dw = gc.grad((y * g).sum(), [x, w])
    return gc.compile([x, w, g], [y, dx, dw], backend=backend)


def _assert_close(got, want, rtol: float) -> None:
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("conv", GRID, ids=lambda c: c.name)
def test_conv2d_and_its_gradients_match_pytorch(conv: Conv, backend: str, rng) -> None:
    function = _compiled_conv(conv, backend)
    for batch in (2, 3):  # one Function, two batch sizes
        x, w, g = _arrays(conv, batch, rng)
        for got, want in zip(function(x, w, g), _torch_conv(conv, x, w, g), strict=True):
            _assert_close(got, want, 1e-4)


def test_an_empty_batch_gives_a_zero_weight_gradient(backend: str) -> None:
    conv = NAMED["same_3x3"]
    function = _compiled_conv(conv, backend)
    x, w, g = _arrays(conv, 0, np.random.default_rng(0))
    y, dx, dw = function(x, w, g)
    assert y.shape == (0, *g.shape[1:]) and dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros(conv.w, np.float32))


@pytest.mark.parametrize(
    "conv", [NAMED[name] for name in ("same_3x3", "groups2", "pointwise")], ids=lambda c: c.name
)
def test_float64_convolutions_match_pytorch_closely(conv: Conv, backend: str, rng) -> None:
    x, w, g = _arrays(conv, 2, rng, np.float64)
    got = _compiled_conv(conv, backend, gc.float64)(x, w, g)
    for ours, theirs in zip(got, _torch_conv(conv, x, w, g), strict=True):
        _assert_close(ours, theirs, 1e-12)


def _ops_by_kernel(function: gc.Function) -> list[set[str]]:
    return [{node.op for node in nodes} for _, nodes in function.kernels()]


@pytest.mark.parametrize("conv", GRID, ids=lambda c: c.name)
def test_convolutions_run_in_matmul_kernels(conv: Conv) -> None:
    kernels = _ops_by_kernel(_compiled_conv(conv, "llvm"))
    with_convolution = [ops for ops in kernels if ops & CONV_OPS]
    matmuls = [ops for ops in kernels if ops & {"matmul", "window_matmul"}]
    if conv.as_gemm:
        assert not with_convolution, f"window-reduction kernels left: {with_convolution}"
        assert len(matmuls) == 3, kernels  # forward, input gradient, weight gradient
    else:
        assert len(with_convolution) == 3 and not matmuls, kernels


@pytest.mark.parametrize(
    "name, swapped",
    [
        ("channels_last", True),
        ("channels_last_64_stride2", True),
        ("channels_last_25", True),
        ("first_layer", True),  # 16 channels: an inference product reads its windows in place
        ("groups2", False),
        ("same_3x3", False),
    ],
)
def test_forward_products_put_the_windows_on_the_left(name: str, swapped: bool) -> None:
    """25-64 output channels in one group, or, for an inference product over flat windows
    (window_matmul), 16-64."""
    conv = NAMED[name]
    x = gc.input("x", ("B", *conv.x[1:]))
    y = F.conv2d(x, gc.Variable(np.ones(conv.w, np.float32)), **conv.options)
    function = gc.compile([x], [y], backend="llvm")
    products = {"matmul", "window_matmul"}
    (product,) = [node for _, nodes in function.kernels() for node in nodes if node.op in products]
    assert (product.type.shape[-1] == conv.w[0]) == swapped, product


def test_a_pointwise_convolution_is_a_plain_matmul() -> None:
    kernels = _ops_by_kernel(_compiled_conv(NAMED["pointwise"], "llvm"))
    assert not [ops for ops in kernels if ops & {"im2col", "col2im"}], kernels


def test_forward_and_weight_gradient_gather_the_windows_once() -> None:
    """Two 3x3 layers trained: one im2col of each layer's input serves its forward product and
    its weight gradient."""
    x = gc.input("x", ("B", 1, 8, 8))
    # The second layer's 32 channels put its windows on the left of the forward product.
    w1, w2 = gc.Variable(np.ones((4, 1, 3, 3), np.float32)), gc.Variable(np.ones((32, 4, 3, 3)))
    h = F.conv2d(x, w1, padding=1).relu()
    loss = F.conv2d(h, w2.to(gc.float32), padding=1).square().mean()
    function = gc.compile([x], [loss, *gc.grad(loss, [w1, w2])], backend="llvm")
    windows = [
        node
        for _, nodes in function.kernels()
        for node in nodes
        if node.op == "im2col" and node.attrs["kernel"] == (3, 3)
    ]
    assert len(windows) == 2, windows


# The output channels per group up to which inference takes flat windows, and reads them in
# place (conv_gemm.channel_limits), on targets with 512-bit vectors and with narrower ones.
LIMITS = {"wide_vectors": (32, 64), "narrow_vectors": (256, 256)}


@pytest.fixture(params=list(LIMITS))
def limits(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Run the test as for each target's vectors (their channel limits, and whether input
    gradients read their windows in place), whatever this host's, on every backend."""
    narrow = request.param == "narrow_vectors"
    monkeypatch.setattr(conv_gemm, "_narrow_vectors", lambda: narrow)
    return LIMITS[request.param]


def _flat(conv: Conv, limits: tuple[int, int]) -> bool:
    """Return whether an inference graph takes this convolution's windows along flat rows."""
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride, conv.stride)
    pointwise = conv.w[2:] == (1, 1) and conv.padding in (0, (0, 0)) and stride == (1, 1)
    narrow = conv.w[0] // conv.groups <= limits[0]
    return conv.as_gemm and not pointwise and stride == (1, 1) and narrow


def _window_product(conv: Conv, limits: tuple[int, int]) -> bool:
    """Return whether an inference graph computes this convolution's product as a
    window_matmul over its channels-last padded input: flat windows, one group of 16 to
    limits[1] output channels, no dilation along the width."""
    dilation = conv.dilation if isinstance(conv.dilation, tuple) else (conv.dilation,) * 2
    on_the_left = conv.groups == 1 and 16 <= conv.w[0] <= limits[1]
    return _flat(conv, limits) and on_the_left and dilation[1] == 1


def _inference_conv(conv: Conv, backend: str, optimized: bool = True) -> gc.Function:
    """Return the Function of conv2d(x, w) and its input gradient: no weight gradient, so
    the windows are taken along the padded input's flat rows where the stride is 1."""
    x = gc.input("x", ("B", *conv.x[1:]))
    w = gc.input("w", conv.w)
    y = F.conv2d(x, w, **conv.options)
    g = gc.input("g", ("B", *y.shape[1:]))
    (dx,) = gc.grad((y * g).sum(), [x])
    return gc.compile([x, w, g], [y, dx], backend=backend, optimize=optimized)


@pytest.mark.parametrize("conv", GRID, ids=lambda c: c.name)
def test_inference_convolutions_match_pytorch(conv: Conv, backend: str, rng) -> None:
    function = _inference_conv(conv, backend)
    for batch in (2, 3, 0):
        x, w, g = _arrays(conv, batch, rng)
        want = _torch_conv(conv, x, w, g)[:2]
        for got, expected in zip(function(x, w, g), want, strict=True):
            assert got.shape == expected.shape
            if expected.size:
                _assert_close(got, expected, 1e-4)


# Wider than the flat windows of targets with 512-bit vectors: in place over 4.5 and 6 panels
# of AVX2's 16 columns (rows of 13 outputs in runs, rows of 7 with their extra columns), at
# the narrow limit, past it, and flat copies where groups or a dilated width keep the windows
# from being read in place.
WIDE = [
    Conv("wide_96", (2, 8, 6, 7), (96, 8, 3, 3), padding=1),
    Conv("wide_72_row_runs", (1, 5, 5, 13), (72, 5, 3, 3), padding=1),
    Conv("wide_256", (1, 3, 5, 5), (256, 3, 3, 3), padding=1),
    Conv("wide_257", (1, 2, 4, 4), (257, 2, 3, 3), padding=1),
    Conv("wide_groups2", (2, 8, 6, 6), (80, 4, 3, 3), padding=1, groups=2),
    Conv("wide_dilated_width", (1, 4, 7, 9), (70, 4, 3, 3), padding=(1, 2), dilation=(1, 2)),
]


@pytest.mark.parametrize("conv", GRID + WIDE, ids=lambda c: c.name)
def test_inference_convolutions_copy_flat_rows(conv: Conv, limits: tuple[int, int]) -> None:
    kernels = _ops_by_kernel(_inference_conv(conv, "llvm"))
    flat = [ops for ops in kernels if "flat_im2col" in ops]
    products = [ops for ops in kernels if "window_matmul" in ops]
    windows = [ops for ops in kernels if "im2col" in ops]
    in_place = _window_product(conv, limits)
    input_grad = _input_grad_in_place(conv, limits == LIMITS["narrow_vectors"])
    assert len(flat) == (1 if _flat(conv, limits) and not in_place else 0), kernels
    assert len(products) == in_place + input_grad, kernels
    if _flat(conv, limits):  # the input gradient's 1x1 windows of g may remain
        assert len(windows) <= 1, kernels


@pytest.mark.parametrize("conv", WIDE, ids=lambda c: c.name)
def test_wide_inference_convolutions_match_pytorch(
    conv: Conv, limits: tuple[int, int], backend: str, rng
) -> None:
    function = _inference_conv(conv, backend)
    x, w, g = _arrays(conv, 2, rng)
    for got, want in zip(function(x, w, g), _torch_conv(conv, x, w, g)[:2], strict=True):
        _assert_close(got, want, 1e-4)


# Input gradients of stride-1 convolutions with at least 16 input channels: on narrower
# vectors than AVX-512 they are convolutions of the output gradient with the flipped weight
# over flat windows read in place (conv2d_input_grad_over_flat_rows), no col2im.
INPUT_GRADS = [
    Conv("igrad_same", (2, 16, 6, 7), (24, 16, 3, 3), padding=1),
    Conv("igrad_full", (2, 16, 6, 6), (4, 16, 3, 3)),  # no padding: the flipped one pads 2
    Conv("igrad_dilated", (1, 20, 9, 8), (8, 20, 3, 3), padding=2, dilation=2),
    Conv("igrad_rectangular", (2, 16, 7, 9), (8, 16, 2, 3), padding=(1, 0)),
    Conv("igrad_row_runs", (1, 32, 5, 13), (16, 32, 3, 3), padding=1),
    Conv("igrad_padded_past", (2, 16, 5, 5), (8, 16, 1, 1), padding=1),  # pads 1 > (k-1)d
    Conv("igrad_stride2", (2, 16, 8, 8), (8, 16, 3, 3), stride=2, padding=1),
    Conv("igrad_groups2", (2, 32, 6, 6), (8, 16, 3, 3), padding=1, groups=2),
]


def _input_grad_in_place(conv: Conv, narrow: bool) -> bool:
    """Return whether conv's input gradient becomes a window_matmul."""
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride, conv.stride)
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 2
    dilation = conv.dilation if isinstance(conv.dilation, tuple) else (conv.dilation,) * 2
    fits = all(p <= (k - 1) * d for p, k, d in zip(padding, conv.w[2:], dilation, strict=True))
    unit = stride == (1, 1) and conv.groups == 1 and conv.w[2:] != (1, 1)
    return narrow and unit and fits and dilation[1] == 1 and 16 <= conv.x[1] <= 256


@pytest.mark.parametrize("conv", INPUT_GRADS, ids=lambda c: c.name)
def test_trained_input_gradients_match_pytorch(conv: Conv, limits, backend: str, rng) -> None:
    function = _compiled_conv(conv, backend)
    x, w, g = _arrays(conv, 2, rng)
    for got, want in zip(function(x, w, g), _torch_conv(conv, x, w, g), strict=True):
        _assert_close(got, want, 1e-4)


@pytest.mark.parametrize("conv", INPUT_GRADS, ids=lambda c: c.name)
def test_trained_input_gradients_read_their_windows_in_place(conv: Conv, limits) -> None:
    kernels = _ops_by_kernel(_compiled_conv(conv, "llvm"))
    in_place = _input_grad_in_place(conv, limits == LIMITS["narrow_vectors"])
    assert any("window_matmul" in ops for ops in kernels) == in_place, kernels
    assert any("col2im" in ops for ops in kernels) != in_place, kernels
    assert any("im2col" in ops for ops in kernels), kernels  # the weight gradient's windows


def _graph_ops(graph) -> set[str]:
    return {node.op for node in graph.nodes}


def test_optimize_takes_the_limits_of_the_targets_vectors() -> None:
    """512-bit vectors (or no CPU target) keep im2col for 64 output channels; narrower ones
    read its windows in place."""
    conv = Conv("wide_64", (2, 4, 6, 6), (64, 4, 3, 3), padding=1)
    graph = _inference_conv(conv, "reference", optimized=False).graph
    for bits, op in ((None, "im2col"), (512, "im2col"), (256, "window_matmul")):
        assert op in _graph_ops(optimize(graph, vector_bits=bits)), bits


def test_the_llvm_backend_optimizes_for_the_selected_targets_vectors(monkeypatch) -> None:
    """compile() hands optimize the vector width of the target the LLVM backend compiles for
    (here AVX2's, chosen by GRAPHC_CPU), and no width to the other backends."""
    monkeypatch.setenv("GRAPHC_CPU", "avx2")
    conv = Conv("wide_64", (2, 4, 6, 6), (64, 4, 3, 3), padding=1)
    assert "window_matmul" in _graph_ops(_inference_conv(conv, "llvm").graph)
    assert "im2col" in _graph_ops(_inference_conv(conv, "reference").graph)


@pytest.mark.parametrize(
    "name, width",
    [
        ("channels_last", 9 + 1),  # 3x3, padding 1: one zero column between rows
        ("first_layer", 8 + 1),
        ("dilation2", 9 + 1),  # padding 1 along the width, taps 2 apart: 1 <= 4
        ("same_3x3", 9 + 1),
        ("no_padding", 7),
    ],
)
def test_flat_rows_share_one_padding_between_rows(name: str, width: int) -> None:
    """Along the flat rows a row's right padding is the next row's left padding: the padded
    input is W + pw wide, not W + 2 pw (the outputs are checked against PyTorch above)."""
    conv = NAMED[name]
    nodes = [node for _, ops in _inference_conv(conv, "llvm").kernels() for node in ops]
    (windows,) = [node for node in nodes if node.op in {"flat_im2col", "window_matmul"}]
    image = windows.inputs[0].type.shape
    assert (image[2] if windows.op == "window_matmul" else image[3]) == width, image


@pytest.mark.parametrize(
    "name, columns",
    [
        ("wide_rows", 14),
        ("wide_first_layer", 13),
        ("wide_dilated_rows", 13),
        ("deep_wide_rows", 12),
        ("channels_last", 10),
    ],
)
def test_rows_of_twelve_outputs_leave_the_extra_columns_out(name: str, columns: int) -> None:
    """A window_matmul whose output rows hold at least ROW_RUN_LEAST windows computes only
    those (the GEMM reads each row's windows as a run of its rows); narrower rows keep the
    padded width's extra columns, which the reader skips."""
    conv = NAMED[name]
    nodes = [node for _, ops in _inference_conv(conv, "llvm").kernels() for node in ops]
    (product,) = [
        node
        for node in nodes
        if node.op == "window_matmul" and node.type.shape[-1] == conv.w[0]  # the forward's
    ]
    assert product.attrs["columns"] == columns
    rows = product.attrs["rows"]
    assert product.type.shape[1:] == (rows * columns, conv.w[0])


@pytest.mark.parametrize("columns", [11, 16])
def test_window_products_of_other_widths_are_refused(columns: int) -> None:
    x = gc.input("x", ("B", 8, 15, 2))
    w = gc.input("w", (18, 4))
    attrs = {"kernel": (3, 3), "dilation": (1, 1), "rows": 5, "columns": columns}
    with pytest.raises(gc.errors.ShapeError, match="columns of windows"):
        make_node("window_matmul", [x.node, w.node], attrs)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"kernel": (1, 2), "dilation": (1, -1), "rows": 3}, "at least 1"),
        ({"kernel": (0, 2), "dilation": (1, 1), "rows": 3}, "at least 1"),
        ({"kernel": (2, 2), "dilation": (1, 1), "rows": 3}, "reach past"),
    ],
)
def test_flat_windows_that_leave_the_input_are_refused(attrs: dict, message: str) -> None:
    x = gc.input("x", ("B", 1, 3, 4))
    with pytest.raises(gc.errors.ShapeError, match=message):
        make_node("flat_im2col", [x.node], attrs)


@pytest.mark.parametrize("name", ["channels_last", "wide_rows"])
def test_the_columns_past_each_row_never_reach_the_output(name: str, backend: str) -> None:
    """The flat runs' extra columns read the next row's first pixels: inf and NaN there must
    not leak into the outputs beside them (nor the runs of rows skipping them)."""
    conv = NAMED[name]
    x = gc.input("x", ("B", *conv.x[1:]))
    w = gc.input("w", conv.w)
    function = gc.compile([x, w], F.conv2d(x, w, **conv.options), backend=backend)
    rng = np.random.default_rng(1)
    xs, ws = rng.standard_normal((2, *conv.x[1:])).astype(np.float32), rng.standard_normal(conv.w)
    xs[:, :, :, 0], xs[0, 1, :, -1] = np.inf, np.nan
    want = torch.nn.functional.conv2d(
        torch.from_numpy(xs.astype(np.float64)), torch.from_numpy(ws), **conv.options
    ).numpy()
    got = function(xs, ws.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-3)


@dataclass(frozen=True)
class Transposed:
    """One transposed convolution: x (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW)."""

    name: str
    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int]
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    groups: int = 1
    dilation: int = 1
    as_gemm: bool = True

    @property
    def options(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "groups": self.groups,
            "dilation": self.dilation,
        }


TRANSPOSED = [
    Transposed("upsample2", (2, 4, 5, 5), (4, 3, 3, 3), 2, 1, 1),
    Transposed("groups2", (2, 4, 4, 5), (4, 2, 3, 3), 2, 0, 0, groups=2),
    Transposed("stride1", (1, 3, 6, 6), (3, 5, 3, 3), padding=1),
    # output_padding 1 with stride 1 and dilation 2 adds a row no window reaches: direct kernel.
    Transposed(
        "beyond_last_window", (2, 2, 5, 5), (2, 3, 3, 3), 1, 0, 1, dilation=2, as_gemm=False
    ),
]


@pytest.mark.parametrize("conv", TRANSPOSED, ids=lambda c: c.name)
def test_conv_transpose2d_and_its_gradients_match_pytorch(
    conv: Transposed, backend: str, rng
) -> None:
    x = gc.input("x", ("B", *conv.x[1:]))
    w = gc.input("w", conv.w)
    y = F.conv_transpose2d(x, w, **conv.options)
    g = gc.input("g", ("B", *y.shape[1:]))
    dx, dw = gc.grad((y * g).sum(), [x, w])
    function = gc.compile([x, w, g], [y, dx, dw], backend=backend)
    xs = rng.standard_normal(conv.x).astype(np.float32)
    ws = rng.standard_normal(conv.w).astype(np.float32)
    gs = rng.standard_normal((conv.x[0], *y.shape[1:])).astype(np.float32)
    tx, tw = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (xs, ws))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, **conv.options)
    ty.backward(torch.from_numpy(gs.astype(np.float64)))
    wanted = (ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy())
    for got, want in zip(function(xs, ws, gs), wanted, strict=True):
        _assert_close(got, want, 1e-4)
    if backend == "llvm":
        forward = {node.op for _, nodes in function.kernels() for node in nodes}
        assert ("conv2d_input_grad" not in forward) == conv.as_gemm, forward


@pytest.mark.parametrize("conv", [TRANSPOSED[0], TRANSPOSED[-1]], ids=lambda c: c.name)
def test_second_derivatives_of_transposed_convolutions_match_pytorch(
    conv: Transposed, backend: str, rng
) -> None:
    x = gc.input("x", conv.x, gc.float64)
    w = gc.input("w", conv.w, gc.float64)
    y = F.conv_transpose2d(x, w, **conv.options)
    dx, dw = gc.grad(y.square().sum(), [x, w])
    second = gc.grad(dx.square().sum() + dw.square().sum(), [x, w])
    xs, ws = rng.standard_normal(conv.x), rng.standard_normal(conv.w)
    tx, tw = (torch.from_numpy(a).requires_grad_() for a in (xs, ws))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, **conv.options)
    tdx, tdw = torch.autograd.grad(ty.square().sum(), [tx, tw], create_graph=True)
    wanted = torch.autograd.grad(tdx.square().sum() + tdw.square().sum(), [tx, tw])
    got = gc.compile([x, w], second, backend=backend)(xs, ws)
    for ours, theirs in zip(got, wanted, strict=True):
        _assert_close(ours, theirs.numpy(), 1e-12)
