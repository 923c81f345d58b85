"""The op table and the gradient table on the CUDA backend's emulator, in every run: a
representative part by default, every entry with --cuda-full. With GRAPHC_CUDA_DRIVER=emulate
(or on a GPU) test_ops.py and test_grad_table.py run every entry on "cuda" themselves."""

from __future__ import annotations

import os

import pytest
from cuda_cases import selected
from op_table import OP_TABLE, OpCase, differentiable_cases
from test_grad_table import (
    test_first_derivative_matches_finite_differences as first_derivative_matches,
)
from test_ops import test_op_matches_reference as op_matches_reference

from graphc.backends.cuda.driver import DRIVER_VARIABLE

# The table each test takes its cases from.
TABLES = {
    "test_op_matches_reference_on_the_emulator": OP_TABLE,
    "test_gradient_matches_finite_differences_on_the_emulator": differentiable_cases(),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = selected(TABLES[metafunc.function.__name__], metafunc.config.getoption("--cuda-full"))
    metafunc.parametrize("case", chosen, ids=[case.id for case in chosen])


@pytest.fixture(scope="module", autouse=True)
def not_twice() -> None:
    """Skip when the whole suite already runs "cuda" on the emulator."""
    if os.environ.get(DRIVER_VARIABLE) == "emulate":
        pytest.skip("test_ops.py and test_grad_table.py run every entry on the emulator")


@pytest.fixture(autouse=True)
def emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run on the emulator."""
    monkeypatch.setenv(DRIVER_VARIABLE, "emulate")


def test_op_matches_reference_on_the_emulator(case: OpCase, rng) -> None:
    op_matches_reference(case, "cuda", rng)


def test_gradient_matches_finite_differences_on_the_emulator(case: OpCase, rng) -> None:
    first_derivative_matches(case, "cuda", rng)
