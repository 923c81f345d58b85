"""Benchmark a small MNIST-style CNN and an image decoder: the Adam training step and the
forward pass.

The models (`--models`):
- cnn (28x28 single-channel images, 10 classes): Conv2d(1,16,3,p1) -> BatchNorm2d -> ReLU ->
  MaxPool2d(2) -> Conv2d(16,32,3,p1) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(1568,10),
  cross-entropy;
- decoder (16 x 7 x 7 codes to 28x28 images): ConvTranspose2d(16,8,2,s2) -> ReLU ->
  Upsample(x2, bilinear) -> Conv2d(8,1,3,p1), mean squared error against a target image.

Cases, at batch 32 and 128:
- Adam step: forward, backward, Adam update (lr 1e-3) and BatchNorm's running statistics, in
  train mode. graphc compiles one step with graphc.nn and graphc.optim.Adam; PyTorch runs
  eager with torch.optim.Adam(fused=True); jax.jit runs when jax is installed.
- forward: the loss in train mode (BatchNorm on batch statistics), no gradients.
Every peer starts from the same parameters and batch. graphc's note gives the Function's
kernel count. Each peer checks its first two losses (the second after one Adam step) against
PyTorch in float64 at one thread before timing.

Usage: python benchmarks/cnn.py [--threads 1 2] [--repeat 50] [--batches 32 128]
       [--kinds step forward] [--models cnn decoder]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import Case, Peer, Prepared, Skip, check_two_steps, import_torch, main

LR = 1e-3
# (name, shape, fan_in) of each parameter, named as in torch's nn.Sequential, per model.
PARAMETERS = {
    "cnn": (
        ("0.weight", (16, 1, 3, 3), 9),
        ("0.bias", (16,), 9),
        ("4.weight", (32, 16, 3, 3), 144),
        ("4.bias", (32,), 144),
        ("8.weight", (10, 1568), 1568),
        ("8.bias", (10,), 1568),
    ),
    "decoder": (
        ("0.weight", (16, 8, 2, 2), 32),
        ("0.bias", (8,), 32),
        ("3.weight", (1, 8, 3, 3), 72),
        ("3.bias", (1,), 72),
    ),
}


def initial_state(name: str) -> dict[str, np.ndarray]:
    """Return the state every peer starts from: PyTorch's uniform(+-1/sqrt(fan_in)) draws for
    the weights and biases, BatchNorm's defaults."""
    rng = np.random.default_rng(0)
    state = {
        key: rng.uniform(-1, 1, shape) / np.sqrt(fan_in) for key, shape, fan_in in PARAMETERS[name]
    }
    if name == "cnn":
        state.update(
            {
                "1.weight": np.ones(16),
                "1.bias": np.zeros(16),
                "1.running_mean": np.zeros(16),
                "1.running_var": np.ones(16),
            }
        )
    state = {key: value.astype(np.float32) for key, value in state.items()}
    if name == "cnn":
        state["1.num_batches_tracked"] = np.array(0, np.int64)
    return state


def batch(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one batch: images (float32) and class labels (int64) for the CNN, codes and
    target images (float32) for the decoder."""
    rng = np.random.default_rng(size)
    if name == "decoder":
        codes = rng.standard_normal((size, 16, 7, 7), dtype=np.float32)
        return codes, rng.standard_normal((size, 1, 28, 28), dtype=np.float32)
    x = rng.standard_normal((size, 1, 28, 28), dtype=np.float32)
    return x, rng.integers(0, 10, size).astype(np.int64)


def model(name: str, lib: Any) -> Any:
    """Return the model built with lib (torch.nn or graphc.nn)."""
    if name == "decoder":
        return lib.Sequential(
            lib.ConvTranspose2d(16, 8, 2, stride=2),
            lib.ReLU(),
            lib.Upsample(scale_factor=2, mode="bilinear"),
            lib.Conv2d(8, 1, 3, padding=1),
        )
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


def loss_function(name: str, lib: Any) -> Any:
    """Return the model's loss as a module of lib."""
    return lib.MSELoss() if name == "decoder" else lib.CrossEntropyLoss()


def reference_losses(name: str, size: int) -> tuple[float, float]:
    """Return the losses of the first two Adam steps, by PyTorch in float64 at one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net = model(name, torch.nn).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state(name).items()})
    xb, yb = batch(name, size)
    x, y = torch.from_numpy(xb).double(), torch.from_numpy(yb)
    if y.is_floating_point():
        y = y.double()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    criterion = loss_function(name, torch.nn)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.set_num_threads(threads)
    return losses[0], losses[1]


# graphc ---------------------------------------------------------------------------------


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import graphc as gc
    from graphc import nn, optim

    name, size = params["model"], params["batch"]
    xb, yb = batch(name, size)
    net = model(name, nn)
    net.load_state_dict(initial_state(name))
    x = gc.input("x", ("B", *xb.shape[1:]))
    y = gc.input("y", ("B", *yb.shape[1:]), gc.float32 if name == "decoder" else gc.int64)
    start = time.perf_counter()
    loss = loss_function(name, nn)(net(x), y)
    if params["kind"] == "forward":
        function = gc.compile([x, y], loss)
    else:
        function = gc.compile(
            [x, y], loss, updates=optim.Adam(net.parameters(), lr=LR).minimize(loss)
        )
    seconds = time.perf_counter() - start
    first, second = function(xb, yb), function(xb, yb)
    if params["kind"] == "step":
        check_two_steps("graphc", first, second, reference_losses(name, size))
    note = f"{len(function.kernels())} kernels; compile s includes building the step"
    return Prepared(lambda: function(xb, yb), seconds, note)


# PyTorch --------------------------------------------------------------------------------


def torch_setup(params: dict, options: argparse.Namespace) -> Prepared:
    name, size = params["model"], params["batch"]
    torch = import_torch(options.threads)
    net = model(name, torch.nn)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state(name).items()})
    xb, yb = batch(name, size)
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)
    criterion = loss_function(name, torch.nn)
    if params["kind"] == "forward":

        def forward() -> Any:
            with torch.no_grad():
                return criterion(net(x), y)

        return Prepared(forward)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, fused=True)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    check_two_steps("torch", step().item(), step().item(), reference_losses(name, size))
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
    parser.add_argument("--models", nargs="+", choices=tuple(PARAMETERS), default=list(PARAMETERS))


def cases(options: argparse.Namespace) -> list[Case]:
    """Return each model's Adam step (and forward pass when asked) at each batch size."""
    models = {"cnn": "CNN", "decoder": "decoder (ConvTranspose2d + bilinear Upsample)"}
    titles = {"step": "Adam training step", "forward": "forward (train mode)"}
    return [
        Case(
            f"{models[name]} {titles[kind]}, batch {size}",
            {"model": name, "kind": kind, "batch": size},
        )
        for name in options.models
        for kind in options.kinds
        for size in options.batches
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: MNIST-style CNN and image decoder",
        cases,
        PEERS,
        repeat=50,
        warmup=5,
        add_arguments=add_arguments,
    )
