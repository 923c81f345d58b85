"""graphc.nn.functional: the functional forms of the layers (torch.nn.functional's names,
arguments and semantics), written with the public Tensor API.

Every function builds graph nodes; none computes anything. Functions that would update
state in place in PyTorch (batch_norm's running statistics, dropout's generator) cannot do
so here: the BatchNorm and Dropout modules record those changes as state updates instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import graphc as gc
from graphc.dims import Dim, same_dims, static_dim, static_shape
from graphc.nn._checks import float_arg, graph_error, pair, shape_error, shape_text, tensor_arg
from graphc.nn.attention import scaled_dot_product_attention
from graphc.nn.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)
from graphc.nn.pointwise import (
    dropout,
    elu,
    gelu,
    hardtanh,
    leaky_relu,
    mish,
    relu,
    sigmoid,
    silu,
    softplus,
    tanh,
)
from graphc.reductions import stop_gradient
from graphc.tensor import Tensor

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "conv_transpose2d",
    "cross_entropy",
    "dropout",
    "elu",
    "embedding",
    "gelu",
    "hardtanh",
    "interpolate",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mish",
    "mse_loss",
    "nll_loss",
    "pad",
    "relu",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
    "upsample",
]


# -- linear (the activations are in pointwise.py) --------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """Return input @ weight.T + bias, with weight of shape (out_features, in_features)."""
    x = float_arg(input, "linear: the input")
    if weight.ndim != 2:
        raise shape_error(f"linear: weight must be 2-d (out, in), got {shape_text(weight.shape)}")
    if x.ndim == 0 or not same_dims(x.shape[-1:], weight.shape[1:]):
        raise shape_error(
            f"linear: the input's last dim must be in_features={weight.shape[1]} (weight "
            f"{shape_text(weight.shape)} is (out_features, in_features)), got an input of shape "
            f"{shape_text(x.shape)}"
        )
    y = x @ weight.mT
    return y if bias is None else y + bias


def _softmax_dim(x: Tensor, dim: int | None) -> int:
    # PyTorch's legacy choice when no dim is given (it warns; we follow it silently).
    if dim is not None:
        return dim
    return 0 if x.ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002
    """Return exp(input) / sum(exp(input)) over dim, computed without overflow."""
    x = float_arg(input, "softmax: the input")
    return gc.softmax(x, _softmax_dim(x, dim))


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002
    """Return input - logsumexp(input) over dim (stable for large values)."""
    x = float_arg(input, "log_softmax: the input")
    return gc.log_softmax(x, _softmax_dim(x, dim))


# -- convolution and pooling -------------------------------------------------------------------
def _spatial_input(x: Tensor, function: str) -> tuple[Tensor, bool]:
    """Return x as a 4-d batch, and whether it was an unbatched 3-d input."""
    if x.ndim == 3:
        return x.unsqueeze(0), True
    if x.ndim != 4:
        raise shape_error(
            f"{function}: expected a 4-d (N, C, H, W) or 3-d (C, H, W) input, got shape "
            f"{shape_text(x.shape)}"
        )
    return x, False


def _same_padding(
    x: Tensor, weight: Tensor, stride: Any, dilation: Any
) -> tuple[Tensor, tuple[int, int]]:
    if pair(stride, "stride") != (1, 1):
        raise graph_error("conv2d: padding='same' is not supported for strided convolutions")
    dh, dw = pair(dilation, "dilation")
    kh, kw = (static_dim(d, "conv2d: the kernel size") for d in weight.shape[2:4])
    total_h, total_w = dh * (kh - 1), dw * (kw - 1)
    before = (total_h // 2, total_w // 2)
    if total_h % 2 or total_w % 2:  # PyTorch puts the odd pixel at the bottom and the right
        x = gc.pad(x, (0, total_w % 2, 0, total_h % 2))
    return x, before


def conv2d(
    input: Tensor,  # noqa: A002
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Return the 2-D convolution of (N, C, H, W) input with (O, C/groups, kH, kW) weight;
    padding may also be 'valid' or 'same'."""
    x, unbatched = _spatial_input(float_arg(input, "conv2d: the input"), "conv2d")
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            x, padding = _same_padding(x, weight, stride, dilation)
        else:
            raise graph_error("conv2d: padding must be an int, a pair, 'valid' or 'same'")
    y = gc.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(
    input: Tensor,  # noqa: A002
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """Return the transposed convolution of (N, C_in, H, W) input with (C_in, C_out/groups,
    kH, kW) weight (PyTorch's layout)."""
    x, unbatched = _spatial_input(
        float_arg(input, "conv_transpose2d: the input"), "conv_transpose2d"
    )
    extras = pair(output_padding, "output_padding")
    strides, dilations = pair(stride, "stride"), pair(dilation, "dilation")
    for axis, o, s, d in zip("HW", extras, strides, dilations, strict=True):
        if o >= max(s, d):
            raise graph_error(
                f"conv_transpose2d: output_padding {o} along {axis} must be smaller than "
                f"stride {s} or dilation {d}"
            )
    if weight.ndim == 4 and not same_dims(x.shape[1:2], weight.shape[:1]):
        raise shape_error(
            f"conv_transpose2d: weight {shape_text(weight.shape)} (in, out/groups, kH, kW) "
            f"expects {weight.shape[0]} input channels, the input {shape_text(x.shape)} has "
            f"{x.shape[1]}"
        )
    y = gc.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return y.squeeze(0) if unbatched else y


def check_pooling_options(
    function: str, *, return_indices: bool = False, divisor_override: int | None = None
) -> None:
    """Raise a GraphError for the pooling options graphc does not support or PyTorch
    rejects."""
    if return_indices:
        raise graph_error(f"{function}: return_indices=True is not supported")
    if divisor_override is not None and (
        not isinstance(divisor_override, int) or divisor_override == 0
    ):
        raise graph_error(
            f"{function}: divisor_override must be a nonzero int, got {divisor_override!r}"
        )


def max_pool2d(
    input: Tensor,  # noqa: A002
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor:
    """Return the maximum of each window (stride defaults to kernel_size), whose taps are
    dilation apart; ceil_mode keeps a partial last window that starts inside the input or its
    left padding."""
    check_pooling_options("max_pool2d", return_indices=return_indices)
    x, unbatched = _spatial_input(float_arg(input, "max_pool2d: the input"), "max_pool2d")
    y = gc.max_pool2d(x, kernel_size, stride or None, padding, dilation, ceil_mode)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(
    input: Tensor,  # noqa: A002
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Return the mean of each window (stride defaults to kernel_size), or its sum over
    divisor_override; ceil_mode keeps a partial last window that starts inside the input or its
    left padding, divided by the positions it covers up to the end of the padding
    (count_include_pad) or in the input."""
    check_pooling_options("avg_pool2d", divisor_override=divisor_override)
    x, unbatched = _spatial_input(float_arg(input, "avg_pool2d: the input"), "avg_pool2d")
    y = gc.avg_pool2d(
        x, kernel_size, stride or None, padding, count_include_pad, ceil_mode, divisor_override
    )
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool2d(input: Tensor, output_size: int | Sequence[int | None]) -> Tensor:  # noqa: A002
    """Return the mean over output_size regions: any size that divides the input (1 gives
    global average pooling); None keeps that dim."""
    x, unbatched = _spatial_input(
        float_arg(input, "adaptive_avg_pool2d: the input"), "adaptive_avg_pool2d"
    )
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    height, width = x.shape[2], x.shape[3]
    out = tuple(d if s is None else s for s, d in zip(sizes, (height, width), strict=True))
    if out == (1, 1):
        y = x.mean(dim=(2, 3), keepdim=True)
    else:
        in_hw = static_shape((height, width), "adaptive_avg_pool2d: the input's height and width")
        out_hw = static_shape(out, "adaptive_avg_pool2d: the output size")
        if in_hw[0] % out_hw[0] or in_hw[1] % out_hw[1]:
            raise shape_error(
                f"adaptive_avg_pool2d: output size {out} must divide the input's {height}x{width} "
                "(overlapping adaptive windows are not supported)"
            )
        kernel = (in_hw[0] // out_hw[0], in_hw[1] // out_hw[1])
        y = gc.avg_pool2d(x, kernel, kernel)
    return y.squeeze(0) if unbatched else y


# -- normalisation -------------------------------------------------------------------------
def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return the per-channel (dim 1) mean, biased variance and unbiased variance of a batch,
    each of shape (C,)."""
    axes = tuple(d for d in range(x.ndim) if d != 1)
    return x.mean(axes), x.var(axes, correction=0), x.var(axes, correction=1)


def channel_affine(
    x: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    """Return (x - mean) / sqrt(var + eps) * weight + bias with (C,) statistics on dim 1."""
    view = (-1,) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(*view)) * gc.rsqrt(var.reshape(*view) + eps)
    if weight is not None:
        y = y * weight.reshape(*view)
    if bias is not None:
        y = y + bias.reshape(*view)
    return y


def check_batch_norm_input(x: Tensor, num_features: Dim, function: str) -> None:
    """Raise a ShapeError unless x is (N, C, ...) with C == num_features."""
    if x.ndim < 2 or not same_dims(x.shape[1:2], (num_features,)):
        raise shape_error(
            f"{function}: expected an input of shape (N, {num_features}, ...), got "
            f"{shape_text(x.shape)}"
        )


def batch_norm(
    input: Tensor,  # noqa: A002
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Return input normalised per channel (dim 1): with the batch's statistics when training
    (or when no running statistics are given), else with the running ones.

    The running statistics are not updated here (a graph cannot write in place); the
    BatchNorm modules record their updates, see Module.state_updates().
    """
    x = float_arg(input, "batch_norm: the input")
    given = next((t for t in (running_mean, running_var, weight, bias) if t is not None), None)
    if given is not None:
        check_batch_norm_input(x, given.shape[0], "batch_norm")
    elif x.ndim < 2:
        raise shape_error(f"batch_norm: expected an (N, C, ...) input, got {shape_text(x.shape)}")
    if training or running_mean is None or running_var is None:
        mean, var, _ = batch_statistics(x)
    else:
        mean, var = running_mean, running_var
    return channel_affine(x, mean, var, weight, bias, eps)


def layer_norm(
    input: Tensor,  # noqa: A002
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Return input normalised over its last len(normalized_shape) dims, then scaled and
    shifted elementwise by weight and bias."""
    x = float_arg(input, "layer_norm: the input")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if x.ndim < k or not same_dims(x.shape[x.ndim - k :], shape):
        raise shape_error(
            f"layer_norm: the input's last dims must be normalized_shape={shape_text(shape)}, "
            f"got an input of shape {shape_text(x.shape)}"
        )
    axes = tuple(range(x.ndim - k, x.ndim))
    mean = x.mean(axes, keepdim=True)
    var = x.var(axes, keepdim=True, correction=0)
    y = (x - mean) * gc.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# -- embedding -------------------------------------------------------------------------------
def embedding(
    input: Tensor,  # noqa: A002
    weight: Tensor,
    padding_idx: int | None = None,
) -> Tensor:
    """Return the rows of weight (num_embeddings, dim) at the integer indices in input, with
    shape input.shape + (dim,); the padding_idx row gets no gradient."""
    idx = tensor_arg(input, "embedding: the indices")
    if not idx.dtype.is_int:
        raise gc.errors.DTypeError(
            gc.errors.located(
                f"embedding: indices must be an integer tensor (int64 or int32), got {idx!r}",
                gc.errors.user_location(),
            )
        )
    if weight.ndim != 2:
        raise shape_error(f"embedding: weight must be 2-d, got {shape_text(weight.shape)}")
    rows = weight[idx]
    if padding_idx is None:
        return rows
    num = static_dim(weight.shape[0], "embedding: with padding_idx, the number of rows")
    if not -num <= padding_idx < num:
        raise graph_error(f"embedding: padding_idx {padding_idx} is out of range for {num} rows")
    padding_idx %= num
    is_padding = (idx == padding_idx).unsqueeze(-1)
    # The padding row's value is still read, but no gradient flows back to it.
    return gc.where(is_padding, stop_gradient(rows), rows)


# -- resampling and padding ---------------------------------------------------------------------
_RESAMPLED = "interpolate: the input's spatial dims"


def _output_sizes(x: Tensor, size: Any, scale_factor: Any) -> tuple[list[int], list[float | None]]:
    spatial = x.ndim - 2
    if (size is None) == (scale_factor is None):
        raise graph_error("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = [size] * spatial if isinstance(size, int) else list(size)
        scales: list[float | None] = [None] * spatial
    else:
        factors = (
            [float(scale_factor)] * spatial
            if isinstance(scale_factor, (int, float))
            else [float(s) for s in scale_factor]
        )
        scales = list(factors)
        in_sizes = static_shape(x.shape[2:], _RESAMPLED)
        sizes = [math.floor(d * f) for d, f in zip(in_sizes, factors, strict=True)]
    if len(sizes) != spatial or len(scales) != spatial:
        raise shape_error(
            f"interpolate: {spatial} spatial dims in {shape_text(x.shape)}, got size={size} "
            f"scale_factor={scale_factor}"
        )
    return sizes, scales


def _source_scale(in_size: int, out_size: int, scale: float | None, align: bool) -> np.float32:
    if align:
        return np.float32((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    return np.float32(1.0 / scale if scale else in_size / out_size)


def _along(x: Tensor, axis: int, index: np.ndarray) -> Tensor:
    if np.array_equal(index, np.arange(static_dim(x.shape[axis], _RESAMPLED))):
        return x
    return x[(slice(None),) * axis + (index.astype(np.int64),)]


def _resample_axis(
    x: Tensor, axis: int, out_size: int, scale: float | None, mode: str, align: bool
) -> Tensor:
    in_size = static_dim(x.shape[axis], _RESAMPLED)
    dst = np.arange(out_size, dtype=np.float32)
    if mode == "nearest":
        step = _source_scale(in_size, out_size, scale, False)
        index = np.minimum(np.floor(dst * step).astype(np.int64), in_size - 1)
        return _along(x, axis, index)
    step = _source_scale(in_size, out_size, scale, align)
    if align:
        src = step * dst
    else:
        src = np.maximum(step * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    low = src.astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = (src - low.astype(np.float32)).astype(x.dtype.numpy)
    if not frac.any():
        return _along(x, axis, low)
    view = (-1,) + (1,) * (x.ndim - axis - 1)
    weight_high = gc.tensor(frac.reshape(view))
    weight_low = gc.tensor((1 - frac).reshape(view))
    return _along(x, axis, low) * weight_low + _along(x, axis, high) * weight_high


def interpolate(
    input: Tensor,  # noqa: A002
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> Tensor:
    """Return input (N, C, *spatial) resized by 'nearest', 'linear' (3-d) or 'bilinear'
    (4-d) interpolation, with PyTorch's pixel-centre conventions."""
    x = float_arg(input, "interpolate: the input")
    spatial_modes = {"nearest": None, "linear": 1, "bilinear": 2}
    if mode not in spatial_modes:
        raise graph_error(f"interpolate: mode must be one of {list(spatial_modes)}, got {mode!r}")
    wanted = spatial_modes[mode]
    if x.ndim < 3 or (wanted is not None and x.ndim != wanted + 2):
        raise shape_error(
            f"interpolate: mode {mode!r} needs a {wanted + 2 if wanted else '3-d or more'}-d "
            f"(N, C, ...) input, got {shape_text(x.shape)}"
        )
    if mode == "nearest" and align_corners is not None:
        raise graph_error("interpolate: align_corners only applies to the linear modes")
    if any(not isinstance(d, int) for d in x.shape[2:]):
        raise shape_error(f"interpolate: spatial dims must be concrete, got {shape_text(x.shape)}")
    sizes, scales = _output_sizes(x, size, scale_factor)
    if recompute_scale_factor:
        scales = [None] * len(scales)
    # The last axis first: PyTorch interpolates along the width inside the height.
    for axis in reversed(range(2, x.ndim)):
        position = axis - 2
        x = _resample_axis(x, axis, sizes[position], scales[position], mode, bool(align_corners))
    return x


upsample = interpolate


def pad(
    input: Tensor,  # noqa: A002
    pad: Sequence[int],
    mode: str = "constant",
    value: float | None = None,
) -> Tensor:
    """Return input padded with a constant; pad lists (before, after) pairs from the last
    dim backwards, as in torch.nn.functional.pad, and a negative width crops."""
    if mode != "constant":
        raise graph_error(f"pad: only mode='constant' is supported, got {mode!r}")
    return gc.pad(tensor_arg(input, "pad: the input"), pad, 0.0 if value is None else value)
