"""Benchmark row softmax, row sum and row max of a 4096x1024 float32 matrix.

Peers: numpy, PyTorch eager, torch.compile and jax.jit; graphc also writing into a
preallocated output (`out=`).

Usage: python benchmarks/softmax.py [--threads 1 2] [--repeat 50] [--rows 4096] [--cols 1024]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import (
    Case,
    Peer,
    Prepared,
    Skip,
    check_close,
    graphc_supports_out,
    import_jax,
    import_torch,
    main,
    timed_first_call,
)

OPS = ("softmax", "sum", "max")


def data(shape: tuple[int, int]) -> np.ndarray:
    """Return the same float32 matrix in every worker (values spread as logits are)."""
    return (np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3).astype(
        np.float32
    )


def numpy_op(op: str, x: np.ndarray) -> np.ndarray:
    """Return the row-wise op computed with numpy, as a numpy user writes it."""
    if op == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x.sum(axis=1) if op == "sum" else x.max(axis=1)


def check(label: str, op: str, got: Any, x: np.ndarray) -> None:
    """Assert that got is the op computed by numpy in float64, within float32 tolerance."""
    want = numpy_op(op, x.astype(np.float64))
    atol = 1e-4 if op == "sum" else 1e-7
    check_close(f"{label} {op}", got, want, rtol=1e-5, atol=atol)


def graphc_function(op: str, shape: tuple[int, int]) -> tuple[Any, float, str]:
    """Return the compiled op, its compile seconds and a note with its kernel count."""
    import graphc as gc

    x = gc.input("x", shape)
    if op == "softmax":
        y = gc.softmax(x, dim=1)
    else:
        y = x.sum(dim=1) if op == "sum" else x.max(dim=1)[0]
    start = time.perf_counter()
    function = gc.compile([x], y)
    seconds = time.perf_counter() - start
    kernels = len(function.kernels())
    return function, seconds, f"{kernels} kernel{'s' if kernels > 1 else ''}"


def graphc_setup(params: dict[str, Any], options: argparse.Namespace, out: bool) -> Prepared:
    if out and not graphc_supports_out():
        raise Skip("gc.Function.__call__ takes no out=")
    op, shape = params["op"], tuple(params["shape"])
    x = data(shape)
    function, seconds, note = graphc_function(op, shape)
    if not out:
        check("graphc", op, function(x), x)
        return Prepared(lambda: function(x), seconds, note)
    target = np.empty(numpy_op(op, x).shape, np.float32)
    function(x, out=target)
    check("graphc out=", op, target, x)
    return Prepared(lambda: function(x, out=target), seconds, note)


def numpy_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    op, x = params["op"], data(tuple(params["shape"]))
    check("numpy", op, numpy_op(op, x), x)
    return Prepared(lambda: numpy_op(op, x))


def torch_setup(params: dict[str, Any], options: argparse.Namespace, compiled: bool) -> Prepared:
    torch = import_torch(options.threads)
    op, x = params["op"], data(tuple(params["shape"]))
    tx = torch.from_numpy(x)

    def eager(x: Any) -> Any:
        if op == "softmax":
            return torch.softmax(x, dim=1)
        return x.sum(dim=1) if op == "sum" else torch.amax(x, dim=1)

    function = torch.compile(eager) if compiled else eager
    result, seconds = timed_first_call(lambda: function(tx))
    check("torch", op, result.numpy(), x)
    return Prepared(lambda: function(tx), seconds if compiled else None)


def jax_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    op, x = params["op"], data(tuple(params["shape"]))
    jx = jax.device_put(x)
    ops = {
        "softmax": lambda x: jax.nn.softmax(x, axis=1),
        "sum": lambda x: x.sum(axis=1),
        "max": lambda x: x.max(axis=1),
    }
    function = jax.jit(ops[op])
    result, seconds = timed_first_call(lambda: function(jx).block_until_ready())
    check("jax.jit", op, np.asarray(result), x)
    return Prepared(lambda: function(jx).block_until_ready(), seconds)


PEERS = [
    Peer("graphc", lambda p, o: graphc_setup(p, o, out=False)),
    Peer("graphc out=", lambda p, o: graphc_setup(p, o, out=True)),
    Peer("numpy", numpy_setup, numpy_threads=True),
    Peer("torch eager", lambda p, o: torch_setup(p, o, compiled=False)),
    Peer("torch.compile", lambda p, o: torch_setup(p, o, compiled=True)),
    Peer("jax.jit", jax_setup, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))


def cases(options: argparse.Namespace) -> list[Case]:
    """Return one case per op on a rows x cols matrix."""
    shape = (options.rows, options.cols)
    return [
        Case(f"row {op} {shape[0]}x{shape[1]} f32", {"op": op, "shape": shape})
        for op in options.ops
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: row softmax, row sum, row max",
        cases,
        PEERS,
        repeat=50,
        add_arguments=add_arguments,
    )
