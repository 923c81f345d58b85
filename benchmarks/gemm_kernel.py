"""Benchmark graphc's packed LLVM GEMM kernel against numpy (OpenBLAS) on one thread.

Usage: python benchmarks/gemm_kernel.py [--sizes 256 512 1024 2048] [--repeats 7]

Prints the time to emit, optimise and JIT the kernel module, then GFLOP/s of C = A @ B for square
float32 and float64 matrices, graphc against numpy on the same arrays, as medians of several runs.
"""

from __future__ import annotations

import os

# Before numpy is imported: OpenBLAS reads its thread count once, at load.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import llvmlite.binding as llvm  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402

GEMM_PATH = Path(__file__).resolve().parents[1] / "backends" / "llvm" / "gemm.py"
DTYPES = {"f32": np.float32, "f64": np.float64}
SIGNATURE = ctypes.CFUNCTYPE(
    None,
    *(ctypes.c_int64,) * 3,
    *(ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64) * 2,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int32,
)


def load_gemm_module():
    """Import backends/llvm/gemm.py by path, independent of the llvm package's __init__."""
    spec = importlib.util.spec_from_file_location("_graphc_llvm_gemm_bench", GEMM_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def compile_kernels(gemm) -> tuple[dict[str, Callable], dict[str, float], object]:
    """Return the JIT-compiled GEMMs by dtype, the seconds each compile stage took, the engine."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    seconds = {}
    start = time.perf_counter()
    module = ir.Module(name="gemm_bench")
    module.triple = llvm.get_process_triple()
    for dtype in DTYPES:
        gemm.gemm_function(module, dtype)
    text = str(module)
    seconds["emit IR"] = time.perf_counter() - start

    start = time.perf_counter()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
    )
    parsed = llvm.parse_assembly(text)
    parsed.verify()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
    passes.getModulePassManager().run(parsed, passes)
    seconds["optimise"] = time.perf_counter() - start

    start = time.perf_counter()
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    functions = {
        dtype: SIGNATURE(engine.get_function_address(f"graphc_gemm_{dtype}")) for dtype in DTYPES
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


def measure(gemm, function: Callable, dtype: str, n: int, repeats: int) -> tuple[float, ...]:
    """Return graphc GFLOP/s, numpy GFLOP/s and their paired ratio for an n x n x n product."""
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)).astype(DTYPES[dtype])
    b = rng.standard_normal((n, n)).astype(DTYPES[dtype])
    c = np.empty((n, n), dtype=DTYPES[dtype])
    c_numpy = np.empty_like(c)
    workspace = aligned_workspace(gemm.workspace_bytes(dtype))
    args = (n, n, n, a.ctypes.data, n, 1, b.ctypes.data, n, 1, c.ctypes.data, n)
    args += (workspace.ctypes.data, 0)

    def run_graphc() -> None:
        function(*args)

    def run_numpy() -> None:
        np.matmul(a, b, out=c_numpy)

    ours, theirs, ratio = interleaved_medians(run_graphc, run_numpy, repeats)
    tolerance = 1e-4 if dtype == "f32" else 1e-10
    if not np.allclose(c, c_numpy, rtol=tolerance, atol=tolerance * np.sqrt(n)):
        raise SystemExit(f"graphc_gemm_{dtype} disagrees with numpy at N={n}")
    flops = 2.0 * n**3
    return flops / ours / 1e9, flops / theirs / 1e9, ratio


def main() -> None:
    """Compile the kernels, then print one GFLOP/s table per dtype."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    options = parser.parse_args()

    gemm = load_gemm_module()
    functions, seconds, _engine = compile_kernels(gemm)
    print(f"host cpu: {llvm.get_host_cpu_name()}, numpy {np.__version__}, 1 thread")
    stages = ", ".join(f"{stage} {s * 1e3:.0f} ms" for stage, s in seconds.items())
    print(f"compile (f32 + f64 module): {sum(seconds.values()) * 1e3:.0f} ms ({stages})")
    for dtype in options.dtypes:
        print(f"\n{dtype}: C = A @ B, N x N, GFLOP/s, median of {options.repeats} interleaved runs")
        print(f"{'N':>6} {'graphc':>9} {'numpy':>9} {'ratio':>7}  (median of paired ratios)")
        for n in options.sizes:
            ours, theirs, ratio = measure(gemm, functions[dtype], dtype, n, options.repeats)
            print(f"{n:>6} {ours:>9.1f} {theirs:>9.1f} {ratio:>6.0%}")


if __name__ == "__main__":
    main()
