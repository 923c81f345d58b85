"""Activation modules: ReLU, Sigmoid, Tanh, GELU, SiLU, Mish, Softplus, ELU, Hardtanh,
LeakyReLU, Softmax, LogSoftmax (PyTorch's arguments and reprs)."""

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
        return _inplace_text(self.inplace, first=True)


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


def _inplace_text(inplace: bool, first: bool = False) -> str:
    """Return how PyTorch's repr shows inplace: nothing unless it is set."""
    if not inplace:
        return ""
    return "inplace=True" if first else ", inplace=True"


class SiLU(Module):
    """x * sigmoid(x) elementwise (inplace is accepted and ignored)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return silu(input)."""
        return F.silu(input)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return _inplace_text(self.inplace, first=True)


class Mish(Module):
    """x * tanh(softplus(x)) elementwise (inplace is accepted and ignored)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return mish(input)."""
        return F.mish(input)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return _inplace_text(self.inplace, first=True)


class Softplus(Module):
    """log(1 + exp(beta * x)) / beta, linear where beta * x > threshold."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return softplus(input, beta, threshold)."""
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"beta={self.beta}, threshold={self.threshold}"


class ELU(Module):
    """x where positive, alpha * (exp(x) - 1) elsewhere (inplace is accepted and ignored)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return elu(input, alpha)."""
        return F.elu(input, self.alpha)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"alpha={self.alpha}" + _inplace_text(self.inplace)


class Hardtanh(Module):
    """x limited to [min_val, max_val] (inplace is accepted and ignored)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        if not max_val > min_val:
            raise graph_error(
                f"Hardtanh: max_val ({max_val}) must be greater than min_val ({min_val})"
            )
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return hardtanh(input, min_val, max_val)."""
        return F.hardtanh(input, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return f"min_val={self.min_val}, max_val={self.max_val}" + _inplace_text(self.inplace)


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
        return f"negative_slope={self.negative_slope}" + _inplace_text(self.inplace)


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
