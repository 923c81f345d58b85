"""graphc.nn: PyTorch's nn vocabulary (Module, layers, losses, init) building graphc graphs.

Parameters are Variables, so a compiled Function reads and trains them in place; names,
shapes and layouts are PyTorch's, so state dicts move between the two with `.numpy()`.
State that a training step changes besides the parameters (BatchNorm's running statistics,
Dropout's step) comes back from `model.state_updates(loss)` or `nn.state_updates(loss)` as
`{Variable: new value}` for `gc.compile(..., updates=...)`.
"""

from graphc.nn import functional, init, utils
from graphc.nn.activation import (
    ELU,
    GELU,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    Mish,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from graphc.nn.containers import ModuleDict, ModuleList, Sequential
from graphc.nn.conv import Conv2d, ConvTranspose2d
from graphc.nn.dropout import Dropout
from graphc.nn.embedding import Embedding
from graphc.nn.linear import Flatten, Identity, Linear, Unflatten
from graphc.nn.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
)
from graphc.nn.module import IncompatibleKeys, Module, Parameter, StateRecord, state_updates
from graphc.nn.norm import BatchNorm1d, BatchNorm2d, LayerNorm, SyncBatchNorm
from graphc.nn.parallel import DistributedDataParallel
from graphc.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from graphc.nn.rnn import GRU, LSTM, RNN
from graphc.nn.rnn_cells import GRUCell, LSTMCell, RNNCell
from graphc.nn.transformer import (
    MultiheadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from graphc.nn.upsample import Upsample

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "DistributedDataParallel",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "GELU",
    "GRU",
    "GRUCell",
    "Hardtanh",
    "Identity",
    "IncompatibleKeys",
    "L1Loss",
    "LSTM",
    "LSTMCell",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Mish",
    "Module",
    "MultiheadAttention",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "RNN",
    "RNNCell",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "StateRecord",
    "SyncBatchNorm",
    "Tanh",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "Unflatten",
    "Upsample",
    "functional",
    "init",
    "state_updates",
    "utils",
]
