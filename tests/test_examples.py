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


def test_onnx_import_round_trips_pytorch_models_and_fine_tunes_them():
    pytest.importorskip("onnxruntime")
    output = _run("onnx_import.py", [])
    for model in ("cnn", "mlp"):
        to_pytorch = re.search(rf"^{model}: max \|graphc - PyTorch\| = (\S+)$", output, re.M)
        tuned = re.search(
            rf"^{model}: fine-tuned loss (\S+) -> (\S+), test accuracy (\S+)%", output, re.M
        )
        to_runtime = re.search(
            rf"^{model}: onnxruntime vs graphc, max difference (\S+)$", output, re.M
        )
        assert to_pytorch and tuned and to_runtime, output
        assert float(to_pytorch.group(1)) < 1e-5
        assert float(tuned.group(2)) < 0.5 * float(tuned.group(1))
        assert float(tuned.group(3)) >= 80.0
        assert float(to_runtime.group(1)) < 1e-4


@pytest.mark.parametrize(
    ("arguments", "bound"),
    [
        (["--model", "lstm", "--steps", "60"], 13.0),
        (["--model", "transformer", "--steps", "60", "--d-model", "64", "--layers", "1",
          "--seq-len", "32"], 17.0),
    ],
    ids=["lstm", "transformer"],
)  # fmt: skip
def test_char_lm_learns_and_samples(arguments, bound):
    # A model that knows only how often each character occurs has a perplexity of about 26 on
    # the validation text; an untrained one about 58 (the vocabulary's size).
    output = _run("char_lm.py", [*arguments, "--sample-len", "40", "--temperature", "0"])
    first, last = re.search(r"^training loss: ([0-9.]+) -> ([0-9.]+)$", output, re.M).groups()
    assert float(last) < 0.8 * float(first)
    assert float(re.search(r"^validation perplexity: ([0-9.]+)$", output, re.M).group(1)) < bound
    sample = output.split("sequence lengths):\n", 1)[1]
    assert sample.startswith("MENENIUS:\n")
    assert len(sample) == len("MENENIUS:\n") + 40 + 1  # and print's newline


def test_seq_classifier_tells_balanced_brackets_at_every_trained_length():
    output = _run("seq_classifier.py", ["--steps", "150"])
    first, last = re.search(r"^training loss: ([0-9.]+) -> ([0-9.]+)$", output, re.M).groups()
    assert float(last) < 0.5 * float(first)
    trained = re.findall(r"^length (\d+) \(trained\): accuracy ([0-9.]+)%$", output, re.M)
    assert [int(length) for length, _ in trained] == [8, 16, 24, 32]
    assert all(float(accuracy) >= 95.0 for _, accuracy in trained)


def test_nmt_translates_held_out_sentences_of_every_trained_length():
    # 300 of the default 1000 steps, on batches of mixed lengths: seeds 0-7 reach 98.8-99.5%
    # exact match over the trained lengths, at least 93.0% at each (the longest, 10 words, is
    # the hardest).
    output = _run("nmt.py", ["--steps", "300"])
    first, last = re.search(r"^training loss: ([0-9.]+) -> ([0-9.]+)$", output, re.M).groups()
    assert float(last) < 0.1 * float(first)
    trained = re.findall(r"^length (\d+) \(trained\): exact match ([0-9.]+)%$", output, re.M)
    assert [int(length) for length, _ in trained] == list(range(3, 11))
    assert all(float(accuracy) >= 85.0 for _, accuracy in trained)
    overall = re.search(r"^held-out exact match, trained lengths: ([0-9.]+)%$", output, re.M)
    assert float(overall.group(1)) >= 95.0
    assert re.search(r"^length 14 \(unseen\): exact match [0-9.]+%$", output, re.M)
    assert len(re.findall(r"^    -> ", output, re.M)) == 4  # the sample translations
