"""Benchmark the fused elementwise chain sigmoid(x*w + b) * tanh(x) + 0.5*x*x on 16M float32.

graphc compiles the chain into one kernel; the peers are numpy, PyTorch eager, torch.compile
and jax.jit (and jax.jit writing into a donated, reused output buffer, compared with graphc
writing into a preallocated output where graphc's Function offers `out=`).

Usage: python benchmarks/elementwise.py [--threads 1 2] [--repeat 20] [--size 16777216]
"""

from __future__ import annotations

import argparse
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

SIZE = 1 << 24


def chain(sigmoid: Any, tanh: Any, x: Any, w: Any, b: Any) -> Any:
    """Return the benchmarked expression in any library's vocabulary."""
    return sigmoid(x * w + b) * tanh(x) + 0.5 * x * x


def data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return x, w, b: the same standard normal float32 arrays in every worker."""
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(n, dtype=np.float32) for _ in range(3))


def check(label: str, got: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
    """Assert that got is the chain computed by numpy in float64, within float32 tolerance."""
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    want = chain(lambda t: 1 / (1 + np.exp(-t)), np.tanh, x64, w64, b64)
    check_close(label, got, want, rtol=1e-5, atol=1e-6)


def graphc_function(n: int) -> tuple[Any, float, str]:
    """Return the compiled chain, its compile seconds and a note with its kernel count."""
    import time

    import graphc as gc

    x, w, b = (gc.input(name, (n,)) for name in "xwb")
    start = time.perf_counter()
    function = gc.compile([x, w, b], chain(gc.sigmoid, gc.tanh, x, w, b))
    seconds = time.perf_counter() - start
    kernels = len(function.kernels())
    return function, seconds, f"{kernels} kernel{'s' if kernels > 1 else ''}"


def graphc_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    x, w, b = data(params["n"])
    function, seconds, note = graphc_function(params["n"])
    check("graphc", function(x, w, b), x, w, b)
    return Prepared(lambda: function(x, w, b), seconds, note)


def graphc_out_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    if not graphc_supports_out():
        raise Skip("gc.Function.__call__ takes no out=, so each call allocates its output")
    x, w, b = data(params["n"])
    function, seconds, note = graphc_function(params["n"])
    out = np.empty_like(x)
    function(x, w, b, out=out)
    check("graphc out=", out, x, w, b)
    return Prepared(lambda: function(x, w, b, out=out), seconds, note)


def numpy_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    x, w, b = data(params["n"])

    def run() -> np.ndarray:
        return chain(lambda t: 1 / (1 + np.exp(-t)), np.tanh, x, w, b)

    check("numpy", run(), x, w, b)
    return Prepared(run)


def torch_setup(params: dict[str, Any], options: argparse.Namespace, compiled: bool) -> Prepared:
    torch = import_torch(options.threads)
    x, w, b = data(params["n"])
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

    def eager(x: Any, w: Any, b: Any) -> Any:
        return chain(torch.sigmoid, torch.tanh, x, w, b)

    function = torch.compile(eager) if compiled else eager
    result, seconds = timed_first_call(lambda: function(tx, tw, tb))
    check("torch", result.numpy(), x, w, b)
    return Prepared(lambda: function(tx, tw, tb), seconds if compiled else None)


def jax_setup(params: dict[str, Any], options: argparse.Namespace, donate: bool) -> Prepared:
    jax = import_jax(options.threads)
    jnp = jax.numpy
    x, w, b = data(params["n"])
    jx, jw, jb = (jax.device_put(a) for a in (x, w, b))
    if not donate:
        function = jax.jit(lambda x, w, b: chain(jax.nn.sigmoid, jnp.tanh, x, w, b))
        result, seconds = timed_first_call(lambda: function(jx, jw, jb).block_until_ready())
        check("jax.jit", np.asarray(result), x, w, b)
        return Prepared(lambda: function(jx, jw, jb).block_until_ready(), seconds)

    # The output takes over the donated buffer of the previous call's output; keep_unused,
    # or jit drops the unused argument and with it the donation.
    function = jax.jit(
        lambda x, w, b, out: chain(jax.nn.sigmoid, jnp.tanh, x, w, b),
        donate_argnums=3,
        keep_unused=True,
    )
    state = [jnp.zeros_like(jx)]

    def run() -> Any:
        state[0] = function(jx, jw, jb, state[0]).block_until_ready()
        return state[0]

    result, seconds = timed_first_call(run)
    check("jax.jit donated", np.asarray(result), x, w, b)
    before = result.unsafe_buffer_pointer()
    reused = run().unsafe_buffer_pointer() == before
    return Prepared(run, seconds, "" if reused else "the donated buffer was not reused")


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("graphc out=", graphc_out_setup),
    Peer("numpy", numpy_setup, numpy_threads=True),
    Peer("torch eager", lambda p, o: torch_setup(p, o, compiled=False)),
    Peer("torch.compile", lambda p, o: torch_setup(p, o, compiled=True)),
    Peer("jax.jit", lambda p, o: jax_setup(p, o, donate=False), needs="jax"),
    Peer(
        "jax.jit donated out",
        lambda p, o: jax_setup(p, o, donate=True),
        against="graphc out=",
        needs="jax",
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=SIZE, help="elements (default 16M)")


def cases(options: argparse.Namespace) -> list[Case]:
    """Return the one case, sized by --size."""
    size = options.size
    label = f"{size // (1 << 20)}M" if size % (1 << 20) == 0 else str(size)
    return [Case(f"sigmoid(x*w+b)*tanh(x)+0.5*x*x, {label} f32", {"n": size})]


if __name__ == "__main__":
    main(
        "graphc benchmark: fused elementwise chain",
        cases,
        PEERS,
        repeat=20,
        add_arguments=add_arguments,
    )
