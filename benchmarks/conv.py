"""Benchmark ResNet-style 3x3 convolutions (stride 1, padding 1, batch 8): forward, input
gradient and weight gradient, in GFLOP/s.

Layers: 64 channels at 56x56, 128 at 28x28, 256 at 14x14 (in = out channels). Each product
of a layer is a case; its FLOPs are 2 * N * O * C * 9 * H * W. graphc compiles
`conv2d(x, w)`, and `gc.grad((conv2d(x, w) * g).sum(), [x])` or `[w]` for the gradients;
PyTorch runs `conv2d` and `aten.convolution_backward` (oneDNN, what autograd calls).
"same-size GEMM" is graphc's own float32 matmul with the forward's GEMM dimensions, one
(O x 9C) @ (9C x N*H*W) product: its peer/graphc ratio is the convolution's share of
graphc's GEMM speed. Every result is checked against PyTorch in float64 at one thread.

Usage: python benchmarks/conv.py [--threads 1 2] [--repeat 10] [--layers 64 128 256]
       [--kinds forward input_grad weight_grad]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import Case, Peer, Prepared, check_close, import_torch, main

BATCH = 8
SIZES = {64: 56, 128: 28, 256: 14}  # channels: height and width
KINDS = ("forward", "input_grad", "weight_grad")


def data(channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return x, w and the output gradient g: the same float32 arrays in every worker."""
    size = SIZES[channels]
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((BATCH, channels, size, size), dtype=np.float32)
    w = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) / (3 * channels**0.5)
    g = rng.standard_normal((BATCH, channels, size, size), dtype=np.float32)
    return x, w, g


def reference(kind: str, channels: int) -> np.ndarray:
    """Return the case's result by PyTorch in float64, at one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, w, g = (torch.from_numpy(a).double() for a in data(channels))
    x.requires_grad_(kind == "input_grad")
    w.requires_grad_(kind == "weight_grad")
    y = torch.nn.functional.conv2d(x, w, padding=1)
    if kind != "forward":
        y.backward(g)
        y = x.grad if kind == "input_grad" else w.grad
    torch.set_num_threads(threads)
    return y.detach().numpy()


def check(label: str, got: Any, kind: str, channels: int) -> None:
    """Assert a result matches the float64 reference within float32 rounding of its sums."""
    want = reference(kind, channels)
    check_close(label, got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import graphc as gc

    kind, channels = params["kind"], params["channels"]
    arrays = dict(zip("xwg", data(channels), strict=True))
    x, w, g = (gc.input(name, a.shape) for name, a in arrays.items())
    start = time.perf_counter()
    y = gc.nn.functional.conv2d(x, w, padding=1)
    if kind == "forward":
        names, output = "xw", y
    else:
        wanted, names = (x, "wg") if kind == "input_grad" else (w, "xg")
        output = gc.grad((y * g).sum(), [wanted])[0]
    function = gc.compile([{"x": x, "w": w, "g": g}[name] for name in names], output)
    seconds = time.perf_counter() - start
    feeds = [arrays[name] for name in names]
    check("graphc", function(*feeds), kind, channels)
    kernels = ", ".join(name for name, _ in function.kernels())
    return Prepared(lambda: function(*feeds), seconds, f"kernels: {kernels}")


def gemm_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import graphc as gc

    channels = params["channels"]
    pixels = BATCH * SIZES[channels] ** 2
    rng = np.random.default_rng(0)
    a = rng.standard_normal((channels, 9 * channels), dtype=np.float32)
    b = rng.standard_normal((9 * channels, pixels), dtype=np.float32)
    left, right = gc.input("a", a.shape), gc.input("b", b.shape)
    start = time.perf_counter()
    function = gc.compile([left, right], left @ right)
    seconds = time.perf_counter() - start
    want = a.astype(np.float64) @ b.astype(np.float64)
    check_close("same-size GEMM", function(a, b), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    return Prepared(
        lambda: function(a, b), seconds, f"({channels} x {9 * channels}) @ (.. x {pixels})"
    )


def torch_setup(params: dict, options: argparse.Namespace) -> Prepared:
    torch = import_torch(options.threads)
    kind, channels = params["kind"], params["channels"]
    x, w, g = (torch.from_numpy(a) for a in data(channels))
    if kind == "forward":

        def run() -> Any:
            return torch.nn.functional.conv2d(x, w, padding=1)

    else:
        mask = [kind == "input_grad", kind == "weight_grad", False]
        position = 0 if kind == "input_grad" else 1

        def run() -> Any:
            grads = torch.ops.aten.convolution_backward(
                g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
            )
            return grads[position]

    check("torch", run().numpy(), kind, channels)
    return Prepared(run, note="oneDNN")


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("same-size GEMM", gemm_setup),
    Peer("torch", torch_setup),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layers", type=int, nargs="+", choices=sorted(SIZES), default=[64, 128, 256]
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))


def cases(options: argparse.Namespace) -> list[Case]:
    """Return each product of each layer, with its FLOPs."""
    return [
        Case(
            f"conv3x3 {channels}ch {SIZES[channels]}x{SIZES[channels]} batch {BATCH}, {kind}",
            {"kind": kind, "channels": channels},
            flops=2.0 * BATCH * channels * channels * 9 * SIZES[channels] ** 2,
        )
        for channels in options.layers
        for kind in options.kinds
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: ResNet-style 3x3 convolutions",
        cases,
        PEERS,
        repeat=10,
        warmup=2,
        add_arguments=add_arguments,
    )
