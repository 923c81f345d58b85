"""Benchmark the cost of calling small compiled functions, where the call is most of the time.

Cases, one thread by default:
- `x + 1` on 4 float32: graphc's Function, with and without `out=`, against torch eager
  (`x + 1`, and `torch.add(x, 1, out=o)`) and `jax.jit`.
- The word-window classifier's SGD step (examples/word_window.py's model: embedding of a
  5-word window, Linear 125-25, Tanh, Linear 25-1, Sigmoid, BCE loss; lr 0.01) at batch 4
  and 32: one step per call, against the same model in torch eager and jax.jit.
- The MLP 784-256-256-10 Adam step of benchmarks/mlp.py at batch 16.
- Epochs of 100 steps of the same three: graphc runs them in one call (`step.repeat(100)`
  over inputs stacked along a leading dim of 100); the row "one call per step (graphc)" makes
  100 calls of the one-step Function, so its peer/graphc ratio is how much faster the
  repeated Function runs an epoch. torch and jax make 100 steps.

Every peer starts from the same parameters; the first loss is checked against numpy float64,
and graphc's 100 steps in one call against 100 calls of one step. Every peer flushes denormal
floats to zero (`gc.set_flush_denormal`, `torch.set_flush_denormal`; jax.jit's XLA does by
default): the timed calls train thousands of steps on one batch, whose gradients reach
denormals, which x86 computes about 100x slower, so without it the figures measure how far
training has gone rather than the step.

Usage: python benchmarks/call_overhead.py [--threads 1] [--repeat 300] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import mlp
import numpy as np
from harness import (
    Case,
    NotApplicable,
    Peer,
    Prepared,
    check_close,
    import_jax,
    import_torch,
    main,
    timed_first_call,
)

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
WINDOW, EMBED, HIDDEN, WW_LR = 2, 25, 25, 0.01


# the data ---------------------------------------------------------------------------------


def word_window() -> Any:
    """Return examples/word_window.py as a module."""
    sys.path.insert(0, EXAMPLES)
    import word_window as module

    return module


def word_window_batches(batch: int, steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return `steps` batches of word windows (steps, batch, 5) and labels (steps, batch) drawn
    from the example's training corpus, and the vocabulary size."""
    ww = word_window()
    sentences = ww.load_sentences(os.path.join(ww.DATA, "locations_train.txt"))
    vocabulary = ww.build_vocabulary(sentences)
    x, y = ww.dataset(sentences, vocabulary, WINDOW)
    chosen = np.random.default_rng(batch).integers(0, len(x), (steps, batch))
    return x[chosen], y[chosen], len(vocabulary)


def word_window_loss(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Return the classifier's BCE loss on one batch, in numpy float64."""
    p = {name: value.astype(np.float64) for name, value in params.items()}
    embedded = p["embeds.weight"][x].reshape(len(x), -1)
    hidden = np.tanh(embedded @ p["hidden_layer.0.weight"].T + p["hidden_layer.0.bias"])
    z = (hidden @ p["output_layer.weight"].T + p["output_layer.bias"])[:, 0]
    probability = 1 / (1 + np.exp(-z))
    return float(-np.mean(y * np.log(probability) + (1 - y) * np.log(1 - probability)))


def initial_word_window(vocabulary: int) -> dict[str, np.ndarray]:
    """Return the parameters every peer starts from: graphc's initialisation, seed 0."""
    import graphc as gc

    gc.manual_seed(0)
    model = word_window().WordWindowClassifier(vocabulary, WINDOW, EMBED, HIDDEN)
    return model.state_dict()


def mlp_batches(batch: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return benchmarks/mlp.py's batch repeated for `steps` steps."""
    x, y = mlp.batch(batch)
    return np.repeat(x[None], steps, axis=0), np.repeat(y[None], steps, axis=0)


# graphc -------------------------------------------------------------------------------------


def graphc_trivial(out: bool) -> Prepared:
    import graphc as gc

    x = gc.input("x", (4,))
    function, seconds = timed_first_call(lambda: gc.compile([x], x + 1))
    data = np.arange(4, dtype=np.float32)
    check_close("graphc", function(data), data + 1)
    if not out:
        return Prepared(lambda: function(data), seconds)
    target = np.empty(4, np.float32)
    check_close("graphc out=", function(data, out=target), data + 1)
    return Prepared(lambda: function(data, out=target), seconds)


def graphc_word_window_step(batch: int, steps: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """Return the compiled one-step Function of the word-window classifier and the batches."""
    import graphc as gc
    from graphc import nn, optim

    xs, ys, vocabulary = word_window_batches(batch, steps)
    gc.manual_seed(0)
    model = word_window().WordWindowClassifier(vocabulary, WINDOW, EMBED, HIDDEN)
    x = gc.input("x", ("N", 2 * WINDOW + 1), gc.int64)
    y = gc.input("y", ("N",), gc.float32)
    loss = nn.BCELoss()(model(x), y)
    updates = optim.SGD(model.parameters(), lr=WW_LR).minimize(loss)
    return gc.compile([x, y], loss, updates=updates), xs, ys


def graphc_mlp_step(batch: int, steps: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """Return the compiled one-step Function of benchmarks/mlp.py's Adam step and the batches."""
    import graphc as gc
    from graphc import optim

    x, y, loss, variables, _ = mlp.graphc_model(by_hand=False)
    updates = optim.Adam(list(variables.values()), lr=mlp.LR).minimize(loss)
    xs, ys = mlp_batches(batch, steps)
    return gc.compile([x, y], loss, updates=updates), xs, ys


STEP_BUILDERS = {"word window": graphc_word_window_step, "mlp": graphc_mlp_step}


def build_step(model: str, batch: int, steps: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """Return STEP_BUILDERS[model](batch, steps), denormals flushed (see the module's doc)."""
    import graphc as gc

    gc.set_flush_denormal(True)
    return STEP_BUILDERS[model](batch, steps)


def first_loss_check(model: str, batch: int, loss: Any, xs: np.ndarray, ys: np.ndarray) -> None:
    """Assert that the first step's loss matches numpy float64."""
    if model == "mlp":
        want, _ = mlp.reference(mlp.initial_parameters(), xs[0], ys[0])
    else:
        want = word_window_loss(initial_word_window(word_window_batches(batch, 1)[2]), xs[0], ys[0])
    check_close(f"{model} first loss", loss, want, rtol=1e-5)


def graphc_step(params: dict, options: argparse.Namespace) -> Prepared:
    step, xs, ys = build_step(params["model"], params["batch"], 1)
    first_loss_check(params["model"], params["batch"], step(xs[0], ys[0]), xs, ys)
    return Prepared(lambda: step(xs[0], ys[0]), note=f"{len(step.kernels())} kernels")


def graphc_epoch(params: dict, options: argparse.Namespace, repeated: bool) -> Prepared:
    steps = options.steps
    step, xs, ys = build_step(params["model"], params["batch"], steps)
    one_by_one, _, _ = build_step(params["model"], params["batch"], steps)
    epoch = step.repeat(steps)
    losses = epoch(xs, ys)
    first_loss_check(params["model"], params["batch"], losses[0], xs, ys)
    singles = [one_by_one(x, y) for x, y in zip(xs, ys, strict=True)]
    check_close(f"{steps} steps in one call", losses, singles)
    if repeated:
        return Prepared(lambda: epoch(xs, ys), note=f"repeat({steps}): one call")

    def run() -> None:
        for x, y in zip(xs, ys, strict=True):
            one_by_one(x, y)

    return Prepared(run, note=f"{steps} calls")


# PyTorch ------------------------------------------------------------------------------------


def torch_trivial(params: dict, options: argparse.Namespace, out: bool) -> Prepared:
    if params["kind"] != "trivial":
        raise NotApplicable("x + 1 only")
    torch = import_torch(options.threads)
    x = torch.arange(4, dtype=torch.float32)
    check_close("torch", (x + 1).numpy(), np.arange(4) + 1)
    if not out:
        return Prepared(lambda: x + 1)
    target = torch.empty(4)
    return Prepared(lambda: torch.add(x, 1, out=target))


def torch_word_window(vocabulary: int, threads: int) -> tuple[Any, Any]:
    """Return torch and its word-window SGD step, a function of one batch."""
    torch = import_torch(threads)
    nn = torch.nn
    model = nn.ModuleDict(
        {
            "embeds": nn.Embedding(vocabulary, EMBED, padding_idx=0),
            "hidden_layer": nn.Sequential(nn.Linear((2 * WINDOW + 1) * EMBED, HIDDEN), nn.Tanh()),
            "output_layer": nn.Linear(HIDDEN, 1),
        }
    )
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in initial_word_window(vocabulary).items()}
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=WW_LR)
    loss_function = nn.BCELoss()

    def step(x: Any, y: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        hidden = model["hidden_layer"](model["embeds"](x).flatten(1))
        loss = loss_function(torch.sigmoid(model["output_layer"](hidden)).squeeze(1), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return torch, step


def torch_steps(params: dict, options: argparse.Namespace) -> Prepared:
    prepared = torch_case(params, options)
    sys.modules["torch"].set_flush_denormal(True)  # imported by the case's setup
    return prepared


def torch_case(params: dict, options: argparse.Namespace) -> Prepared:
    if params["kind"] == "trivial":
        return torch_trivial(params, options, out=False)
    steps = options.steps if params["kind"] == "epoch" else 1
    if params["model"] == "mlp":
        prepared = mlp.torch_adam_setup({"batch": params["batch"]}, options)
        if steps == 1:
            return prepared
        return Prepared(lambda: [prepared.run() for _ in range(steps)], note=prepared.note)
    xs, ys, vocabulary = word_window_batches(params["batch"], steps)
    torch, step = torch_word_window(vocabulary, options.threads)
    batches = list(zip(torch.from_numpy(xs), torch.from_numpy(ys), strict=True))
    first_loss_check("word window", params["batch"], step(*batches[0]).item(), xs, ys)

    def run() -> None:
        for x, y in batches:
            step(x, y)

    return Prepared(run)


# jax ----------------------------------------------------------------------------------------


def jax_steps(params: dict, options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    if params["kind"] == "trivial":
        x = jax.device_put(np.arange(4, dtype=np.float32))
        function = jax.jit(lambda x: x + 1)
        result, seconds = timed_first_call(lambda: jax.block_until_ready(function(x)))
        check_close("jax", np.asarray(result), np.arange(4) + 1)
        return Prepared(lambda: jax.block_until_ready(function(x)), seconds)
    steps = options.steps if params["kind"] == "epoch" else 1
    if params["model"] == "mlp":
        prepared = mlp.jax_adam_setup({"batch": params["batch"]}, options)
        if steps == 1:
            return prepared
        return Prepared(lambda: [prepared.run() for _ in range(steps)], prepared.compile_s)
    return jax_word_window(jax, params["batch"], steps)


def jax_word_window(jax: Any, batch: int, steps: int) -> Prepared:
    jnp = jax.numpy
    xs, ys, vocabulary = word_window_batches(batch, steps)
    xs, ys = jax.device_put(xs.astype(np.int32)), jax.device_put(ys)

    def loss(p: dict, x: Any, y: Any) -> Any:
        embedded = p["embeds.weight"][x].reshape(x.shape[0], -1)
        hidden = jnp.tanh(embedded @ p["hidden_layer.0.weight"].T + p["hidden_layer.0.bias"])
        z = (hidden @ p["output_layer.weight"].T + p["output_layer.bias"])[:, 0]
        probability = jax.nn.sigmoid(z)
        return -jnp.mean(y * jnp.log(probability) + (1 - y) * jnp.log(1 - probability))

    def sgd_step(p: dict, x: Any, y: Any) -> tuple[dict, Any]:
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return {k: p[k] - WW_LR * grads[k] for k in p}, value

    function = jax.jit(sgd_step, donate_argnums=(0,))
    state = [jax.device_put(initial_word_window(vocabulary))]

    def run() -> Any:
        for i in range(steps):
            state[0], value = function(state[0], xs[i], ys[i])
        return jax.block_until_ready(value)

    first, seconds = timed_first_call(run)
    return Prepared(run, seconds, f"{float(first):.4f}")


# the script ---------------------------------------------------------------------------------


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    if params["kind"] == "trivial":
        return graphc_trivial(out=False)
    if params["kind"] == "epoch":
        return graphc_epoch(params, options, repeated=True)
    return graphc_step(params, options)


def only(kind: str, setup: Any) -> Any:
    """Return a setup that runs only for cases of one kind."""

    def run(params: dict, options: argparse.Namespace) -> Prepared:
        if params["kind"] != kind:
            raise NotApplicable(f"{kind} only")
        return setup(params, options)

    return run


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("graphc out=", only("trivial", lambda p, o: graphc_trivial(out=True))),
    Peer(
        "one call per step (graphc)",
        only("epoch", lambda p, o: graphc_epoch(p, o, repeated=False)),
    ),
    Peer("torch", torch_steps),
    Peer("torch out=", lambda p, o: torch_trivial(p, o, out=True), against="graphc out="),
    Peer("jax.jit", jax_steps, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=100, help="steps of an epoch case")
    parser.set_defaults(threads=[1])


def cases(options: argparse.Namespace) -> list[Case]:
    """Return the trivial call, the one-step cases and the epoch cases."""
    workloads = [("word window", 4), ("word window", 32), ("mlp", 16)]
    titles = {"word window": "word-window SGD", "mlp": "MLP Adam"}
    listed = [Case("x + 1 on 4 float32", {"kind": "trivial"})]
    for kind, title in (("step", "{} step"), ("epoch", f"{{}}, {options.steps} steps")):
        listed += [
            Case(
                f"{title.format(titles[model])}, batch {batch}",
                {"kind": kind, "model": model, "batch": batch},
            )
            for model, batch in workloads
        ]
    return listed


if __name__ == "__main__":
    main(
        "graphc benchmark: the cost of a call, and many steps per call",
        cases,
        PEERS,
        repeat=300,
        warmup=30,
        add_arguments=add_arguments,
    )
