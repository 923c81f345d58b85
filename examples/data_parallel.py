"""Train the digits MLP of examples/mlp.py data-parallel, on several processes over MPI.

Run it under an MPI launcher (`pip install -e '.[distributed]'` brings mpi4py and MPICH):

    mpiexec -n 2 python examples/data_parallel.py

Every process (a rank) builds the same model and the same compiled step; each global batch is
split between the ranks, each runs the step on its share, and the step averages the
gradients across the ranks (weighted by each share's size) before Adam uses them, so every
rank keeps the same weights. `opt.minimize` broadcasts rank 0's initial weights, and only
rank 0 evaluates and saves. Each rank prints its throughput; rank 0 prints the final loss
and the test accuracy. Without a launcher it trains in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import graphc as gc
import graphc.distributed as dist
from graphc import nn, optim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp import accuracy, load_digits, minibatches  # noqa: E402


def main() -> None:
    """Train the MLP on this rank's shard of every batch and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64, help="global, over all ranks")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--save", metavar="PATH", help="write the trained weights here (.npz)")
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()

    dist.init()
    rank, size = dist.rank(), dist.world_size()
    gc.manual_seed(rank)  # different draws per rank: minimize() broadcasts rank 0's weights
    x_train, y_train, x_test, y_test = load_digits(flat=True)
    model = nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, 10),
    )  # fmt: skip
    x = gc.input("x", ("B", 64))
    y = gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    # Each rank's gradient counts by its share of the batch (the last batch splits unevenly).
    updates = opt.minimize(loss, weight=x.shape[0])
    step = gc.compile([x, y], [loss], updates=updates, backend=args.backend)

    rng = np.random.default_rng(0)  # the same shuffles on every rank
    samples, started, last = 0, time.perf_counter(), float("nan")
    for _ in range(args.epochs):
        for xb, yb in minibatches(x_train, y_train, args.batch_size, rng):
            rows = np.array_split(np.arange(len(xb)), size)[rank]
            last = float(step(xb[rows], yb[rows]))
            samples += len(rows)
    elapsed = time.perf_counter() - started
    print(f"rank {rank}/{size}: {samples / elapsed:,.0f} samples/s ({elapsed:.2f} s)", flush=True)
    # The loss of the last batch over every rank's share, and the test accuracy.
    shares = dist.world().comm.allgather(last) if size > 1 else [last]
    if rank == 0:
        print(f"final loss: {np.mean(shares):.4f} (mean over {size} ranks' last shards)")
        correct = accuracy(model, x_test, y_test, args.backend)
        print(f"test accuracy: {correct:.1%} on {len(x_test)}")
    if args.save:
        gc.save(model.state_dict(), args.save)  # rank 0 writes
        if rank == 0:
            print(f"saved the weights to {args.save}")


if __name__ == "__main__":
    main()
