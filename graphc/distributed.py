"""graphc.distributed: data-parallel training across processes and machines, over MPI.

Run the same script under an MPI launcher, `mpiexec -n 4 python train.py`; each process
(a *rank*) trains on its own shard of every batch, and the compiled step averages the
gradients across the ranks before the optimizer uses them, as PyTorch's
DistributedDataParallel does::

    import graphc.distributed as dist

    dist.init()                                  # the MPI world mpiexec started
    xb, yb = shard(batch, dist.rank(), dist.world_size())
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss))
    step(xb, yb)                                 # one call: forward, backward, all_reduce, update

`opt.minimize(loss)` broadcasts the parameters from rank 0 when it builds the step, so every
rank starts from the same weights, and puts the gradients into a few large buffers (one per
dtype, up to `BUCKET_ELEMENTS` elements each) that one `all_reduce` each averages inside the
compiled step. BatchNorm's running statistics stay per rank, as in DDP; `gc.save` writes from
rank 0 only.

`all_reduce(t, op)` is a graph op usable anywhere in a graph, on every backend; its gradient
is an all_reduce too. MPI comes from mpi4py (`pip install 'graphc[distributed]'`); without
it, or outside a launcher, the world is one process and every all_reduce is its input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from graphc.creation import tensor as as_tensor
from graphc.dims import dim_prod
from graphc.dtypes import DType
from graphc.errors import DTypeError, ShapeError
from graphc.ops.collectives import REDUCTIONS, World, set_world, world
from graphc.ops.registry import make_node
from graphc.reductions import count_tensor
from graphc.shaping import cat
from graphc.tensor import Tensor
from graphc.variable import Variable

# The most elements one gradient bucket holds: buckets stay large messages (few calls into
# MPI) without one buffer the size of a very large model.
BUCKET_ELEMENTS = 1 << 24
# Variables launchers set to the number of processes they started (MPICH's Hydra and
# Slurm's PMI, Open MPI, PMIx).
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")

_initialized = False


def init() -> None:
    """Join the MPI world the launcher started (mpi4py's COMM_WORLD); a second call does
    nothing. Without mpi4py the world is this process alone, unless a launcher started
    several, which raises RuntimeError saying what to install.

    In a world of several processes an uncaught exception on any rank prints its traceback
    and aborts the whole job (`MPI_Abort`), so the other ranks never wait for it forever."""
    global _initialized
    if _initialized:
        return
    try:
        from mpi4py import MPI
    except ImportError:
        if launched_size() > 1:
            raise RuntimeError(
                f"graphc.distributed: a launcher started {launched_size()} processes but "
                "mpi4py is not installed; pip install 'graphc[distributed]'"
            ) from None
        set_world(None)
    else:
        comm = MPI.COMM_WORLD
        set_world(comm)
        if comm.Get_size() > 1:
            sys.excepthook = _aborting_hook(sys.excepthook, comm)
    _initialized = True


__all__ = [
    "BUCKET_ELEMENTS",
    "World",
    "active_world_size",
    "all_reduce",
    "average_gradients",
    "broadcast_parameters",
    "init",
    "is_initialized",
    "launched_size",
    "loss_share",
    "rank",
    "world",
    "world_size",
]


def is_initialized() -> bool:
    """Return whether init() has run."""
    return _initialized


def launched_size() -> int:
    """Return how many processes the MPI launcher says it started (1 outside a launcher)."""
    for name in _LAUNCHER_SIZES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def rank() -> int:
    """Return this process's rank in the world, 0 to world_size() - 1 (init() first if
    needed)."""
    init()
    return world().rank


def world_size() -> int:
    """Return the number of processes in the world (init() first if needed)."""
    init()
    return world().size


def active_world_size() -> int:
    """Return the world's size without starting MPI where no launcher asked for it: the
    size once init() has run, else 1 outside a launcher (and init() inside one)."""
    if not _initialized and launched_size() > 1:
        init()
    return world().size if _initialized else 1


def all_reduce(t: Any, op: str = "sum") -> Tensor:
    """Return t combined elementwise across every process of the world: "sum", "mean",
    "max" or "min". A graph op: every rank must run the same graph, and its gradient is an
    all_reduce of the result's gradient (summed over the ranks, as every rank's loss reads
    the result)."""
    init()
    t = t if isinstance(t, Tensor) else as_tensor(t)
    if op == "mean":
        if not t.dtype.is_float:
            raise DTypeError(f"all_reduce: op='mean' needs a floating-point tensor, got {t.dtype}")
        return all_reduce(t, "sum") * (1.0 / world_size())
    if op not in REDUCTIONS:
        raise ValueError(f"all_reduce: op must be sum, mean, max or min, got {op!r}")
    return Tensor(make_node("all_reduce", [t.node], {"op": op}))


def broadcast_parameters(variables: Iterable[Variable] | Any, root: int = 0) -> None:
    """Overwrite every Variable (or a Module's parameters) with root's value, one message per
    dtype, so every rank starts from the same weights."""
    if hasattr(variables, "parameters"):
        variables = variables.parameters()
    variables = list(variables)
    if active_world_size() == 1 or not variables:
        return
    comm = world().comm
    for group in _by_dtype(variables).values():
        values = [v.numpy() for v in group]
        flat = np.concatenate([value.reshape(-1) for value in values])
        comm.Bcast(flat, root=root)
        offset = 0
        for variable, value in zip(group, values, strict=True):
            variable.assign(flat[offset : offset + value.size].reshape(value.shape))
            offset += value.size


def average_gradients(grads: Sequence[Tensor | None]) -> list[Tensor | None]:
    """Return the gradients averaged across the world, in few large messages: the gradients
    of each dtype are flattened into buckets of at most BUCKET_ELEMENTS elements, each one
    all_reduce, and split back. Every rank counts the same; ranks whose shards differ in size
    scale their losses first (`loss_share`)."""
    size = active_world_size()
    if size == 1:
        return list(grads)
    averaged: list[Tensor | None] = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    by_dtype: dict[DType, list[int]] = {}
    for i in present:
        by_dtype.setdefault(grads[i].dtype, []).append(i)  # type: ignore[union-attr]
    for indices in by_dtype.values():
        for bucket in _buckets(indices, grads):
            flat = [grads[i].reshape(-1) for i in bucket]  # type: ignore[union-attr]
            total = all_reduce(cat(flat) if len(flat) > 1 else flat[0], "sum")
            offset = 0
            for i in bucket:
                shape = grads[i].shape  # type: ignore[union-attr]
                count = _elements(shape)
                averaged[i] = (total[offset : offset + count] * (1.0 / size)).reshape(shape)
                offset += count
    return averaged


def loss_share(weight: Any, dtype: DType) -> Tensor:
    """Return what a rank's loss is scaled by before it is differentiated so that the
    averaged gradients are those of sum(weight * loss) / sum(weight) over the ranks: its
    weight (such as its batch size, a number, scalar Tensor or dim) times the world's size
    over the weights' sum. Scaling the loss rather than the gradients also weighs right what
    flows between ranks through all_reduce inside the model (SyncBatchNorm's statistics)."""
    w = _weight(weight, dtype)
    return w * (active_world_size() / all_reduce(w, "sum"))


def _weight(weight: Any, dtype: DType) -> Tensor:
    """Return a rank's weight (a Tensor, a number or a dim such as `x.shape[0]`, which may
    be symbolic) as a scalar of dtype."""
    if isinstance(weight, Tensor):
        return weight.to(dtype)
    if isinstance(weight, float):
        return as_tensor(weight, dtype)
    return count_tensor(weight, dtype)


def _buckets(indices: list[int], grads: Sequence[Tensor | None]) -> list[list[int]]:
    """Split indices, in order, into runs of at most BUCKET_ELEMENTS elements (a larger
    gradient has a bucket of its own)."""
    buckets: list[list[int]] = []
    filled = BUCKET_ELEMENTS
    for i in indices:
        count = _elements(grads[i].shape)  # type: ignore[union-attr]
        if filled + count > BUCKET_ELEMENTS:
            buckets.append([])
            filled = 0
        buckets[-1].append(i)
        filled += count
    return buckets


def _elements(shape: tuple) -> int:
    """Return the number of elements of a gradient's shape, which must be static."""
    count = dim_prod(shape)
    if not isinstance(count, int):
        raise ShapeError(
            f"average_gradients: a gradient of symbolic shape {shape} cannot be bucketed"
        )
    return count


def _by_dtype(variables: list[Variable]) -> dict[DType, list[Variable]]:
    groups: dict[DType, list[Variable]] = {}
    for variable in variables:
        groups.setdefault(variable.dtype, []).append(variable)
    return groups


def _aborting_hook(previous: Any, comm: Any) -> Any:
    """Return an excepthook that reports the exception, then aborts every rank of the job."""

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        previous(kind, value, traceback)
        sys.stderr.write(
            f"graphc.distributed: rank {comm.Get_rank()} failed; aborting all "
            f"{comm.Get_size()} processes\n"
        )
        sys.stderr.flush()
        comm.Abort(1)

    return hook
