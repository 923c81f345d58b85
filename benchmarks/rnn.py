"""Benchmark the recurrent and attention training steps: an LSTM and a Transformer block.

Cases (every one an Adam step, lr 1e-3, on the mean squared error against a fixed target):
- LSTM: nn.LSTM(256, 256), one layer, sequence-first input of seq 64 x batch 32 x 256. graphc
  runs one gc.scan whose length is a symbolic dim; PyTorch eager runs torch.nn.LSTM (its fused
  CPU kernel) with torch.optim.Adam(fused=True); jax.jit runs a hand-written LSTM step under
  jax.lax.scan with a hand-written Adam (PyTorch's formula), parameters and moments donated.
  `--lengths` adds the same step at other sequence lengths (default 16 and 256): graphc's
  compile s column is then the compile time of the step at each length (`graphc` compiles a
  symbolic length once, `graphc static T` a fixed one), jax.jit's the first call (it traces and
  compiles each length anew).
- Transformer block: nn.TransformerEncoderLayer(d_model 128, 4 heads, feed-forward 512, relu,
  post-norm, no dropout, batch_first), causal self-attention, batch 16 x seq 128. graphc uses
  `is_causal=True` without a mask; PyTorch gets the causal mask and `is_causal=True`; jax.jit a
  hand-written layer with the same mask.

Every peer starts from the same parameters and data and checks its first two losses (the second
after one Adam step) against PyTorch in float64 at one thread before timing.

Usage: python benchmarks/rnn.py [--threads 1 2] [--repeat 20] [--lengths 16 256]
       [--kinds lstm transformer]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from harness import (
    Case,
    NotApplicable,
    Peer,
    Prepared,
    check_two_steps,
    import_jax,
    import_torch,
    jax_adam,
    main,
    timed_first_call,
)

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
LSTM_INPUT, LSTM_HIDDEN, LSTM_BATCH = 256, 256, 32
D_MODEL, HEADS, FEED_FORWARD, TRANSFORMER_BATCH, TRANSFORMER_SEQ = 128, 4, 512, 16, 128


def lstm_state() -> dict[str, np.ndarray]:
    """Return the LSTM's parameters with torch's names, drawn as torch draws them."""
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(LSTM_HIDDEN)
    shapes = {
        "weight_ih_l0": (4 * LSTM_HIDDEN, LSTM_INPUT),
        "weight_hh_l0": (4 * LSTM_HIDDEN, LSTM_HIDDEN),
        "bias_ih_l0": (4 * LSTM_HIDDEN,),
        "bias_hh_l0": (4 * LSTM_HIDDEN,),
    }
    return {k: rng.uniform(-bound, bound, s).astype(np.float32) for k, s in shapes.items()}


def transformer_state() -> dict[str, np.ndarray]:
    """Return the encoder layer's parameters with torch's names (uniform +-1/sqrt(fan_in),
    LayerNorm's ones and zeros)."""
    rng = np.random.default_rng(1)
    d, f = D_MODEL, FEED_FORWARD
    shapes = {
        "self_attn.in_proj_weight": ((3 * d, d), d),
        "self_attn.in_proj_bias": ((3 * d,), d),
        "self_attn.out_proj.weight": ((d, d), d),
        "self_attn.out_proj.bias": ((d,), d),
        "linear1.weight": ((f, d), d),
        "linear1.bias": ((f,), d),
        "linear2.weight": ((d, f), f),
        "linear2.bias": ((d,), f),
    }
    state = {k: rng.uniform(-1, 1, s) / np.sqrt(fan_in) for k, (s, fan_in) in shapes.items()}
    for norm in ("norm1", "norm2"):
        state[f"{norm}.weight"], state[f"{norm}.bias"] = np.ones(d), np.zeros(d)
    return {k: v.astype(np.float32) for k, v in state.items()}


def data(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return the input and the target of a case (float32)."""
    rng = np.random.default_rng(params["seq"])
    if params["kind"] == "lstm":
        shape_in = (params["seq"], LSTM_BATCH, LSTM_INPUT)
        shape_out = (params["seq"], LSTM_BATCH, LSTM_HIDDEN)
    else:
        shape_in = shape_out = (TRANSFORMER_BATCH, params["seq"], D_MODEL)
    x = rng.standard_normal(shape_in, dtype=np.float32)
    return x, 0.5 * rng.standard_normal(shape_out, dtype=np.float32)


def torch_module(torch: Any, kind: str) -> Any:
    """Return the case's torch module with the shared state loaded."""
    if kind == "lstm":
        module = torch.nn.LSTM(LSTM_INPUT, LSTM_HIDDEN)
        state = lstm_state()
    else:
        module = torch.nn.TransformerEncoderLayer(
            D_MODEL, HEADS, FEED_FORWARD, dropout=0.0, batch_first=True
        )
        state = transformer_state()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return module


def torch_loss(torch: Any, module: Any, kind: str, x: Any, y: Any) -> Any:
    """Return the case's loss from a torch module."""
    if kind == "lstm":
        output, _ = module(x)
    else:
        mask = torch.nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype)
        output = module(x, src_mask=mask, is_causal=True)
    return torch.nn.functional.mse_loss(output, y)


def reference_losses(params: dict) -> tuple[float, float]:
    """Return the losses of the first two Adam steps, by PyTorch in float64 at one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    module = torch_module(torch, params["kind"]).double()
    x, y = (torch.from_numpy(a).double() for a in data(params))
    optimizer = torch.optim.Adam(module.parameters(), lr=LR)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = torch_loss(torch, module, params["kind"], x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    torch.set_num_threads(threads)
    return losses[0], losses[1]


# graphc ---------------------------------------------------------------------------------


def graphc_step(params: dict, symbolic: bool) -> Prepared:
    """Compile graphc's Adam step (the length symbolic or fixed) and return it prepared."""
    import graphc as gc
    from graphc import nn, optim

    xb, yb = data(params)
    start = time.perf_counter()
    if params["kind"] == "lstm":
        module = nn.LSTM(LSTM_INPUT, LSTM_HIDDEN)
        module.load_state_dict(lstm_state())
        length = "T" if symbolic else params["seq"]
        x = gc.input("x", (length, "B", LSTM_INPUT))
        y = gc.input("y", (length, "B", LSTM_HIDDEN))
        output, _ = module(x)
    else:
        module = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, FEED_FORWARD, dropout=0.0, batch_first=True
        )
        module.load_state_dict(transformer_state())
        length = "T" if symbolic else params["seq"]
        x = gc.input("x", ("B", length, D_MODEL))
        y = gc.input("y", ("B", length, D_MODEL))
        output = module(x, is_causal=True)
    loss = nn.MSELoss()(output, y)
    updates = optim.Adam(module.parameters(), lr=LR).minimize(loss)
    step = gc.compile([x, y], loss, updates=updates)
    seconds = time.perf_counter() - start
    check_two_steps("graphc", step(xb, yb), step(xb, yb), reference_losses(params))
    note = f"{len(step.kernels())} kernels; compile s includes building the step"
    return Prepared(lambda: step(xb, yb), seconds, note)


def graphc_setup(params: dict, options: argparse.Namespace) -> Prepared:
    return graphc_step(params, symbolic=True)


def graphc_static_setup(params: dict, options: argparse.Namespace) -> Prepared:
    if params["kind"] != "lstm":
        raise NotApplicable("the fixed-length variant is for the LSTM's compile time")
    return graphc_step(params, symbolic=False)


# PyTorch --------------------------------------------------------------------------------


def torch_setup(params: dict, options: argparse.Namespace) -> Prepared:
    torch = import_torch(options.threads)
    module = torch_module(torch, params["kind"])
    x, y = (torch.from_numpy(a) for a in data(params))
    optimizer = torch.optim.Adam(module.parameters(), lr=LR, fused=True)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = torch_loss(torch, module, params["kind"], x, y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    check_two_steps("torch", step().item(), step().item(), reference_losses(params))
    return Prepared(step, note="torch.optim.Adam(fused=True)")


# jax ------------------------------------------------------------------------------------


def jax_lstm_loss(jax: Any) -> Any:
    """Return the LSTM's loss of (params, x, y): torch's gates (i, f, g, o) under lax.scan."""
    jnp = jax.numpy

    def loss(p: dict, x: Any, y: Any) -> Any:
        projected = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + p["bias_hh_l0"]

        def step(carry: tuple, x_t: Any) -> tuple:
            h, c = carry
            gates = x_t + h @ p["weight_hh_l0"].T
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[1], LSTM_HIDDEN), x.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), projected)
        return jnp.mean((hs - y) ** 2)

    return loss


def jax_transformer_loss(jax: Any) -> Any:
    """Return the encoder layer's loss of (params, x, y): torch's post-norm layer, causal."""
    jnp = jax.numpy

    def norm(x: Any, weight: Any, bias: Any) -> Any:
        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(variance + 1e-5) * weight + bias

    def loss(p: dict, x: Any, y: Any) -> Any:
        batch, seq, _ = x.shape
        head = D_MODEL // HEADS
        qkv = x @ p["self_attn.in_proj_weight"].T + p["self_attn.in_proj_bias"]
        q, k, v = (
            t.reshape(batch, seq, HEADS, head).transpose(0, 2, 1, 3)
            for t in jnp.split(qkv, 3, axis=-1)
        )
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head)
        causal = jnp.tril(jnp.ones((seq, seq), bool))
        weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, seq, D_MODEL)
        attended = attended @ p["self_attn.out_proj.weight"].T + p["self_attn.out_proj.bias"]
        h = norm(x + attended, p["norm1.weight"], p["norm1.bias"])
        hidden = jax.nn.relu(h @ p["linear1.weight"].T + p["linear1.bias"])
        h = norm(h + hidden @ p["linear2.weight"].T + p["linear2.bias"], p["norm2.weight"],
                 p["norm2.bias"])  # fmt: skip
        return jnp.mean((h - y) ** 2)

    return loss


def jax_setup(params: dict, options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    if params["kind"] == "lstm":
        loss_fn, start = jax_lstm_loss(jax), lstm_state()
    else:
        loss_fn, start = jax_transformer_loss(jax), transformer_state()
    value_and_grad = jax.value_and_grad(loss_fn)

    function = jax_adam(jax, value_and_grad, LR, (BETA1, BETA2), EPS)
    x, y = (jax.device_put(a) for a in data(params))
    zeros = {k: np.zeros_like(a) for k, a in start.items()}
    state = [
        jax.device_put(start),
        jax.device_put(zeros),
        jax.device_put(zeros),
        jax.numpy.zeros((), jax.numpy.float32),
    ]

    def run() -> Any:
        *new_state, loss = jax.block_until_ready(function(*state, x, y))
        state[:] = new_state
        return loss

    first, seconds = timed_first_call(run)
    check_two_steps("jax", float(first), float(run()), reference_losses(params))
    note = "lax.scan" if params["kind"] == "lstm" else "hand-written layer"
    return Prepared(run, seconds, f"{note}, hand-written Adam, donated buffers")


# the script -----------------------------------------------------------------------------


PEERS = [
    Peer("graphc", graphc_setup),
    Peer("graphc static T", graphc_static_setup),
    Peer("torch", torch_setup),
    Peer("jax.jit", jax_setup, needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kinds", nargs="+", choices=("lstm", "transformer"),
                        default=["lstm", "transformer"])  # fmt: skip
    parser.add_argument("--lengths", type=int, nargs="*", default=[16, 256],
                        help="more LSTM sequence lengths (default 16 256)")  # fmt: skip


def cases(options: argparse.Namespace) -> list[Case]:
    """Return the LSTM step (at seq 64, then the further lengths) and the Transformer block."""
    chosen = []
    if "lstm" in options.kinds:
        for seq in [64, *options.lengths]:
            title = f"LSTM Adam step, hidden {LSTM_HIDDEN}, seq {seq}, batch {LSTM_BATCH}"
            chosen.append(Case(title, {"kind": "lstm", "seq": seq}))
    if "transformer" in options.kinds:
        title = (
            f"Transformer block Adam step, d_model {D_MODEL}, {HEADS} heads, causal, "
            f"seq {TRANSFORMER_SEQ}, batch {TRANSFORMER_BATCH}"
        )
        chosen.append(Case(title, {"kind": "transformer", "seq": TRANSFORMER_SEQ}))
    return chosen


if __name__ == "__main__":
    main(
        "graphc benchmark: LSTM and Transformer training steps",
        cases,
        PEERS,
        repeat=20,
        warmup=3,
        add_arguments=add_arguments,
    )
