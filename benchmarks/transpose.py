"""Benchmark copies that transpose: a square matrix, a convolution's channels-last values read
as channels first (NHWC -> NCHW), the flatten before the MNIST CNN's Linear, a transpose
flattened to one dim, attention's heads merged back into rows, and RGB images to channels
last.

Peers: numpy (`np.ascontiguousarray` of the transposed view), PyTorch eager
(`.permute(...).contiguous()`) and jax.jit.

Usage: python benchmarks/transpose.py [--threads 1 2] [--repeat 50] [--dtypes f32 f64]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import Case, Peer, Prepared, check_close, import_jax, import_torch, main

# name: (input shape, permutation, output shape; None keeps the permuted shape)
LAYOUTS = {
    "1024^2 x.T": ((1024, 1024), (1, 0), None),
    "2304x256 x.T": ((2304, 256), (1, 0), None),
    "NHWC (8,32,32,64) -> NCHW": ((8, 32, 32, 64), (0, 3, 1, 2), None),
    "flatten (64,7,7,32) as NCHW": ((64, 7, 7, 32), (0, 3, 1, 2), (64, 1568)),
    "1024^2 x.T.reshape(-1)": ((1024, 1024), (1, 0), (1024 * 1024,)),
    "heads merge (16,4,128,32) -> (16,128,128)": ((16, 4, 128, 32), (0, 2, 1, 3), (16, 128, 128)),
    "RGB (64,3,32,32) -> NHWC": ((64, 3, 32, 32), (0, 2, 3, 1), None),
}
DTYPES = {"f32": np.float32, "f64": np.float64}


def data(params: dict[str, Any]) -> np.ndarray:
    """Return the same input in every worker."""
    shape = LAYOUTS[params["layout"]][0]
    return np.random.default_rng(0).standard_normal(shape).astype(DTYPES[params["dtype"]])


def expected(params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    _, perm, out_shape = LAYOUTS[params["layout"]]
    moved = np.ascontiguousarray(x.transpose(perm))
    return moved if out_shape is None else moved.reshape(out_shape)


def graphc_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    import graphc as gc

    shape, perm, out_shape = LAYOUTS[params["layout"]]
    x_value = data(params)
    x = gc.input("x", shape, gc.float32 if params["dtype"] == "f32" else gc.float64)
    moved = x.permute(*perm)
    start = time.perf_counter()
    function = gc.compile([x], moved if out_shape is None else moved.reshape(*out_shape))
    seconds = time.perf_counter() - start
    check_close("graphc", function(x_value), expected(params, x_value), rtol=0, atol=0)
    return Prepared(lambda: function(x_value), seconds, f"{len(function.kernels())} kernel")


def numpy_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    x = data(params)
    return Prepared(lambda: expected(params, x))


def torch_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    torch = import_torch(options.threads)
    _, perm, out_shape = LAYOUTS[params["layout"]]
    x = data(params)
    tx = torch.from_numpy(x)

    def run() -> Any:
        moved = tx.permute(*perm).contiguous()
        return moved if out_shape is None else moved.reshape(out_shape)

    check_close("torch", run().numpy(), expected(params, x), rtol=0, atol=0)
    return Prepared(run)


def jax_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    _, perm, out_shape = LAYOUTS[params["layout"]]
    x = data(params)
    jx = jax.device_put(x)

    def moved(v: Any) -> Any:
        v = v.transpose(perm)
        return v if out_shape is None else v.reshape(out_shape)

    function = jax.jit(moved)
    check_close("jax.jit", np.asarray(function(jx)), expected(params, x), rtol=0, atol=0)
    return Prepared(lambda: function(jx).block_until_ready())


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("numpy", numpy_setup, numpy_threads=True),
    Peer("torch eager", torch_setup),
    Peer("jax.jit", jax_setup, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["f32"])
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))


def cases(options: argparse.Namespace) -> list[Case]:
    return [
        Case(f"{layout} {dtype}", {"layout": layout, "dtype": dtype})
        for dtype in options.dtypes
        for layout in options.layouts
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: copies that transpose",
        cases,
        PEERS,
        repeat=50,
        add_arguments=add_arguments,
    )
