"""Train a small attentional encoder-decoder (NMT) on a toy translation task, then translate.

The model is the one of the CS224N neural machine translation assignment, in graphc: an
embedding and a bidirectional LSTM encode the source sentence; the decoder's first state is a
projection of the encoder's last ones; each decoder step (an LSTMCell fed the previous target
word and its own previous output, "input feeding") attends over the encoder states with
multiplicative (Luong-style) attention, e_i = h_dec . W_att h_enc_i, softmaxed over the source
positions; a tanh of a projection of [attention; h_dec] is the step's output, and a linear
read-out of it scores the next target word.

The task is generated from the seed, so no data ships with the example: a sentence is a random
string of English words, and its translation is the words' French counterparts in the reverse
order: "red cat sees" -> "voit chat rouge", "dog not eats" -> "mange ne pas chien". The decoder
must learn where to attend: the source words from the last to the first. Three words translate
to two ("not" -> "ne pas"), so translations of sentences of one length differ in length too.
As in the assignment, a mini-batch holds sentences of mixed lengths (each drawn from --min-len
to --max-len), right-padded and in no order. The encoder packs them
(`nn.utils.rnn.pack_padded_sequence(..., enforce_sorted=False)`, the lengths fed at call time
as an int64 input (B,)), so it encodes each sentence as if alone; the attention scores of the
source padding are set to -inf before the softmax (the assignment's `generate_sent_masks`), and
the loss ignores the target padding (`ignore_index`). The test sentences (--test-size of each
length) never appear in training.

Training uses teacher forcing (the decoder reads the reference translation), cross-entropy, Adam
with a cosine learning-rate decay and gradients clipped to norm 1: one compiled Function whose
decoder is one gc.scan over the target words. Translation is greedy and compiled too: one
gc.scan over 2S + 2 output steps (S the padded source length) feeds each step's argmax to the
next; it translates the test sentences of every length in one padded batch. The batch size and
the source and target lengths are symbolic dims, so each compiled Function serves every batch.
About 30 s on two cores (1000 steps) to 99.7-100% exact match on the test sentences of the
trained lengths (3 to 10 words); on longer ones than it was trained on it holds up for a word
or two and then fails more and more often, how soon depending much on the seed (92-98% at 11
words, 33-96% at 12, 0-69% at 14 over seeds 0-2). Run it with `python examples/nmt.py`
(`--help` lists the options).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from tqdm import tqdm

import graphc as gc
from graphc import nn, optim
from graphc.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from graphc.optim.lr_scheduler import CosineAnnealingLR

LEXICON = {
    "the": ["le"],
    "a": ["un"],
    "cat": ["chat"],
    "dog": ["chien"],
    "bird": ["oiseau"],
    "fish": ["poisson"],
    "house": ["maison"],
    "tree": ["arbre"],
    "sees": ["voit"],
    "eats": ["mange"],
    "likes": ["aime"],
    "finds": ["trouve"],
    "red": ["rouge"],
    "black": ["noir"],
    "big": ["grand"],
    "small": ["petit"],
    "and": ["et"],
    "not": ["ne", "pas"],
    "upstairs": ["en", "haut"],
    "downstairs": ["en", "bas"],
}
PAD, BOS, EOS = 0, 1, 2  # PAD is 0 in both vocabularies; BOS and EOS are target words only
SOURCE_WORDS = ["<pad>", *LEXICON]
TARGET_WORDS = ["<pad>", "<s>", "</s>", *dict.fromkeys(w for ws in LEXICON.values() for w in ws)]
# The target ids of each source word's translation, by source id.
TRANSLATIONS = [[], *([TARGET_WORDS.index(w) for w in ws] for ws in LEXICON.values())]

State = tuple[gc.Tensor, gc.Tensor, gc.Tensor]


def random_sentences(count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Return `count` random sentences of `length` source word ids (int64, no PAD)."""
    return rng.integers(1, len(SOURCE_WORDS), (count, length))


def translate(sentence: np.ndarray) -> np.ndarray:
    """Return the reference translation of a source sentence: its words' translations, in
    the reverse order (each translation's own words stay in order: "ne pas")."""
    return np.array([i for word in sentence[::-1] for i in TRANSLATIONS[word]], dtype=np.int64)


def pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Return the rows as one (len(rows), width) int64 array, padded on the right with PAD."""
    batch = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch


def training_batch(
    count: int, lengths: list[int], held_out: set[bytes], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return `count` random sentences that are not held out, each of a length drawn from
    `lengths`, right-padded to the longest (B, S), their lengths (B,), and the decoder's input
    "<s> y_1 .. y_m" and targets "y_1 .. y_m </s>" for their translations, each (B, T) with T
    one more than the longest translation, padded."""
    sizes = rng.choice(lengths, count)
    sentences = [random_sentences(1, int(n), rng)[0] for n in sizes]
    # Drop the few that happen to be test sentences.
    sentences = [s for s in sentences if s.tobytes() not in held_out]
    targets = [translate(s) for s in sentences]
    width = max(len(t) for t in targets) + 1
    decoder_in = pad([np.concatenate(([BOS], t)) for t in targets], width)
    decoder_out = pad([np.concatenate((t, [EOS])) for t in targets], width)
    source_lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    return pad(sentences, int(source_lengths.max())), source_lengths, decoder_in, decoder_out


class NMT(nn.Module):
    """Bidirectional LSTM encoder, attentional LSTM decoder: CS224N's NMT model."""

    def __init__(self, source_vocab: int, target_vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.source_embedding = nn.Embedding(source_vocab, embed, padding_idx=PAD)
        self.target_embedding = nn.Embedding(target_vocab, embed, padding_idx=PAD)
        self.encoder = nn.LSTM(embed, hidden, bidirectional=True, batch_first=True)
        self.decoder = nn.LSTMCell(embed + hidden, hidden)
        self.h_projection = nn.Linear(2 * hidden, hidden, bias=False)
        self.c_projection = nn.Linear(2 * hidden, hidden, bias=False)
        self.att_projection = nn.Linear(2 * hidden, hidden, bias=False)
        self.combined_output_projection = nn.Linear(3 * hidden, hidden, bias=False)
        self.target_vocab_projection = nn.Linear(hidden, target_vocab, bias=False)

    def encode(
        self, source: gc.Tensor, lengths: gc.Tensor
    ) -> tuple[gc.Tensor, gc.Tensor, gc.Tensor, State]:
        """Return the encoder states (B, S, 2h), their attention projections (B, S, h), the
        padding mask (B, S) (true past each sentence's length) and the decoder's first state
        (h_0, c_0, o_0) for right-padded source ids (B, S) of the given lengths (B,)."""
        embedded = self.source_embedding(source)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_states, (h_n, c_n) = self.encoder(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True)
        # h_n[0] is the forward direction's state after each sentence's last word, h_n[1] the
        # backward one's after its first.
        h_0 = self.h_projection(gc.cat([h_n[0], h_n[1]], dim=1))
        c_0 = self.c_projection(gc.cat([c_n[0], c_n[1]], dim=1))
        padding = gc.arange(source.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)
        return states, self.att_projection(states), padding, (h_0, c_0, gc.zeros_like(h_0))

    def decode_step(
        self,
        state: State,
        word: gc.Tensor,
        states: gc.Tensor,
        projected: gc.Tensor,
        padding: gc.Tensor,
    ) -> tuple[State, gc.Tensor]:
        """Return the next decoder state and the scores (B, target vocab) of the next word,
        given the state (h, c, previous output o), the previous target word's embedding
        (B, e), the encoder's states and their projections, and the source padding mask."""
        h, c, output = state
        h, c = self.decoder(gc.cat([word, output], dim=1), (h, c))  # input feeding
        scores = (projected @ h.unsqueeze(2)).squeeze(2)  # (B, S): e_i = h . W_att h_enc_i
        scores = gc.where(padding, -math.inf, scores)  # no attention on the padding
        weights = scores.softmax(dim=1)
        attention = (weights.unsqueeze(1) @ states).squeeze(1)  # (B, 2h)
        output = self.combined_output_projection(gc.cat([attention, h], dim=1)).tanh()
        return (h, c, output), self.target_vocab_projection(output)

    def forward(self, source: gc.Tensor, lengths: gc.Tensor, decoder_in: gc.Tensor) -> gc.Tensor:
        """Return the scores (B, T, target vocab) of every next target word when the decoder
        reads decoder_in (B, T) (teacher forcing), for padded source ids (B, S) of the given
        lengths (B,): one scan over the T target positions."""
        states, projected, padding, start = self.encode(source, lengths)
        words = self.target_embedding(decoder_in).transpose(0, 1)  # (T, B, e): scan along T

        def step(state: State, word: gc.Tensor) -> tuple[State, gc.Tensor]:
            return self.decode_step(state, word, states, projected, padding)

        _, scores = gc.scan(step, start, words)
        return scores.transpose(0, 1)

    def greedy(self, source: gc.Tensor, lengths: gc.Tensor) -> gc.Tensor:
        """Return the greedy translations (B, 2S + 2) of padded source ids (B, S) of the given
        lengths (B,): one scan over the output steps, each feeding its most likely word to
        the next (a translation is at most 2S words and </s>; the words after the first </s>
        mean nothing)."""
        states, projected, padding, start = self.encode(source, lengths)
        first = gc.full((source.shape[0],), BOS, dtype=gc.int64)
        steps = gc.arange(source.shape[1] * 2 + 2)  # only their count matters

        def step(
            carry: tuple[State, gc.Tensor], _: gc.Tensor
        ) -> tuple[tuple[State, gc.Tensor], gc.Tensor]:
            state, previous = carry
            word = self.target_embedding(previous)
            state, scores = self.decode_step(state, word, states, projected, padding)
            chosen = scores.argmax(dim=1)
            return (state, chosen), chosen

        _, words = gc.scan(step, (start, first), steps)
        return words.transpose(0, 1)


def train(model: NMT, held_out: set[bytes], args: argparse.Namespace) -> list[float]:
    """Compile one Adam step (teacher forcing, padding ignored by the loss, gradients clipped
    to norm 1) and run it --steps times on random mini-batches of sentences of mixed training
    lengths, with a progress bar; return the loss of every step."""
    source = gc.input("source", ("B", "S"), gc.int64)
    lengths = gc.input("lengths", ("B",), gc.int64)
    decoder_in = gc.input("decoder_in", ("B", "T"), gc.int64)
    decoder_out = gc.input("decoder_out", ("B", "T"), gc.int64)
    scores = model(source, lengths, decoder_in)
    loss = nn.CrossEntropyLoss(ignore_index=PAD)(
        scores.reshape(-1, len(TARGET_WORDS)), decoder_out.reshape(-1)
    )
    opt = optim.Adam(model.parameters(), lr=args.lr)
    scheduler = CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    started = time.perf_counter()
    step = gc.compile(
        [source, lengths, decoder_in, decoder_out],
        [loss],
        updates=opt.minimize(loss, max_grad_norm=1.0),
        backend=args.backend,
    )
    seconds = time.perf_counter() - started
    print(f"compiled the training step on {args.backend!r} in {seconds:.1f} s")

    trained = list(range(args.min_len, args.max_len + 1))
    rng = np.random.default_rng(args.seed)
    losses = []
    with tqdm(total=args.steps, unit="step") as bar:
        for _ in range(args.steps):
            losses.append(float(step(*training_batch(args.batch_size, trained, held_out, rng))))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            bar.update()
            scheduler.step()
    return losses


def cut(words: np.ndarray) -> np.ndarray:
    """Return a decoded row up to (not including) its first </s>."""
    ends = np.flatnonzero(words == EOS)
    return words[: ends[0]] if len(ends) else words


def text(ids: np.ndarray, vocabulary: list[str]) -> str:
    """Return the words of a sequence of ids, space-separated."""
    return " ".join(vocabulary[int(i)] for i in ids)


def main() -> None:
    """Train the model, print its exact-match accuracy per length and a few translations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-len", type=int, default=3, help="shortest training sentence")
    parser.add_argument("--max-len", type=int, default=10, help="longest training sentence")
    parser.add_argument("--unseen-lengths", type=int, nargs="*", default=[11, 12, 14])
    parser.add_argument("--test-size", type=int, default=200, help="sentences per length")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--embed", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4, help="translations to print")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()
    if not 1 <= args.min_len <= args.max_len:
        parser.error("need 1 <= --min-len <= --max-len")

    trained = list(range(args.min_len, args.max_len + 1))
    test_rng = np.random.default_rng(10_000 + args.seed)
    test = {n: random_sentences(args.test_size, n, test_rng) for n in trained}
    test |= {n: random_sentences(args.test_size, n, test_rng) for n in args.unseen_lengths}
    held_out = {s.tobytes() for sentences in test.values() for s in sentences}
    print(
        f"{len(SOURCE_WORDS) - 1} source words, {len(TARGET_WORDS) - 3} target words; "
        f"training on lengths {args.min_len}-{args.max_len}; {len(held_out)} test sentences"
    )

    gc.manual_seed(args.seed)
    model = NMT(len(SOURCE_WORDS), len(TARGET_WORDS), args.embed, args.hidden)
    print(model)
    started = time.perf_counter()
    losses = train(model, held_out, args)
    print(f"trained {args.steps} steps in {time.perf_counter() - started:.1f} s")
    head, tail = losses[: min(20, len(losses))], losses[-min(20, len(losses)) :]
    print(f"training loss: {np.mean(head):.3f} -> {np.mean(tail):.3f}")

    source = gc.input("source", ("B", "S"), gc.int64)
    lengths = gc.input("lengths", ("B",), gc.int64)
    translated = model.greedy(source, lengths)
    translator = gc.compile([source, lengths], [translated], backend=args.backend)
    # Every test sentence, of every length, in one padded batch.
    everything = [sentence for sentences in test.values() for sentence in sentences]
    sizes = np.array([len(sentence) for sentence in everything], dtype=np.int64)
    translated = iter(translator(pad(everything, int(sizes.max())), sizes))
    scores: dict[bool, list[int]] = {True: [], False: []}  # trained length?: right or not
    outputs = {}
    for length, sentences in test.items():
        outputs[length] = [cut(next(translated)) for _ in sentences]
        right = [
            np.array_equal(output, translate(sentence))
            for output, sentence in zip(outputs[length], sentences, strict=True)
        ]
        scores[length in trained] += right
        label = "trained" if length in trained else "unseen"
        print(f"length {length} ({label}): exact match {np.mean(right):.1%}")
    print(f"held-out exact match, trained lengths: {100 * np.mean(scores[True]):.1f}%")
    if scores[False]:
        print(f"held-out exact match, unseen lengths: {100 * np.mean(scores[False]):.1f}%")

    print("sample translations (source -> greedy translation):")
    rng = np.random.default_rng(args.seed)
    for length in sorted(rng.choice(list(test), min(args.samples, len(test)), replace=False)):
        sentence, output = test[length][0], outputs[length][0]
        mark = "" if np.array_equal(output, translate(sentence)) else "  (wrong)"
        print(f"  {text(sentence, SOURCE_WORDS)}\n    -> {text(output, TARGET_WORDS)}{mark}")


if __name__ == "__main__":
    main()
