"""Benchmark data-parallel training over MPI: an Adam step of the MLP 784-256-256-10 at a
global batch split between 1 and 2 processes of one thread each.

For each process count the script launches `mpiexec -n N` workers (this script with
`--worker`), which time `--repeat` steps one by one after a warm-up and report the median
step time, the global throughput, and the median time of the step's all_reduce alone (a
compiled all_reduce of a buffer as large as the gradients), whose share of the step it
prints. PyTorch runs the same model with DistributedDataParallel over gloo (fused Adam),
launched the same way, when torch is installed; its all_reduce share is timed with
`dist.all_reduce` of a tensor of the same size. Ratios are torch / graphc step times of the
same run (> 1: graphc is faster).

Usage: python benchmarks/data_parallel.py [--processes 1 2] [--batch 128] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = (784, 256, 256, 10)
RESULT = "RESULT "


def _median_ms(run, repeat: int, barrier) -> float:
    for _ in range(10):
        run()
    times = []
    for _ in range(repeat):
        barrier()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def _data(batch: int, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], batch).astype(np.int64)
    rows = np.array_split(np.arange(batch), size)[rank]
    return x[rows], y[rows]


def graphc_worker(batch: int, repeat: int) -> dict:
    import graphc as gc
    import graphc.distributed as dist
    from graphc import nn, optim

    dist.init()
    rank, size = dist.rank(), dist.world_size()
    comm = dist.world().comm
    layers = []
    for a, b in zip(SIZES[:-1], SIZES[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    x = gc.input("x", ("B", SIZES[0]))
    y = gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss))
    xb, yb = _data(batch, rank, size)
    elements = sum(p.numpy().size for p in model.parameters())
    buffer = gc.input("g", (elements,))
    reduce_only = gc.compile([buffer], [dist.all_reduce(buffer)])
    gradients = np.ones(elements, np.float32)
    barrier = comm.Barrier if size > 1 else (lambda: None)
    return {
        "step_ms": _median_ms(lambda: step(xb, yb), repeat, barrier),
        "all_reduce_ms": _median_ms(lambda: reduce_only(gradients), repeat, barrier),
    }


def torch_worker(batch: int, repeat: int) -> dict:
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(1)
    rank = int(os.environ.get("PMI_RANK", "0"))
    size = int(os.environ.get("PMI_SIZE", "1"))
    tdist.init_process_group("gloo", rank=rank, world_size=size)
    layers: list = []
    for a, b in zip(SIZES[:-1], SIZES[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers[:-1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    xb, yb = (torch.from_numpy(a) for a in _data(batch, rank, size))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()

    elements = sum(p.numel() for p in model.parameters())
    gradients = torch.ones(elements)
    result = {
        "step_ms": _median_ms(step, repeat, tdist.barrier),
        "all_reduce_ms": _median_ms(lambda: tdist.all_reduce(gradients), repeat, tdist.barrier),
    }
    tdist.destroy_process_group()
    return result


def _launch(peer: str, processes: int, batch: int, repeat: int) -> dict | str:
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "GRAPHC_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + processes)}
    command = [mpiexec, "-n", str(processes), sys.executable, __file__, "--worker", peer]
    command += ["--batch", str(batch), "--repeat", str(repeat)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT)]
    if run.returncode != 0 or not lines:
        return f"n/a: {(run.stderr.strip().splitlines() or ['failed'])[-1]}"
    ranks = [json.loads(line[len(RESULT) :]) for line in lines]
    return {key: max(r[key] for r in ranks) for key in ranks[0]}  # the slowest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128, help="global, split between ranks")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--worker", choices=["graphc", "torch"])
    args = parser.parse_args()
    if args.worker:
        work = graphc_worker if args.worker == "graphc" else torch_worker
        print(RESULT + json.dumps(work(args.batch, args.repeat)), flush=True)
        return
    try:
        import torch  # noqa: F401

        peers = ["graphc", "torch"]
    except ImportError:
        peers = ["graphc"]
    print(f"MLP {'-'.join(map(str, SIZES))} Adam step, global batch {args.batch}, 1 thread each")
    print("| processes | peer | step ms | samples/s | all_reduce ms | share | torch/graphc |")
    print("|---|---|---|---|---|---|---|")
    for processes in args.processes:
        results = {peer: _launch(peer, processes, args.batch, args.repeat) for peer in peers}
        for peer, result in results.items():
            if isinstance(result, str):
                print(f"| {processes} | {peer} | {result} | | | | |")
                continue
            share = result["all_reduce_ms"] / result["step_ms"] if processes > 1 else 0.0
            ratio = ""
            base = results["graphc"]
            if peer != "graphc" and isinstance(base, dict):
                ratio = f"{result['step_ms'] / base['step_ms']:.2f}"
            print(
                f"| {processes} | {peer} | {result['step_ms']:.3f} | "
                f"{args.batch / result['step_ms'] * 1e3:,.0f} | {result['all_reduce_ms']:.3f} | "
                f"{share:.0%} | {ratio} |"
            )


if __name__ == "__main__":
    main()
