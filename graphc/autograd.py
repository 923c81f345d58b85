"""gc.grad and gc.value_and_grad: symbolic gradients with torch.autograd.grad's semantics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphc.creation import zeros_like
from graphc.errors import DTypeError, GraphError, ShapeError, located, user_location
from graphc.graph import Graph, renamed
from graphc.math_ops import as_tensor
from graphc.passes.autodiff import gradients
from graphc.passes.stabilize import stabilize
from graphc.tensor import Tensor


def _label(t: Tensor, fallback: str) -> str:
    return t.name or fallback


def _stabilized(outputs: list[Tensor], wrt: list[Tensor]) -> list[Tensor]:
    """Return outputs with the stabilise rewrites applied, unless a wrt value is rewritten."""
    original = Graph((), tuple(t.node for t in outputs))
    graph = stabilize(original)
    before = {n.id for n in original.nodes}
    after = {n.id for n in graph.nodes}
    if any(t.node.id in before and t.node.id not in after for t in wrt):
        return outputs
    return [Tensor(n) for n in graph.outputs]


def grad(
    outputs: Tensor | Sequence[Tensor],
    wrt: Tensor | Sequence[Tensor],
    grad_outputs: Tensor | Sequence[Tensor] | None = None,
    *,
    allow_unused: bool = False,
    materialize_grads: bool = False,
) -> Any:
    """Return the gradients of outputs with respect to wrt, shaped like wrt.

    A single tensor in gives a single tensor out. A non-scalar output needs grad_outputs;
    a wrt the outputs do not depend on is an error, None with allow_unused, or zeros with
    materialize_grads.
    """
    single = isinstance(wrt, Tensor)
    wrt_list: list[Any] = [wrt] if isinstance(wrt, Tensor) else list(wrt)
    output_list: list[Tensor] = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    location = user_location()
    for t in wrt_list:
        if not isinstance(t, Tensor):
            raise GraphError(
                located(f"grad: wrt must be Tensors, got {type(t).__name__}", location)
            )
        if not t.dtype.is_float:
            raise DTypeError(
                located(f"grad: only floating-point tensors have gradients, got {t!r}", location)
            )
    seeds = _seeds(output_list, grad_outputs, location)
    stable = _stabilized(output_list, wrt_list)
    results = gradients(
        [t.node for t in stable], [t.node for t in seeds], [t.node for t in wrt_list]
    )
    named: list[Tensor | None] = []
    for position, (t, g) in enumerate(zip(wrt_list, results, strict=True)):
        if g is None:
            if materialize_grads:
                g = zeros_like(t).node
            elif not allow_unused:
                raise GraphError(
                    located(
                        f"grad: the output does not depend on wrt[{position}] {t!r}"
                        f"{' ' + repr(t.name) if t.name else ''}; pass allow_unused=True to get "
                        "None or materialize_grads=True to get zeros",
                        location,
                    )
                )
            else:
                named.append(None)
                continue
        out_label = _label(output_list[0], "out") if len(output_list) == 1 else "out"
        named.append(Tensor(renamed(g, f"(d{out_label}/d{_label(t, f'x{position}')})")))
    return named[0] if single else named


def _seeds(outputs: list[Tensor], grad_outputs: Any, location: str) -> list[Tensor]:
    if grad_outputs is None:
        seeds = []
        for t in outputs:
            if t.ndim != 0:
                raise ShapeError(
                    located(
                        f"grad: output {t!r} is not a scalar; pass grad_outputs with its shape "
                        "(or reduce it, e.g. .sum())",
                        location,
                    )
                )
            seeds.append(as_tensor(1.0, t.dtype))
        return seeds
    given = (
        [grad_outputs]
        if isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple))
        else list(grad_outputs)
    )
    if len(given) != len(outputs):
        raise GraphError(
            located(f"grad: {len(outputs)} outputs but {len(given)} grad_outputs", location)
        )
    seeds = []
    for t, seed in zip(outputs, given, strict=True):
        seed = as_tensor(seed, t.dtype)
        seed = seed.broadcast_to(t.shape) if seed.ndim == 0 else seed
        if len(seed.shape) != len(t.shape) or any(
            str(a) != str(b) for a, b in zip(seed.shape, t.shape, strict=True)
        ):
            raise ShapeError(
                located(f"grad: grad_outputs {seed!r} does not match output {t!r}", location)
            )
        seeds.append(seed)
    return seeds


def value_and_grad(
    output: Tensor, wrt: Tensor | Sequence[Tensor], **options: Any
) -> tuple[Tensor, Any]:
    """Return (output, grad(output, wrt)) so one compiled Function can compute both."""
    return output, grad(output, wrt, **options)
