"""Collective ops: `all_reduce`, one value combined elementwise across the processes of an
MPI world, and the world itself.

The world is the communicator `graphc.distributed.init()` installs (mpi4py's COMM_WORLD);
until then, or where mpi4py is not installed, it is a world of one process, in which an
all_reduce is its input. Every process of a world must run the same graph: each all_reduce
is one collective call, and the processes meet in them in the graph's order.

The reference implementation calls mpi4py's `Allreduce`; the compiled backends lower the op
to a kernel of its own (`backends/kernel/collectives.py`), which the LLVM backend emits as a
call of the MPI library's `MPI_Allreduce` (`backends/llvm/collectives.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import DTypeError, GraphError
from graphc.ops.operand import Value
from graphc.ops.registry import define_op, grad_rule, make_node
from graphc.types import TensorType

# The reductions the op computes; "mean" is a sum divided by the world's size, built by
# graphc.distributed.all_reduce from this one.
REDUCTIONS = ("sum", "max", "min")


@dataclass(frozen=True)
class World:
    """The processes an all_reduce combines: an mpi4py communicator (None for a world of one
    process), this process's rank in it and its size."""

    comm: Any
    rank: int
    size: int


_SINGLE = World(None, 0, 1)
_world = _SINGLE


def world() -> World:
    """Return the world all_reduce nodes combine over (one process until one is installed)."""
    return _world


def set_world(comm: Any) -> World:
    """Install an mpi4py communicator (None: a world of one process) as the world; return it."""
    global _world
    _world = _SINGLE if comm is None else World(comm, comm.Get_rank(), comm.Get_size())
    return _world


def _infer(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if len(types) != 1:
        raise GraphError(f"all_reduce takes one tensor, got {len(types)}")
    if attrs.get("op") not in REDUCTIONS:
        raise GraphError(f"op must be one of {', '.join(REDUCTIONS)}, got {attrs.get('op')!r}")
    (x,) = types
    if x.dtype.is_bool:
        raise DTypeError(f"a bool tensor cannot be reduced across processes: {x}")
    return x


def _reference(args: Sequence[np.ndarray], attrs: Mapping[str, Any], env: Any) -> np.ndarray:
    x = np.ascontiguousarray(args[0])
    current = world()
    if current.size == 1:
        return x.copy()
    from mpi4py import MPI

    out = np.empty_like(x)
    current.comm.Allreduce(x, out, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[attrs["op"]])
    return out


define_op("all_reduce", "collective", _infer, _reference)


def all_reduce_node(x: Value, op: str) -> Value:
    """Return the all_reduce of a gradient-rule value."""
    return Value(make_node("all_reduce", [x.node], {"op": op}))


@grad_rule("all_reduce")
def _all_reduce_grad(xs, out, g, attrs):
    # Every process's loss reads the result, so the gradient of one process's input is the
    # sum of every process's output gradient; a max or min passes it to the inputs that were
    # the extremum, split evenly between ties across the world.
    (x,) = xs
    total = all_reduce_node(g, "sum")
    if attrs["op"] == "sum":
        return [total]
    chosen = (x == out).to(g.dtype)
    return [total * chosen / all_reduce_node(chosen, "sum")]
