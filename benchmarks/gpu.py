"""graphc's CUDA backend against PyTorch on a GPU: an elementwise chain, row softmax, GEMM and
an MLP Adam step; prints median milliseconds and the ratio peer / graphc (> 1: graphc faster).

A graphc call copies its inputs in and its outputs out, so the elementwise chain and softmax
are timed as whole calls (host arrays in, host arrays out), next to torch doing the same copies
and to torch on tensors already on the device. Variables stay on the device between calls, as
torch's parameters do: the GEMM multiplies two Variables and returns a scalar, and the training
step runs as `repeat(k)`. The GEMM and the training step run twice, with cuBLAS (when it is
installed, graphc hands large plain matmuls to it) and with graphc's own GEMM kernel only
(GRAPHC_CUBLAS=0). On a machine with a GPU:

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


def on_device(torch: Any, run: Callable[[], object]) -> Callable[[], None]:
    """Return run followed by a wait for the GPU."""

    def timed() -> None:
        run()
        torch.cuda.synchronize()

    return timed


def elementwise(torch: Any, n: int, repeat: int) -> None:
    """sigmoid(x*w+b)*tanh(x)+0.5*x*x over n floats."""
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    x, w, b = (gc.input(name, ("N",)) for name in "xwb")
    f = gc.compile([x, w, b], [gc.sigmoid(x * w + b) * gc.tanh(x) + 0.5 * x * x], backend="cuda")

    def chain(x, w, b):
        return torch.sigmoid(x * w + b) * torch.tanh(x) + 0.5 * x * x

    want = chain(*map(torch.from_numpy, host)).numpy()
    np.testing.assert_allclose(f(*host), want, rtol=1e-5, atol=1e-6)
    device = [torch.from_numpy(a).cuda() for a in host]
    copies = lambda: chain(*(torch.from_numpy(a).cuda() for a in host)).cpu()  # noqa: E731
    report(
        f"elementwise chain, {n}",
        median_ms(lambda: f(*host), repeat),
        {
            "torch+copies": median_ms(copies, repeat),
            "torch on device": median_ms(on_device(torch, lambda: chain(*device)), repeat),
        },
    )


def softmax(torch: Any, rows: int, width: int, repeat: int) -> None:
    """Softmax over the rows of a rows x width float32 matrix."""
    host = np.random.default_rng(1).standard_normal((rows, width)).astype(np.float32)
    x = gc.input("x", ("B", width))
    f = gc.compile([x], [gc.softmax(x, -1)], backend="cuda")
    want = torch.softmax(torch.from_numpy(host), -1).numpy()
    np.testing.assert_allclose(f(host), want, rtol=1e-5, atol=1e-7)
    device = torch.from_numpy(host).cuda()
    copies = lambda: torch.softmax(torch.from_numpy(host).cuda(), -1).cpu()  # noqa: E731
    report(
        f"row softmax, {rows}x{width}",
        median_ms(lambda: f(host), repeat),
        {
            "torch+copies": median_ms(copies, repeat),
            "torch on device": median_ms(
                on_device(torch, lambda: torch.softmax(device, -1)), repeat
            ),
        },
    )


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
        f"{'':30s} {rate / times[False]:.0f} GFLOP/s own, {rate / times[True]:.0f} via cuBLAS, "
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

    def torch_steps() -> None:
        for i in range(steps):
            torch_opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(torch_model(txs[i]), tys[i]).backward()
            torch_opt.step()

    torch_ms = median_ms(on_device(torch, torch_steps), repeat) / steps
    report(
        f"MLP Adam step, batch {batch}",
        graphc_ms[True],
        {"graphc own GEMMs": graphc_ms[False], "torch eager": torch_ms},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="graphc's CUDA backend against PyTorch")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="sizes 16 times smaller")
    args = parser.parse_args()
    import torch

    print(f"graphc on {gc.cuda.device_name()}; torch {torch.__version__}")
    scale = 16 if args.quick else 1
    elementwise(torch, (1 << 24) // scale, args.repeat)
    softmax(torch, 4096 // scale, 1024, args.repeat)
    gemm(torch, 4096 // scale, args.repeat)
    for batch in (128, 4096 // scale):
        mlp_step(torch, batch, 20, max(3, args.repeat // 4))


if __name__ == "__main__":
    main()
