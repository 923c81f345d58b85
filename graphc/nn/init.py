"""Parameter initialisation (torch.nn.init): each function draws from gc.manual_seed's
generator and writes the values into the Variable in place.

Values are drawn by evaluating gc.rand / gc.randn, so they are reproducible from the seed on
any machine; they follow PyTorch's distributions, not its bits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.creation import rand, randn
from graphc.errors import GraphError, ShapeError, located, user_location
from graphc.variable import Variable


def _draw(kind: str, variable: Variable) -> np.ndarray:
    from graphc.compiler import compile as compile_function

    shape = variable.storage.shape
    draw = (rand if kind == "uniform" else randn)(*shape, dtype=variable.dtype)
    # The reference backend reproduces the generator exactly and compiles in no time.
    return compile_function([], [draw], backend="reference", optimize=False)()


def _require_float(variable: Variable, function: str) -> None:
    if not isinstance(variable, Variable) or not variable.dtype.is_float:
        raise GraphError(
            located(
                f"nn.init.{function}: needs a floating-point Variable, got {variable!r}",
                user_location(),
            )
        )


def uniform_(variable: Variable, a: float = 0.0, b: float = 1.0) -> Variable:
    """Fill the Variable with values from U(a, b); returns it."""
    _require_float(variable, "uniform_")
    u = _draw("uniform", variable)
    variable.assign((a + (b - a) * u.astype(np.float64)).astype(u.dtype))
    return variable


def normal_(variable: Variable, mean: float = 0.0, std: float = 1.0) -> Variable:
    """Fill the Variable with values from N(mean, std**2); returns it."""
    _require_float(variable, "normal_")
    z = _draw("normal", variable)
    variable.assign((mean + std * z.astype(np.float64)).astype(z.dtype))
    return variable


def constant_(variable: Variable, value: float) -> Variable:
    """Fill the Variable with value; returns it."""
    variable.assign(np.full(variable.storage.shape, value, dtype=variable.dtype.numpy))
    return variable


def zeros_(variable: Variable) -> Variable:
    """Fill the Variable with zeros; returns it."""
    return constant_(variable, 0)


def ones_(variable: Variable) -> Variable:
    """Fill the Variable with ones; returns it."""
    return constant_(variable, 1)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Return the recommended gain for a nonlinearity (torch.nn.init.calculate_gain)."""
    linear = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"}
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise GraphError(located(f"calculate_gain: unknown nonlinearity {nonlinearity!r}", None))


def calculate_fan_in_and_fan_out(variable: Any) -> tuple[int, int]:
    """Return (fan_in, fan_out) as PyTorch computes them: dim 1 and dim 0 times the size of
    the dims after them (so ConvTranspose2d's fan_in counts its output channels)."""
    shape = tuple(variable.storage.shape if isinstance(variable, Variable) else variable)
    if len(shape) < 2:
        raise ShapeError(
            located(f"fan in and fan out need at least 2 dims, got shape {shape}", user_location())
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(variable: Variable, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise GraphError(located(f"mode must be 'fan_in' or 'fan_out', got {mode!r}", None))
    fan_in, fan_out = calculate_fan_in_and_fan_out(variable)
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(
    variable: Variable, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Variable:
    """Fill with U(-bound, bound), bound = gain * sqrt(3 / fan); returns the Variable."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(variable, mode))
    return uniform_(variable, -bound, bound)


def kaiming_normal_(
    variable: Variable, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Variable:
    """Fill with N(0, std**2), std = gain / sqrt(fan); returns the Variable."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(variable, mode))
    return normal_(variable, 0.0, std)


def xavier_uniform_(variable: Variable, gain: float = 1.0) -> Variable:
    """Fill with U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)); returns the Variable."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(variable)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(variable, -bound, bound)


def xavier_normal_(variable: Variable, gain: float = 1.0) -> Variable:
    """Fill with N(0, std**2), std = gain * sqrt(2 / (fan_in + fan_out)); returns it."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(variable)
    return normal_(variable, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
