"""graphc.optim: optimizers that build parameter updates into a compiled training step.

`opt.minimize(loss)` returns `{Variable: new value}` for `gc.compile(..., updates=...)`;
see graphc/optim/optimizer.py for how this maps onto PyTorch's `zero_grad()`, `backward()`
and `step()`.
"""

from graphc.optim import lr_scheduler
from graphc.optim.adam import Adam, AdamW
from graphc.optim.optimizer import Optimizer, ParamGroup
from graphc.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "ParamGroup", "lr_scheduler"]
