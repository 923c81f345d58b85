"""Benchmark float32 GEMM C = A @ B for square N = 256, 512, 1024, 2048: GFLOP/s and ratios.

graphc compiles `a @ b` for each N; the peers are numpy (OpenBLAS), PyTorch and jax.jit.
benchmarks/gemm_kernel.py times graphc's GEMM kernel alone, without the compiled Function.

Usage: python benchmarks/gemm.py [--threads 1 2] [--repeat 20] [--sizes 256 512 1024 2048]
                                 [--cpu avx2]

--cpu compiles graphc's code for another CPU target the host can run (a GRAPHC_CPU value: an ISA
alias avx512, avx2, sse2 or an LLVM CPU name); without it GRAPHC_CPU is honoured as always. The
peers are not affected: OPENBLAS_CORETYPE (e.g. Haswell) makes numpy's OpenBLAS use another
kernel set. graphc's note names the GEMM plan and target it ran.
"""

from __future__ import annotations

import argparse
import os
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


def data(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return A and B: the same standard normal float32 matrices in every worker."""
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal(
        (n, n), dtype=np.float32
    )


def check(label: str, got: Any, a: np.ndarray, b: np.ndarray) -> None:
    """Assert that got is A @ B computed in float64, within float32 rounding of an N-term sum."""
    want = a.astype(np.float64) @ b.astype(np.float64)
    check_close(label, got, want, rtol=1e-5, atol=2e-6 * a.shape[1])


def graphc_setup(params: dict[str, Any], options: argparse.Namespace, out: bool) -> Prepared:
    import graphc as gc

    if out and not graphc_supports_out():
        raise Skip("gc.Function.__call__ takes no out=")
    if options.cpu:
        os.environ["GRAPHC_CPU"] = options.cpu
    n = params["n"]
    a, b = data(n)
    x, y = gc.input("a", (n, n)), gc.input("b", (n, n))
    start = time.perf_counter()
    function = gc.compile([x, y], x @ y)
    seconds = time.perf_counter() - start
    note = graphc_plan()
    if not out:
        check("graphc", function(a, b), a, b)
        return Prepared(lambda: function(a, b), seconds, note)
    c = np.empty((n, n), np.float32)
    function(a, b, out=c)
    check("graphc out=", c, a, b)
    return Prepared(lambda: function(a, b, out=c), seconds, note)


def graphc_plan() -> str:
    """Return the f32 GEMM plan and CPU target graphc compiled for, e.g. 6x16 haswell (avx2)."""
    try:
        from graphc.backends.llvm.gemm import gemm_plan
        from graphc.backends.llvm.target import selected_target
    except ImportError:  # an older graphc, before per-target plans
        return ""
    target = selected_target()
    plan = gemm_plan("f32", target)
    return f"{plan.mr}x{plan.nr} {target.cpu} ({target.isa})"


def numpy_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    a, b = data(params["n"])
    check("numpy", a @ b, a, b)
    return Prepared(lambda: a @ b)


def torch_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    torch = import_torch(options.threads)
    a, b = data(params["n"])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    check("torch", (ta @ tb).numpy(), a, b)
    return Prepared(lambda: ta @ tb)


def jax_setup(params: dict[str, Any], options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    a, b = data(params["n"])
    ja, jb = jax.device_put(a), jax.device_put(b)
    function = jax.jit(lambda a, b: a @ b)
    result, seconds = timed_first_call(lambda: function(ja, jb).block_until_ready())
    check("jax.jit", np.asarray(result), a, b)
    return Prepared(lambda: function(ja, jb).block_until_ready(), seconds)


PEERS = [
    Peer("graphc", lambda p, o: graphc_setup(p, o, out=False)),
    Peer("graphc out=", lambda p, o: graphc_setup(p, o, out=True)),
    Peer("numpy", numpy_setup, numpy_threads=True),
    Peer("torch", torch_setup),
    Peer("jax.jit", jax_setup, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--cpu", help="graphc's target, a GRAPHC_CPU value (e.g. avx2)")


def cases(options: argparse.Namespace) -> list[Case]:
    """Return one square GEMM per size."""
    return [Case(f"GEMM f32 N={n}", {"n": n}, flops=2.0 * n**3) for n in options.sizes]


if __name__ == "__main__":
    main("graphc benchmark: float32 GEMM", cases, PEERS, repeat=20, add_arguments=add_arguments)
