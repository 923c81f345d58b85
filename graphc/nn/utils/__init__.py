"""graphc.nn.utils: torch.nn.utils's helpers as graph functions: gradient clipping
(`clip_grad.py`) and packed sequences for the recurrent layers (`rnn.py`)."""

from graphc.nn.utils import rnn
from graphc.nn.utils.clip_grad import clip_grad_norm

__all__ = ["clip_grad_norm", "rnn"]
