"""Train a character-level language model on a Shakespeare passage, then sample from it.

The text is examples/data/coriolanus.txt: the opening of William Shakespeare's *Coriolanus*
(Act I, scenes 1-3; public domain), 39,908 characters as they begin the "tiny Shakespeare"
file of Andrej Karpathy's char-rnn repository (data/tinyshakespeare/input.txt). The first 90%
trains the model and the last 10% measures its perplexity, exp(mean cross-entropy per
character).

Two models, both predicting each next character from the ones before it:

- `--model lstm` (default): an embedding, a 1-layer LSTM (one gc.scan over the sequence) and a
  linear read-out. About 10 s on two cores to a validation perplexity of 6.7.
- `--model transformer`: token and position embeddings, a 2-layer pre-norm Transformer encoder
  whose self-attention is masked with `is_causal=True`, and a linear read-out. About 35 s on
  two cores to a validation perplexity of 7.9.

(A model that knows only how often each character occurs has a perplexity of about 26 here.)

The sequence length is a symbolic dim `T`, so each compiled Function serves every length:
the training step runs on `--seq-len` characters, the evaluation on `--eval-len`, and the
sampler on whatever the prompt and the generated text need (the LSTM's sampler takes one
character and its carried state per call; the Transformer's re-reads the last `--seq-len`
characters). Run it with `python examples/char_lm.py` (`--help` lists the options).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from tqdm import tqdm

import graphc as gc
from graphc import nn, optim
from graphc.optim.lr_scheduler import CosineAnnealingLR

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coriolanus.txt")
TRAIN_FRACTION = 0.9


class Vocabulary:
    """The characters of a text, each with an integer id (in sorted order)."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.ids = {char: index for index, char in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Return the ids of text's characters (int64)."""
        return np.array([self.ids[char] for char in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        """Return the text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in ids)


class CharLSTM(nn.Module):
    """Embedding, LSTM and a linear read-out: (B, T) ids in, (B, T, vocab) scores out."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(
        self, ids: gc.Tensor, state: tuple[gc.Tensor, gc.Tensor] | None = None
    ) -> tuple[gc.Tensor, tuple[gc.Tensor, gc.Tensor]]:
        """Return the scores of every position and the LSTM's final (h, c)."""
        output, state = self.lstm(self.embedding(ids), state)
        return self.head(output), state


class CharTransformer(nn.Module):
    """Token and position embeddings, a causal pre-norm Transformer encoder and a linear
    read-out: (B, T) ids in, (B, T, vocab) scores out, for T up to `context`."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, context: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(context, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            heads,
            dim_feedforward=4 * d_model,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocab)

    def forward(self, ids: gc.Tensor) -> gc.Tensor:
        """Return the scores of every position; position t sees the ids up to t."""
        x = self.embedding(ids) + self.position(gc.arange(ids.shape[1]))
        return self.head(self.encoder(x, is_causal=True))


def build_model(args: argparse.Namespace, vocab: int) -> nn.Module:
    """Return the model --model names, sized by the command line."""
    if args.model == "lstm":
        return CharLSTM(vocab, args.embed, args.hidden, args.layers)
    return CharTransformer(vocab, args.d_model, args.heads, args.layers, args.seq_len)


def scores(model: nn.Module, ids: gc.Tensor) -> gc.Tensor:
    """Return the model's (B, T, vocab) scores for ids, from zero state for the LSTM."""
    output = model(ids)
    return output[0] if isinstance(output, tuple) else output


def sequence_loss(model: nn.Module, ids: gc.Tensor, targets: gc.Tensor, vocab: int) -> gc.Tensor:
    """Return the mean cross-entropy of predicting targets (B, T) from ids (B, T)."""
    logits = scores(model, ids)
    return nn.CrossEntropyLoss()(logits.reshape(-1, vocab), targets.reshape(-1))


def random_windows(
    data: np.ndarray, batch: int, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return `batch` windows of `length` ids from random places in data, and the ids that
    follow each position (the targets)."""
    starts = rng.integers(0, len(data) - length - 1, batch)
    rows = starts[:, None] + np.arange(length)
    return data[rows], data[rows + 1]


def train(
    model: nn.Module, train_ids: np.ndarray, vocab: int, args: argparse.Namespace
) -> list[float]:
    """Compile one Adam step (gradients clipped to norm 1) and run it --steps times on random
    windows, with a progress bar; return the loss of every step."""
    ids = gc.input("ids", ("B", "T"), gc.int64)
    targets = gc.input("targets", ("B", "T"), gc.int64)
    loss = sequence_loss(model, ids, targets, vocab)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    scheduler = CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 10)
    started = time.perf_counter()
    step = gc.compile(
        [ids, targets],
        [loss],
        updates=opt.minimize(loss, max_grad_norm=1.0),
        backend=args.backend,
    )
    seconds = time.perf_counter() - started
    print(f"compiled the training step on {args.backend!r} in {seconds:.1f} s")

    rng = np.random.default_rng(args.seed)
    losses = []
    running = None
    with tqdm(total=args.steps, unit="step") as bar:
        for _ in range(args.steps):
            value = float(step(*random_windows(train_ids, args.batch_size, args.seq_len, rng)))
            losses.append(value)
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{opt.lr:.4f}")
            bar.update()
            scheduler.step()
    return losses


def perplexity(model: nn.Module, data: np.ndarray, vocab: int, length: int, backend: str) -> float:
    """Return exp(mean cross-entropy) of predicting data from its prefix, cut into
    consecutive windows of `length` characters (each read from a fresh start)."""
    ids = gc.input("ids", ("B", "T"), gc.int64)
    targets = gc.input("targets", ("B", "T"), gc.int64)
    loss = sequence_loss(model, ids, targets, vocab)
    evaluate = gc.compile([ids, targets], [loss], backend=backend)
    windows = (len(data) - 1) // length
    starts = np.arange(windows) * length
    rows = starts[:, None] + np.arange(length)
    return math.exp(float(evaluate(data[rows], data[rows + 1])))


def choose(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Return the next id: the most likely one at temperature 0, else a draw from
    softmax(logits / temperature)."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probabilities = np.exp(scaled - scaled.max())
    return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def sample_lstm(
    model: CharLSTM,
    prompt: np.ndarray,
    count: int,
    temperature: float,
    rng: np.random.Generator,
    backend: str,
) -> tuple[list[int], set[int]]:
    """Return `count` ids generated after prompt, and the sequence lengths the sampler was
    called with: one compiled Function reads the prompt in one call, then one character per
    call, carrying the LSTM's state between calls."""
    lstm = model.lstm
    ids = gc.input("ids", (1, "T"), gc.int64)
    h0 = gc.input("h0", (lstm.num_layers, 1, lstm.hidden_size))
    c0 = gc.input("c0", (lstm.num_layers, 1, lstm.hidden_size))
    logits, (h, c) = model(ids, (h0, c0))
    forward = gc.compile([ids, h0, c0], [logits[0, -1], h, c], backend=backend)
    state = [np.zeros((lstm.num_layers, 1, lstm.hidden_size), np.float32)] * 2
    generated, lengths = [], set()
    feed = prompt
    for _ in range(count):
        last, *state = forward(feed[None, :], *state)
        lengths.add(len(feed))
        generated.append(choose(last, temperature, rng))
        feed = np.array(generated[-1:], dtype=np.int64)
    return generated, lengths


def sample_transformer(
    model: CharTransformer,
    prompt: np.ndarray,
    count: int,
    temperature: float,
    context: int,
    rng: np.random.Generator,
    backend: str,
) -> tuple[list[int], set[int]]:
    """Return `count` ids generated after prompt, and the sequence lengths the sampler was
    called with: one compiled Function reads the last `context` ids (fewer at first) and
    gives the scores of the next one."""
    ids = gc.input("ids", (1, "T"), gc.int64)
    forward = gc.compile([ids], [model(ids)[0, -1]], backend=backend)
    text, lengths = list(prompt), set()
    for _ in range(count):
        window = np.array(text[-context:], dtype=np.int64)
        lengths.add(len(window))
        text.append(choose(forward(window[None, :]), temperature, rng))
    return text[len(prompt) :], lengths


def main() -> None:
    """Train the chosen model, print its validation perplexity and a sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lstm", choices=("lstm", "transformer"))
    parser.add_argument("--steps", type=int, help="default: lstm 300, transformer 300")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64, help="training length (context)")
    parser.add_argument(
        "--eval-len", type=int, help="evaluation window; default: lstm 128, transformer --seq-len"
    )
    parser.add_argument("--lr", type=float, help="default: lstm 1e-2, transformer 6e-3")
    parser.add_argument("--layers", type=int, help="default: lstm 1, transformer 2")
    parser.add_argument("--embed", type=int, default=32, help="lstm: embedding size")
    parser.add_argument("--hidden", type=int, default=128, help="lstm: hidden size")
    parser.add_argument("--d-model", type=int, default=96, help="transformer: model width")
    parser.add_argument("--heads", type=int, default=4, help="transformer: attention heads")
    parser.add_argument("--prompt", default="MENENIUS:\n")
    parser.add_argument("--sample-len", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()
    defaults = {"lstm": (300, 1e-2, 1, 128), "transformer": (300, 6e-3, 2, args.seq_len)}
    for name, value in zip(
        ("steps", "lr", "layers", "eval_len"), defaults[args.model], strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model == "transformer" and args.eval_len > args.seq_len:
        parser.error("--eval-len: the transformer has positions for --seq-len characters only")

    with open(DATA, encoding="utf-8") as handle:
        text = handle.read()
    vocabulary = Vocabulary(text)
    data = vocabulary.encode(text)
    split = int(TRAIN_FRACTION * len(data))
    train_ids, val_ids = data[:split], data[split:]
    print(f"{len(text)} characters, {len(vocabulary)} distinct; {split} train, {len(val_ids)} val")

    gc.manual_seed(args.seed)
    model = build_model(args, len(vocabulary))
    print(model)
    started = time.perf_counter()
    losses = train(model, train_ids, len(vocabulary), args)
    print(f"trained {args.steps} steps in {time.perf_counter() - started:.1f} s")
    head, tail = losses[: min(10, len(losses))], losses[-min(10, len(losses)) :]
    print(f"training loss: {np.mean(head):.3f} -> {np.mean(tail):.3f}")

    model.eval()
    value = perplexity(model, val_ids, len(vocabulary), args.eval_len, args.backend)
    print(f"validation perplexity: {value:.2f}")

    rng = np.random.default_rng(args.seed)
    prompt = vocabulary.encode(args.prompt)
    if args.model == "lstm":
        generated, lengths = sample_lstm(
            model, prompt, args.sample_len, args.temperature, rng, args.backend
        )
    else:
        generated, lengths = sample_transformer(
            model, prompt, args.sample_len, args.temperature, args.seq_len, rng, args.backend
        )
    print(
        f"sample (temperature {args.temperature}; one compiled forward for "
        f"{len(lengths)} sequence lengths):\n{args.prompt}{vocabulary.decode(generated)}"
    )


if __name__ == "__main__":
    main()
