"""Benchmark inference of ONNX models: graphc.onnx.load + gc.compile against onnxruntime.

The models are built in PyTorch (eval mode) and exported with `torch.onnx.export` with a
symbolic batch dim, as examples/onnx_import.py does (its models and exporter are reused):
- digits CNN: Conv2d(1,8,3,p1) -> BatchNorm2d -> ReLU -> MaxPool2d(2) -> Flatten ->
  Linear(128,10), on (B, 1, 8, 8) images (examples/onnx_import.py);
- digits MLP: Flatten -> Linear(64,32) -> ReLU -> Linear(32,10), on (B, 1, 8, 8)
  (examples/onnx_import.py);
- MNIST CNN: Conv2d(1,16,3,p1) -> BatchNorm2d -> ReLU -> MaxPool2d(2) -> Conv2d(16,32,3,p1) ->
  ReLU -> MaxPool2d(2) -> Flatten -> Linear(1568,10), on (B, 1, 28, 28) (benchmarks/cnn.py's
  model, with BatchNorm in eval mode);
- MNIST MLP: Flatten -> Linear(784,256) -> ReLU -> Linear(256,256) -> ReLU -> Linear(256,10).

Each at batch 1 and 64. graphc loads the same ONNX bytes with graphc.onnx.load (the batch dim
stays symbolic, so one compiled Function serves both batches) and compiles the outputs;
onnxruntime runs them on its CPU execution provider with intra_op_num_threads set to the
thread count (inter_op_num_threads 1, default graph optimisations). Both check their output
against PyTorch in float64 before timing.

Needs torch, onnx and onnxruntime (`pip install 'graphc[onnx]'`).

Usage: python benchmarks/onnx_runtime.py [--threads 1 2] [--repeat 200] [--batches 1 64]
       [--models digits_cnn digits_mlp mnist_cnn mnist_mlp]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np
from harness import Case, Peer, Prepared, check_close, import_torch, main

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
MODELS = ("digits_cnn", "digits_mlp", "mnist_cnn", "mnist_mlp")


def export(name: str) -> tuple[Any, bytes, tuple[int, ...]]:
    """Return the PyTorch module (eval mode), its ONNX bytes and the shape of one input row."""
    sys.path.insert(0, EXAMPLES)
    import torch
    from onnx_import import pytorch_models, to_onnx

    if name.startswith("digits"):
        module, row = pytorch_models()[name.removeprefix("digits_")]
    else:
        torch.manual_seed(0)
        if name == "mnist_cnn":
            layers = [
                torch.nn.Conv2d(1, 16, 3, padding=1),
                torch.nn.BatchNorm2d(16),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
                torch.nn.Conv2d(16, 32, 3, padding=1),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
                torch.nn.Flatten(),
                torch.nn.Linear(1568, 10),
            ]
        else:
            layers = [
                torch.nn.Flatten(),
                torch.nn.Linear(784, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 10),
            ]
        module, row = torch.nn.Sequential(*layers).eval(), (1, 28, 28)
        if name == "mnist_cnn":  # running statistics that are not the identity
            with torch.no_grad():
                module[1].running_mean.uniform_(-0.5, 0.5)
                module[1].running_var.uniform_(0.5, 2.0)
    return module, to_onnx(module, row), row


def images(params: dict, row: tuple[int, ...]) -> np.ndarray:
    """Return the case's input batch (float32)."""
    rng = np.random.default_rng(params["batch"])
    return rng.standard_normal((params["batch"], *row), dtype=np.float32)


def check_against_torch(label: str, module: Any, x: np.ndarray, got: Any) -> None:
    """Assert that got equals the PyTorch module's output in float64."""
    import torch

    with torch.no_grad():
        want = module.double()(torch.from_numpy(x).double()).numpy()
    check_close(label, got, want, rtol=1e-4, atol=1e-5)


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import_torch(1)  # the exporter's own threads stay out of the way
    import graphc as gc
    import graphc.onnx

    module, model_bytes, row = export(params["model"])
    x = images(params, row)
    start = time.perf_counter()
    model = graphc.onnx.load(model_bytes)
    predict = gc.compile(model.inputs, model.outputs[0])
    seconds = time.perf_counter() - start
    check_against_torch("graphc", module, x, predict(x))
    note = f"{len(predict.kernels())} kernels; compile s includes graphc.onnx.load"
    return Prepared(lambda: predict(x), seconds, note)


def onnxruntime_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import_torch(1)
    import onnxruntime

    module, model_bytes, row = export(params["model"])
    x = images(params, row)
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = options.threads
    settings.inter_op_num_threads = 1
    start = time.perf_counter()
    session = onnxruntime.InferenceSession(
        model_bytes, settings, providers=["CPUExecutionProvider"]
    )
    seconds = time.perf_counter() - start
    name = session.get_inputs()[0].name
    check_against_torch("onnxruntime", module, x, session.run(None, {name: x})[0])
    note = f"onnxruntime {onnxruntime.__version__}; compile s is the session's creation"
    return Prepared(lambda: session.run(None, {name: x}), seconds, note)


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("onnxruntime", onnxruntime_setup, needs="onnxruntime"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))


def cases(options: argparse.Namespace) -> list[Case]:
    """Return every model at every batch size."""
    return [
        Case(f"{model} inference, batch {size}", {"model": model, "batch": size})
        for model in options.models
        for size in options.batches
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: ONNX models, graphc against onnxruntime",
        cases,
        PEERS,
        repeat=200,
        # A call takes 4 us to 2 ms. On a Zen 3 VM both peers' calls got faster in steps over
        # the first ~70 (the MNIST CNN at batch 1: 68 -> 55 -> 43 -> 33 us for graphc, 62 -> 49
        # -> 42 us for onnxruntime), so medians after 20 mixed the two.
        warmup=300,
        add_arguments=add_arguments,
    )
