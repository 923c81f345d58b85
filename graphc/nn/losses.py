"""Loss functions and their modules: cross entropy, NLL, binary cross entropy (on
probabilities and on logits), MSE and L1, with PyTorch's arguments and reductions.

Every loss is built from stable pieces (log_softmax, a log-sigmoid without overflow), so
large logits give finite losses and gradients.
"""

from __future__ import annotations

from typing import Any

import graphc as gc
from graphc.dims import same_dims, static_dim
from graphc.nn._checks import (
    check_reduction,
    dtype_error,
    float_arg,
    graph_error,
    shape_error,
    shape_text,
    tensor_arg,
)
from graphc.nn.module import Module
from graphc.tensor import Tensor
from graphc.variable import Variable

_SMOOTHED_CLASSES = "cross_entropy: with label_smoothing, the number of classes"


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if check_reduction(reduction) == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _class_dim(x: Tensor, function: str) -> int:
    if x.ndim == 0:
        raise shape_error(f"{function}: the input needs a class dim, got a 0-d tensor")
    return 0 if x.ndim == 1 else 1


def _check_targets(x: Tensor, target: Tensor, class_dim: int, function: str) -> None:
    expected = x.shape[:class_dim] + x.shape[class_dim + 1 :]
    if not same_dims(target.shape, expected):
        raise shape_error(
            f"{function}: class-index targets must have shape {shape_text(expected)} (the "
            f"input {shape_text(x.shape)} without its class dim {class_dim}), got "
            f"{shape_text(target.shape)}"
        )


def _class_view(weight: Tensor, x: Tensor, class_dim: int) -> Tensor:
    """Return a (C,) per-class tensor shaped to broadcast along x's class dim."""
    return weight.reshape(-1, *([1] * (x.ndim - class_dim - 1)))


def _picked(
    logp: Tensor,
    target: Tensor,
    class_dim: int,
    weight: Tensor | None,
    ignore_index: int,
) -> tuple[Tensor, Tensor]:
    """Return (-w[t] * logp[t] per element, w[t] per element), both 0 where t == ignore_index."""
    valid = target != ignore_index
    safe = gc.where(valid, target, 0).long()
    picked = gc.gather(logp, class_dim, safe.unsqueeze(class_dim)).squeeze(class_dim)
    weights = valid.to(logp.dtype)
    if weight is not None:
        weights = weights * weight[safe]
    return -(picked * weights), weights


def nll_loss(
    input: Tensor,  # noqa: A002
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Return the negative log-likelihood of class-index targets given log-probabilities
    (N, C, ...); 'mean' divides by the total weight of the targets not ignored."""
    logp = float_arg(input, "nll_loss: the input")
    target = _index_targets(target, "nll_loss")
    class_dim = _class_dim(logp, "nll_loss")
    _check_targets(logp, target, class_dim, "nll_loss")
    losses, weights = _picked(logp, target, class_dim, weight, ignore_index)
    if check_reduction(reduction) == "mean":
        return losses.sum() / weights.sum()
    return _reduce(losses, reduction)


def _index_targets(target: Any, function: str) -> Tensor:
    t = tensor_arg(target, f"{function}: the target")
    if not t.dtype.is_int:
        raise dtype_error(
            f"{function}: class-index targets must be integers (int64), got {t!r}; "
            "class-probability targets need the input's shape and a float dtype"
        )
    return t


def cross_entropy(
    input: Tensor,  # noqa: A002
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Return the cross entropy between logits (N, C, ...) and class-index targets (N, ...)
    or class probabilities (the input's shape), as torch.nn.functional.cross_entropy."""
    x = float_arg(input, "cross_entropy: the input")
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise graph_error(
            f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"
        )
    class_dim = _class_dim(x, "cross_entropy")
    logp = gc.log_softmax(x, class_dim)
    classes = x.shape[class_dim]
    target = tensor_arg(target, "cross_entropy: the target")
    if target.dtype.is_float:
        return _soft_cross_entropy(logp, target, class_dim, weight, reduction, label_smoothing)
    target = _index_targets(target, "cross_entropy")
    _check_targets(x, target, class_dim, "cross_entropy")
    losses, weights = _picked(logp, target, class_dim, weight, ignore_index)
    total = weights.sum()
    loss = losses.sum() / total if reduction == "mean" else _reduce(losses, reduction)
    if label_smoothing == 0.0:
        return loss
    # PyTorch's smoothing term: the (weighted) sum of -log p over all classes, masked the same.
    scaled = logp if weight is None else logp * _class_view(weight, x, class_dim)
    smooth = gc.where(target != ignore_index, -scaled.sum(class_dim), 0.0)
    smooth = smooth.sum() / total if reduction == "mean" else _reduce(smooth, reduction)
    share = label_smoothing / static_dim(classes, _SMOOTHED_CLASSES)
    return (1 - label_smoothing) * loss + smooth * share


def _soft_cross_entropy(
    logp: Tensor,
    target: Tensor,
    class_dim: int,
    weight: Tensor | None,
    reduction: str,
    label_smoothing: float,
) -> Tensor:
    if not same_dims(target.shape, logp.shape):
        raise shape_error(
            f"cross_entropy: class-probability targets must have the input's shape "
            f"{shape_text(logp.shape)}, got {shape_text(target.shape)}"
        )
    classes = logp.shape[class_dim]
    if label_smoothing > 0.0:
        share = label_smoothing / static_dim(classes, _SMOOTHED_CLASSES)
        target = target * (1 - label_smoothing) + share
    terms = logp * target
    if weight is not None:
        terms = terms * _class_view(weight, logp, class_dim)
    losses = -terms.sum(class_dim)
    return _reduce(losses, reduction)


def _same_shape(x: Tensor, target: Tensor, function: str) -> None:
    if not same_dims(x.shape, target.shape):
        raise shape_error(
            f"{function}: the target's shape {shape_text(target.shape)} must equal the "
            f"input's {shape_text(x.shape)}"
        )


def binary_cross_entropy(
    input: Tensor,  # noqa: A002
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Return -(t log p + (1 - t) log(1 - p)) for probabilities p, each log clamped at -100
    as in PyTorch so p = 0 or 1 gives a finite loss."""
    p = float_arg(input, "binary_cross_entropy: the input")
    t = float_arg(target, "binary_cross_entropy: the target")
    _same_shape(p, t, "binary_cross_entropy")
    log_p = gc.clamp(gc.log(p), min=-100.0)
    log_q = gc.clamp(gc.log(1 - p), min=-100.0)
    losses = -(t * log_p + (1 - t) * log_q)
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def _log_sigmoid(x: Tensor) -> Tensor:
    # min(x, 0) - log(1 + exp(-|x|)) never overflows; at x = 0 the minimum's tie rule and
    # sign(0) = 0 give the exact derivative 1/2.
    return gc.minimum(x, 0.0) - gc.log(1 + gc.exp(-gc.abs(x)))


def binary_cross_entropy_with_logits(
    input: Tensor,  # noqa: A002
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Return binary_cross_entropy(sigmoid(input), target) computed stably from the logits:
    (1 - t) x - (1 + (pos_weight - 1) t) log_sigmoid(x)."""
    x = float_arg(input, "binary_cross_entropy_with_logits: the input")
    t = float_arg(target, "binary_cross_entropy_with_logits: the target")
    _same_shape(x, t, "binary_cross_entropy_with_logits")
    log_sig = _log_sigmoid(x)
    if pos_weight is not None:
        log_sig = log_sig * ((pos_weight - 1) * t + 1)
    losses = (1 - t) * x - log_sig
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Return the squared error (input - target)**2, reduced."""
    x = float_arg(input, "mse_loss: the input")
    t = float_arg(target, "mse_loss: the target")
    _same_shape(x, t, "mse_loss")
    diff = x - t
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Return the absolute error |input - target|, reduced."""
    x = float_arg(input, "l1_loss: the input")
    t = float_arg(target, "l1_loss: the target")
    _same_shape(x, t, "l1_loss")
    return _reduce(gc.abs(x - t), reduction)


# -- modules ---------------------------------------------------------------------------------
class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)


class _WeightedLoss(_Loss):
    """A loss with an optional per-class weight, kept as a buffer named 'weight' (PyTorch's)."""

    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", _constant_buffer(self, weight, "weight"))


def _constant_buffer(module: Module, value: Any, name: str) -> Variable | None:
    if value is None or isinstance(value, Variable):
        return value
    if isinstance(value, Tensor):
        value = value.numpy()
    return Variable(value, name=module.variable_name(name), dtype=gc.float32, trainable=False)


class CrossEntropyLoss(_WeightedLoss):
    """Cross entropy of logits and class indices or probabilities (see F.cross_entropy)."""

    def __init__(
        self,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of logits input against target."""
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities and class indices (see F.nll_loss)."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of log-probabilities input against target."""
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class BCELoss(_WeightedLoss):
    """Binary cross entropy of probabilities (see F.binary_cross_entropy)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of probabilities input against target."""
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of logits, computed stably (see F.binary_cross_entropy_with_logits)."""

    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None):
        super().__init__(reduction)
        self.register_buffer("weight", _constant_buffer(self, weight, "weight"))
        self.register_buffer("pos_weight", _constant_buffer(self, pos_weight, "pos_weight"))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of logits input against target."""
        return binary_cross_entropy_with_logits(
            input, target, self.weight, self.reduction, self.pos_weight
        )


class MSELoss(_Loss):
    """Mean squared error (see F.mse_loss)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of input against target."""
        return mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    """Mean absolute error (see F.l1_loss)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        """Return the loss of input against target."""
        return l1_loss(input, target, self.reduction)
