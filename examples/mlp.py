"""Train a multilayer perceptron on 8x8 digit images with one compiled training step.

The data is examples/data/digits.npz: 2000 synthetic handwritten-style digits, 200 per class,
drawn from pen-stroke templates with random slant, scale, shift, stroke width and noise, and
stored as 8x8 images with values 0..16 like the UCI/scikit-learn digits
(examples/data/make_digits.py wrote it and says how). The first 1600 images train the model,
the last 400 measure its accuracy.

The whole step (forward pass, backward pass, Adam update) is one compiled Function; a second
Function, compiled after `model.eval()`, shares the same parameters for evaluation. Run it
with `python examples/mlp.py` (`--help` lists the options).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

import graphc as gc
from graphc import nn, optim
from graphc.optim.lr_scheduler import CosineAnnealingLR

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.npz")
TRAIN_SIZE = 1600


def load_digits(flat: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, y_train, x_test, y_test): float32 images scaled to [0, 1] (flattened
    to 64 values, or shaped (N, 1, 8, 8) for a CNN) and int64 labels."""
    with np.load(DATA) as data:
        images, labels = data["images"], data["labels"]
    x = images.astype(np.float32) / 16.0
    x = x.reshape(len(x), 64) if flat else x.reshape(len(x), 1, 8, 8)
    y = labels.astype(np.int64)
    return x[:TRAIN_SIZE], y[:TRAIN_SIZE], x[TRAIN_SIZE:], y[TRAIN_SIZE:]


def minibatches(
    x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield shuffled (x, y) batches; the last one may be smaller (the batch dim is symbolic)."""
    order = rng.permutation(len(x))
    for start in range(0, len(x), batch_size):
        chosen = order[start : start + batch_size]
        yield x[chosen], y[chosen]


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    backend: str,
) -> None:
    """Compile one Adam training step for model and run it over the data with a progress bar."""
    x = gc.input("x", ("B", *x_train.shape[1:]))
    y = gc.input("y", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=lr)
    scheduler = CosineAnnealingLR(opt, T_max=epochs)
    started = time.perf_counter()
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss), backend=backend)
    print(f"compiled the training step on {backend!r} in {time.perf_counter() - started:.1f} s")

    rng = np.random.default_rng(0)
    steps_per_epoch = -(-len(x_train) // batch_size)
    running = None
    with tqdm(total=epochs * steps_per_epoch, unit="step") as bar:
        for epoch in range(epochs):
            for xb, yb in minibatches(x_train, y_train, batch_size, rng):
                value = float(step(xb, yb))
                running = value if running is None else 0.95 * running + 0.05 * value
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", lr=f"{opt.lr:.4f}")
                bar.update()
            scheduler.step()


def accuracy(model: nn.Module, x_test: np.ndarray, y_test: np.ndarray, backend: str) -> float:
    """Return the fraction of x_test that model (in eval mode) classifies correctly."""
    model.eval()
    x = gc.input("x", ("B", *x_test.shape[1:]))
    predict = gc.compile([x], [model(x).argmax(dim=1)], backend=backend)
    return float((predict(x_test) == y_test).mean())


def main() -> None:
    """Train the MLP and print its test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    parser.add_argument("--save", metavar="PATH", help="write the trained weights here (.npz)")
    args = parser.parse_args()

    gc.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits(flat=True)
    model = nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, 10),
    )  # fmt: skip
    print(model)
    train(
        model,
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        backend=args.backend,
    )
    print(f"test accuracy: {accuracy(model, x_test, y_test, args.backend):.1%} on {len(x_test)}")
    if args.save:
        gc.save(model.state_dict(), args.save)
        print(f"saved the weights to {args.save}")


if __name__ == "__main__":
    main()
