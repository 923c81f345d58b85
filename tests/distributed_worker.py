"""What tests/test_distributed.py runs under `mpiexec -n N`: small training runs and op checks.

`python distributed_worker.py train MODEL OPTIMIZER OUT` trains MODEL ("mlp" or "bn") for
STEPS steps on this rank's share of fixed batches and rank 0 writes the parameters to OUT;
`reference_parameters` trains the same model in one process on the whole batches.
`python distributed_worker.py grad OUT` writes each rank's all_reduce gradients; `fail KIND`
KIND makes rank 1 raise ("raised") or die ("killed") while rank 0 waits in an all_reduce.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import graphc as gc
import graphc.distributed as dist
from graphc import nn, optim

STEPS = 20
BATCH = 10
FEATURES = 6
CLASSES = 3


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the fixed whole batches every run trains on."""
    rng = np.random.default_rng(0)
    return [
        (
            rng.standard_normal((BATCH, FEATURES)).astype(np.float32),
            rng.integers(0, CLASSES, BATCH).astype(np.int64),
        )
        for _ in range(STEPS)
    ]


def shard_rows(size: int) -> list[np.ndarray]:
    """Return the rows of a batch each rank takes (uneven where size does not divide it)."""
    return np.array_split(np.arange(BATCH), size)


def make_model(kind: str, seed: int) -> nn.Module:
    if kind == "ddp":  # the MLP wrapped as PyTorch code wraps it: rank 0's weights everywhere
        return nn.DistributedDataParallel(make_model("mlp", seed))
    gc.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, CLASSES))
    # No bias before BatchNorm: its gradient is zero up to rounding, which Adam would scale
    # up to steps of noise. "syncbn" takes its statistics over every rank's shard.
    norm = nn.SyncBatchNorm(8) if kind == "syncbn" else nn.BatchNorm1d(8)
    return nn.Sequential(nn.Linear(FEATURES, 8, bias=False), norm, nn.ReLU(), nn.Linear(8, CLASSES))


def trained_values(kind: str, model: nn.Module) -> list[np.ndarray]:
    """Return the parameters, and the running statistics where they cover the whole batch."""
    values = [p.numpy() for p in model.parameters()]
    if kind == "syncbn":
        values += [model[1].running_mean.numpy(), model[1].running_var.numpy()]
    return values


def make_optimizer(name: str, model: nn.Module) -> optim.Optimizer:
    if name == "sgd":
        return optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return optim.Adam(model.parameters(), lr=0.01)


def train(kind: str, optimizer: str) -> list[np.ndarray]:
    """Train on this rank's shards; return the parameters."""
    rank, size = dist.rank(), dist.world_size()
    model = make_model(kind, seed=100 + rank)  # rank 0's weights must reach every rank
    opt = make_optimizer(optimizer, model)
    x = gc.input("x", ("B", FEATURES), gc.float32)
    y = gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss, weight=x.shape[0]))
    rows = shard_rows(size)[rank]
    for xb, yb in batches():
        step(xb[rows], yb[rows])
    return trained_values(kind, model)


def reference_parameters(kind: str, optimizer: str, size: int) -> list[np.ndarray]:
    """Train in one process on the whole batches; BatchNorm normalises each rank's shard by
    its own statistics, so the BatchNorm model's loss is the shards' losses, weighted by
    their sizes (SyncBatchNorm's statistics are the whole batch's, as in one process)."""
    model = make_model(kind, seed=100)
    opt = make_optimizer(optimizer, model)
    loss_fn = nn.CrossEntropyLoss()
    if kind in ("mlp", "syncbn", "ddp"):
        x = gc.input("x", ("B", FEATURES), gc.float32)
        y = gc.input("y", ("B",), gc.int64)
        step = gc.compile(
            [x, y], [loss_fn(model(x), y)], updates=opt.minimize(loss_fn(model(x), y))
        )
        for xb, yb in batches():
            step(xb, yb)
    else:
        rows = shard_rows(size)
        xs = [
            gc.input(f"x{r}", (len(r_rows), FEATURES), gc.float32) for r, r_rows in enumerate(rows)
        ]
        ys = [gc.input(f"y{r}", (len(r_rows),), gc.int64) for r, r_rows in enumerate(rows)]
        loss = sum(
            loss_fn(model(x), y) * (len(r_rows) / BATCH)
            for x, y, r_rows in zip(xs, ys, rows, strict=True)
        )
        step = gc.compile([*xs, *ys], [loss], updates=opt.minimize(loss))
        for xb, yb in batches():
            step(*[xb[r] for r in rows], *[yb[r] for r in rows])
    return trained_values(kind, model)


def grads_of_all_reduce(backend: str) -> dict[str, np.ndarray]:
    """Return, for this rank's input a_r, the gradient of sum_r sum(c_r * f(all_reduce(a_r)))
    for sum and max, compiled on backend."""
    rank = dist.rank()
    rng = np.random.default_rng(10 + rank)
    a = gc.Variable(rng.standard_normal((3, 4)), name="a")
    c = rng.standard_normal((3, 4))
    results = {}
    for op in ("sum", "mean", "max"):
        total = dist.all_reduce(a * 1.5, op)
        loss = (gc.tensor(c) * total * total).sum()
        (grad,) = gc.grad(loss, [a])
        results[op] = gc.compile([], [total, grad], backend=backend)()
    return {f"{op}_{i}": v for op, pair in results.items() for i, v in enumerate(pair)}


def main() -> None:
    dist.init()
    what = sys.argv[1]
    if what == "train":
        params = train(sys.argv[2], sys.argv[3])
        gathered = dist.world().comm.gather(params, root=0) if dist.world_size() > 1 else [params]
        if dist.rank() == 0:
            np.savez(
                sys.argv[4],
                *params,
                same=all(
                    all(np.array_equal(a, b) for a, b in zip(params, other, strict=True))
                    for other in gathered
                ),
            )
    elif what == "grad":
        values = {}
        for backend in ("reference", "llvm"):
            values |= {f"{backend}_{k}": v for k, v in grads_of_all_reduce(backend).items()}
        np.savez(f"{sys.argv[2]}.{dist.rank()}.npz", **values)
    elif what == "save":  # rank 0 first: a later writer would replace its file
        comm = dist.world().comm
        for turn in (0, 1):
            if (dist.rank() == 0) == (turn == 0):
                gc.save({"rank": np.array(dist.rank())}, sys.argv[2])
            comm.Barrier()
    elif what == "fail":
        x = gc.input("x", (4,), gc.float32)
        f = gc.compile([x], [dist.all_reduce(x)])
        if dist.rank() == 1:
            if sys.argv[2] == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 fails on purpose")
        f(np.ones(4, np.float32))


if __name__ == "__main__":
    main()
