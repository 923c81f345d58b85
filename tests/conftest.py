"""Fixtures shared by every test: the backend each op test runs on, a seeded generator, and a
compile cache of the test run's own."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

import graphc as gc

# Every backend registered when the tests are collected that can run here: cuda needs a GPU,
# or GRAPHC_CUDA_DRIVER=emulate to run its kernels on the CPU emulator (tests/test_cuda_ops.py
# runs part of the op table there in every run).
BACKENDS = tuple(b for b in gc.available_backends() if b != "cuda" or gc.cuda.is_available())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Return the name of a backend to compile with (each test runs once per backend)."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """Return a numpy generator with a fixed seed, so every run draws the same values."""
    return np.random.default_rng(20240531)


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """Run torch on one thread for the test. The torch oracles are tiny models, and on a busy
    machine torch's spin-waiting worker threads make them hundreds of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the differential fuzzer (test_fuzz.py) on many more random programs",
    )
    parser.addoption(
        "--cuda-full",
        action="store_true",
        help="run every op-table and gradient-table entry on the CUDA emulator and through "
        "ptxas (test_cuda_ops.py, test_cuda_ptx.py), not a representative part",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Give the run (and the processes it starts) a compile cache of its own, so tests never
    write into the user's ~/.cache/graphc and never depend on what is there."""
    folder = tempfile.mkdtemp(prefix="graphc-test-cache-")
    config.stash[_CACHE_FOLDER] = folder
    os.environ["GRAPHC_CACHE_DIR"] = folder
    os.environ.pop("GRAPHC_CACHE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_CACHE_FOLDER, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


_CACHE_FOLDER = pytest.StashKey[str]()
