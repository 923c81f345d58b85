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
    set_flush_denormal,
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
from graphc.math_ops import binary_function as _binary
from graphc.math_ops import cast, clamp, relu, where
from graphc.math_ops import unary_function as _unary
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
from graphc.scan import scan
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
from graphc.triangular import tril, triu
from graphc.types import TensorType
from graphc.variable import Variable
from graphc.version import __version__

bool = bool_  # noqa: A001 - gc.bool, as torch.bool
float = float32  # noqa: A001 - gc.float, as torch.float
double = float64
long = int64
int = int32  # noqa: A001 - gc.int, as torch.int

# One function per elementwise op with a public name (OpDef.api), bound from the op table; the
# same names are Tensor methods (graphc.ops.operand.Operand). tests/test_tensor_api.py checks
# that these lists and the table agree.
neg = _unary("neg")
abs = _unary("abs")  # noqa: A001 - PyTorch's name
sign = _unary("sign")
exp = _unary("exp")
expm1 = _unary("expm1")
log = _unary("log")
log1p = _unary("log1p")
sqrt = _unary("sqrt")
rsqrt = _unary("rsqrt")
sin = _unary("sin")
cos = _unary("cos")
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")
erf = _unary("erf")
floor = _unary("floor")
ceil = _unary("ceil")
round = _unary("round")  # noqa: A001 - PyTorch's name
logical_not = _unary("logical_not")
add = _binary("add")
sub = _binary("sub")
mul = _binary("mul")
div = _binary("div")
floor_divide = _binary("floor_divide")
remainder = _binary("remainder")
pow = _binary("pow")  # noqa: A001 - PyTorch's name
maximum = _binary("maximum")
minimum = _binary("minimum")
atan2 = _binary("atan2")
eq = _binary("eq")
ne = _binary("ne")
lt = _binary("lt")
le = _binary("le")
gt = _binary("gt")
ge = _binary("ge")
logical_and = _binary("logical_and")
logical_or = _binary("logical_or")


# nn, optim and testing are written with the API above, like user code, so they load last.
from graphc import cuda, nn, optim, testing  # noqa: E402
