"""Train a small convolutional network on 8x8 digit images.

Two blocks of Conv2d + BatchNorm2d + ReLU + MaxPool2d and a Linear classifier, on the same
synthetic digits as examples/mlp.py (examples/data/digits.npz; see examples/data/make_digits.py
for how they are drawn), with mlp.py's data loading and training loop. BatchNorm's running
statistics are updated by the compiled training step itself; the evaluation Function,
compiled after `model.eval()`, normalises with them. Run it with `python examples/cnn.py`.
"""

from __future__ import annotations

import argparse

from mlp import accuracy, load_digits, train

import graphc as gc
from graphc import nn


def make_model(channels: int) -> nn.Module:
    """Return the CNN: (B, 1, 8, 8) images in, (B, 10) class scores out."""
    return nn.Sequential(
        nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),  # BatchNorm has a shift
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(2 * channels * 2 * 2, 10),
    )


def main() -> None:
    """Train the CNN and print its test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()

    gc.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits(flat=False)
    model = make_model(args.channels)
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


if __name__ == "__main__":
    main()
