"""The examples run to the end (short settings) and reach the accuracy they promise, so the
README's demo command stays true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, arguments: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize(
    ("script", "arguments", "label"),
    [
        ("word_window.py", ["--epochs", "5"], "held-out word accuracy"),
        ("mlp.py", ["--epochs", "3"], "test accuracy"),
        ("cnn.py", ["--epochs", "1"], "test accuracy"),
    ],
)
def test_example_trains_to_at_least_90_percent(script, arguments, label):
    match = re.search(rf"{label}: ([0-9.]+)%", _run(script, arguments))
    assert match is not None, f"{script} printed no '{label}'"
    assert float(match.group(1)) >= 90.0


def test_tutorial_runs_every_section_and_its_training_loop_learns():
    output = _run("tutorial.py", [])
    sections = [int(n) for n in re.findall(r"^(\d+)\. ", output, flags=re.MULTILINE)]
    assert sections == list(range(1, 20))
    losses = [float(v) for v in re.findall(r"^epoch +\d+: loss ([0-9.]+)$", output, re.MULTILINE)]
    assert len(losses) == 10
    assert losses[-1] < 0.9 * losses[0]
