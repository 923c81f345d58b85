"""Linear, Identity, Flatten and Unflatten."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.dims import same_dims
from graphc.nn import functional as F
from graphc.nn import init
from graphc.nn._checks import shape_error, shape_text, tensor_arg
from graphc.nn.module import Module, Parameter
from graphc.tensor import Tensor


def new_parameter(module: Module, name: str, shape: Sequence[int]) -> Parameter:
    """Return a zero float32 Parameter with a unique name for one of module's attributes."""
    return Parameter(np.zeros(tuple(shape), np.float32), name=module.variable_name(name))


def init_bias(bias: Parameter | None, fan_in: int) -> None:
    """Draw a bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default."""
    if bias is not None:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Return the input unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input."""
        return input


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = new_parameter(self, "weight", (out_features, in_features))
        if bias:
            self.bias = new_parameter(self, "bias", (out_features,))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw PyTorch's default initial values (kaiming-uniform weight, uniform bias)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        init_bias(self.bias, self.in_features)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input @ weight.T + bias for input (..., in_features)."""
        x = tensor_arg(input, "Linear: the input")
        if x.ndim == 0 or not same_dims(x.shape[-1:], (self.in_features,)):
            raise shape_error(
                f"{self!r} expects an input whose last dim is in_features={self.in_features}, "
                f"got an input of shape {shape_text(x.shape)}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Flatten(Module):
    """Merge dims start_dim..end_dim into one (by default all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input flattened."""
        return tensor_arg(input, "Flatten: the input").flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim into unflattened_size."""

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input with dim split into unflattened_size."""
        x = tensor_arg(input, "Unflatten: the input")
        dim = self.dim % x.ndim
        return x.reshape(*x.shape[:dim], *self.unflattened_size, *x.shape[dim + 1 :])

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
