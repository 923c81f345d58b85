"""Benchmark a small MNIST-style CNN: the Adam training step and the forward pass.

The model (28x28 single-channel images, 10 classes):
Conv2d(1,16,3,p1) -> BatchNorm2d -> ReLU -> MaxPool2d(2) -> Conv2d(16,32,3,p1) -> ReLU ->
MaxPool2d(2) -> Flatten -> Linear(1568,10), cross-entropy.

Cases, at batch 32 and 128:
- Adam step: forward, backward, Adam update (lr 1e-3) and BatchNorm's running statistics, in
  train mode. graphc compiles one step with graphc.nn and graphc.optim.Adam; PyTorch runs
  eager with torch.optim.Adam(fused=True); jax.jit runs when jax is installed.
- forward: the loss in train mode (BatchNorm on batch statistics), no gradients.
Every peer starts from the same parameters and batch. graphc's note gives the Function's
kernel count. Each peer checks its first two losses (the second after one Adam step) against
PyTorch in float64 at one thread before timing.

Usage: python benchmarks/cnn.py [--threads 1 2] [--repeat 50] [--batches 32 128]
       [--kinds step forward]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import Case, Peer, Prepared, Skip, check_two_steps, import_torch, main

LR = 1e-3
# (name, shape, fan_in) of each parameter, named as in torch's nn.Sequential.
PARAMETERS = (
    ("0.weight", (16, 1, 3, 3), 9),
    ("0.bias", (16,), 9),
    ("4.weight", (32, 16, 3, 3), 144),
    ("4.bias", (32,), 144),
    ("8.weight", (10, 1568), 1568),
    ("8.bias", (10,), 1568),
)


def initial_state() -> dict[str, np.ndarray]:
    """Return the state every peer starts from: PyTorch's uniform(+-1/sqrt(fan_in)) draws for
    the convolutions and the Linear layer, BatchNorm's defaults."""
    rng = np.random.default_rng(0)
    state = {
        name: rng.uniform(-1, 1, shape) / np.sqrt(fan_in) for name, shape, fan_in in PARAMETERS
    }
    state.update(
        {
            "1.weight": np.ones(16),
            "1.bias": np.zeros(16),
            "1.running_mean": np.zeros(16),
            "1.running_var": np.ones(16),
        }
    )
    state = {name: value.astype(np.float32) for name, value in state.items()}
    state["1.num_batches_tracked"] = np.array(0, np.int64)
    return state


def batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the images (float32) and class labels (int64) of one batch."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((size, 1, 28, 28), dtype=np.float32)
    return x, rng.integers(0, 10, size).astype(np.int64)


def model(lib: Any) -> Any:
    """Return the CNN built with lib (torch.nn or graphc.nn)."""
    return lib.Sequential(
        lib.Conv2d(1, 16, 3, padding=1),
        lib.BatchNorm2d(16),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Conv2d(16, 32, 3, padding=1),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Flatten(),
        lib.Linear(1568, 10),
    )


def reference_losses(size: int) -> tuple[float, float]:
    """Return the losses of the first two Adam steps, by PyTorch in float64 at one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net = model(torch.nn).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state().items()})
    xb, yb = batch(size)
    x, y = torch.from_numpy(xb).double(), torch.from_numpy(yb)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.set_num_threads(threads)
    return losses[0], losses[1]


# graphc ---------------------------------------------------------------------------------


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import graphc as gc
    from graphc import nn, optim

    size = params["batch"]
    xb, yb = batch(size)
    net = model(nn)
    net.load_state_dict(initial_state())
    x = gc.input("x", ("B", 1, 28, 28))
    y = gc.input("y", ("B",), gc.int64)
    start = time.perf_counter()
    loss = nn.CrossEntropyLoss()(net(x), y)
    if params["kind"] == "forward":
        function = gc.compile([x, y], loss)
    else:
        function = gc.compile(
            [x, y], loss, updates=optim.Adam(net.parameters(), lr=LR).minimize(loss)
        )
    seconds = time.perf_counter() - start
    first, second = function(xb, yb), function(xb, yb)
    if params["kind"] == "step":
        check_two_steps("graphc", first, second, reference_losses(size))
    note = f"{len(function.kernels())} kernels; compile s includes building the step"
    return Prepared(lambda: function(xb, yb), seconds, note)


# PyTorch --------------------------------------------------------------------------------


def torch_setup(params: dict, options: argparse.Namespace) -> Prepared:
    size = params["batch"]
    torch = import_torch(options.threads)
    net = model(torch.nn)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state().items()})
    xb, yb = batch(size)
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)
    if params["kind"] == "forward":

        def forward() -> Any:
            with torch.no_grad():
                return torch.nn.functional.cross_entropy(net(x), y)

        return Prepared(forward)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=True)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    check_two_steps("torch", step().item(), step().item(), reference_losses(size))
    return Prepared(step, note="torch.optim.Adam(fused=True)")


def jax_setup(params: dict, options: argparse.Namespace) -> Prepared:
    raise Skip("no jax variant of this model yet")


# the script -----------------------------------------------------------------------------


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("torch", torch_setup),
    Peer("jax.jit", jax_setup, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--kinds", nargs="+", choices=("step", "forward"), default=["step"])


def cases(options: argparse.Namespace) -> list[Case]:
    """Return the Adam step (and the forward pass when asked) at each batch size."""
    titles = {"step": "CNN Adam training step", "forward": "CNN forward (train mode)"}
    return [
        Case(f"{titles[kind]}, batch {size}", {"kind": kind, "batch": size})
        for kind in options.kinds
        for size in options.batches
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: MNIST-style CNN",
        cases,
        PEERS,
        repeat=50,
        warmup=5,
        add_arguments=add_arguments,
    )
