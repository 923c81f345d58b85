"""Fixtures shared by every test: the backend each op test runs on, and a seeded generator."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

# Every backend registered when the tests are collected; llvm and cuda join as they land.
BACKENDS = gc.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Return the name of a backend to compile with (each test runs once per backend)."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """Return a numpy generator with a fixed seed, so every run draws the same values."""
    return np.random.default_rng(20240531)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the differential fuzzer (test_fuzz.py) on many more random programs",
    )
