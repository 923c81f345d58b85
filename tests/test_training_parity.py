"""Training parity with PyTorch: the same architecture with copied initial weights, trained on
the same batches for 20 steps, gives the same loss trajectory and final weights (and
BatchNorm running statistics) within 1e-4 relative, with SGD+momentum and with Adam, on
every backend.

The models: an MLP, the CS224N word-window classifier (Embedding + Linear + Tanh + Linear +
Sigmoid with BCE), a small CNN (Conv2d + BatchNorm2d + MaxPool2d + Linear) and a decoder
(Linear + ConvTranspose2d + Upsample). Each graphc model mirrors a torch model attribute by
attribute, so PyTorch's state_dict (as numpy arrays) loads into it directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim

torch = pytest.importorskip("torch")
tnn = torch.nn

STEPS = 20
BATCHES = 4
RTOL = 1e-4

OPTIMIZERS = {
    "sgd-momentum": (
        lambda params: optim.SGD(params, lr=0.05, momentum=0.9),
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    ),
    "adam": (
        lambda params: optim.Adam(params, lr=0.01),
        lambda params: torch.optim.Adam(params, lr=0.01),
    ),
}


# -- the models, once per framework --------------------------------------------------------
def mlp(lib):
    return lib.Sequential(lib.Linear(12, 16), lib.ReLU(), lib.Linear(16, 5))


WINDOW, VOCAB, EMBED = 5, 24, 6


def word_window(lib):
    class WordWindowClassifier(lib.Module):
        def __init__(self):
            super().__init__()
            self.embeds = lib.Embedding(VOCAB, EMBED, padding_idx=0)
            self.hidden_layer = lib.Sequential(lib.Linear(WINDOW * EMBED, 8), lib.Tanh())
            self.output_layer = lib.Linear(8, 1)
            self.probabilities = lib.Sigmoid()

        def forward(self, windows):
            embedded = self.embeds(windows).flatten(1)
            hidden = self.hidden_layer(embedded)
            return self.probabilities(self.output_layer(hidden)).squeeze(1)

    return WordWindowClassifier()


def cnn(lib):
    return lib.Sequential(
        lib.Conv2d(1, 4, kernel_size=3, padding=1, bias=False),  # BatchNorm adds the shift
        lib.BatchNorm2d(4),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Flatten(),
        lib.Linear(4 * 4 * 4, 10),
    )


def decoder(lib):
    class Decoder(lib.Module):
        def __init__(self):
            super().__init__()
            self.project = lib.Linear(6, 4 * 2 * 2)
            self.deconv = lib.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
            self.upsample = lib.Upsample(scale_factor=2, mode="bilinear")
            self.out = lib.Conv2d(3, 1, kernel_size=3, padding=1)

        def forward(self, z):
            h = self.project(z).tanh().reshape(-1, 4, 2, 2)
            h = self.upsample(self.deconv(h).relu())
            return self.out(h).sigmoid()

    return Decoder()


# -- data: a few fixed batches, cycled over the 20 steps ------------------------------------
def batches(case: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(list(CASES).index(case))
    pattern = rng.standard_normal((6, 64))
    result = []
    for _ in range(BATCHES):
        if case == "mlp":
            x = rng.standard_normal((16, 12)).astype(np.float32)
            y = rng.integers(0, 5, 16)
        elif case == "word_window":
            x = rng.integers(0, VOCAB, (32, WINDOW))
            x[:4, :2] = 0  # windows at a sentence start reach into the padding
            y = (x[:, WINDOW // 2] % 3 == 0).astype(np.float32)
        elif case == "cnn":
            x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
            y = rng.integers(0, 10, 8)
        else:
            x = rng.standard_normal((6, 6)).astype(np.float32)
            y = 1 / (1 + np.exp(-(x @ pattern).reshape(6, 1, 8, 8)))  # images that depend on x
        result.append((x, y.astype(np.float32) if case == "decoder" else y))
    return result


@dataclass(frozen=True)
class Case:
    build: Callable
    torch_loss: Callable
    graphc_loss: Callable
    x_shape: tuple
    x_dtype: object
    y_shape: tuple
    y_dtype: object


CASES = {
    "mlp": Case(
        mlp,
        tnn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(),
        ("B", 12),
        gc.float32,
        ("B",),
        gc.int64,
    ),
    "word_window": Case(
        word_window,
        tnn.BCELoss(),
        nn.BCELoss(),
        ("B", WINDOW),
        gc.int64,
        ("B",),
        gc.float32,
    ),
    "cnn": Case(
        cnn,
        tnn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(),
        ("B", 1, 8, 8),
        gc.float32,
        ("B",),
        gc.int64,
    ),
    "decoder": Case(
        decoder,
        tnn.MSELoss(),
        nn.MSELoss(),
        ("B", 6),
        gc.float32,
        ("B", 1, 8, 8),
        gc.float32,
    ),
}


@functools.cache
def torch_run(case_name: str, optimizer: str):
    """Train the torch model; return (initial state, losses, final state) as numpy."""
    case = CASES[case_name]
    torch.manual_seed(0)
    model = case.build(tnn)
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = OPTIMIZERS[optimizer][1](model.parameters())
    data = batches(case_name)
    losses = []
    for index in range(STEPS):
        x, y = data[index % len(data)]
        opt.zero_grad()
        loss = case.torch_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return initial, np.array(losses), final


def graphc_run(case_name: str, optimizer: str, backend: str):
    """Train the graphc twin from torch's initial weights; return (losses, final state, model)."""
    case = CASES[case_name]
    initial, _, _ = torch_run(case_name, optimizer)
    model = case.build(nn)
    model.load_state_dict(initial)
    x = gc.input("x", case.x_shape, case.x_dtype)
    y = gc.input("y", case.y_shape, case.y_dtype)
    loss = case.graphc_loss(model(x), y)
    opt = OPTIMIZERS[optimizer][0](model.parameters())
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss), backend=backend)
    data = batches(case_name)
    losses = [float(step(*data[index % len(data)])) for index in range(STEPS)]
    final = {k: np.asarray(v) for k, v in model.state_dict().items()}
    return np.array(losses), final, model


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Return max |ours - theirs| relative to the largest |theirs| (a tensor-wise measure)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(float(np.abs(theirs).max(initial=0.0)), 1e-12)
    return float(np.abs(ours - theirs).max(initial=0.0)) / scale


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_training_matches_pytorch(case_name, optimizer, backend, record_property):
    _, torch_losses, torch_final = torch_run(case_name, optimizer)
    losses, final, _ = graphc_run(case_name, optimizer, backend)

    loss_error = float(np.max(np.abs(losses - torch_losses) / np.abs(torch_losses)))
    assert loss_error < RTOL, f"loss trajectories differ: {losses} vs {torch_losses}"
    last_on_first_batch = torch_losses[STEPS - STEPS % BATCHES - BATCHES]
    assert last_on_first_batch < torch_losses[0], "the run should train (its loss falls)"
    assert final.keys() == torch_final.keys()
    weight_errors = {key: relative_difference(final[key], torch_final[key]) for key in final}
    worst = max(weight_errors, key=weight_errors.get)
    assert weight_errors[worst] < RTOL, f"{worst} differs by {weight_errors[worst]:.2e}"
    record_property("max_loss_rel", loss_error)
    record_property("max_weight_rel", weight_errors[worst])


def test_eval_function_shares_the_trained_parameters(backend):
    """After training, a Function compiled in eval mode (BatchNorm on its running statistics)
    gives torch's eval-mode outputs."""
    _, _, torch_final = torch_run("cnn", "adam")
    _, _, model = graphc_run("cnn", "adam", backend)
    twin = cnn(tnn)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in torch_final.items()})
    twin.eval()
    model.eval()
    x = gc.input("x", ("B", 1, 8, 8))
    predict = gc.compile([x], [model(x)], backend=backend)
    images = np.random.default_rng(5).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(images)).numpy()
    assert relative_difference(predict(images), expected) < RTOL
