"""graphc: a static-graph tensor compiler with PyTorch's vocabulary.

Build a graph with tensors, check its shapes as you write it, and compile it into a Function.
"""

from graphc import errors
from graphc import ops as _ops  # noqa: F401 - registers the primitive ops

# The Tensor class first: the functional modules it binds import each other through it.
from graphc.tensor import Tensor

# isort: split
from graphc.autograd import grad, value_and_grad
from graphc.compiler import (
    Function,
    available_backends,
    compile,
    default_backend,
    register_backend,
    set_default_backend,
)
from graphc.creation import (
    arange,
    eye,
    full,
    full_like,
    input,
    linspace,
    manual_seed,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from graphc.dims import Sym
from graphc.dtypes import DType, bool_, float32, float64, int32, int64
from graphc.graph import Graph, Node
from graphc.math_ops import FUNCTIONS as _FUNCTIONS
from graphc.math_ops import cast, clamp, relu, where
from graphc.printing import show, subgraph
from graphc.reductions import (
    amax,
    amin,
    argmax,
    argmin,
    log_softmax,
    logsumexp,
    max,
    mean,
    min,
    prod,
    softmax,
    std,
    stop_gradient,
    sum,
    var,
)
from graphc.serialization import load, save
from graphc.shaping import (
    broadcast_to,
    cat,
    chunk,
    flatten,
    matmul,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unsqueeze,
)
from graphc.spatial import (
    avg_pool2d,
    conv2d,
    conv_transpose2d,
    gather,
    max_pool2d,
    pad,
)
from graphc.types import TensorType
from graphc.variable import Variable

bool = bool_  # noqa: A001 - gc.bool, as torch.bool
float = float32  # noqa: A001 - gc.float, as torch.float
double = float64
long = int64
int = int32  # noqa: A001 - gc.int, as torch.int


# exp, log1p, abs, maximum, atan2, eq, ... : one function per elementwise op with a public
# name, derived from the op definitions.
if set(_FUNCTIONS) & set(globals()):
    raise RuntimeError(f"gc.{sorted(set(_FUNCTIONS) & set(globals()))} defined twice")
globals().update(_FUNCTIONS)

__version__ = "0.1.0"

# nn, optim and testing are written with the API above, like user code, so they load last.
from graphc import nn, optim, testing  # noqa: E402
