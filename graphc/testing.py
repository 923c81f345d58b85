"""Public testing helpers: check_grad compares symbolic gradients with finite differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc import dtypes
from graphc.autograd import grad
from graphc.compiler import compile as compile_function
from graphc.creation import input as placeholder
from graphc.dims import static_shape
from graphc.tensor import Tensor


class GradientCheckError(AssertionError):
    """Symbolic and finite-difference gradients disagree beyond the tolerance."""


def check_grad(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    *,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    backend: str | None = None,
) -> float:
    """Return the largest gradient error of fn at inputs; raise GradientCheckError beyond tolerance.

    In float64, the output is projected on a fixed random tensor R (cost = sum(fn(x) * R)) and,
    for each floating-point input separately, the directional derivative along a random
    direction from central differences is compared with the symbolic gradient's projection.
    Integer inputs (indices) are fed unchanged and not differentiated.
    """
    rng = np.random.default_rng(seed)
    arrays = [_as_float64_or_int(a) for a in inputs]
    tensors = [
        placeholder(f"x{i}", a.shape, dtypes.float64 if a.dtype.kind == "f" else dtypes.int64)
        for i, a in enumerate(arrays)
    ]
    output = fn(*tensors)
    projection = rng.standard_normal(static_shape(output.shape))
    cost = (output * projection).sum()
    differentiable = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    grads = grad(cost, [tensors[i] for i in differentiable], materialize_grads=True)
    cost_fn = compile_function(tensors, [cost], backend=backend)
    grad_fn = compile_function(tensors, grads, backend=backend)
    symbolic = grad_fn(*arrays)
    symbolic = symbolic if isinstance(symbolic, tuple) else (symbolic,)
    worst, failures = 0.0, []
    for position, index in enumerate(differentiable):
        direction = rng.standard_normal(arrays[index].shape)
        numeric = _directional_difference(cost_fn, arrays, index, direction, eps)
        analytic = float(np.sum(symbolic[position] * direction))
        error = abs(numeric - analytic)
        worst = max(worst, error)
        if not error <= atol + rtol * abs(numeric):
            failures.append(
                f"  input {index} {arrays[index].shape}: finite differences {numeric:.10g}, "
                f"symbolic {analytic:.10g}, error {error:.3g} > {atol + rtol * abs(numeric):.3g}"
            )
    if failures:
        raise GradientCheckError("gradient check failed:\n" + "\n".join(failures))
    return worst


def _as_float64_or_int(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array.astype(np.float64)


def _directional_difference(cost_fn, arrays, index, direction, eps) -> float:
    def at(step: float) -> float:
        moved = list(arrays)
        moved[index] = arrays[index] + step * direction
        return float(cost_fn(*moved))

    return (at(eps) - at(-eps)) / (2 * eps)
