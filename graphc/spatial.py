"""Convolution, pooling, padding and gather in the Tensor API (PyTorch's functional names and
argument conventions; layouts are NCHW)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphc.dims import dims_equal, format_shape
from graphc.errors import ShapeError, user_op
from graphc.math_ops import as_tensor, result_dtype
from graphc.ops.registry import make_node
from graphc.ops.shape_rules import normalize_axis
from graphc.tensor import Tensor


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    items = (value, value) if isinstance(value, int) else tuple(value)
    if len(items) == 2:
        first, second = items
        if isinstance(first, int) and isinstance(second, int):
            return first, second
    raise ShapeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _conv_attrs(stride, padding, dilation, groups) -> dict[str, Any]:
    return {
        "stride": _pair(stride, "stride"),
        "padding": _pair(padding, "padding"),
        "dilation": _pair(dilation, "dilation"),
        "groups": int(groups),
    }


@user_op
def conv2d(
    input: Tensor,  # noqa: A002 - PyTorch's name
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """Return the 2-D convolution of input (N, C, H, W) with weight (O, C/groups, kH, kW)."""
    dtype = result_dtype(input, weight)
    x, w = as_tensor(input, dtype), as_tensor(weight, dtype)
    out = Tensor(
        make_node("conv2d", [x.node, w.node], _conv_attrs(stride, padding, dilation, groups))
    )
    return out if bias is None else out + as_tensor(bias, dtype).reshape(-1, 1, 1)


@user_op
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
    """Return the transposed convolution of input (N, C_in, H, W) with weight
    (C_in, C_out/groups, kH, kW), PyTorch's layout: the gradient of conv2d w.r.t. its input."""
    dtype = result_dtype(input, weight)
    x, w = as_tensor(input, dtype), as_tensor(weight, dtype)
    attrs = _conv_attrs(stride, padding, dilation, groups)
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"input and weight must be 4-d, got {x!r} and {w!r}")
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oph, opw = _pair(output_padding, "output_padding")
    kh, kw = w.shape[2], w.shape[3]
    height = (x.shape[2] - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    width = (x.shape[3] - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    attrs["input_hw"] = (height, width)
    out = Tensor(make_node("conv2d_input_grad", [x.node, w.node], attrs))
    return out if bias is None else out + as_tensor(bias, dtype).reshape(-1, 1, 1)


def _pool_attrs(kernel_size, stride, padding, ceil_mode) -> dict[str, Any]:
    kernel = _pair(kernel_size, "kernel_size")
    return {
        "kernel": kernel,
        "stride": kernel if stride is None else _pair(stride, "stride"),
        "padding": _pair(padding, "padding"),
        "ceil_mode": bool(ceil_mode),
    }


@user_op
def max_pool2d(
    input: Tensor,  # noqa: A002
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> Tensor:
    """Return the maximum over each kernel_size window (stride defaults to kernel_size), whose
    taps are dilation apart; ceil_mode counts windows as torch.nn.functional.max_pool2d."""
    attrs = {
        **_pool_attrs(kernel_size, stride, padding, ceil_mode),
        "dilation": _pair(dilation, "dilation"),
    }
    return Tensor(make_node("max_pool2d", [as_tensor(input).node], attrs))


@user_op
def avg_pool2d(
    input: Tensor,  # noqa: A002
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    count_include_pad: bool = True,
    ceil_mode: bool = False,
    divisor_override: int | None = None,
) -> Tensor:
    """Return the mean over each kernel_size window (stride defaults to kernel_size), or its
    sum over divisor_override; ceil_mode counts windows, and divides the partial last ones,
    as torch.nn.functional.avg_pool2d."""
    attrs = {
        **_pool_attrs(kernel_size, stride, padding, ceil_mode),
        "count_include_pad": bool(count_include_pad),
    }
    if divisor_override is not None:
        attrs["divisor_override"] = int(divisor_override)
    return Tensor(make_node("avg_pool2d", [as_tensor(input).node], attrs))


@user_op
def pad(input: Tensor, pad: Sequence[int], value: float = 0.0) -> Tensor:  # noqa: A002
    """Return input padded with a constant; `pad` lists (before, after) pairs starting from
    the last dim, as in torch.nn.functional.pad. A negative width crops that many elements."""
    x = as_tensor(input)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ShapeError(f"pad needs (before, after) pairs for at most {x.ndim} dims, got {pad}")
    pairs = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        pairs[x.ndim - 1 - k] = (int(pad[2 * k]), int(pad[2 * k + 1]))
    if any(not isinstance(d, int) and min(p) < 0 for d, p in zip(x.shape, pairs, strict=True)):
        # Crop symbolic dims with a slice first: each call checks its bounds against the sizes.
        crops = [
            (0, 0) if isinstance(d, int) else (max(-lo, 0), max(-hi, 0))
            for d, (lo, hi) in zip(x.shape, pairs, strict=True)
        ]
        attrs = {
            "starts": tuple(lo for lo, _ in crops),
            "sizes": tuple(d - (lo + hi) for d, (lo, hi) in zip(x.shape, crops, strict=True)),
            "steps": (1,) * x.ndim,
        }
        x = Tensor(make_node("slice", [x.node], attrs))
        pairs = [
            (lo + c_lo, hi + c_hi) for (lo, hi), (c_lo, c_hi) in zip(pairs, crops, strict=True)
        ]
    if all(p == (0, 0) for p in pairs):
        return x
    return Tensor(make_node("pad", [x.node], {"pads": tuple(pairs), "value": value}))


@user_op
def gather(input: Tensor, dim: int, index: Any) -> Tensor:  # noqa: A002
    """Return input's values at `index` along dim, as torch.gather: out[i][j] = x[i][index[i][j]]
    for dim=1. The output has index's shape: index has input's number of dims and is no larger
    than input in the others. Indices must lie in [0, size): a negative or too large one raises
    IndexingError when the graph runs."""
    x, idx = as_tensor(input), as_tensor(index)
    axis = normalize_axis(dim, x.ndim, x.shape)
    if idx.ndim != x.ndim:
        raise ShapeError(
            f"index {format_shape(idx.shape)} must have as many dims as the input "
            f"{format_shape(x.shape)}"
        )
    sizes = []
    for d, (size, wanted) in enumerate(zip(x.shape, idx.shape, strict=True)):
        if d == axis or dims_equal(size, wanted):
            sizes.append(size)
        elif isinstance(size, int) and isinstance(wanted, int) and wanted > size:
            raise ShapeError(
                f"index {format_shape(idx.shape)} must be no larger than the input "
                f"{format_shape(x.shape)} apart from dim {axis}, but dim {d} has {wanted} > {size}"
            )
        else:
            sizes.append(wanted)  # a symbolic size is checked when the graph runs (slice)
    if any(not dims_equal(a, b) for a, b in zip(sizes, x.shape, strict=True)):
        # torch.gather reads only the leading part of input where index is smaller.
        attrs = {"starts": (0,) * x.ndim, "sizes": tuple(sizes), "steps": (1,) * x.ndim}
        x = Tensor(make_node("slice", [x.node], attrs))
    return Tensor(make_node("gather", [x.node, idx.node], {"axis": axis, "wrap_negative": False}))
