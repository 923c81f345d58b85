"""Conv2d and ConvTranspose2d with PyTorch's weight layouts and initialisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from graphc.dims import same_dims, static_dim
from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn._checks import graph_error, pair, shape_error, shape_text, tensor_arg
from graphc.nn.linear import init_bias, new_parameter
from graphc.nn.module import Module
from graphc.tensor import Tensor

IntPair = int | Sequence[int]


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: hyperparameters, parameters, init, repr."""

    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair,
        padding: IntPair | str,
        dilation: IntPair,
        output_padding: IntPair,
        groups: int,
        bias: bool,
        padding_mode: str,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise graph_error(
                f"{name}: in_channels={in_channels} and out_channels={out_channels} must both "
                f"be divisible by groups={groups}"
            )
        if padding_mode != "zeros":
            raise graph_error(
                f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}"
            )
        if isinstance(padding, str) and padding not in ("valid", "same"):
            raise graph_error(f"{name}: padding must be an int, a pair, 'valid' or 'same'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.output_padding = pair(output_padding, "output_padding")
        self.groups = groups
        self.padding_mode = padding_mode
        if self.transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = new_parameter(self, "weight", shape)
        if bias:
            self.bias = new_parameter(self, "bias", (out_channels,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw PyTorch's default initial values (kaiming-uniform weight, uniform bias)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight)
        init_bias(self.bias, fan_in)

    def _checked_input(self, input: Tensor) -> Tensor:  # noqa: A002
        x = tensor_arg(input, f"{type(self).__name__}: the input")
        if x.ndim not in (3, 4) or not same_dims(x.shape[-3:-2], (self.in_channels,)):
            raise shape_error(
                f"{self!r} expects an input of shape (N, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got {shape_text(x.shape)}"
            )
        return x

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W); weight (out_channels, in_channels/groups, kH, kW)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            0,
            groups,
            bias,
            padding_mode,
        )

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return the convolution of input with the weight, plus the bias."""
        x = self._checked_input(input)
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution; weight (in_channels, out_channels/groups, kH, kW)."""

    transposed = True
    padding: tuple[int, int]  # never a string here, unlike Conv2d's

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntPair = 1,
        padding_mode: str = "zeros",
    ) -> None:
        if isinstance(padding, str):
            raise graph_error("ConvTranspose2d: padding must be an int or a pair")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            output_padding,
            groups,
            bias,
            padding_mode,
        )

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:  # noqa: A002
        """Return the transposed convolution of input; output_size (H, W) picks the
        output_padding that reaches it."""
        x = self._checked_input(input)
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = self._padding_for(x, tuple(output_size)[-2:])
        return F.conv_transpose2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )

    def _padding_for(self, x: Tensor, size: tuple[int, ...]) -> tuple[int, int]:
        result = []
        for axis in range(2):
            in_size = static_dim(x.shape[-2 + axis], f"{self!r}: the input's height and width")
            smallest = (
                (in_size - 1) * self.stride[axis]
                - 2 * self.padding[axis]
                + self.dilation[axis] * (self.kernel_size[axis] - 1)
                + 1
            )
            extra = size[axis] - smallest
            if not 0 <= extra < max(self.stride[axis], self.dilation[axis]):
                raise shape_error(
                    f"{self!r}: output_size {tuple(size)} is not reachable from an input of "
                    f"shape {shape_text(x.shape)} (dim {axis} can be {smallest} to "
                    f"{smallest + max(self.stride[axis], self.dilation[axis]) - 1})"
                )
            result.append(extra)
        return result[0], result[1]
