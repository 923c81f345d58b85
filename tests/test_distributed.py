"""Data parallelism over MPI: `mpiexec -n 2` and `-n 3` runs train as one process on the whole
batches would, all_reduce's gradients match their closed form at world size 2, and a rank
that fails ends the job within a bounded time. The worker is tests/distributed_worker.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
import graphc.distributed as dist

pytest.importorskip("mpi4py")

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

WORKER = str(Path(__file__).parent / "distributed_worker.py")
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
if not os.path.exists(MPIEXEC):
    pytest.skip("mpiexec is not installed", allow_module_level=True)


def mpiexec(n: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the worker on n processes of one thread each."""
    env = {**os.environ, "GRAPHC_NUM_THREADS": "1"}
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, WORKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("model", ["mlp", "bn", "syncbn", "ddp"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ranks_train_as_one_process_on_the_whole_batch(tmp_path, size, model, optimizer):
    out = tmp_path / "params.npz"
    run = mpiexec(size, "train", model, optimizer, str(out))
    assert run.returncode == 0, run.stderr
    got = np.load(out)
    assert got["same"], "the ranks ended with different parameters"
    want = worker.reference_parameters(model, optimizer, size)
    for position, expected in enumerate(want):
        difference = np.abs(got[f"arr_{position}"] - expected).max()
        assert difference <= 1e-5 * np.abs(expected).max(), (position, difference)


def test_all_reduce_gradients_across_two_ranks(tmp_path):
    run = mpiexec(2, "grad", str(tmp_path / "grads"))
    assert run.returncode == 0, run.stderr
    ranks = [np.load(tmp_path / f"grads.{r}.npz") for r in range(2)]
    generators = [np.random.default_rng(10 + r) for r in range(2)]
    a = [g.standard_normal((3, 4)) for g in generators]  # the order the worker draws them
    c = [g.standard_normal((3, 4)) for g in generators]
    scaled = [1.5 * x for x in a]
    totals = {"sum": scaled[0] + scaled[1], "mean": (scaled[0] + scaled[1]) / 2}
    totals["max"] = np.maximum(scaled[0], scaled[1])
    for op, total in totals.items():
        for r, values in enumerate(ranks):
            if op == "max":
                grad = 1.5 * 2 * total * (c[0] + c[1]) * (scaled[r] == total)
            else:
                grad = 1.5 / (2 if op == "mean" else 1) * 2 * total * (c[0] + c[1])
            for backend in ("reference", "llvm"):
                np.testing.assert_allclose(values[f"{backend}_{op}_0"], total, rtol=1e-12)
                np.testing.assert_allclose(values[f"{backend}_{op}_1"], grad, rtol=1e-10)


def test_only_rank_0_saves(tmp_path):
    path = tmp_path / "ranks.npz"
    run = mpiexec(3, "save", str(path))
    assert run.returncode == 0, run.stderr
    assert int(gc.load(path)["rank"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks.npz"]  # no rank's leftovers


@pytest.mark.parametrize("kind", ["raised", "killed"])
def test_a_failed_rank_ends_the_job(kind):
    run = mpiexec(2, "fail", kind, timeout=60)
    assert run.returncode != 0
    if kind == "raised":
        assert "rank 1 fails on purpose" in run.stderr


def test_sync_batch_norm_is_batch_norm_in_one_process(rng):
    x = gc.input("x", ("B", 4, 5, 5))
    data = rng.standard_normal((6, 4, 5, 5)).astype(np.float32)
    outputs = []
    for norm in (gc.nn.BatchNorm2d(4), gc.nn.SyncBatchNorm(4)):
        y = norm(x)
        (grad,) = gc.grad((y * y).sum(), [x])
        outputs.append(gc.compile([x], [y, grad])(data))
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_array_equal(a, b)
    model = gc.nn.Sequential(gc.nn.Conv2d(4, 4, 3), gc.nn.BatchNorm2d(4), gc.nn.ReLU())
    converted = gc.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], gc.nn.SyncBatchNorm)
    assert [n for n, _ in converted.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
    ]


def test_one_process_world_without_a_launcher():
    x = gc.input("x", ("B", 3), gc.float32)
    for op, expected in (("sum", 1.0), ("mean", 1.0), ("max", 1.0)):
        f = gc.compile([x], [dist.all_reduce(x * 2, op) - 1])
        np.testing.assert_array_equal(f(np.ones((2, 3), np.float32)), np.full((2, 3), expected))
    assert dist.world_size() == 1 and dist.rank() == 0
