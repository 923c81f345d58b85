"""The converters of ONNX's Resize: nearest, linear and cubic interpolation (with antialias),
every coordinate_transformation_mode, nearest_mode and keep_aspect_ratio_policy, on any axes;
and of Upsample, its deprecated predecessor (opsets 7 to 9), which is one of those Resizes.

Resizing is separable: each resized axis is one pass, computed as ONNX's reference does. The
taps of every output position (the neighbouring input indices, clamped to the edge) and their
weights depend only on the sizes, which graphc knows while the graph is built, so they are
computed here with numpy (in float64) and become constants: a pass is one gather per tap,
weighted and summed, or for nearest a single gather, which copies values exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import graphc as gc
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_shape import normalize_axes, take

_COORDINATES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True, slots=True)
class _Options:
    """The interpolation options: mode, coordinates, nearest_mode, the cubic coefficient,
    exclude_outside and antialias; `float32` computes asymmetric coordinates in float32 (as
    onnxruntime's Upsample does) rather than float64 (as ONNX's Resize reference does)."""

    mode: str
    coordinates: str
    nearest: str
    a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    float32: bool = False

    @classmethod
    def of(cls, node: NodeContext) -> _Options:
        """Return a Resize node's options, read from its attributes."""
        mode = node.require("mode", ("nearest", "linear", "cubic"), "nearest", "an ONNX mode")
        antialias = bool(node.require("antialias", (0, 1), 0, "0 or 1"))
        if antialias and mode == "nearest":
            raise node.unsupported("antialias", 1, "ONNX defines it for linear and cubic only")
        return cls(
            mode,
            node.require(
                "coordinate_transformation_mode",
                _COORDINATES,
                "half_pixel",
                ", ".join(_COORDINATES),
            ),
            node.require("nearest_mode", _NEAREST, "round_prefer_floor", "an ONNX mode"),
            float(node.attr("cubic_coeff_a", -0.75)),
            bool(node.require("exclude_outside", (0, 1), 0, "0 or 1")),
            antialias,
        )

    def coefficients(self, ratio: float, scale: float) -> np.ndarray:
        """Return the tap weights at a position `ratio` in (0, 1] past its left neighbour."""
        if self.mode == "nearest":
            if ratio == 1:
                return np.array([0.0, 1.0])
            right = {
                "round_prefer_floor": ratio > 0.5,
                "round_prefer_ceil": ratio >= 0.5,
                "floor": False,
                "ceil": True,
            }[self.nearest]
            return np.array([float(not right), float(right)])
        if self.mode == "linear" and not self.antialias:
            return np.array([1 - ratio, ratio])
        if self.mode == "linear":
            scale = min(scale, 1.0)
            start = math.floor(-1 / scale) + 1
            args = (np.arange(start, 2 - start) - ratio) * scale
            weights = np.clip(1 - np.abs(args), 0, 1)
            return weights / weights.sum()
        # Cubic: taps at distances |i - ratio| (stretched by the scale when antialiasing).
        stretch = min(scale, 1.0) if self.antialias else 1.0
        start = math.floor(-2 / stretch) + 1
        args = np.abs((np.arange(start, 2 - start) - ratio) * stretch)
        a = self.a
        near = ((a + 2) * args - (a + 3)) * args * args + 1
        far = ((a * args - 5 * a) * args + 8 * a) * args - 4 * a
        weights = np.where(args <= 1, near, np.where(args < 2, far, 0.0))
        return weights / weights.sum() if self.antialias else weights


def _source(
    options: _Options, out_size: int, in_size: int, scale: float, roi: tuple[float, float]
) -> np.ndarray:
    """Return the input coordinate of every output position along one axis."""
    y = np.arange(out_size, dtype=np.float64)
    full = scale * in_size
    mode = options.coordinates
    if mode == "align_corners":
        return np.zeros(out_size) if full == 1 else y * (in_size - 1) / (full - 1)
    if mode == "asymmetric" and options.float32:
        return (y.astype(np.float32) / np.float32(scale)).astype(np.float64)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if full == 1:
            return np.full(out_size, (end - start) * (in_size - 1) / 2 + start * (in_size - 1))
        return y * (end - start) * (in_size - 1) / (full - 1) + start * (in_size - 1)
    if mode == "pytorch_half_pixel" and full == 1:
        return np.full(out_size, -0.5)
    offset = 0.0
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / full)
    return offset + (y + 0.5) / scale - 0.5


def _taps(
    options: _Options, out_size: int, in_size: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the input index (out_size, n), clamped to the edge, and weight of every tap."""
    x = _source(options, out_size, in_size, scale, roi)
    floor = np.floor(x)
    ratios = np.where(x == floor, 1.0, x - floor)
    weights = np.stack([options.coefficients(float(r), scale) for r in ratios])
    n = weights.shape[1]
    # The n indices nearest x, ties going to the smaller one (ONNX's neighbour choice).
    pad = math.ceil(n / 2)
    padded = x + pad
    base = np.floor(padded).astype(np.int64)
    frac = padded - base
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    index = (base + offset)[:, None] + np.arange(n)[None, :] - pad
    if options.exclude_outside:
        weights = np.where((index < 0) | (index >= in_size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, in_size - 1), weights


def _resample(
    x: gc.Tensor,
    axis: int,
    options: _Options,
    out_size: int,
    scale: float,
    roi: tuple[float, float],
) -> tuple[gc.Tensor, np.ndarray | None]:
    """Return x resized along axis, and the positions outside a tf_crop_and_resize roi."""
    in_size = x.shape[axis]
    assert isinstance(in_size, int)
    index, weights = _taps(options, out_size, in_size, scale, roi)
    outside = None
    if options.coordinates == "tf_crop_and_resize":
        source = _source(options, out_size, in_size, scale, roi)
        outside = (source < 0) | (source > in_size - 1)
    if options.mode == "nearest":
        chosen = index[np.arange(out_size), weights.argmax(axis=1)]
        return take(x, axis, chosen), outside
    view = (-1,) + (1,) * (x.ndim - axis - 1)
    taps = [
        take(x, axis, index[:, k]) * gc.tensor(weights[:, k].reshape(view), dtype=x.dtype)
        for k in range(weights.shape[1])
    ]
    return sum(taps[1:], taps[0]), outside


@converter("Resize")
def resize(node: NodeContext) -> gc.Tensor:
    """X resized to `sizes`, or by `scales`, along `axes` (every axis where not given)."""
    x = node.tensor(0)
    options = _Options.of(node)
    axes = normalize_axes(node, node.attr("axes") or range(x.ndim), x.ndim)
    policy = node.require(
        "keep_aspect_ratio_policy", ("stretch", "not_larger", "not_smaller"), "stretch", "a policy"
    )
    extrapolation = float(node.attr("extrapolation_value", 0.0))
    in_sizes = _static_sizes(node, x, axes)
    scales, sizes = _scales_and_sizes(node, in_sizes, policy)
    roi = _roi(node, options, len(axes))
    return _resize(node, x, axes, options, scales, sizes, roi, extrapolation)


@converter("Upsample", since=7)
def upsample(node: NodeContext) -> gc.Tensor:
    """X enlarged by `scales` (an input at opset 9, an attribute before; deprecated from
    opset 10, where the importer refuses it like onnx's checker), which is Resize
    with asymmetric coordinates and nearest rounding down, as onnxruntime computes it."""
    x = node.tensor(0)
    mode = node.require("mode", ("nearest", "linear"), "nearest", "nearest or linear")
    if node.opset < 9:
        if node.has(1):
            raise node.error("Upsample before opset 9 takes its scales as an attribute")
        given = node.attr("scales")
        scales = None if given is None else np.asarray(given)
    else:
        scales = node.static(1, "scales")
    if scales is None or scales.shape != (x.ndim,):
        raise node.error(f"scales must hold one factor per dim of the {x.ndim}-d input")
    factors = scales.astype(np.float32)
    if factors.min() < 1:
        raise node.error(f"scales {factors.tolist()} must be at least 1 (Upsample enlarges)")
    axes = list(range(x.ndim))
    in_sizes = _static_sizes(node, x, axes)
    # Sizes and coordinates in float32, as onnxruntime computes them (1.05 * 40 is 42).
    sizes = [int(f * np.float32(n)) for f, n in zip(factors, in_sizes, strict=True)]
    if sizes == in_sizes:  # onnxruntime copies the input then, whatever the scales
        return x
    options = _Options(mode, "asymmetric", "floor", float32=True)
    rois = [(0.0, 1.0)] * x.ndim
    return _resize(node, x, axes, options, factors.tolist(), sizes, rois, 0.0)


def _static_sizes(node: NodeContext, x: gc.Tensor, axes: Sequence[int]) -> list[int]:
    """Return the sizes of the resized axes, which must be static."""
    in_sizes: list[int] = []
    for axis in axes:
        size = x.shape[axis]
        if not isinstance(size, int):
            raise node.error(f"resizing the symbolic dim {size} is not supported")
        in_sizes.append(size)
    return in_sizes


def _resize(
    node: NodeContext,
    x: gc.Tensor,
    axes: Sequence[int],
    options: _Options,
    scales: Sequence[float],
    sizes: Sequence[int],
    roi: Sequence[tuple[float, float]],
    extrapolation: float,
) -> gc.Tensor:
    """Return x resampled along each of axes to its size, pass by pass."""
    if options.mode != "nearest" and not x.dtype.is_float:
        raise node.error(f"{options.mode} interpolation of {x.dtype.name} is not supported")
    outside_masks = []
    for i, axis in enumerate(axes):
        if math.isclose(scales[i], 1.0) and sizes[i] == x.shape[axis] and roi[i] == (0.0, 1.0):
            continue
        x, outside = _resample(x, axis, options, sizes[i], scales[i], roi[i])
        if outside is not None:
            outside_masks.append((axis, outside))
    for axis, outside in outside_masks:
        if outside.any():
            mask = gc.tensor(outside.reshape((-1,) + (1,) * (x.ndim - axis - 1)))
            x = gc.where(mask, gc.tensor(extrapolation, dtype=x.dtype), x)
    return x


def _scales_and_sizes(
    node: NodeContext, in_sizes: list[int], policy: str
) -> tuple[list[float], list[int]]:
    """Return each resized axis's scale and output size, from `scales` or from `sizes`
    (with the keep_aspect_ratio_policy), as ONNX computes them."""
    scales = node.static(2, "scales")
    if scales is not None and scales.size:
        if len(scales) != len(in_sizes):
            raise node.error(f"scales {scales.tolist()} needs one entry per resized axis")
        factors = [float(s) for s in scales]
        return factors, [int(f * n) for f, n in zip(factors, in_sizes, strict=True)]
    given = node.ints(3, "sizes")
    if given is None or len(given) != len(in_sizes):
        raise node.error(f"needs scales, or sizes with one entry per resized axis, got {given}")
    factors = [out / n for out, n in zip(given, in_sizes, strict=True)]
    if policy == "stretch":
        return factors, given
    common = min(factors) if policy == "not_larger" else max(factors)
    return [common] * len(in_sizes), [int(common * n + 0.5) for n in in_sizes]


def _roi(node: NodeContext, options: _Options, count: int) -> list[tuple[float, float]]:
    """Return each resized axis's (start, end) region: tf_crop_and_resize's roi input, or the
    whole axis (roi is ignored in the other modes)."""
    if options.coordinates != "tf_crop_and_resize":
        return [(0.0, 1.0)] * count
    roi = node.static(1, "roi")
    if roi is None or roi.size != 2 * count:
        raise node.error("tf_crop_and_resize needs roi with 2 entries per resized axis")
    flat = [float(v) for v in roi]
    return [(flat[i], flat[count + i]) for i in range(count)]
