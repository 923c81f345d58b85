"""BatchNorm1d, BatchNorm2d, SyncBatchNorm and LayerNorm.

In training, BatchNorm normalises with the batch's statistics and records the new running
statistics as state updates (Module.state_updates), which a compiled step applies; in eval
mode it normalises with the running statistics. SyncBatchNorm takes its statistics over the
batches of every process of a `graphc.distributed` world.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import graphc as gc
from graphc import distributed
from graphc.dims import dim_prod, is_static
from graphc.nn import functional as F
from graphc.nn._checks import float_arg, shape_error, shape_text, tensor_arg
from graphc.nn.linear import new_parameter
from graphc.nn.module import Module
from graphc.tensor import Tensor
from graphc.variable import Variable


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share; subclasses say which input ranks they take."""

    input_ranks: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = new_parameter(self, "weight", (num_features,))
            self.weight.assign(np.ones(num_features, np.float32))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = new_parameter(self, "bias", (num_features,))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", self._buffer("running_mean", np.zeros))
            self.register_buffer("running_var", self._buffer("running_var", np.ones))
            self.register_buffer(
                "num_batches_tracked",
                Variable(
                    np.int64(0), name=self.variable_name("num_batches_tracked"), trainable=False
                ),
            )
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def _buffer(self, name: str, fill: Any) -> Variable:
        value = fill(self.num_features, dtype=np.float32)
        return Variable(value, name=self.variable_name(name), trainable=False)

    def reset_running_stats(self) -> None:
        """Set the running mean to 0, the running variance to 1 and the batch count to 0."""
        if self.track_running_stats:
            self.running_mean.assign(np.zeros(self.num_features, np.float32))
            self.running_var.assign(np.ones(self.num_features, np.float32))
            self.num_batches_tracked.assign(np.int64(0))

    def _checked_input(self, input: Tensor) -> Tensor:  # noqa: A002
        x = tensor_arg(input, f"{type(self).__name__}: the input")
        ranks = " or ".join(f"{r}-d" for r in self.input_ranks)
        if x.ndim not in self.input_ranks or x.shape[1] != self.num_features:
            layout = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}
            wanted = " or ".join(layout[r] for r in self.input_ranks)
            raise shape_error(
                f"{self!r} expects a {ranks} input {wanted} with C={self.num_features}, got "
                f"shape {shape_text(x.shape)}"
            )
        return x

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input normalised per channel (batch statistics in training)."""
        x = float_arg(input, f"{type(self).__name__}: the input")
        x = self._checked_input(x)
        if not (self.training or self.running_mean is None):
            return F.channel_affine(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.eps
            )
        values = [d for axis, d in enumerate(x.shape) if axis != 1]
        if self.training and is_static(values) and dim_prod(values) == 1:
            raise shape_error(
                f"{self!r}: expected more than 1 value per channel when training, got input "
                f"of shape {shape_text(x.shape)}"
            )
        mean, biased_var, unbiased_var = self._statistics(x)
        y = F.channel_affine(x, mean, biased_var, self.weight, self.bias, self.eps)
        if self.training and self.running_mean is not None:
            self._record_running_statistics(mean, unbiased_var, y)
        return y

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the batch's per-channel mean, biased and unbiased variance."""
        return F.batch_statistics(x)

    def _record_running_statistics(self, mean: Tensor, var: Tensor, y: Tensor) -> None:
        # The count rule runs first when the updates are collected; momentum=None (a
        # cumulative average) reads the count it produced.
        latest: dict[str, Tensor] = {}
        momentum = self.momentum

        def count(current: Tensor) -> Tensor:
            latest["count"] = current + 1
            return latest["count"]

        def factor() -> Any:
            if momentum is None:
                return 1.0 / latest["count"].to(gc.float32)
            return momentum

        def moving(batch_value: Tensor) -> Callable[[Tensor], Tensor]:
            def rule(current: Tensor) -> Tensor:
                f = factor()
                return current * (1 - f) + batch_value * f

            return rule

        self.add_state_update(self.num_batches_tracked, count, y)
        self.add_state_update(self.running_mean, moving(mean), y)
        self.add_state_update(self.running_var, moving(var), y)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over all dims but C."""

    input_ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs over all dims but C."""

    input_ranks = (4,)


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation whose statistics cover every process's batch (PyTorch's
    SyncBatchNorm): in a `graphc.distributed` world of several processes the per-channel sums
    are all-reduced inside the compiled step, so the data-parallel model trains as one process
    on the whole batch would; the gradient flows back through the same all-reduces. In a world
    of one process it is BatchNorm. Takes (N, C, ...) inputs of 2 to 5 dims."""

    input_ranks = (2, 3, 4, 5)

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if distributed.active_world_size() == 1:
            return F.batch_statistics(x)
        axes = tuple(d for d in range(x.ndim) if d != 1)
        view = (-1,) + (1,) * (x.ndim - 2)
        count = distributed.all_reduce(gc.ones_like(x).sum(axes))
        mean = distributed.all_reduce(x.sum(axes)) / count
        # Two passes, as in one process: the sum of squared deviations from the global mean.
        squares = distributed.all_reduce(((x - mean.reshape(*view)) ** 2).sum(axes))
        return mean, squares / count, squares / (count - 1)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """Return module with every BatchNorm1d/2d replaced by a SyncBatchNorm holding the
        same parameters and running statistics (the module itself is changed in place)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            converted = cls.__new__(cls)
            converted.__dict__.update(module.__dict__)
            return converted
        for name, child in list(module.named_children()):
            setattr(module, name, cls.convert_sync_batchnorm(child))
        return module


class LayerNorm(Module):
    """Normalisation over the last dims (normalized_shape), with elementwise weight and bias."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = new_parameter(self, "weight", self.normalized_shape)
            self.weight.assign(np.ones(self.normalized_shape, np.float32))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = new_parameter(self, "bias", self.normalized_shape)
        else:
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """Return input normalised over its last dims."""
        x = tensor_arg(input, "LayerNorm: the input")
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.normalized_shape:
            raise shape_error(
                f"{self!r} expects an input whose last dims are {self.normalized_shape}, got "
                f"shape {shape_text(x.shape)}"
            )
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        """Return the arguments shown in the repr, as PyTorch prints them."""
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
