"""Benchmark graphc's packed LLVM GEMM kernel against numpy (OpenBLAS) on one thread.

Usage: python benchmarks/gemm_kernel.py [--sizes 256 512 1024 2048] [--repeats 7]
                                        [--cpu avx2] [--caches 32K 512K 32M] [--skinny]
                                        [--pipeline vectorised|standard]

Prints the target and plans, the time to emit, optimise and JIT the kernel module, then GFLOP/s
of C = A @ B for square float32 and float64 matrices, graphc against numpy on the same arrays, as
medians of several runs. --cpu compiles the plan of another target the host can run (a
GRAPHC_CPU value; default: GRAPHC_CPU, else the host); --caches plans with other L1d, L2 and L3
sizes (e.g. Zen 3's on a Zen 4 host). --skinny times x @ W.T and x @ W (K 784, N 256) for
batches M of 1 to 128 by the unpacked paths (dot products, rows of B), by the packed path and
by numpy: the figures DOT_MAX_SIDE is chosen from.
"""

from __future__ import annotations

import os

# Before numpy is imported: OpenBLAS reads its thread count once, at load.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import llvmlite.binding as llvm  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402

from graphc.backends.llvm import gemm  # noqa: E402
from graphc.backends.llvm.codegen import optimise  # noqa: E402
from graphc.backends.llvm.target import (  # noqa: E402
    CpuTarget,
    can_execute,
    cpu_target,
    selected_target,
)

DTYPES = {"f32": np.float32, "f64": np.float64}
SIGNATURE = ctypes.CFUNCTYPE(
    None,
    *(ctypes.c_int64,) * 3,
    *(ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64) * 2,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int32,
    ctypes.c_void_p,
    *(ctypes.c_int64,) * 7,
)
# The arguments after flags of a call that packs B itself (then A's depth: one run).
NO_PREPACKED_B = (None, 0, 0)
# The last arguments: A's rows in no runs.
NO_ROW_RUNS = (0, 0, 0)


def compile_kernels(
    target: CpuTarget, pipeline: str
) -> tuple[dict[str, Callable], dict[str, float], object]:
    """Return the GEMMs by dtype JIT-compiled with the named optimisation pipeline (the
    library's is "vectorised"), the seconds each compile stage took, the engine."""
    seconds = {}
    start = time.perf_counter()
    module = ir.Module(name="gemm_bench")
    module.triple = target.triple
    names = {dtype: gemm.gemm_function(module, dtype, target).name for dtype in DTYPES}
    text = str(module)
    seconds["emit IR"] = time.perf_counter() - start

    start = time.perf_counter()
    machine = target.target_machine(opt=3)
    parsed = llvm.parse_assembly(text)
    parsed.verify()
    optimise(parsed, machine, pipeline)
    seconds["optimise"] = time.perf_counter() - start

    start = time.perf_counter()
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    functions = {
        dtype: SIGNATURE(engine.get_function_address(name)) for dtype, name in names.items()
    }
    seconds["JIT (codegen)"] = time.perf_counter() - start
    return functions, seconds, engine


def aligned_workspace(nbytes: int) -> np.ndarray:
    """Return a 64-byte aligned byte buffer."""
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes]


def seconds_per_call(run: Callable[[], None], calls: int) -> float:
    """Return the mean wall time of `calls` back-to-back calls of run()."""
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def interleaved_medians(
    first: Callable[[], None], second: Callable[[], None], repeats: int
) -> tuple[float, float, float]:
    """Return median seconds of first and second and the median of their paired time ratios.

    Samples alternate between the two so that load from other processes hits both alike; each
    sample repeats the call until it lasts ~20 ms, so small sizes are not timer noise.
    """
    first()
    second()
    calls = max(1, round(0.02 / max(seconds_per_call(first, 1), 1e-6)))
    pairs = [
        (seconds_per_call(first, calls), seconds_per_call(second, calls)) for _ in range(repeats)
    ]
    ratios = [theirs / ours for ours, theirs in pairs]
    return (
        statistics.median(ours for ours, _ in pairs),
        statistics.median(theirs for _, theirs in pairs),
        statistics.median(ratios),
    )


def measure(
    target: CpuTarget, function: Callable, dtype: str, n: int, repeats: int
) -> tuple[float, ...]:
    """Return graphc GFLOP/s, numpy GFLOP/s and their paired ratio for an n x n x n product."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)).astype(DTYPES[dtype])
    b = rng.standard_normal((n, n)).astype(DTYPES[dtype])
    c = np.empty((n, n), dtype=DTYPES[dtype])
    c_numpy = np.empty_like(c)
    workspace = aligned_workspace(gemm.workspace_bytes(dtype, target))
    args = (n, n, n, a.ctypes.data, n, 1, b.ctypes.data, n, 1, c.ctypes.data, n)
    args += (workspace.ctypes.data, 0, *NO_PREPACKED_B, n, 0, *NO_ROW_RUNS)

    def run_graphc() -> None:
        function(*args)

    def run_numpy() -> None:
        np.matmul(a, b, out=c_numpy)

    ours, theirs, ratio = interleaved_medians(run_graphc, run_numpy, repeats)
    tolerance = 1e-4 if dtype == "f32" else 1e-10
    if not np.allclose(c, c_numpy, rtol=tolerance, atol=tolerance * np.sqrt(n)):
        name = gemm.gemm_plan(dtype, target).name
        raise SystemExit(f"{name} disagrees with numpy at N={n}")
    flops = 2.0 * n**3
    return flops / ours / 1e9, flops / theirs / 1e9, ratio


def measure_skinny(
    target: CpuTarget, function: Callable, dtype: str, m: int, transposed: bool, repeats: int
) -> tuple[float, float, float]:
    """Return GFLOP/s of x @ W.T (transposed; W: 256 x 784, the dot path) or x @ W (W: 784 x
    256, the row path) for x: m x 784 by the unpacked path, the packed path and numpy, each
    checked against numpy."""
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, 784)).astype(DTYPES[dtype])
    w = rng.standard_normal((256, 784) if transposed else (784, 256)).astype(DTYPES[dtype])
    weights = w.T if transposed else w
    workspace = aligned_workspace(gemm.workspace_bytes(dtype, target))
    results = {flags: np.empty((m, 256), dtype=DTYPES[dtype]) for flags in (0, gemm.SKINNY)}
    expected = np.empty_like(results[0])
    item = w.itemsize

    def by(flags: int) -> Callable[[], None]:
        args = (m, 256, 784, x.ctypes.data, 784, 1, w.ctypes.data)
        args += (weights.strides[0] // item, weights.strides[1] // item)
        args += (results[flags].ctypes.data, 256, workspace.ctypes.data, flags)
        args += (*NO_PREPACKED_B, 784, 0, *NO_ROW_RUNS)
        return lambda: function(*args)

    unpacked, packed, _ = interleaved_medians(by(gemm.SKINNY), by(0), repeats)
    _, theirs, _ = interleaved_medians(
        by(gemm.SKINNY), lambda: np.matmul(x, weights, out=expected), repeats
    )
    for result in results.values():
        if not np.allclose(result, expected, rtol=1e-4, atol=1e-3):
            raise SystemExit(f"the {dtype} GEMM disagrees with numpy at M={m}")
    flops = 2.0 * m * 256 * 784
    return flops / unpacked / 1e9, flops / packed / 1e9, flops / theirs / 1e9


def parse_size(text: str) -> int:
    """Return bytes for '32K', '512K', '32M' or a plain number."""
    scale = {"K": 1024, "M": 1024**2}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMm")) * scale


def main() -> None:
    """Compile the kernels, then print one GFLOP/s table per dtype."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--cpu", help="a GRAPHC_CPU value (default: GRAPHC_CPU, else the host)")
    parser.add_argument("--caches", nargs=3, metavar=("L1D", "L2", "L3"), help="e.g. 32K 512K 32M")
    parser.add_argument("--skinny", action="store_true", help="x @ W.T for small batches")
    parser.add_argument(
        "--pipeline",
        default="vectorised",
        choices=["vectorised", "standard"],
        help="LLVM passes: the library's short pipeline (default) or the full O3 one",
    )
    options = parser.parse_args()

    target = cpu_target(options.cpu) if options.cpu else selected_target()
    if not can_execute(target):
        raise SystemExit(f"this host cannot run code for {target.cpu}")
    if options.caches:
        l1d, l2, l3 = (parse_size(size) for size in options.caches)
        target = dataclasses.replace(target, l1d_bytes=l1d, l2_bytes=l2, l3_bytes=l3)
    functions, seconds, _engine = compile_kernels(target, options.pipeline)
    print(f"host cpu: {llvm.get_host_cpu_name()}, numpy {np.__version__}, 1 thread")
    print(f"target: {target.describe()}")
    for dtype in options.dtypes:
        plan = gemm.gemm_plan(dtype, target)
        print(f"plan {plan.name}: KC {plan.kc}, MC {plan.mc}, NC {plan.nc}")
    stages = ", ".join(f"{stage} {s * 1e3:.0f} ms" for stage, s in seconds.items())
    print(f"pipeline: {options.pipeline}")
    print(f"compile (f32 + f64 module): {sum(seconds.values()) * 1e3:.0f} ms ({stages})")
    if options.skinny:
        print_skinny(target, functions, options.dtypes, options.repeats)
        return
    for dtype in options.dtypes:
        print(f"\n{dtype}: C = A @ B, N x N, GFLOP/s, median of {options.repeats} interleaved runs")
        print(f"{'N':>6} {'graphc':>9} {'numpy':>9} {'ratio':>7}  (median of paired ratios)")
        for n in options.sizes:
            ours, theirs, ratio = measure(target, functions[dtype], dtype, n, options.repeats)
            print(f"{n:>6} {ours:>9.1f} {theirs:>9.1f} {ratio:>6.0%}")


def print_skinny(target: CpuTarget, functions: dict, dtypes: list[str], repeats: int) -> None:
    """Print the unpacked path's, the packed path's and numpy's GFLOP/s for x @ W.T (the dot
    path) and x @ W (the row path) by batch."""
    for dtype in dtypes:
        for transposed, form, path in (
            (True, "W[256, 784].T", "dot"),
            (False, "W[784, 256]", "rows"),
        ):
            print(f"\n{dtype}: x[M, 784] @ {form}, GFLOP/s, medians of {repeats} runs")
            print(f"{'M':>6} {path:>9} {'packed':>9} {'numpy':>9}")
            for m in (1, 4, 8, 16, 24, 32, 48, 64, 128):
                figures = measure_skinny(target, functions[dtype], dtype, m, transposed, repeats)
                print(f"{m:>6} " + " ".join(f"{value:>9.1f}" for value in figures))


if __name__ == "__main__":
    main()
