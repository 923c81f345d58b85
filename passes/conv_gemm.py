"""The conv_gemm tier: convolutions and their gradients become matmuls, so the packed GEMM does
their arithmetic instead of a loop kernel that reduces over every window.

With G groups, L = OH*OW output positions per image and D = C/G*kH*kW taps per window, the
windows of x (`im2col`, (C, kH, kW, N, OH, OW), one buffer) are a (G, D, N*L) matrix: every
image's columns side by side, so each product is one GEMM per group however small the images:

- conv2d(x, w): w seen as (G, O/G, D) times the windows gives (G, O/G, N*L), the output with
  its batch and channel dims swapped, which its readers undo as index arithmetic. With one
  group of 25-64 output channels the product is the other way round, windows^T @ w^T, giving
  the output channels last (`windows_on_the_left`).
- conv2d_weight_grad(x, gy): the windows times gy seen as (G, N*L, O/G), transposed: the sum
  over the batch is part of the contraction. Forward and weight gradient build the same
  `im2col` node, which CSE merges, so a training step gathers each layer's windows once.
- conv2d_input_grad(gy, w) (also conv_transpose2d): w seen as (G, D, O/G) times gy seen as
  (G, O/G, N*L) gives every window's contribution; `col2im` sums them onto the image.
  gy as (G, O/G, N*L) is its 1x1 windows, one copy that both gradients read. On a target
  with vectors narrower than AVX-512, a stride-1 one with one group is instead the
  convolution of gy with the flipped weight over flat windows read in place
  (`conv2d_input_grad_over_flat_rows`), training graphs included.

A graph that computes no convolution's weight gradient (inference, or gradients for the input
only) takes a stride-1 convolution's windows along flat rows instead (`flat_windows`): x is
padded once (a row's right padding being the next row's left padding where the windows reach
no further), and `flat_im2col` copies each tap's windows of an image as one run of OH * Wp
elements of the padded image's flattened rows (Wp its padded width), where im2col copies OH
rows of OW; with one group of 16 or more output channels `window_matmul` reads the windows of
the channels-last padded input in place instead (`window_product`; how many channels, for
either, depends on the CPU target's vectors: `channel_limits`). The product then has Wp - OW
extra columns per output row, which its readers skip as index arithmetic; a window_matmul
over rows of at least ROW_RUN_LEAST outputs leaves them out (the GEMM reads each output row's
windows as a run of its rows). A weight gradient
would multiply those columns' values (the next row's pixels, which may be inf) by zeros, so
trained layers keep the im2col they share.

A 1x1 window with stride 1 and no padding needs no im2col: x itself is the matrix, one
(C/G, H*W) block per image and group, and the products are batched GEMMs over the images
(the weight gradient then sums over them).

The rewrite keeps the direct kernel where a GEMM does not pay, and wherever its ops cannot
express the product (a transposed convolution whose output_padding reaches past the last
window): `as_gemm` decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from graphc.dims import Dim, static_dim, static_shape
from graphc.graph import Graph, Node
from graphc.ops.conv import ROW_RUN_LEAST, conv_output_size
from graphc.ops.registry import make_node
from graphc.passes.rewrite import GraphRewrite, Tier, node_rewrite, rewrite, run_tier

_WINDOW = ("stride", "padding", "dilation")
# Output channels of a convolution whose product puts the windows on the left (see
# windows_on_the_left): above the widest product the GEMM's skinny paths take, and at most
# one column tile of the AVX-512 plans (6 x 64, and 12 x 32 for at most 32 columns).
DOT_SIDE = 24
ONE_PANEL = 64
_UNIT_WINDOW = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
# Output channels per group up to which an inference convolution's windows are copied as flat
# runs (flat_windows) on a target with 512-bit vectors: each extra column costs the GEMM that
# many multiply-adds per tap. One thread, 3x3 windows with padding 1, relu(conv2d) with the
# flat runs against im2col, paired (benchmarks/RESULTS.md): Zen 4 (AVX-512) 0.74-1.11x the
# time at 16-32 output channels (MNIST's (64, 16, 14, 14) -> 32 0.90x, at batch 1 0.74x; 1.09x
# with 3 input channels) and 0.77-1.14x at 64-128 (four of five layers slower), measured
# before window_product read the windows in place.
FLAT_CHANNELS = 32
# Output channels from which a flat-windows convolution reads its windows in place
# (window_product): one AVX2 panel. One thread, Zen 3, MNIST CNN inference at batch 64 (its
# first layer's 16 channels too): 2.26 -> 1.94 ms, the first pool then running along the
# channels and writing the second layer's padded input itself. AVX-512 multiplies 16 or 32
# columns with the narrow plan (12 x 32).
WINDOW_CHANNELS = 16
# Output channels per group up to which a target with narrower vectors (AVX2) takes flat
# windows, and reads them in place (one group): im2col's copy, 9x the input for 3x3 windows,
# costs such a target more than its GEMM gains. Zen 3, relu(conv2d), 3x3, padding 1, paired:
# in place against im2col, one thread, 0.52-0.65x the time at 64 output channels (batch 8 at
# 56x56, 64 at 16x16 and 8x8, 16 at 32x32), 0.64x at 128 (batch 8, 28x28), 0.91x at 256
# (14x14); two threads 0.53-0.55x at 64, 0.69x at 128, 0.83x at 256; 512 channels at 7x7 1.38x
# (B's rows too long to be read in place: the windows are packed), so the limit is 256.
NARROW_VECTOR_CHANNELS = 256


# The width in bits of the vectors of the CPU target the graph is optimised for (`optimize`'s
# vector_bits), None where it is not optimised for one (another backend, a pass run alone):
# then the limits of 512-bit vectors, the rewrite's only ones before they differed.
TARGET_VECTOR_BITS: ContextVar[int | None] = ContextVar("target_vector_bits", default=None)


def channel_limits() -> tuple[int, int]:
    """Return the most output channels per group whose inference windows are taken along flat
    rows (`flat_windows`), and read in place (`window_product`), for the CPU target the graph
    is optimised for: the measured limits differ with its vectors' width."""
    if not _narrow_vectors():
        return FLAT_CHANNELS, ONE_PANEL
    return NARROW_VECTOR_CHANNELS, NARROW_VECTOR_CHANNELS


def _narrow_vectors() -> bool:
    """Return whether the graph is optimised for a CPU target with vectors narrower than 512
    bits (AVX2), where reading windows in place was measured against im2col."""
    bits = TARGET_VECTOR_BITS.get()
    return bits is not None and bits < 512


@dataclass(frozen=True)
class Geometry:
    """One convolution's sizes, whichever of its three products a node computes."""

    batch: Dim
    channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, ...]
    window: dict[str, Any]

    @property
    def depth(self) -> int:
        """Return D, the taps of one window in one group: the GEMM's contraction."""
        return self.channels // self.groups * self.kernel[0] * self.kernel[1]

    @property
    def windows_fit(self) -> bool:
        """Return True when the windows of the input are exactly the output grid: a transposed
        convolution's output_padding can add rows that no window reaches."""
        grid = tuple(
            conv_output_size(size, k, *(self.window[name][axis] for name in _WINDOW))
            for axis, (size, k) in enumerate(zip(self.in_hw, self.kernel, strict=True))
        )
        return grid == self.out_hw

    @property
    def pointwise(self) -> bool:
        """Return True for a 1x1 window with stride 1 and no padding: x is the matrix."""
        return (
            self.kernel == (1, 1)
            and self.window["stride"] == (1, 1)
            and self.window["padding"] == (0, 0)
        )


def _geometry(x_shape: Sequence[Dim], w_shape: Sequence[Dim], out_hw, attrs) -> Geometry:
    # The type rules of the convolution ops leave only the batch dim symbolic.
    batch, channels, in_h, in_w = x_shape
    out_channels, _, kh, kw = static_shape(w_shape)
    return Geometry(
        batch,
        static_dim(channels),
        out_channels,
        attrs["groups"],
        (kh, kw),
        (static_dim(in_h), static_dim(in_w)),
        static_shape(out_hw),
        {k: attrs[k] for k in _WINDOW},
    )


def as_gemm(geometry: Geometry) -> bool:
    """Return True where the GEMM form of a convolution product is chosen over the direct
    kernel: everywhere its ops express the product, but windows of a single tap per group
    (depth 1), which are scaled copies a loop does at memory speed."""
    return geometry.windows_fit and geometry.depth > 1


class _Builder:
    """Builds a replacement's nodes at the source line of the node it replaces, in the matrix
    layout its geometry chooses."""

    def __init__(self, node: Node, geometry: Geometry) -> None:
        self.node = node
        self.geometry = geometry

    def __call__(self, op: str, inputs: list[Node], attrs: dict | None = None) -> Node:
        return make_node(op, inputs, attrs or {}, location=self.node.location)

    def reshape(self, x: Node, *shape: Dim) -> Node:
        return self("reshape", [x], {"shape": shape})

    def permute(self, x: Node, *perm: int) -> Node:
        return self("permute", [x], {"perm": perm})

    def transpose(self, x: Node) -> Node:
        perm = list(range(x.type.ndim))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return self.permute(x, *perm)

    def named(self, result: Node) -> Node:
        """Return the replacement's last node with the user's name for the node it replaces."""
        return Node(
            result.op, result.inputs, result.attrs, result.type, result.location, self.node.name
        )

    def matrix(self, image: Node) -> Node:
        """Return an (N, K, OH, OW) image as the GEMM operand (G, K/G, N*L), or per image
        (N, G, K/G, L) for a pointwise convolution."""
        g = self.geometry
        n, channels, height, width = image.type.shape
        if g.pointwise:
            return self.reshape(image, n, g.groups, channels // g.groups, height * width)
        # The 1x1 windows of the image: a copy with the batch inside, whose loops run along
        # the image's rows (a permute read as a matrix would divide every index instead).
        columns = self("im2col", [image], {"kernel": (1, 1), **_UNIT_WINDOW})
        return self.reshape(columns, g.groups, channels // g.groups, n * height * width)

    def image(self, product: Node, shape: tuple[Dim, ...]) -> Node:
        """Return a product laid out as `matrix` lays out an image as that (N, K, H, W) image."""
        if self.geometry.pointwise:
            return self.reshape(product, *shape)
        n, channels, height, width = shape
        return self.permute(self.reshape(product, channels, n, height, width), 1, 0, 2, 3)

    def windows(self, x: Node) -> Node:
        """Return x's windows as the GEMM operand (G, D, N*L), or per image (N, G, D, L)."""
        g = self.geometry
        if g.pointwise:
            return self.matrix(x)
        columns = self("im2col", [x], {"kernel": g.kernel, **g.window})
        return self.reshape(columns, g.groups, g.depth, g.batch * g.out_hw[0] * g.out_hw[1])

    def weights(self, w: Node) -> Node:
        """Return w as (G, O/G, D)."""
        g = self.geometry
        return self.reshape(w, g.groups, g.out_channels // g.groups, g.depth)


def windows_on_the_left(geometry: Geometry) -> bool:
    """Return True where conv2d's product is better computed as windows^T @ weights^T: one
    group whose output channels are more than the GEMM's skinny paths take (DOT_SIDE) and at
    most one tile of columns wide (ONE_PANEL). The GEMM then reads the windows where they lie
    instead of packing them, and the output comes out channels last (its readers transpose it
    in tiles)."""
    return (
        geometry.groups == 1
        and not geometry.pointwise
        and DOT_SIDE < geometry.out_channels <= ONE_PANEL
    )


@node_rewrite("conv2d")
def conv2d_as_gemm(node: Node) -> Node | None:
    """conv2d(x, w) -> weights(w) @ windows(x), or (windows(x)^T @ weights(w)^T)^T."""
    build = _forward_builder(node, as_gemm)
    if build is None:
        return None
    x, w = node.inputs
    product = _forward_product(build, build.windows(x), w)
    if windows_on_the_left(build.geometry):
        n, channels, height, width = node.type.shape
        pixels = build.reshape(product, n, height * width, channels)
        channels_first = build.permute(pixels, 0, 2, 1)
        return build.named(build.reshape(channels_first, *node.type.shape))
    return build.named(build.image(product, node.type.shape))


def _forward_builder(node: Node, wanted: Callable[[Geometry], bool]) -> _Builder | None:
    """Return the builder of a conv2d node's replacement where its geometry is wanted."""
    x, w = node.inputs
    geometry = _geometry(x.type.shape, w.type.shape, node.type.shape[2:], node.attrs)
    return _Builder(node, geometry) if wanted(geometry) else None


def _forward_product(build: _Builder, windows: Node, w: Node) -> Node:
    """Return conv2d's product of its windows (G, D, N*L) and weights: (N*L, O) where
    windows_on_the_left, else (G, O/G, N*L)."""
    if windows_on_the_left(build.geometry):
        return build("matmul", [build.transpose(windows), build.transpose(build.weights(w))])
    return build("matmul", [build.weights(w), windows])


def flat_windows(geometry: Geometry) -> bool:
    """Return True where conv2d's windows are taken along the padded input's flattened rows
    (`flat_im2col`): a stride-1 convolution in GEMM form (`as_gemm`) that is not pointwise
    (a 1x1 window with padding is flat too), with at most `channel_limits()[0]` output
    channels per group. The windows are then copied as runs of OH * Wp instead of OH rows of
    OW, each of which costs a loop's bookkeeping, and the GEMM computes (kW - 1) * dilation
    more columns per row, which its readers skip (16 for 14 on MNIST's 14x14 layer)."""
    return (
        as_gemm(geometry)
        and not geometry.pointwise
        and geometry.window["stride"] == (1, 1)
        and geometry.out_channels // geometry.groups <= channel_limits()[0]
    )


def window_product(geometry: Geometry) -> bool:
    """Return True where a flat-windows convolution (`flat_windows`) multiplies its windows in
    place, channels last (`window_matmul`): one group of WINDOW_CHANNELS to
    `channel_limits()[1]` output channels (the product's columns), no dilation along the width
    (a kernel row's taps are then one run per pixel). Its output comes out channels last, as
    windows_on_the_left's."""
    return (
        geometry.groups == 1
        and WINDOW_CHANNELS <= geometry.out_channels <= channel_limits()[1]
        and geometry.window["dilation"][1] == 1
    )


def _conv2d_over_flat_rows(node: Node) -> Node | None:
    """conv2d(x, w) -> the GEMM form over flat_im2col(pad(x)), its garbage columns sliced off."""
    build = _forward_builder(node, flat_windows)
    if build is None:
        return None
    x, w = node.inputs
    geometry = build.geometry
    (ph, pw), (dh, dw) = geometry.window["padding"], geometry.window["dilation"]
    kw = geometry.kernel[1]
    # Along the flat rows a row's right padding is the next row's left padding, as far as
    # the windows reach into it: a 3x3 window with padding 1 then has one zero column between
    # rows instead of two, and its product one extra column per row of output instead of two.
    sides = (pw, 0 if pw <= (kw - 1) * dw else pw)
    width = geometry.in_hw[1] + sum(sides)
    # The last windows' runs reach (kW - 1) * dw past the padded image: rows of zeros more.
    below = ph + math.ceil((kw - 1) * dw / width)
    rows, columns = geometry.out_hw
    attrs = {"kernel": geometry.kernel, "dilation": (dh, dw), "rows": rows}
    n, channels = node.type.shape[:2]
    in_place = window_product(geometry)
    product_columns = width
    if in_place:
        # Rows of at least ROW_RUN_LEAST windows: the product leaves out the extra columns.
        product_columns = columns if columns >= ROW_RUN_LEAST else width
        attrs["columns"] = product_columns
        # Channels last, a kernel row's taps are one run per pixel: the GEMM reads them in place.
        if geometry.channels == 1:  # the same memory: pad along the rows, not a dim of size 1
            padded = _padded(build, x, (ph, below), sides, 2)
            image = build.reshape(padded, n, *padded.type.shape[2:], 1)
        else:
            image = _padded(build, build.permute(x, 0, 2, 3, 1), (ph, below), sides, 1)
        taps = build.reshape(build.permute(w, 2, 3, 1, 0), geometry.depth, channels)
        product = build("window_matmul", [image, taps], attrs)
    else:
        runs = build("flat_im2col", [_padded(build, x, (ph, below), sides, 2)], attrs)
        windows = build.reshape(
            runs, geometry.groups, geometry.depth, geometry.batch * rows * width
        )
        product = _forward_product(build, windows, w)
    sizes: tuple[Dim, ...]
    if in_place or windows_on_the_left(geometry):
        grid = build.reshape(product, n, rows, product_columns, channels)
        sizes, perm = (n, rows, columns, channels), (0, 3, 1, 2)
    else:
        grid = build.reshape(product, channels, n, rows, width)
        sizes, perm = (channels, n, rows, columns), (1, 0, 2, 3)
    if product_columns != columns:
        steps = (1, 1, 1, 1)
        grid = build("slice", [grid], {"starts": (0, 0, 0, 0), "sizes": sizes, "steps": steps})
    return build.named(build.permute(grid, *perm))


def _padded(build: _Builder, x: Node, rows: tuple[int, int], columns: tuple[int, int], axis: int):
    """Return x padded with zeros along its rows (at axis) and columns (the next axis); with
    no padding, x itself (a 1-wide window: fusion makes it a buffer)."""
    if not any(rows + columns):
        return x
    pads = [(0, 0)] * x.type.ndim
    pads[axis], pads[axis + 1] = rows, columns
    return build("pad", [x], {"pads": tuple(pads), "value": 0.0})


def _inference_convolutions(graph: Graph) -> tuple[Graph, int]:
    """In a graph that trains no convolution's weights, take every stride-1 convolution's
    windows along flat rows. Where a weight gradient is computed, forward and gradient share
    one im2col instead (and its windows hold no columns that a gradient could multiply)."""
    if any(node.op == "conv2d_weight_grad" for node in graph.nodes):
        return graph, 0
    fired = 0

    def flat(node: Node) -> Node:
        nonlocal fired
        replacement = _conv2d_over_flat_rows(node) if node.op == "conv2d" else None
        fired += replacement is not None
        return node if replacement is None else replacement

    return rewrite(graph, flat), fired


conv2d_over_flat_rows = GraphRewrite("conv2d_over_flat_rows", _inference_convolutions)


@node_rewrite("conv2d_weight_grad")
def conv2d_weight_grad_as_gemm(node: Node) -> Node | None:
    """conv2d_weight_grad(x, gy) -> (windows(x) @ matrix(gy)^T)^T."""
    x, gy = node.inputs
    geometry = _geometry(x.type.shape, node.type.shape, gy.type.shape[2:], node.attrs)
    if not as_gemm(geometry):
        return None
    build = _Builder(node, geometry)
    # (D x N*L) @ (N*L x O/G) measured 1.3-1.4x faster than (O/G x N*L) @ (N*L x D) on the
    # 3x3 layers of benchmarks/conv.py: its right operand is the narrow one read across rows.
    product = build("matmul", [build.windows(x), build.transpose(build.matrix(gy))])
    if geometry.pointwise:  # one product per image
        product = build("reduce_sum", [product], {"axes": (0,), "keepdims": False})
    # To the weight's layout through a reshape first: a transpose right over the matmul would
    # be turned back into the other product by canonicalize's transpose_of_matmul.
    per_out, per_group = geometry.out_channels // geometry.groups, node.type.shape[1]
    taps = build.reshape(product, geometry.groups, per_group, *geometry.kernel, per_out)
    return build.named(build.reshape(build.permute(taps, 0, 4, 1, 2, 3), *node.type.shape))


@node_rewrite("conv2d_input_grad")
def conv2d_input_grad_as_gemm(node: Node) -> Node | None:
    """conv2d_input_grad(gy, w) -> col2im(weights(w)^T @ matrix(gy))."""
    gy, w = node.inputs
    geometry = _geometry(node.type.shape, w.type.shape, gy.type.shape[2:], node.attrs)
    if not as_gemm(geometry):
        return None
    build = _Builder(node, geometry)
    product = build("matmul", [build.transpose(build.weights(w)), build.matrix(gy)])
    if geometry.pointwise:
        return build.named(build.image(product, node.type.shape))
    columns = build.reshape(
        product, geometry.channels, *geometry.kernel, geometry.batch, *geometry.out_hw
    )
    attrs = {"kernel": geometry.kernel, **geometry.window, "output_hw": geometry.in_hw}
    return build.named(build("col2im", [columns], attrs))


@node_rewrite("conv2d_input_grad")
def conv2d_input_grad_over_flat_rows(node: Node) -> Node | None:
    """conv2d_input_grad(gy, w) at stride 1 -> conv2d(gy, w flipped, padding (k - 1) * d - p)
    over flat rows, where that convolution reads its windows in place (`window_product`) on
    a target with narrower vectors than AVX-512: no im2col-sized product and no col2im. Its
    extra columns are sliced off the output, so, unlike a weight gradient's flat windows,
    this form suits training graphs too. Zen 3, one thread, the input gradient of a 3x3
    convolution with padding 1 against matmul + col2im: (64, 32, 16, 16) -> 64 10.6 -> 8.2 ms,
    (8, 64, 56, 56) -> 64 26.7 -> 21.7, (8, 128, 28, 28) -> 128 23.3 -> 21.3."""
    gy, w = node.inputs
    geometry = _geometry(node.type.shape, w.type.shape, gy.type.shape[2:], node.attrs)
    (kh, kw), (dh, dw) = geometry.kernel, geometry.window["dilation"]
    ph, pw = geometry.window["padding"]
    padding = ((kh - 1) * dh - ph, (kw - 1) * dw - pw)
    if not (
        _narrow_vectors()
        and geometry.groups == 1
        and geometry.window["stride"] == (1, 1)
        and as_gemm(geometry)
        and min(padding) >= 0
    ):
        return None
    out_channels, channels = geometry.out_channels, geometry.channels
    attrs = {"stride": (1, 1), "padding": padding, "dilation": (dh, dw), "groups": 1}
    flipped_shape = (channels, out_channels, kh, kw)
    flipped = _geometry(gy.type.shape, flipped_shape, node.type.shape[2:], attrs)
    if not (flat_windows(flipped) and window_product(flipped)):
        return None
    build = _Builder(node, geometry)
    # w[o, c, i, j] at tap (kh - 1 - i, kw - 1 - j), as (C, O, kH, kW): the taps reversed,
    # one slice each (the weight is small; a gather would need an index per element).
    taps = build.reshape(build.permute(w, 2, 3, 0, 1), kh * kw, out_channels, channels)
    sizes, steps = (1, out_channels, channels), (1, 1, 1)
    reversed_taps = [
        build("slice", [taps], {"starts": (tap, 0, 0), "sizes": sizes, "steps": steps})
        for tap in reversed(range(kh * kw))
    ]
    joined = build("concat", reversed_taps, {"axis": 0})
    w_flipped = build.reshape(joined, kh, kw, out_channels, channels)
    conv = build("conv2d", [gy, build.permute(w_flipped, 3, 2, 0, 1)], attrs)
    replacement = _conv2d_over_flat_rows(conv)
    return None if replacement is None else build.named(replacement)


# Before CONV_GEMM, whose local rewrites a walk runs before any whole-graph one.
FLAT_WINDOWS = Tier("flat_windows", (conv2d_over_flat_rows, conv2d_input_grad_over_flat_rows))
CONV_GEMM = Tier(
    "conv_gemm", (conv2d_as_gemm, conv2d_weight_grad_as_gemm, conv2d_input_grad_as_gemm)
)


def conv_gemm(graph: Graph) -> Graph:
    """Return the graph with every convolution the GEMM form suits rewritten as matmuls."""
    return run_tier(CONV_GEMM, graph)[0]
