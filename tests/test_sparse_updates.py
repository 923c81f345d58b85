"""Sparse updates (backends/kernel/sparse_updates.py): an embedding's SGD step on the LLVM
backend updates only the rows a batch looked up, with the very bits of the dense update
(scatter the gradient into zeros, then update every row), whatever the learning rate."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.backends.llvm import executable
from graphc.errors import IndexingError

VOCABULARY, WIDTH, WINDOW = 40, 20, 5


def _training_step(backend: str, width: int = WIDTH, **sgd_options):
    """Return (the compiled SGD step of an embedding, Linear and BCE, its optimiser, its
    parameters): windows of word indices and 0/1 labels in, the loss out."""
    gc.manual_seed(3)
    embedding = nn.Embedding(VOCABULARY, width, padding_idx=0)
    linear = nn.Linear(WINDOW * width, 1)
    words = gc.input("words", ("N", WINDOW), gc.int64)
    labels = gc.input("labels", ("N",), gc.float32)
    scores = linear(embedding(words).reshape(-1, WINDOW * width))[:, 0].sigmoid()
    loss = nn.BCELoss()(scores, labels)
    parameters = [*embedding.parameters(), *linear.parameters()]
    optimizer = optim.SGD(parameters, **({"lr": 0.5} | sgd_options))
    step = gc.compile([words, labels], loss, updates=optimizer.minimize(loss), backend=backend)
    return step, optimizer, parameters


def _dense_step(monkeypatch, **options):
    """Return _training_step("llvm") compiled without sparse updates."""
    with monkeypatch.context() as patch:
        patch.setattr(executable, "sparse_updates", lambda program, in_place: program)
        return _training_step("llvm", **options)


def _batches(rng: np.random.Generator, steps: int, batch: int) -> list[tuple[np.ndarray, ...]]:
    """Return batches of windows with repeated words and padding (index 0) in each."""
    batches = []
    for _ in range(steps):
        words = rng.integers(0, 12, (batch, WINDOW))  # few words: many repeats
        words[:, 0] = 0
        labels = (rng.random(batch) < 0.5).astype(np.float32)
        batches.append((words, labels))
    return batches


def _bits(values: list[gc.Variable]) -> list[np.ndarray]:
    return [np.array(v.value).view(np.uint32) for v in values]


def _train(step, parameters, batches) -> tuple[list[np.ndarray], list[np.ndarray]]:
    losses = [np.asarray(step(words, labels)).view(np.uint32) for words, labels in batches]
    return losses, _bits(parameters)


def _assert_same_bits(first, second) -> None:
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_embedding_sgd_step_runs_as_a_sparse_update(monkeypatch, rng):
    step, _, parameters = _training_step("llvm")
    dense, _, dense_parameters = _dense_step(monkeypatch)
    sparse_kernels = [info.name for info in step.kernels() if info.name.startswith("sparse_")]
    assert len(sparse_kernels) == 1
    assert not any(info.name.startswith("sparse_") for info in dense.kernels())
    batches = _batches(rng, 6, 4)
    sparse_run = _train(step, parameters, batches)
    _assert_same_bits(sparse_run[0], _train(dense, dense_parameters, batches)[0])
    _assert_same_bits(sparse_run[1], _bits(dense_parameters))
    reference, _, reference_parameters = _training_step("reference")
    _train(reference, reference_parameters, batches)
    for got, want in zip(parameters, reference_parameters, strict=True):
        np.testing.assert_allclose(got.value, want.value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lr", [0.0, -0.0, -0.25, np.inf, -np.inf, np.nan, 1e-45])
def test_any_learning_rate_gives_the_dense_bits(monkeypatch, rng, lr):
    """A rate whose product with zero is not +0.0 (negative, -0.0, infinite, NaN) takes the
    dense path; the others stay sparse. Either way the bits are the dense update's."""
    step, optimizer, parameters = _training_step("llvm")
    dense, dense_optimizer, dense_parameters = _dense_step(monkeypatch)
    batches = _batches(rng, 3, 4)
    _train(step, parameters, batches[:1])
    _train(dense, dense_parameters, batches[:1])
    for table in (parameters[0], dense_parameters[0]):  # a row no batch looks up
        values = np.array(table.value)
        values[-1] = -0.0  # which W + 0.0 (a rate of -0.0 or less) turns into +0.0
        table.assign(values)
    optimizer.param_groups[0]["lr"] = lr
    dense_optimizer.param_groups[0]["lr"] = lr
    sparse_run = _train(step, parameters, batches[1:])
    dense_run = _train(dense, dense_parameters, batches[1:])
    _assert_same_bits(sparse_run[0], dense_run[0])
    _assert_same_bits(sparse_run[1], dense_run[1])


@pytest.mark.parametrize("width", [1, 3, WIDTH])
@pytest.mark.parametrize("batch", [1, 4, 64])
def test_rows_of_any_width_and_batches_larger_than_the_table(monkeypatch, rng, width, batch):
    """Rows of one element (the flat path) or several (the row path), and batches that
    look up more elements than the table holds (the dense path), give the dense bits."""
    step, _, parameters = _training_step("llvm", width=width)
    dense, _, dense_parameters = _dense_step(monkeypatch, width=width)
    batches = _batches(rng, 3, batch)
    sparse_run = _train(step, parameters, batches)
    dense_run = _train(dense, dense_parameters, batches)
    _assert_same_bits(sparse_run[0], dense_run[0])
    _assert_same_bits(sparse_run[1], dense_run[1])


def test_repeated_steps_equal_single_steps(rng):
    step, _, parameters = _training_step("llvm")
    batches = _batches(rng, 5, 4)
    before = [np.array(v.value) for v in parameters]
    singles = _train(step, parameters, batches)
    for variable, value in zip(parameters, before, strict=True):
        variable.assign(value)
    words = np.stack([w for w, _ in batches])
    labels = np.stack([y for _, y in batches])
    losses = step.repeat(len(batches))(words, labels)
    _assert_same_bits([np.asarray(losses).view(np.uint32)], [np.stack(singles[0])])
    _assert_same_bits(_bits(parameters), singles[1])


def test_a_bad_word_index_raises_and_changes_no_variable(rng):
    step, _, parameters = _training_step("llvm")
    ((words, labels),) = _batches(rng, 1, 4)
    step(words, labels)
    before = _bits(parameters)
    words[2, 3] = VOCABULARY + 7
    with pytest.raises(IndexingError, match=f"index {VOCABULARY + 7} is out of bounds"):
        step(words, labels)
    _assert_same_bits(_bits(parameters), before)


def test_momentum_keeps_the_dense_update():
    """Momentum reads every element of the gradient into its buffer: nothing is sparse."""
    step, _, _ = _training_step("llvm", momentum=0.9)
    assert not any(info.name.startswith("sparse_") for info in step.kernels())
