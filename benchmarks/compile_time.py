"""Benchmark how long gc.compile takes for a training step, each case in fresh processes (nothing
in memory) with its own cache folder. The steps (`--model`): the MLP 784-256-256-10 Adam step
(`mlp`), or an LSTM sequence tagger's Adam step as tests/test_rnn.py builds it, at hidden size
256 (`lstm`: 2 layers, bidirectional, batch_first; `lstm1`: one layer), batch 32, with a
symbolic sequence length, fed 64 steps (`--length`). The cases:

- cold: an empty disk cache (the GEMM library, the thread pool and the step are all compiled);
- library cached: the GEMM and the thread pool on disk (any earlier matmul program on this
  machine put them there), the step compiled;
- warm: everything on disk, as in a second run of the same script.

Also the first call after compiling (it starts the pool's threads and touches fresh memory),
and, where jax is installed, jax.jit's first call of the same step for comparison.

Usage: python benchmarks/compile_time.py [--model mlp] [--runs 5] [--threads 1 2] [--length 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from harness import machine_lines

# Run in a fresh interpreter: build the step, time gc.compile and the first call.
GRAPHC = """
import json, time
import numpy as np
import graphc as gc
from graphc import nn, optim

{model}
updates = optim.Adam(model.parameters(), lr=1e-3).minimize(loss)
start = time.perf_counter()
step = gc.compile([x, y], loss, updates=updates)
compiled = time.perf_counter()
step(*feeds)
called = time.perf_counter()
print(json.dumps({{"compile": compiled - start, "first call": called - compiled}}))
"""

MODELS = {
    "mlp": """
x = gc.input("x", ("B", 784))
y = gc.input("y", ("B",), "int64")
model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 10))
loss = nn.CrossEntropyLoss()(model(x), y)
feeds = (np.ones((16, 784), np.float32), np.zeros(16, np.int64))
""",
    "lstm": """
class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(256, 256, num_layers={layers}, bidirectional={bidirectional},
                           batch_first=True)
        self.out = nn.Linear({width}, 2)

    def forward(self, x):
        return self.out(self.rnn(x)[0])

x = gc.input("x", ("N", "T", 256))
y = gc.input("y", ("N", "T", 2))
model = Tagger()
loss = ((model(x) - y) ** 2).mean()
feeds = (np.ones((32, {length}, 256), np.float32), np.zeros((32, {length}, 2), np.float32))
""",
}
TITLES = {
    "mlp": "the MLP 784-256-256-10 Adam step",
    "lstm": "an LSTM tagger's Adam step (2 layers, bidirectional, hidden 256, batch 32)",
    "lstm1": "an LSTM tagger's Adam step (1 layer, hidden 256, batch 32)",
}


def graphc_script(model: str, length: int) -> str:
    """Return the script timing gc.compile of the model's step."""
    if model == "mlp":
        return GRAPHC.format(model=MODELS["mlp"])
    deep = model == "lstm"
    body = MODELS["lstm"].format(
        layers=2 if deep else 1, bidirectional=deep, width=512 if deep else 256, length=length
    )
    return GRAPHC.format(model=body)


# Compiles only a matmul: puts the GEMM library and the thread pool in the cache folder.
LIBRARY = """
import numpy as np
import graphc as gc
a = gc.input("a", (2048, 512))
gc.compile([a], (a @ a.T).sum())(np.ones((2048, 512), np.float32))
"""

JAX = """
import json, time
import jax, jax.numpy as jnp
import numpy as np

def init(key, sizes=(784, 256, 256, 10)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (o, i)) * 0.05, jnp.zeros(o))
            for k, i, o in zip(keys, sizes, sizes[1:])]

def loss(params, x, y):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w.T + b)
    w, b = params[-1]
    logits = x @ w.T + b
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

@jax.jit
def step(params, m, v, t, x, y):
    value, grads = jax.value_and_grad(loss)(params, x, y)
    t = t + 1
    m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
    scale = 1e-3 * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
    params = jax.tree_util.tree_map(
        lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-8), params, m, v)
    return params, m, v, t, value

params = init(jax.random.PRNGKey(0))
zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
start = time.perf_counter()
out = step(params, zeros, zeros, 0, np.ones((16, 784), np.float32), np.zeros(16, np.int32))
jax.block_until_ready(out)
print(json.dumps({"compile": time.perf_counter() - start}))
"""


def run(script: str, environment: dict[str, str]) -> dict[str, float]:
    """Run script in a fresh interpreter; return the JSON its last line prints."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def graphc_case(script: str, case: str, threads: int) -> dict[str, float]:
    """Return one fresh process's times for case, in a cache folder prepared for it."""
    with tempfile.TemporaryDirectory() as folder:
        environment = dict(
            os.environ, GRAPHC_CACHE_DIR=folder, GRAPHC_CACHE="1", GRAPHC_NUM_THREADS=str(threads)
        )
        if case == "library cached":
            run(LIBRARY + "\nprint('{}')", environment)
        elif case == "warm":
            run(script, environment)
        return run(script, environment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per case")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", choices=sorted(TITLES), default="mlp")
    parser.add_argument("--length", type=int, default=64, help="the LSTM's sequence length")
    options = parser.parse_args()
    script = graphc_script(options.model, options.length)
    print(f"# Compile time of {TITLES[options.model]}\n")
    print("\n".join(f"- {line}" for line in machine_lines()))
    print(f"- command: python benchmarks/compile_time.py {' '.join(sys.argv[1:])}")
    print(f"- medians (min-max) of {options.runs} fresh processes per case\n")
    print("| case | threads | gc.compile s | first call s |")
    print("|---|---|---|---|")
    for threads in options.threads:
        for case in ("cold", "library cached", "warm"):
            samples = [graphc_case(script, case, threads) for _ in range(options.runs)]
            cells = [
                _spread([sample[key] for sample in samples]) for key in ("compile", "first call")
            ]
            print(f"| graphc {case} | {threads} | {cells[0]} | {cells[1]} |", flush=True)
    if options.model != "mlp":
        return
    try:
        samples = [run(JAX, dict(os.environ)) for _ in range(options.runs)]
        print(f"| jax.jit first call | all | {_spread([s['compile'] for s in samples])} | |")
    except subprocess.CalledProcessError:
        print("| jax.jit first call | | n/a (jax is not installed) | |")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
