"""Activation modules: ReLU, Sigmoid, Tanh, GELU, LeakyReLU, Softmax, LogSoftmax."""

from __future__ import annotations

from graphc.nn import functional as F
from graphc.nn._checks import graph_error
from graphc.nn.module import Module
from graphc.tensor import Tensor


class ReLU(Module):
    """max(x, 0) elementwise (inplace is accepted and ignored: graphs have no aliasing)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return relu(input)."""
        return F.relu(input)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return sigmoid(input)."""
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x) elementwise."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return tanh(input)."""
        return F.tanh(input)


class GELU(Module):
    """x * Phi(x) (the erf form), or its tanh approximation with approximate='tanh'."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise graph_error(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return gelu(input)."""
        return F.gelu(input, self.approximate)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"approximate={self.approximate!r}"


class LeakyReLU(Module):
    """x where positive, negative_slope * x elsewhere."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return leaky_relu(input)."""
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Softmax(Module):
    """Softmax over dim."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return softmax(input, dim)."""
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """Log-softmax over dim."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return log_softmax(input, dim)."""
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"dim={self.dim}"
