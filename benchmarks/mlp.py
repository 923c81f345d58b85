"""Benchmark an MLP 784-256-256-10 (ReLU, cross-entropy): forward+backward and an Adam step.

Cases, at batch 16 and 128:
- forward+backward: the loss and its gradients with respect to the six parameters. graphc
  compiles [loss, *gc.grad(loss, params)]; PyTorch runs loss.backward(); jax runs
  jax.jit(jax.value_and_grad(loss)).
- Adam step: forward, backward and Adam update (lr 1e-3, PyTorch's formula). graphc compiles
  one step with the update applied in place (graphc.nn and graphc.optim when they import, else
  Variables and an Adam update written in the graph by hand); PyTorch uses
  torch.optim.Adam(fused=True) (foreach where fused fails); jax runs a hand-written Adam in one
  jitted step whose parameters and moments are donated buffers.
graphc's batch dim is symbolic, as in a training loop; the layers keep PyTorch's layout
(weight of shape (out, in)). Every peer starts from the same parameters and batch.

Usage: python benchmarks/mlp.py [--threads 1 2] [--repeat 200] [--batches 16 128]
       [--graphc-by-hand]
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
    Skip,
    check_close,
    graphc_supports_out,
    import_jax,
    import_torch,
    jax_adam,
    main,
    timed_first_call,
)

SIZES = (784, 256, 256, 10)
NAMES = ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8


def initial_parameters() -> dict[str, np.ndarray]:
    """Return the parameters every peer starts from, named as in torch's nn.Sequential."""
    rng = np.random.default_rng(0)
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        bound = 1 / np.sqrt(fan_in)
        params[f"{2 * layer}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in))
        params[f"{2 * layer}.bias"] = rng.uniform(-bound, bound, fan_out)
    return {name: value.astype(np.float32) for name, value in params.items()}


def batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the inputs (float32) and class labels (int64) of one batch."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((size, SIZES[0]), dtype=np.float32)
    return x, rng.integers(0, SIZES[-1], size).astype(np.int64)


def reference(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Return the loss and the gradients by name, computed by hand in numpy float64."""
    p = {name: value.astype(np.float64) for name, value in params.items()}
    x = x.astype(np.float64)
    z1 = x @ p["0.weight"].T + p["0.bias"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ p["2.weight"].T + p["2.bias"]
    a2 = np.maximum(z2, 0)
    z3 = a2 @ p["4.weight"].T + p["4.bias"]
    shifted = z3 - z3.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(y))
    loss = -logp[rows, y].mean()
    dz3 = np.exp(logp)
    dz3[rows, y] -= 1
    dz3 /= len(y)
    dz2 = (dz3 @ p["4.weight"]) * (z2 > 0)
    dz1 = (dz2 @ p["2.weight"]) * (z1 > 0)
    grads = {
        "4.weight": dz3.T @ a2,
        "4.bias": dz3.sum(0),
        "2.weight": dz2.T @ a1,
        "2.bias": dz2.sum(0),
        "0.weight": dz1.T @ x,
        "0.bias": dz1.sum(0),
    }
    return float(loss), grads


def check_gradients(label: str, loss: Any, grads: dict[str, Any], x: np.ndarray, y: np.ndarray):
    """Assert that the loss and gradients match the float64 reference at the initial params."""
    want_loss, want_grads = reference(initial_parameters(), x, y)
    check_close(f"{label} loss", loss, want_loss, rtol=1e-5)
    for name in NAMES:
        check_close(f"{label} grad {name}", grads[name], want_grads[name], rtol=1e-4, atol=1e-6)


def check_adam(label: str, losses: tuple[Any, Any], params: dict[str, Any], x, y) -> None:
    """Assert that two Adam steps from the initial params match the float64 reference.

    losses are what the first two steps returned (each the loss before its update), params
    the parameters after the first step. Where a gradient is within float32 noise of zero,
    Adam's g / (|g| + eps) may flip sign, so parameters are compared where |g| > 1e-4.
    """
    start = initial_parameters()
    loss, grads = reference(start, x, y)
    # First step from zero moments: m_hat = g, v_hat = g*g, so the update is lr*g/(|g|+eps).
    stepped = {name: start[name] - LR * grads[name] / (np.abs(grads[name]) + EPS) for name in NAMES}
    check_close(f"{label} first loss", losses[0], loss, rtol=1e-5)
    check_close(f"{label} second loss", losses[1], reference(stepped, x, y)[0], rtol=1e-4)
    for name in NAMES:
        clear = np.abs(grads[name]) > 1e-4
        got = np.asarray(params[name])[clear]
        check_close(f"{label} {name} after one step", got, stepped[name][clear], atol=2e-6)


# graphc ---------------------------------------------------------------------------------


def graphc_model(by_hand: bool) -> tuple[Any, Any, Any, dict[str, Any], str]:
    """Return the batch placeholders x and y, the loss, the parameter Variables by name, and
    how the model was built ("nn" or "by hand")."""
    import graphc as gc

    params = initial_parameters()
    x = gc.input("x", ("B", SIZES[0]))
    y = gc.input("y", ("B",), gc.int64)
    if not by_hand:
        try:
            from graphc import nn
        except ImportError:
            by_hand = True
    if not by_hand:
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
        model.load_state_dict(params)
        variables = dict(model.named_parameters())
        loss = nn.CrossEntropyLoss()(model(x), y)
        return x, y, loss, {name: variables[name] for name in NAMES}, "nn"
    variables = {name: gc.Variable(params[name], name=name.replace(".", "_")) for name in NAMES}
    h = x
    for layer in range(3):
        weight, bias = variables[f"{2 * layer}.weight"], variables[f"{2 * layer}.bias"]
        h = h @ weight.T + bias
        h = gc.relu(h) if layer < 2 else h
    picked = gc.gather(gc.log_softmax(h, dim=1), 1, y.unsqueeze(1))
    return x, y, -picked.mean(), variables, "by hand"


def adam_updates_by_hand(loss: Any, variables: dict[str, Any]) -> dict[Any, Any]:
    """Return {Variable: new value} for one Adam step, PyTorch's formula written in the graph."""
    import graphc as gc

    step = gc.Variable(np.float64(0), name="adam_step", trainable=False)
    new_step = step + 1
    bias_correction1 = 1 - gc.tensor(BETA1, dtype=gc.float64) ** new_step
    bias_correction2 = 1 - gc.tensor(BETA2, dtype=gc.float64) ** new_step
    step_size = (LR / bias_correction1).to(gc.float32)
    root_correction = bias_correction2.sqrt().to(gc.float32)
    updates = {step: new_step}
    params = list(variables.values())
    for param, grad in zip(params, gc.grad(loss, params), strict=True):
        zeros = np.zeros(param.shape, np.float32)
        m = gc.Variable(zeros, name=f"{param.storage.name}_exp_avg", trainable=False)
        v = gc.Variable(zeros, name=f"{param.storage.name}_exp_avg_sq", trainable=False)
        new_m = m + (1 - BETA1) * (grad - m)
        new_v = v * BETA2 + (1 - BETA2) * grad * grad
        updates[m], updates[v] = new_m, new_v
        updates[param] = param - step_size * new_m / (new_v.sqrt() / root_correction + EPS)
    return updates


def graphc_gradients_setup(params: dict, options: argparse.Namespace, out: bool) -> Prepared:
    import graphc as gc

    if out and not graphc_supports_out():
        raise Skip("gc.Function.__call__ takes no out=")
    xb, yb = batch(params["batch"])
    x, y, loss, variables, how = graphc_model(options.graphc_by_hand)
    start = time.perf_counter()
    grads = gc.grad(loss, list(variables.values()))
    function = gc.compile([x, y], [loss, *grads])
    seconds = time.perf_counter() - start
    note = f"model {how}, {len(function.kernels())} kernels; compile s includes gc.grad"
    results = function(xb, yb)
    check_gradients("graphc", results[0], dict(zip(NAMES, results[1:], strict=True)), xb, yb)
    if not out:
        return Prepared(lambda: function(xb, yb), seconds, note)
    targets = tuple(np.empty_like(result) for result in results)
    function(xb, yb, out=targets)
    check_gradients("graphc out=", targets[0], dict(zip(NAMES, targets[1:], strict=True)), xb, yb)
    return Prepared(lambda: function(xb, yb, out=targets), seconds, note)


def graphc_adam_setup(params: dict, options: argparse.Namespace) -> Prepared:
    import graphc as gc

    xb, yb = batch(params["batch"])
    x, y, loss, variables, how = graphc_model(options.graphc_by_hand)
    start = time.perf_counter()
    optim = None
    if not options.graphc_by_hand:
        try:
            from graphc import optim
        except ImportError:
            optim = None
    if optim is not None:
        updates = optim.Adam(list(variables.values()), lr=LR).minimize(loss)
        how += " + optim.Adam"
    else:
        updates = adam_updates_by_hand(loss, variables)
        how += " + Adam by hand"
    step = gc.compile([x, y], loss, updates=updates)
    seconds = time.perf_counter() - start
    first = step(xb, yb)
    after = {name: variable.numpy() for name, variable in variables.items()}
    check_adam("graphc", (first, step(xb, yb)), after, xb, yb)
    note = f"{how}, {len(step.kernels())} kernels; compile s includes building the update"
    return Prepared(lambda: step(xb, yb), seconds, note)


# PyTorch --------------------------------------------------------------------------------


def torch_model(threads: int) -> tuple[Any, Any]:
    """Return torch and the MLP loaded with the initial parameters."""
    torch = import_torch(threads)
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in initial_parameters().items()})
    return torch, model


def torch_gradients_setup(params: dict, options: argparse.Namespace) -> Prepared:
    torch, model = torch_model(options.threads)
    xb, yb = batch(params["batch"])
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)
    parameters = list(model.parameters())

    def run() -> Any:
        for parameter in parameters:
            parameter.grad = None
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = run()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    check_gradients("torch", loss.item(), grads, xb, yb)
    return Prepared(run)


def torch_adam_setup(params: dict, options: argparse.Namespace) -> Prepared:
    torch, model = torch_model(options.threads)
    xb, yb = batch(params["batch"])
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)

    def make_step(optimizer: Any) -> Any:
        def step() -> Any:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    note = "torch.optim.Adam(fused=True)"
    try:
        step = make_step(torch.optim.Adam(model.parameters(), lr=LR, fused=True))
        first = step()
    except (RuntimeError, TypeError, ValueError) as error:
        # Nothing has changed yet when the fused step fails: start again with foreach.
        _, model = torch_model(options.threads)
        note = f"foreach (fused failed: {error})"[:120]
        step = make_step(torch.optim.Adam(model.parameters(), lr=LR, foreach=True))
        first = step()
    after = {name: p.detach().numpy().copy() for name, p in model.named_parameters()}
    check_adam("torch", (first.item(), step().item()), after, xb, yb)
    return Prepared(step, note=note)


# jax ------------------------------------------------------------------------------------


def jax_loss(jax: Any) -> Any:
    """Return the jax loss function of (params, x, y)."""
    jnp = jax.numpy

    def loss(p: dict, x: Any, y: Any) -> Any:
        h = jax.nn.relu(x @ p["0.weight"].T + p["0.bias"])
        h = jax.nn.relu(h @ p["2.weight"].T + p["2.bias"])
        logits = h @ p["4.weight"].T + p["4.bias"]
        logp = jax.nn.log_softmax(logits, axis=1)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()

    return loss


def jax_gradients_setup(params: dict, options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    xb, yb = batch(params["batch"])
    x, y = jax.device_put(xb), jax.device_put(yb.astype(np.int32))
    p = jax.device_put(initial_parameters())
    function = jax.jit(jax.value_and_grad(jax_loss(jax)))

    def run() -> Any:
        return jax.block_until_ready(function(p, x, y))

    (loss, grads), seconds = timed_first_call(run)
    check_gradients("jax", float(loss), {k: np.asarray(v) for k, v in grads.items()}, xb, yb)
    return Prepared(run, seconds)


def jax_adam_setup(params: dict, options: argparse.Namespace) -> Prepared:
    jax = import_jax(options.threads)
    xb, yb = batch(params["batch"])
    x, y = jax.device_put(xb), jax.device_put(yb.astype(np.int32))
    value_and_grad = jax.value_and_grad(jax_loss(jax))
    function = jax_adam(jax, value_and_grad, LR, (BETA1, BETA2), EPS)
    start = initial_parameters()
    state = [
        jax.device_put(start),
        jax.device_put({k: np.zeros_like(a) for k, a in start.items()}),
        jax.device_put({k: np.zeros_like(a) for k, a in start.items()}),
        jax.numpy.zeros((), jax.numpy.float32),
    ]

    def run() -> Any:
        *new_state, loss = jax.block_until_ready(function(*state, x, y))
        state[:] = new_state
        return loss

    first, seconds = timed_first_call(run)
    after = {k: np.asarray(a) for k, a in state[0].items()}
    check_adam("jax", (float(first), float(run())), after, xb, yb)
    return Prepared(run, seconds, "hand-written Adam, donated buffers")


# the script -----------------------------------------------------------------------------


def dispatch(**setups: Any) -> Any:
    """Return a setup that runs setups[case kind], or skips kinds it has no entry for."""

    def setup(params: dict, options: argparse.Namespace) -> Prepared:
        if params["kind"] not in setups:
            raise NotApplicable(f"no {params['kind']} variant")
        return setups[params["kind"]](params, options)

    return setup


PEERS = [
    Peer(
        "graphc",
        dispatch(
            gradients=lambda p, o: graphc_gradients_setup(p, o, out=False),
            adam=graphc_adam_setup,
        ),
    ),
    Peer("graphc out=", dispatch(gradients=lambda p, o: graphc_gradients_setup(p, o, out=True))),
    Peer("torch", dispatch(gradients=torch_gradients_setup, adam=torch_adam_setup)),
    Peer("jax.jit", dispatch(gradients=jax_gradients_setup, adam=jax_adam_setup), needs="jax"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--kinds", nargs="+", choices=("gradients", "adam"), default=None)
    parser.add_argument(
        "--graphc-by-hand",
        action="store_true",
        help="build graphc's model and Adam from Variables even when graphc.nn/optim import",
    )


def cases(options: argparse.Namespace) -> list[Case]:
    """Return forward+backward and the Adam step at each batch size."""
    titles = {"gradients": "MLP forward+backward", "adam": "MLP Adam training step"}
    return [
        Case(f"{titles[kind]}, batch {size}", {"kind": kind, "batch": size})
        for kind in options.kinds or list(titles)
        for size in options.batches
    ]


if __name__ == "__main__":
    main(
        "graphc benchmark: MLP 784-256-256-10",
        cases,
        PEERS,
        repeat=200,
        warmup=20,
        add_arguments=add_arguments,
    )
