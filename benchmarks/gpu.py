"""graphc's CUDA backend against PyTorch on a GPU: an elementwise chain, row softmax, the sum
of a matrix, GEMM and an MLP Adam step; prints median milliseconds and the ratio peer / graphc
(> 1: graphc faster).

A graphc call copies its inputs in and its outputs out, so the elementwise chain and softmax
are timed as whole calls (host arrays in, host arrays out), next to torch doing the same copies
and to torch on tensors already on the device; and device-resident: inputs and result in
Variables, which stay on the device between calls as torch's tensors do, with the bandwidth
reached (GB/s = the bytes the work must move / time) and its share of the device's peak (from
its memory clock and bus width). The sum of a matrix is timed device-resident only. The GEMM
multiplies two Variables and returns a scalar, so the times are the GEMM's, not the copies'.
The training step runs as `repeat(k)`, which copies each step's batch in and its loss out;
torch is timed doing the same copies, and with its batches already on the device. The GEMM
and the training step run twice, with cuBLAS (when it is installed, graphc hands large plain
matmuls to it) and with graphc's own GEMM kernel only (GRAPHC_CUBLAS=0). On a machine with a
GPU:

    python benchmarks/gpu.py [--repeat 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda import cublas
from graphc.backends.cuda.driver import selected_driver
from graphc.backends.cuda.libcuda import CudaDriver

INDENT = " " * 30  # a workload's further lines start under its first line's figures


def median_ms(run: Callable[[], object], repeat: int) -> float:
    """Return the median wall time of run() in ms, after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def report(name: str, graphc_ms: float, peers: dict[str, float]) -> None:
    """Print one workload's line: graphc's time and each peer's, with its ratio."""
    columns = [f"{peer} {ms:8.3f} ms ({ms / graphc_ms:5.2f}x)" for peer, ms in peers.items()]
    print(f"{name:30s} graphc {graphc_ms:8.3f} ms  " + "  ".join(columns))


def peak_bandwidth() -> float | None:
    """Return the device memory's peak bandwidth in bytes/s, or None where there is no
    device memory to ask about (the emulator)."""
    driver = selected_driver()
    return driver.peak_bandwidth() if isinstance(driver, CudaDriver) else None


def report_bandwidth(nbytes: int, times: dict[str, float], peak: float | None) -> None:
    """Print the bandwidth each run reached moving nbytes in its time (ms), and its share of
    the device's peak."""
    columns = []
    for who, ms in times.items():
        rate = nbytes / (1e-3 * ms)
        share = f" ({rate / peak:.0%} of peak)" if peak else ""
        columns.append(f"{who} {rate / 1e9:.1f} GB/s{share}")
    known = f"peak {peak / 1e9:.0f} GB/s" if peak else "peak unknown (no device memory)"
    print(f"{INDENT} {', '.join(columns)}; {known}")


def on_device(torch: Any, run: Callable[[], object]) -> Callable[[], None]:
    """Return run followed by a wait for the GPU."""

    def timed() -> None:
        run()
        torch.cuda.synchronize()

    return timed


def resident_ms(
    inputs: list[np.ndarray], compute: Callable[..., gc.Tensor], want: np.ndarray, repeat: int
) -> float:
    """Return the median ms of a call that writes compute(inputs) into a Variable, the inputs
    being Variables too: all stay on the device, so the call moves no array between host and
    device (only its small frame in and its error record out). Check the result first."""
    variables = [gc.Variable(array, name=f"in{i}") for i, array in enumerate(inputs)]
    out = gc.Variable(np.zeros_like(want), name="out")
    f = gc.compile([], [], updates={out: compute(*variables)}, backend="cuda")
    f()
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)
    return median_ms(f, repeat)


def chain(lib: Any, x: Any, w: Any, b: Any) -> Any:
    """Return sigmoid(x*w+b)*tanh(x)+0.5*x*x in lib (graphc or torch)."""
    return lib.sigmoid(x * w + b) * lib.tanh(x) + 0.5 * x * x


def elementwise(torch: Any, n: int, repeat: int, peak: float | None) -> None:
    """The chain over n floats: 3 arrays read, 1 written."""
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    x, w, b = (gc.input(name, ("N",)) for name in "xwb")
    f = gc.compile([x, w, b], [chain(gc, x, w, b)], backend="cuda")
    want = chain(torch, *map(torch.from_numpy, host)).numpy()
    np.testing.assert_allclose(f(*host), want, rtol=1e-5, atol=1e-6)
    device = [torch.from_numpy(a).cuda() for a in host]
    copies = lambda: chain(torch, *(torch.from_numpy(a).cuda() for a in host)).cpu()  # noqa: E731
    torch_ms = median_ms(on_device(torch, lambda: chain(torch, *device)), repeat)
    report(
        f"elementwise chain, {n}",
        median_ms(lambda: f(*host), repeat),
        {"torch+copies": median_ms(copies, repeat), "torch on device": torch_ms},
    )
    graphc_ms = resident_ms(host, lambda *v: chain(gc, *v), want, repeat)
    report("  device-resident", graphc_ms, {"torch on device": torch_ms})
    report_bandwidth(4 * host[0].nbytes, {"graphc": graphc_ms, "torch": torch_ms}, peak)


def softmax(torch: Any, rows: int, width: int, repeat: int, peak: float | None) -> None:
    """Softmax over the rows of a rows x width float32 matrix: 1 array read, 1 written."""
    host = np.random.default_rng(1).standard_normal((rows, width)).astype(np.float32)
    x = gc.input("x", ("B", width))
    f = gc.compile([x], [gc.softmax(x, -1)], backend="cuda")
    want = torch.softmax(torch.from_numpy(host), -1).numpy()
    np.testing.assert_allclose(f(host), want, rtol=1e-5, atol=1e-7)
    device = torch.from_numpy(host).cuda()
    copies = lambda: torch.softmax(torch.from_numpy(host).cuda(), -1).cpu()  # noqa: E731
    torch_ms = median_ms(on_device(torch, lambda: torch.softmax(device, -1)), repeat)
    report(
        f"row softmax, {rows}x{width}",
        median_ms(lambda: f(host), repeat),
        {"torch+copies": median_ms(copies, repeat), "torch on device": torch_ms},
    )
    graphc_ms = resident_ms([host], lambda v: gc.softmax(v, -1), want, repeat)
    report("  device-resident", graphc_ms, {"torch on device": torch_ms})
    report_bandwidth(2 * host.nbytes, {"graphc": graphc_ms, "torch": torch_ms}, peak)


def whole_sum(torch: Any, n: int, repeat: int, peak: float | None) -> None:
    """The sum of an n x n float32 matrix into one number: the whole matrix read once."""
    host = np.random.default_rng(4).standard_normal((n, n)).astype(np.float32)
    want = np.array(host.astype(np.float64).sum(), np.float32)
    device = torch.from_numpy(host).cuda()
    torch_ms = median_ms(on_device(torch, lambda: device.sum()), repeat)
    graphc_ms = resident_ms([host], lambda v: v.sum(), want, repeat)
    report(f"sum of {n}x{n}, resident", graphc_ms, {"torch on device": torch_ms})
    report_bandwidth(host.nbytes, {"graphc": graphc_ms, "torch": torch_ms}, peak)


def compiled_with_cublas(use: bool, *args: Any, **kwargs: Any) -> gc.Function:
    """Return gc.compile(...) for the CUDA backend with cuBLAS allowed or not (GRAPHC_CUBLAS,
    read when the executable is made); without it every matmul runs the own GEMM kernel."""
    saved = os.environ.get(cublas.USE_VARIABLE)
    os.environ[cublas.USE_VARIABLE] = "1" if use else "0"
    try:
        return gc.compile(*args, backend="cuda", **kwargs)
    finally:
        if saved is None:
            del os.environ[cublas.USE_VARIABLE]
        else:
            os.environ[cublas.USE_VARIABLE] = saved


def gemm(torch: Any, n: int, repeat: int) -> None:
    """An n x n float32 matrix product: graphc's own kernel and graphc through cuBLAS, against
    torch's cuBLAS (TF32 off). The operands are Variables, which stay on the device, and the
    call returns the product's sum, so the times are the GEMM's, not the copies'."""
    rng = np.random.default_rng(2)
    a_host, b_host = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    a, b = gc.Variable(a_host, name="a"), gc.Variable(b_host, name="b")
    want = float((a_host.astype(np.float64) @ b_host).sum())
    torch.backends.cuda.matmul.allow_tf32 = False
    a_dev, b_dev = torch.from_numpy(a_host).cuda(), torch.from_numpy(b_host).cuda()
    torch_ms = median_ms(on_device(torch, lambda: (a_dev @ b_dev).sum().item()), repeat)
    times = {}
    for use in (False, True):
        f = compiled_with_cublas(use, [], [(a @ b).sum()])
        np.testing.assert_allclose(f(), want, rtol=1e-3, atol=1e-2 * n)
        times[use] = median_ms(f, repeat)
    report(
        f"GEMM f32, {n}, own kernel",
        times[False],
        {"graphc via cuBLAS": times[True], "torch (cuBLAS)": torch_ms},
    )
    rate = 2 * n**3 / 1e6  # GFLOP per ms
    print(
        f"{INDENT} {rate / times[False]:.0f} GFLOP/s own, {rate / times[True]:.0f} via cuBLAS, "
        f"torch {rate / torch_ms:.0f}; own / cuBLAS = {times[True] / times[False]:.2f}"
    )


def mlp_step(torch: Any, batch: int, steps: int, repeat: int) -> None:
    """A 784-256-256-10 MLP's cross-entropy Adam step; graphc runs `steps` steps per call."""
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((steps, batch, 784)).astype(np.float32)
    ys = rng.integers(0, 10, (steps, batch))
    sizes = [784, 256, 256, 10]
    layers: list[nn.Module] = []
    torch_layers = []
    for position, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(fan_in, fan_out))
        torch_layers.append(torch.nn.Linear(fan_in, fan_out))
        if position < len(sizes) - 2:
            layers.append(nn.ReLU())
            torch_layers.append(torch.nn.ReLU())
    model = nn.Sequential(*layers)
    x, y = gc.input("x", ("B", 784)), gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    updates = opt.minimize(loss)
    graphc_ms = {}
    for use in (True, False):
        step = compiled_with_cublas(use, [x, y], [loss], updates=updates).repeat(steps)
        graphc_ms[use] = median_ms(lambda: step(xs, ys), repeat) / steps  # noqa: B023

    torch_model = torch.nn.Sequential(*torch_layers).cuda()
    torch_opt = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    txs, tys = torch.from_numpy(xs).cuda(), torch.from_numpy(ys).cuda()

    def torch_steps(copied: bool) -> Callable[[], None]:
        """Return a run of `steps` torch steps: with `copied`, each copies its batch to the
        device and its loss back, as a graphc step does; else the batches sit on the device."""

        def run() -> None:
            for i in range(steps):
                if copied:
                    xb, yb = torch.from_numpy(xs[i]).cuda(), torch.from_numpy(ys[i]).cuda()
                else:
                    xb, yb = txs[i], tys[i]
                torch_opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(torch_model(xb), yb)
                loss.backward()
                torch_opt.step()
                if copied:
                    loss.item()

        return run

    torch_ms = {
        copied: median_ms(on_device(torch, torch_steps(copied)), repeat) / steps
        for copied in (True, False)
    }
    report(
        f"MLP Adam step, batch {batch}",
        graphc_ms[True],
        {
            "graphc own GEMMs": graphc_ms[False],
            "torch eager, same copies": torch_ms[True],
            "torch eager, data on device": torch_ms[False],
        },
    )
    print(f"{INDENT} a graphc step copies its batch in and its loss out, as torch's 'same copies'")


def main() -> None:
    """Run every workload and print its figures."""
    parser = argparse.ArgumentParser(description="graphc's CUDA backend against PyTorch")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="sizes 16 times smaller")
    args = parser.parse_args()
    import torch

    print(f"graphc on {gc.cuda.device_name()}; torch {torch.__version__}")
    scale = 16 if args.quick else 1
    peak = peak_bandwidth()
    # Sizes that move 1 GiB (the chain) and 512 MiB (softmax) per call, so the call's own
    # frame copy and error read-back (tens of microseconds) stay small next to the kernel.
    elementwise(torch, (1 << 26) // scale, args.repeat, peak)
    softmax(torch, 65536 // scale, 1024, args.repeat, peak)
    whole_sum(torch, 8192 // scale, args.repeat, peak)
    gemm(torch, 4096 // scale, args.repeat)
    for batch in (128, 4096 // scale):
        mlp_step(torch, batch, 20, max(3, args.repeat // 4))


if __name__ == "__main__":
    main()
