"""The elementwise activations and dropout of graphc.nn.functional (torch.nn.functional's
names, arguments and values, NaN and infinities included), composed from primitives with the
Tensor API, so their gradients (of any order) come from the primitives' rules.

Where a branch of `gc.where` is not taken, its input is clamped first (softplus's exp, elu's
expm1): otherwise the branch would overflow and its zero gradient, times inf, would be NaN.
`inplace` is accepted and ignored, as for ReLU: a graph has no aliasing.
"""

from __future__ import annotations

import math

import graphc as gc
from graphc.nn._checks import float_arg, graph_error, tensor_arg
from graphc.tensor import Tensor

_SQRT_HALF = math.sqrt(0.5)
_SQRT_TWO_OVER_PI = math.sqrt(2 / math.pi)


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """Return max(input, 0) (gradient 0 at 0, as in PyTorch)."""
    return gc.relu(tensor_arg(input, "relu: the input"))


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """Return 1 / (1 + exp(-input))."""
    return gc.sigmoid(tensor_arg(input, "sigmoid: the input"))


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    """Return tanh(input)."""
    return gc.tanh(tensor_arg(input, "tanh: the input"))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """Return x * Phi(x) with the erf form ('none') or the tanh approximation ('tanh')."""
    x = float_arg(input, "gelu: the input")
    if approximate == "none":
        return x * 0.5 * (1 + gc.erf(x * _SQRT_HALF))
    if approximate == "tanh":
        inner = _SQRT_TWO_OVER_PI * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + gc.tanh(inner))
    raise graph_error(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """Return x * sigmoid(x) (NaN at -inf, as in PyTorch)."""
    x = float_arg(input, "silu: the input")
    return x * gc.sigmoid(x)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    """Return log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (as
    PyTorch, which reverts to the linear function there for stability)."""
    x = float_arg(input, "softplus: the input")
    scaled = x * beta
    linear = scaled > threshold
    curved = gc.where(linear, 0.0, scaled)
    return gc.where(linear, x, gc.log1p(gc.exp(curved)) / beta)


def mish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """Return x * tanh(softplus(x))."""
    x = float_arg(input, "mish: the input")
    return x * gc.tanh(softplus(x))


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    """Return x where x > 0, alpha * (exp(x) - 1) elsewhere (NaN passes with gradient 1, as in
    PyTorch)."""
    x = float_arg(input, "elu: the input")
    negative = x <= 0
    return gc.where(negative, gc.expm1(gc.where(negative, x, 0.0)) * alpha, x)


def hardtanh(
    input: Tensor,  # noqa: A002
    min_val: float = -1.0,
    max_val: float = 1.0,
    inplace: bool = False,
) -> Tensor:
    """Return x limited to [min_val, max_val]; the gradient is 1 strictly inside, 0 from the
    bounds on (NaN stays NaN with gradient 1), as in PyTorch."""
    x = float_arg(input, "hardtanh: the input")
    if min_val > max_val:
        raise graph_error(
            f"hardtanh: min_val cannot be greater than max_val, got {min_val} > {max_val}"
        )
    return gc.where(x <= min_val, min_val, gc.where(x >= max_val, max_val, x))


def leaky_relu(
    input: Tensor,  # noqa: A002
    negative_slope: float = 0.01,
    inplace: bool = False,
) -> Tensor:
    """Return x where positive, negative_slope * x elsewhere."""
    x = tensor_arg(input, "leaky_relu: the input")
    return gc.where(x > 0, x, x * negative_slope)


def dropout(
    input: Tensor,  # noqa: A002
    p: float = 0.5,
    training: bool = True,
    step: Tensor | None = None,
) -> Tensor:
    """Return input with elements zeroed with probability p and the rest scaled by 1/(1-p).

    The mask comes from gc.rand: `step`, an integer scalar (a Variable that the compiled
    Function's updates advance), gives a fresh mask on every call; without it a compiled
    Function draws the same mask each call. nn.Dropout manages its own step.
    """
    x = float_arg(input, "dropout: the input")
    if not 0.0 <= p <= 1.0:
        raise graph_error(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = gc.rand(*x.shape, dtype=x.dtype, step=step) >= p
    return gc.where(keep, x / (1.0 - p), 0.0)
