"""The shared harness of graphc's benchmark scripts: every peer runs in its own process.

A script describes its workloads as Cases and the implementations as Peers, then calls main().
main() runs, for each thread count and case, one worker process per peer (the same script with
`--worker`), with the thread count set in the environment before anything is imported. A
worker builds its implementation (compiling it and checking its result against a numpy float64
reference), warms up, times `--repeat` calls one by one, and prints its times as one JSON line.
The parent prints a markdown table per case: median and min ms, the ratio peer/graphc of
medians (> 1 means graphc is faster) and compile time, then a summary over thread counts.

Separate processes, because OpenBLAS worker threads keep spinning after a multi-threaded numpy
call and slow every other thread in the same process. `--rounds k` runs the whole set of
workers k times, interleaved, and pools their samples, so that load from other processes on a
shared machine falls on every peer alike.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

RESULT_PREFIX = "RESULT "
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class Skip(Exception):
    """Raised by a peer's setup when it cannot run here (shown as 'n/a: <reason>')."""


class NotApplicable(Skip):
    """Raised by a peer's setup for a case it has no variant of (its row is left out)."""


@dataclass(frozen=True)
class Prepared:
    """A peer ready to time: run() does one call; compile_s is graphc's compile time or a jit
    peer's first call; note is shown beside the figures."""

    run: Callable[[], Any]
    compile_s: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Case:
    """One workload: a name for the tables, parameters for the peers' setups, and the
    floating-point operations of one call when a GFLOP/s column makes sense."""

    name: str
    params: dict[str, Any]
    flops: float | None = None


@dataclass(frozen=True)
class Peer:
    """One implementation of the script's workloads.

    setup(params, options) builds it for one case (options.threads is the thread count) and
    returns a Prepared, or raises Skip. numpy_threads: the peer does its work with numpy, whose
    OpenBLAS gets the thread count (every other peer's numpy, used only for reference checks,
    gets one thread). against: the graphc row its ratio is taken against when that row has
    figures, else "graphc".
    """

    name: str
    setup: Callable[[dict[str, Any], argparse.Namespace], Prepared]
    numpy_threads: bool = False
    against: str = "graphc"
    needs: str | None = None


@dataclass
class Outcome:
    """What the workers of one peer on one case reported, pooled over rounds."""

    times: list[float] = field(default_factory=list)
    compile_s: list[float] = field(default_factory=list)
    note: str = ""
    problem: str = ""
    hidden: bool = False

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1e3

    @property
    def min_ms(self) -> float:
        return min(self.times) * 1e3

    @property
    def mean_ms(self) -> float:
        """The mean shows stalls (a descheduled thread) that the median hides."""
        return statistics.fmean(self.times) * 1e3


def check_close(label: str, got: Any, want: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Raise AssertionError unless got equals the float64 reference want within tolerance."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{label}: shape {got.shape}, expected {want.shape}")
    error = np.abs(got - want)
    bound = atol + rtol * np.abs(want)
    if not np.all(error <= bound):
        worst = int(np.argmax(error - bound))
        raise AssertionError(
            f"{label}: differs from the numpy float64 reference: max abs error "
            f"{error.max():.3g}, at flat index {worst} got {got.flat[worst]:.8g}, want "
            f"{want.flat[worst]:.8g} (rtol={rtol}, atol={atol})"
        )


def check_two_steps(label: str, first: Any, second: Any, want: tuple[float, float]) -> None:
    """Assert that a peer's first two training-step losses match the float64 reference
    (the second after one update, so a looser tolerance)."""
    check_close(f"{label} first loss", first, want[0], rtol=1e-4)
    check_close(f"{label} second loss", second, want[1], rtol=1e-3)


def timed_first_call(run: Callable[[], Any]) -> tuple[Any, float]:
    """Return run()'s result and the seconds it took (a jit peer's first call compiles)."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def import_torch(threads: int) -> Any:
    """Return torch set to use `threads` intra-op threads and one inter-op thread."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return torch


def import_jax(threads: int) -> Any:
    """Return jax confined to `threads` cores, or raise Skip when it is not installed.

    XLA's CPU thread pool ignores the thread flags for some ops (a 1-thread dot sometimes ran
    on both cores here), so the process is also pinned to `threads` cores before jax loads.
    """
    if importlib.util.find_spec("jax") is None:
        raise Skip("jax is not installed (pip install jax jaxlib)")
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
    import jax

    return jax


def jax_adam(
    jax: Any, value_and_grad: Callable, lr: float, betas: tuple[float, float], eps: float
) -> Callable:
    """Return jax.jit of one Adam step as PyTorch's Adam takes it, on dicts of parameters:
    (p, m, v, t, x, y) -> (p, m, v, t, loss), its state's buffers donated."""
    jnp = jax.numpy
    beta1, beta2 = betas

    def adam_step(p: dict, m: dict, v: dict, t: Any, x: Any, y: Any) -> tuple:
        loss, g = value_and_grad(p, x, y)
        t = t + 1
        step_size = lr / (1 - beta1**t)
        root_correction = jnp.sqrt(1 - beta2**t)
        m = {k: m[k] + (1 - beta1) * (g[k] - m[k]) for k in p}
        v = {k: v[k] * beta2 + (1 - beta2) * g[k] * g[k] for k in p}
        p = {k: p[k] - step_size * m[k] / (jnp.sqrt(v[k]) / root_correction + eps) for k in p}
        return p, m, v, t, loss

    return jax.jit(adam_step, donate_argnums=(0, 1, 2, 3))


def graphc_supports_out() -> bool:
    """Return whether a compiled graphc Function accepts a preallocated output (`out=`)."""
    import inspect

    import graphc as gc

    return "out" in inspect.signature(gc.Function.__call__).parameters


def machine_lines() -> list[str]:
    """Return lines describing this machine, the date and the versions of graphc and its peers."""
    model, flags = "unknown", ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value
    except OSError:
        model = platform.processor() or "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    simd = "AVX-512" if " avx512f " in f" {flags} " else "AVX2" if " avx2 " in flags else "?"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    versions = []
    for package in ("numpy", "llvmlite", "torch", "jax", "jaxlib", "graphc"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return [
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {model}, {os.cpu_count()} logical cores ({usable} usable), {simd}; "
        f"{platform.system()} {platform.release()}",
        f"load average at start (1/5/15 min): {load}",
        f"python {platform.python_version()}; " + ", ".join(versions),
    ]


def worker_environment(peer: Peer, threads: int) -> dict[str, str]:
    """Return the environment of a worker: every library's thread count set to `threads`."""
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GRAPHC_NUM_THREADS"):
        env[variable] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads) if peer.numpy_threads else "1"
    # graphc's compile time is measured without its on-disk cache, so it is LLVM's real work.
    env["GRAPHC_CACHE"] = "0"
    env["JAX_PLATFORMS"] = "cpu"
    if threads == 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    return env


def run_worker(
    script: str, peer: Peer, case_index: int, threads: int, timeout: float
) -> dict[str, Any]:
    """Run one worker process and return what it reported ('failed' says why on a crash)."""
    argv = [sys.executable, script, *sys.argv[1:]]
    argv += ["--worker", peer.name, "--case", str(case_index), "--threads", str(threads)]
    try:
        finished = subprocess.run(
            argv,
            env=worker_environment(peer, threads),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    for line in reversed(finished.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (finished.stderr.strip().splitlines() or ["no output"])[-1]
    return {"failed": f"worker exited with {finished.returncode}: {tail[:200]}"}


def work(peer: Peer, case: Case, options: argparse.Namespace) -> dict[str, Any]:
    """Set up, check, warm up and time one peer on one case in this process."""
    try:
        prepared = peer.setup(case.params, options)
        for _ in range(options.warmup):
            prepared.run()
        times = []
        for _ in range(options.repeat):
            start = time.perf_counter()
            prepared.run()
            times.append(time.perf_counter() - start)
    except NotApplicable:
        return {"hide": True}
    except Skip as reason:
        return {"skip": str(reason)}
    except Exception as error:  # a failing peer is reported and the others go on
        traceback.print_exc()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        return {"failed": message[:300]}
    return {"times": times, "compile_s": prepared.compile_s, "note": prepared.note}


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if value < 10**digits else f"{value:.0f}"


def _ratio(peer: Peer, outcome: Outcome, outcomes: dict[str, Outcome]) -> tuple[str, str]:
    """Return the ratio of the peer's median to graphc's, and which graphc row it is against."""
    if peer.name.startswith("graphc"):
        return "", ""
    base_name = peer.against if outcomes.get(peer.against, Outcome()).times else "graphc"
    base = outcomes.get(base_name, Outcome())
    if not base.times:
        return "", ""
    ratio = f"{outcome.median_ms / base.median_ms:.2f}"
    return ratio, ("" if base_name == "graphc" else f"vs {base_name}")


def table_rows(
    case: Case, peers: Sequence[Peer], outcomes: dict[str, Outcome]
) -> tuple[list[str], list[list[str]]]:
    """Return the header and rows of one case's table."""
    header = ["peer", "median ms", "min ms", "mean ms"]
    header += ["GFLOP/s"] if case.flops else []
    header += ["peer/graphc", "compile s", "note"]
    rows = []
    for peer in peers:
        outcome = outcomes[peer.name]
        if outcome.hidden:
            continue
        if not outcome.times:
            blanks = [""] * (len(header) - 2)
            rows.append([peer.name, *blanks, outcome.problem])
            continue
        row = [peer.name, _fmt(outcome.median_ms), _fmt(outcome.min_ms), _fmt(outcome.mean_ms)]
        if case.flops:
            row.append(_fmt(case.flops / (outcome.median_ms * 1e-3) / 1e9))
        ratio, against = _ratio(peer, outcome, outcomes)
        compile_s = _fmt(statistics.median(outcome.compile_s), 2) if outcome.compile_s else ""
        note = "; ".join(text for text in (outcome.note, against) if text)
        rows.append([*row, ratio, compile_s, note])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """Return a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(
    cases: Sequence[Case],
    peers: Sequence[Peer],
    results: dict[tuple[int, int], dict[str, Outcome]],
    thread_counts: Sequence[int],
) -> str:
    """Return one table: per case and peer, the median ms and ratio at each thread count."""
    header = ["case", "peer"]
    for threads in thread_counts:
        header += [f"{threads}T median ms", f"{threads}T peer/graphc"]
    rows = []
    for index, case in enumerate(cases):
        for peer in peers:
            row = [case.name, peer.name]
            for threads in thread_counts:
                outcomes = results.get((index, threads))
                outcome = outcomes[peer.name] if outcomes else Outcome(problem="not run")
                if outcome.hidden:
                    break
                if outcome.times:
                    row += [_fmt(outcome.median_ms), _ratio(peer, outcome, outcomes)[0]]
                else:
                    row += [outcome.problem.split(":")[0], ""]
            else:
                rows.append(row)
    return markdown(header, rows)


def parse_options(
    description: str,
    repeat: int,
    warmup: int,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None,
) -> argparse.Namespace:
    """Return the command line: the harness's options and the script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="default: 1 2")
    parser.add_argument("--repeat", type=int, default=repeat, help="timed calls per worker")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs, pooled")
    parser.add_argument("--peers", nargs="+", help="run only these peers (graphc always runs)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per worker")
    parser.add_argument("--json", help="also write the raw times here")
    parser.add_argument(
        "--busy", action="store_true", help="keep the last core busy with a spinning process"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args()


def main(
    title: str,
    cases: Sequence[Case] | Callable[[argparse.Namespace], Sequence[Case]],
    peers: Sequence[Peer],
    *,
    repeat: int,
    warmup: int = 3,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Run the benchmark script: as the parent by default, as one worker with --worker.

    cases may be a function of the parsed command line (for scripts with options of their own).
    """
    options = parse_options(title, repeat, warmup, add_arguments)
    if callable(cases):
        cases = cases(options)
    by_name = {peer.name: peer for peer in peers}
    if options.worker:
        options.threads = options.threads[-1]
        result = work(by_name[options.worker], cases[options.case], options)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    chosen = [
        peer
        for peer in peers
        if options.peers is None or peer.name.startswith("graphc") or peer.name in options.peers
    ]
    script = os.path.abspath(sys.argv[0])
    print(f"# {title}\n")
    print("\n".join(f"- {line}" for line in machine_lines()))
    print(f"- command: python {' '.join([os.path.relpath(script), *sys.argv[1:]])}")
    print(
        f"- each peer in its own process: {options.warmup} warm-up calls, then "
        f"{options.repeat} timed calls x {options.rounds} round(s); peer/graphc is the ratio "
        "of medians (> 1: graphc is faster)\n",
        flush=True,
    )
    results: dict[tuple[int, int], dict[str, Outcome]] = {}
    with busy_core(options.busy):
        _run_all(cases, chosen, script, options, results)
    print(f"## Summary\n\n{summary(cases, chosen, results, options.threads)}", flush=True)
    if options.json:
        raw = {
            f"{cases[index].name} | {threads}T | {name}": outcome.__dict__
            for (index, threads), outcomes in results.items()
            for name, outcome in outcomes.items()
        }
        with open(options.json, "w") as handle:
            json.dump(raw, handle, indent=1)


@contextlib.contextmanager
def busy_core(wanted: bool) -> Iterator[None]:
    """Keep the last usable core busy with a spinning process while the body runs (a shared
    machine: how a peer's threads cope with a core they cannot have)."""
    if not wanted:
        yield
        return
    core = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pin = f"import os; os.sched_setaffinity(0, {{{core}}})\n" if core is not None else ""
    spinner = subprocess.Popen([sys.executable, "-c", pin + "while True: pass"])
    print(f"- a spinning process (pid {spinner.pid}) keeps core {core} busy throughout\n")
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _run_all(
    cases: Sequence[Case],
    chosen: Sequence[Peer],
    script: str,
    options: argparse.Namespace,
    results: dict[tuple[int, int], dict[str, Outcome]],
) -> None:
    """Run every case at every thread count, printing a table per pair as it finishes."""
    for index, case in enumerate(cases):
        for threads in options.threads:
            outcomes = {peer.name: Outcome() for peer in chosen}
            for _ in range(options.rounds):
                for peer in chosen:
                    _collect(outcomes[peer.name], script, peer, index, threads, options)
            results[(index, threads)] = outcomes
            print(f"## {case.name}, {threads} thread{'s' if threads > 1 else ''}\n")
            print(markdown(*table_rows(case, chosen, outcomes)) + "\n", flush=True)


def _collect(
    outcome: Outcome, script: str, peer: Peer, index: int, threads: int, options: argparse.Namespace
) -> None:
    if outcome.problem:
        return
    if peer.needs and importlib.util.find_spec(peer.needs) is None:
        outcome.problem = f"n/a: {peer.needs} is not installed"
        return
    reported = run_worker(script, peer, index, threads, options.timeout)
    if "hide" in reported:
        outcome.problem, outcome.hidden = "n/a", True
    elif "skip" in reported:
        outcome.problem = f"n/a: {reported['skip']}"
    elif "failed" in reported:
        outcome.problem = f"failed: {reported['failed']}"
    else:
        outcome.times += reported["times"]
        if reported["compile_s"] is not None:
            outcome.compile_s.append(reported["compile_s"])
        outcome.note = reported["note"]
