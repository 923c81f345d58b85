"""SGD with momentum, dampening, Nesterov momentum and weight decay, as torch.optim.SGD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphc as gc
from graphc import Tensor, Variable
from graphc.optim.optimizer import Optimizer, ParamGroup, Updates


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's update rule.

    For each parameter p with gradient g (negated when maximize):

        g = g + weight_decay * p
        buf = g on the first step, else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov, else buf      (when momentum != 0)
        p = p - lr * g
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        super()._check_options(options)
        if options["momentum"] < 0:
            raise ValueError(f"invalid momentum value: {options['momentum']}")
        if options["weight_decay"] < 0:
            raise ValueError(f"invalid weight_decay value: {options['weight_decay']}")
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def init_state(self, param: Variable, group: ParamGroup) -> dict[str, Variable]:
        """Return the momentum buffer (only when the group uses momentum)."""
        if group["momentum"] == 0:
            return {}
        return {"momentum_buffer": self.state_variable(param, "momentum_buffer")}

    def param_update(
        self,
        param: Variable,
        grad: Tensor,
        state: dict[str, Variable],
        group: ParamGroup,
        lr: Tensor,
        step: Tensor,
    ) -> Updates:
        """Return the new parameter and momentum buffer after one SGD step."""
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        updates: Updates = {}
        momentum = group["momentum"]
        if momentum != 0:
            buffer = state["momentum_buffer"]
            decayed = buffer * momentum + _scaled(grad, 1 - group["dampening"])
            # PyTorch starts the buffer as a copy of the first gradient, undamped.
            new_buffer = gc.where(step == 1, grad, decayed)
            updates[buffer] = new_buffer
            grad = grad + momentum * new_buffer if group["nesterov"] else new_buffer
        updates[param] = param - lr.to(param.dtype) * grad
        return updates


def _scaled(x: Tensor, factor: float) -> Tensor:
    return x if factor == 1 else x * factor
