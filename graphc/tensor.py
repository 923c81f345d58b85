"""Tensor: the user's handle on a graph value, with PyTorch's methods and operators.

A Tensor wraps one Node. Its operators and elementwise methods come from
`graphc.ops.operand.Operand`, shared with the values gradient rules compute with; its other
methods build nodes through the functional modules (math_ops, reductions, shaping, indexing,
spatial), which take and return Tensors. Nothing is computed until the tensor is evaluated
(`.numpy()`, `.item()`, `.eval()`) or compiled into a Function.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from graphc.dims import Dim, dim_prod
from graphc.dtypes import bool_, float32, float64, int32, int64
from graphc.errors import GraphError, located, user_location
from graphc.graph import Node, renamed
from graphc.ops.operand import Operand


class Tensor(Operand["Tensor"]):
    """A symbolic tensor: a typed value in a graph, built with PyTorch's vocabulary."""

    __slots__ = ("node", "__weakref__")

    def __init__(self, node: Node) -> None:
        self.node = node

    def _wrap(self, node: Node) -> Tensor:
        return Tensor(node)

    # -- type ---------------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self.node.name

    def dim(self) -> int:
        """Return the number of dims (PyTorch's Tensor.dim())."""
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        """Return the shape, or one dim of it."""
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> Dim:
        """Return the number of elements (a symbolic expression if the shape has symbols)."""
        return dim_prod(self.shape)

    def named(self, name: str) -> Tensor:
        """Return this value under a name used when the graph is printed."""
        return Tensor(renamed(self.node, name))

    def __repr__(self) -> str:
        return f"Tensor({self.node.type}, {self.node.op})"

    def __bool__(self) -> bool:
        raise GraphError(
            located(
                f"the truth value of {self!r} is not known while the graph is built; "
                "use gc.where(cond, a, b) in the graph, or .item() to evaluate it now",
                user_location(),
            )
        )

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        first = self.shape[0]
        if not isinstance(first, int):
            raise TypeError(f"len() of a tensor whose first dim is symbolic ({first})")
        return first

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    # -- evaluation ---------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """Compile this tensor's subgraph on the default backend, run it, return the array."""
        return _evaluation.evaluate(self, {})

    def item(self) -> Any:
        """Return the value of a one-element tensor as a Python number."""
        return _evaluation.item(self)

    def eval(self, feed: Mapping[Tensor, Any] | None = None) -> np.ndarray:
        """Evaluate with values fed for the graph inputs it depends on."""
        return _evaluation.evaluate(self, feed or {})

    def tolist(self) -> Any:
        """Return the value as nested Python lists."""
        return self.numpy().tolist()

    # -- operators and elementwise methods ------------------------------------------------
    # +, -, *, /, //, %, **, comparisons, &, |, ~ and the methods of the elementwise ops with
    # a public name (exp, log1p, maximum, atan2, ...) come from Operand.
    def __pos__(self) -> Tensor:
        return self

    def __matmul__(self, other: Any) -> Tensor:
        return _shaping.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _shaping.matmul(other, self)

    def __getitem__(self, index) -> Tensor:
        return _indexing.getitem(self, index)

    def gather(self, dim: int, index) -> Tensor:
        return _spatial.gather(self, dim, index)

    # -- elementwise composites ---------------------------------------------------------
    def relu(self) -> Tensor:
        return _math.relu(self)

    def square(self) -> Tensor:
        return self * self

    def clamp(self, min=None, max=None) -> Tensor:  # noqa: A002 - PyTorch's names
        return _math.clamp(self, min, max)

    clip = clamp

    def where(self, condition, other) -> Tensor:
        """Return self where condition holds, else other (PyTorch's Tensor.where)."""
        return _math.where(condition, self, other)

    def tril(self, diagonal=0) -> Tensor:
        return _triangular.tril(self, diagonal)

    def triu(self, diagonal=0) -> Tensor:
        return _triangular.triu(self, diagonal)

    # -- reductions ---------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None) -> Tensor:
        return _reductions.sum(self, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.mean(self, dim, keepdim)

    def var(self, dim=None, keepdim=False, *, correction=1) -> Tensor:
        return _reductions.var(self, dim, keepdim, correction=correction)

    def std(self, dim=None, keepdim=False, *, correction=1) -> Tensor:
        return _reductions.std(self, dim, keepdim, correction=correction)

    def prod(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.prod(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return _reductions.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _reductions.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False) -> Tensor:
        return _reductions.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False) -> Tensor:
        return _reductions.logsumexp(self, dim, keepdim)

    def softmax(self, dim) -> Tensor:
        return _reductions.softmax(self, dim)

    def log_softmax(self, dim) -> Tensor:
        return _reductions.log_softmax(self, dim)

    # -- shape --------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        return _shaping.reshape(self, *shape)

    def view(self, *shape) -> Tensor:
        return _shaping.reshape(self, *shape)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _shaping.transpose(self, dim0, dim1)

    def permute(self, *dims) -> Tensor:
        return _shaping.permute(self, *dims)

    def flatten(self, start_dim=0, end_dim=-1) -> Tensor:
        return _shaping.flatten(self, start_dim, end_dim)

    def squeeze(self, dim=None) -> Tensor:
        return _shaping.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _shaping.unsqueeze(self, dim)

    def expand(self, *sizes) -> Tensor:
        return _shaping.expand(self, *sizes)

    def broadcast_to(self, shape) -> Tensor:
        return _shaping.broadcast_to(self, shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return _shaping.broadcast_to(self, other.shape)

    def split(self, split_size_or_sections, dim=0):
        return _shaping.split(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim=0):
        return _shaping.chunk(self, chunks, dim)

    def matmul(self, other) -> Tensor:
        return _shaping.matmul(self, other)

    def detach(self) -> Tensor:
        """Return the same value with no gradient flowing back through it."""
        return _reductions.stop_gradient(self)

    def contiguous(self) -> Tensor:
        return self

    @property
    def T(self) -> Tensor:  # noqa: N802 - PyTorch's name
        return _shaping.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802 - PyTorch's name
        return _shaping.transpose(self, -2, -1)

    # -- dtype conversion ---------------------------------------------------------------
    # Last in the class: after `def int`, `int` in the class body names the method.
    def to(self, dtype) -> Tensor:
        return _math.cast(self, dtype)

    def type(self, dtype) -> Tensor:
        return _math.cast(self, dtype)

    def float(self) -> Tensor:
        return _math.cast(self, float32)

    def double(self) -> Tensor:
        return _math.cast(self, float64)

    def long(self) -> Tensor:
        return _math.cast(self, int64)

    def int(self) -> Tensor:
        return _math.cast(self, int32)

    def bool(self) -> Tensor:
        return _math.cast(self, bool_)


# The functional modules import Tensor from here, so they are bound after the class exists.
from graphc import evaluation as _evaluation  # noqa: E402
from graphc import indexing as _indexing  # noqa: E402
from graphc import math_ops as _math  # noqa: E402
from graphc import reductions as _reductions  # noqa: E402
from graphc import shaping as _shaping  # noqa: E402
from graphc import spatial as _spatial  # noqa: E402
from graphc import triangular as _triangular  # noqa: E402
