"""The examples run to the end (short settings), so the README's demo command stays true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "arguments", "expected"),
    [
        ("tutorial.py", [], "Autograd"),
        ("word_window.py", ["--epochs", "5"], "held-out word accuracy"),
        ("mlp.py", ["--epochs", "1"], "test accuracy"),
        ("cnn.py", ["--epochs", "1"], "accuracy"),
    ],
)
def test_example_runs(script, arguments, expected):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
