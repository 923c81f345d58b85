"""Word-window classification, the CS224N PyTorch tutorial's demo: is a word a LOCATION?

Each word is classified from a window of the words around it: two on each side, padded with
a `<pad>` token at the sentence edges. The model embeds the window's words, concatenates
the embeddings, and applies Linear + Tanh + Linear + Sigmoid to get the probability that the
centre word is a location; it trains with binary cross-entropy.

The corpus is examples/data/locations_train.txt (sentences with [bracketed] locations); the
held-out sentences in examples/data/locations_test.txt are labelled word by word at the end.
Words that training never saw become `<unk>`, so a new city can only be recognised from
its context ("born in ...", "flew to ..."); so that the model learns what `<unk>` means,
training replaces a random tenth of its words with `<unk>` in each epoch.

Run it with `python examples/word_window.py`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from tqdm import tqdm

import graphc as gc
from graphc import nn, optim

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PAD, UNK = "<pad>", "<unk>"

Sentence = tuple[list[str], list[int]]


def load_sentences(path: str) -> list[Sentence]:
    """Return (lower-cased words, 0/1 location labels) for each sentence in a corpus file."""
    sentences = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.strip() or line.startswith("#"):
                continue
            words, labels = [], []
            for token in line.split():
                is_location = token.startswith("[") and token.endswith("]")
                words.append(token.strip("[]").lower())
                labels.append(int(is_location))
            sentences.append((words, labels))
    return sentences


def build_vocabulary(sentences: list[Sentence]) -> dict[str, int]:
    """Return word -> index, with <pad> as 0 and <unk> as 1, then the words in sorted order."""
    words = sorted({word for sentence, _ in sentences for word in sentence})
    return {word: index for index, word in enumerate([PAD, UNK, *words])}


def windows(words: list[str], vocabulary: dict[str, int], window_size: int) -> np.ndarray:
    """Return one row of word indices per word: the word with window_size neighbours each side."""
    padded = [PAD] * window_size + words + [PAD] * window_size
    ids = np.array([vocabulary.get(word, vocabulary[UNK]) for word in padded], dtype=np.int64)
    width = 2 * window_size + 1
    return np.stack([ids[start : start + width] for start in range(len(words))])


def dataset(
    sentences: list[Sentence], vocabulary: dict[str, int], window_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return every word's window (N, 2 * window_size + 1) and its label (N,) as float32."""
    x = np.concatenate([windows(words, vocabulary, window_size) for words, _ in sentences])
    y = np.concatenate([np.array(labels, dtype=np.float32) for _, labels in sentences])
    return x, y


class WordWindowClassifier(nn.Module):
    """Embedding of a word window, Linear, Tanh, Linear, Sigmoid: P(the centre word is a place)."""

    def __init__(self, vocab_size: int, window_size: int, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.embeds = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        full_window = 2 * window_size + 1
        self.hidden_layer = nn.Sequential(nn.Linear(full_window * embed_dim, hidden_dim), nn.Tanh())
        self.output_layer = nn.Linear(hidden_dim, 1)
        self.probabilities = nn.Sigmoid()

    def forward(self, windows: gc.Tensor) -> gc.Tensor:
        """Map (N, window) word indices to (N,) probabilities."""
        embedded = self.embeds(windows).flatten(1)  # (N, window * embed_dim)
        hidden = self.hidden_layer(embedded)
        return self.probabilities(self.output_layer(hidden)).squeeze(1)


def main() -> None:
    """Train the classifier and label the held-out sentences word by word."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--window-size", type=int, default=2)
    parser.add_argument("--unk-rate", type=float, default=0.1, help="word dropout to <unk>")
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()

    train_sentences = load_sentences(os.path.join(DATA, "locations_train.txt"))
    test_sentences = load_sentences(os.path.join(DATA, "locations_test.txt"))
    vocabulary = build_vocabulary(train_sentences)
    x_train, y_train = dataset(train_sentences, vocabulary, args.window_size)
    print(
        f"{len(train_sentences)} sentences, {len(x_train)} words ({int(y_train.sum())} "
        f"locations), vocabulary of {len(vocabulary)} with {PAD} and {UNK}"
    )
    print("the first sentence's windows:")
    names = {index: word for word, index in vocabulary.items()}
    first_words = train_sentences[0][0]
    rows = windows(first_words, vocabulary, args.window_size)
    for word, row in zip(first_words, rows, strict=True):
        print(f"  {word:>8}: [{' '.join(names[int(i)] for i in row)}]")

    gc.manual_seed(0)
    model = WordWindowClassifier(len(vocabulary), args.window_size, embed_dim=25, hidden_dim=25)
    print(model)
    x = gc.input("x", ("N", 2 * args.window_size + 1), gc.int64)
    y = gc.input("y", ("N",), gc.float32)
    loss = nn.BCELoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    started = time.perf_counter()
    step = gc.compile([x, y], [loss], updates=opt.minimize(loss), backend=args.backend)
    seconds = time.perf_counter() - started
    print(f"compiled the training step on {args.backend!r} in {seconds:.1f} s")

    rng = np.random.default_rng(0)
    running = None
    batches = -(-len(x_train) // args.batch_size)
    with tqdm(total=args.epochs * batches, unit="step") as bar:
        for epoch in range(args.epochs):
            forget = (rng.random(x_train.shape) < args.unk_rate) & (x_train != vocabulary[PAD])
            x_epoch = np.where(forget, vocabulary[UNK], x_train)
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), args.batch_size):
                chosen = order[start : start + args.batch_size]
                value = float(step(x_epoch[chosen], y_train[chosen]))
                running = value if running is None else 0.95 * running + 0.05 * value
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}")
                bar.update()

    model.eval()
    words_in = gc.input("words", ("N", 2 * args.window_size + 1), gc.int64)
    predict = gc.compile([words_in], [model(words_in)], backend=args.backend)
    correct = total = 0
    print("held-out sentences (probability that each word is a LOCATION; * marks > 0.5):")
    for words, labels in test_sentences:
        probabilities = predict(windows(words, vocabulary, args.window_size))
        marked = []
        for word, label, p in zip(words, labels, probabilities, strict=True):
            unknown = "" if word in vocabulary else "?"
            marked.append(f"{word}{unknown}:{p:.2f}{'*' if p > 0.5 else ''}")
            correct += int((p > 0.5) == bool(label))
            total += 1
        print("  " + "  ".join(marked))
    print("(? marks a word training never saw: it was fed as <unk>)")
    print(f"held-out word accuracy: {correct / total:.1%} ({correct} of {total})")


if __name__ == "__main__":
    main()
