"""Adam and AdamW, with PyTorch's bias correction, eps placement and optional AMSGrad."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphc as gc
from graphc import Tensor, Variable
from graphc.optim.optimizer import Optimizer, ParamGroup, Updates


class Adam(Optimizer):
    """Adam with PyTorch's update rule (torch.optim.Adam, single-tensor form).

    For each parameter p with gradient g (negated when maximize), at step t:

        g = g + weight_decay * p                 (Adam; AdamW instead does p = p * (1 - lr * wd))
        m = lerp(m, g, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        v_max = max(v_max, v)                    (amsgrad; v_max replaces v below)
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p = p - lr / (1 - beta1**t) * m / denom

    The bias corrections and the step size are computed in float64 from the step counter, as
    PyTorch computes them in Python floats.
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        super()._check_options(options)
        beta1, beta2 = options["betas"]
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"invalid beta parameter at index 0: {beta1}")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"invalid beta parameter at index 1: {beta2}")
        if options["eps"] < 0:
            raise ValueError(f"invalid epsilon value: {options['eps']}")
        if options["weight_decay"] < 0:
            raise ValueError(f"invalid weight_decay value: {options['weight_decay']}")

    def init_state(self, param: Variable, group: ParamGroup) -> dict[str, Variable]:
        """Return the first and second moment estimates (and their running max for AMSGrad)."""
        state = {
            "exp_avg": self.state_variable(param, "exp_avg"),
            "exp_avg_sq": self.state_variable(param, "exp_avg_sq"),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = self.state_variable(param, "max_exp_avg_sq")
        return state

    def param_update(
        self,
        param: Variable,
        grad: Tensor,
        state: dict[str, Variable],
        group: ParamGroup,
        lr: Tensor,
        step: Tensor,
    ) -> Updates:
        """Return the new parameter and moment estimates after one Adam step."""
        dtype = param.dtype
        beta1, beta2 = group["betas"]
        weight_decay = group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        start: Tensor = param
        if weight_decay != 0:
            if self.decoupled_weight_decay:
                start = param * (1 - lr * weight_decay).to(dtype)
            else:
                grad = grad + weight_decay * param
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        new_exp_avg = _lerp(exp_avg, grad, 1 - beta1)
        new_exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        updates: Updates = {exp_avg: new_exp_avg, exp_avg_sq: new_exp_avg_sq}
        second_moment = new_exp_avg_sq
        if group["amsgrad"]:
            max_exp_avg_sq = state["max_exp_avg_sq"]
            second_moment = gc.maximum(max_exp_avg_sq, new_exp_avg_sq)
            updates[max_exp_avg_sq] = second_moment
        bias_correction1 = 1 - gc.tensor(beta1, dtype=gc.float64) ** step
        bias_correction2 = 1 - gc.tensor(beta2, dtype=gc.float64) ** step
        step_size = (lr / bias_correction1).to(dtype)
        denom = second_moment.sqrt() / bias_correction2.sqrt().to(dtype) + group["eps"]
        updates[param] = start + (-step_size) * new_exp_avg / denom
        return updates


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): p = p * (1 - lr * weight_decay)
    before the Adam step, instead of adding weight_decay * p to the gradient."""

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


def _lerp(start: Tensor, end: Tensor, weight: float) -> Tensor:
    """Return start + weight * (end - start), computed the way PyTorch's CPU kernel does."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)
