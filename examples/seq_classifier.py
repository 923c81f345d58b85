"""Train a GRU to tell whether a string of brackets is balanced, at several lengths.

Every string has as many "(" as ")", so counting them says nothing: the model must track the
depth along the string and notice when a prefix closes more brackets than it opened
("())(" is not balanced). Half the strings are drawn balanced, half are shuffles of the same
brackets (balanced only by chance; their label is computed). The strings are generated from
the seed, so no data ships with the example.

The model is an embedding, a 1-layer GRU (one gc.scan over the string) and a linear read-out
of its final state. The string length is a symbolic dim, so one compiled training step serves
every length: each mini-batch has one length drawn from `--lengths`. The accuracy is measured
on fresh strings of each training length and of a longer one the model never saw. Run it with
`python examples/seq_classifier.py` (`--help` lists the options).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

import graphc as gc
from graphc import nn, optim

OPEN, CLOSE = 0, 1


def balanced(strings: np.ndarray) -> np.ndarray:
    """Return, per row of 0 ("(") and 1 (")"), whether no prefix closes more than it opens
    (rows have as many of each, so that is balance)."""
    depth = np.cumsum(np.where(strings == OPEN, 1, -1), axis=1)
    return (depth >= 0).all(axis=1)


def make_batch(count: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return `count` strings of `length` brackets (int64, half drawn balanced, half shuffled)
    and their labels (1: balanced)."""
    strings = np.empty((count, length), dtype=np.int64)
    for row in range(count):
        if row % 2 == 0:  # a random balanced string: open while allowed, close when needed
            depth, opened = 0, 0
            for position in range(length):
                can_open = opened < length // 2
                must_open = depth == 0
                if can_open and (must_open or rng.random() < 0.5):
                    strings[row, position], depth, opened = OPEN, depth + 1, opened + 1
                else:
                    strings[row, position], depth = CLOSE, depth - 1
        else:
            strings[row] = rng.permutation([OPEN, CLOSE] * (length // 2))
    return strings, balanced(strings).astype(np.int64)


class BracketClassifier(nn.Module):
    """Embedding, GRU and a linear read-out of the final state: (B, T) ids in, (B, 2) scores."""

    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(2, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, ids: gc.Tensor) -> gc.Tensor:
        """Return the class scores of each string."""
        _, final = self.gru(self.embedding(ids))
        return self.head(final[-1])


def main() -> None:
    """Train the classifier and print its accuracy at each length."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 24, 32])
    parser.add_argument("--unseen-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()
    if any(length % 2 for length in [*args.lengths, args.unseen_length]):
        parser.error("lengths must be even (as many '(' as ')')")

    gc.manual_seed(args.seed)
    model = BracketClassifier(8, args.hidden)
    print(model)
    ids = gc.input("ids", ("B", "T"), gc.int64)
    labels = gc.input("labels", ("B",), gc.int64)
    loss = nn.CrossEntropyLoss()(model(ids), labels)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    started = time.perf_counter()
    step = gc.compile(
        [ids, labels], [loss], updates=opt.minimize(loss, max_grad_norm=1.0), backend=args.backend
    )
    seconds = time.perf_counter() - started
    print(f"compiled the training step on {args.backend!r} in {seconds:.1f} s")

    rng = np.random.default_rng(args.seed)
    losses = []
    with tqdm(total=args.steps, unit="step") as bar:
        for _ in range(args.steps):
            length = int(rng.choice(args.lengths))
            losses.append(float(step(*make_batch(args.batch_size, length, rng))))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", length=length)
            bar.update()
    print(f"training loss: {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}")

    model.eval()
    predict = gc.compile([ids], [model(ids).argmax(dim=1)], backend=args.backend)
    for length in [*args.lengths, args.unseen_length]:
        strings, truth = make_batch(1000, length, np.random.default_rng(10_000 + length))
        accuracy = float((predict(strings) == truth).mean())
        seen = "trained" if length in args.lengths else "unseen"
        print(f"length {length} ({seen}): accuracy {accuracy:.1%}")


if __name__ == "__main__":
    main()
