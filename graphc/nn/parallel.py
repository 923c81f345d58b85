"""DistributedDataParallel: PyTorch's data-parallel wrapper, for code written against it.

graphc averages gradients inside the compiled step whenever the world has several processes
(`Optimizer.minimize`), so the wrapper has little left to do: it gives every rank rank 0's
parameters when it is made, as PyTorch's does, and otherwise is the module it wraps
(`.module`), its parameters and state named as the module's under `module.`.
"""

from __future__ import annotations

from typing import Any

from graphc import distributed
from graphc.nn.module import Module


class DistributedDataParallel(Module):
    """The module, trained data-parallel across a `graphc.distributed` world: its parameters
    are broadcast from rank 0 now, and `opt.minimize` averages their gradients in each step."""

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = module
        distributed.broadcast_parameters(module.parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
