"""Differential fuzzing: random graphc programs (fuzz_programs.py) run on every backend and in
PyTorch, forward and backward, and must agree.

Each seed gives one program of 4-8 steps over the public API (elementwise ops with
broadcasting, scalars and 0-d tensors, comparisons and where, casts, reductions, softmax,
matmul, movement, slicing and indexing, concat, gather, pad, expand) and its input values.
A third of the programs have a symbolic batch dim: compiled once, they run at two batch sizes,
one of them 1, and some at a third size large enough to split kernels across threads. About a
third also check the gradients of a randomly weighted sum of their float outputs (`gc.grad`
with respect to their float inputs and Variables) against the reference backend and
torch.autograd.

The normal run checks NORMAL_PROGRAMS programs, seeds 0 to NORMAL_PROGRAMS - 1; the programs
of a batch are independent graphs compiled into one Function per backend, which shares the
cost of compilation. `--fuzz-long` checks LONG_FACTOR times as many, and GRAPHC_FUZZ_START
shifts the first seed. A failing program is checked again on its own and reported with its
seed, its graphc source, the LLVM backend's graph listing and a command that replays it:

    GRAPHC_FUZZ_SEED=123 python -m pytest tests/test_fuzz.py -s

GRAPHC_FUZZ_SEED takes one seed or a comma-separated list; each runs alone, and a failure
is also minimised (outputs the failure does not need are dropped). GRAPHC_FUZZ_BATCH="1,2,3"
compiles the listed seeds together, for a failure that needs its batch. `python
tests/fuzz_programs.py 123` prints the program as a standalone graphc script.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from fuzz_programs import FLOATS, Program, generate, script

import graphc as gc
from graphc.dims import evaluate_shape

NORMAL_PROGRAMS = 240
LONG_FACTOR = 20
BATCH = 8  # programs compiled together

# Constructs the generator leaves out because they hit a known, reported bug; each entry is
# removed once the bug is fixed. Keys are step kinds (fuzz_programs.KIND_WEIGHTS) or the finer
# names of fuzz_programs.CONSTRUCTS.
KNOWN_FAILURES: dict[str, str] = {}

# Float results may differ by rounding: by ULPS units in the last place of the program's least
# precise float type, relative to the largest magnitude the program computes (its scale), and
# more in programs with large values, whose sums are longer.
ULPS = 64
TORCH_ULPS = 256  # PyTorch computes composites (softmax, var, matmul) differently
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


# -- which seeds run --------------------------------------------------------------------------
def _chosen_seeds() -> list[int] | None:
    text = os.environ.get("GRAPHC_FUZZ_SEED", "").strip()
    return [int(part) for part in text.split(",") if part.strip()] if text else None


def _batches(config: pytest.Config) -> list[tuple[int, ...]]:
    chosen = _chosen_seeds()
    if chosen is not None:
        return [(seed,) for seed in chosen]
    together = os.environ.get("GRAPHC_FUZZ_BATCH", "").strip()
    if together:
        return [tuple(int(part) for part in together.split(","))]
    start = int(os.environ.get("GRAPHC_FUZZ_START", "0"))
    count = NORMAL_PROGRAMS * (LONG_FACTOR if config.getoption("--fuzz-long") else 1)
    return [
        tuple(range(first, min(first + BATCH, start + count)))
        for first in range(start, start + count, BATCH)
    ]


def _batch_id(seeds: tuple[int, ...]) -> str:
    return f"seed_{seeds[0]}" if len(seeds) == 1 else f"seeds_{seeds[0]}-{seeds[-1]}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seeds" in metafunc.fixturenames:
        batches = _batches(metafunc.config)
        metafunc.parametrize("seeds", batches, ids=[_batch_id(b) for b in batches])


@pytest.fixture(autouse=True)
def _bounded_compile_cache(request: pytest.FixtureRequest, monkeypatch) -> None:
    """Long runs compile thousands of modules: keep them out of the on-disk cache."""
    if request.config.getoption("--fuzz-long"):
        monkeypatch.setenv("GRAPHC_CACHE", "0")


# -- building and running one batch of programs ---------------------------------------------
@dataclass
class Failure:
    """One disagreement (or crash) of one program, or of a batch when it needs the others."""

    seeds: tuple[int, ...]
    check: str  # "backends" or "torch"
    message: str
    run: int = 0  # the call that failed


@dataclass
class _Built:
    """A program's graph: what is fed, what is compared, and every value (for the scale)."""

    program: Program
    symbol: str
    fed: list[gc.Tensor]  # the program's placeholders, then the loss weights
    results: list[gc.Tensor]  # the outputs, then the gradients
    labels: list[str]
    values: list[gc.Tensor]  # every float step value
    weight_shapes: list[tuple]  # symbolic shapes of the loss weights


def _build(program: Program, prefix: str, symbol: str) -> _Built:
    """Return the program's graph, its inputs named with prefix and its batch dim symbol (so
    that programs compiled together stay independent), with the gradients when it has any."""
    inputs = []
    for spec, array in zip(program.inputs, program.arrays(0), strict=True):
        if spec.variable:
            inputs.append(gc.Variable(array, name=prefix + spec.name))
        else:
            shape = tuple(symbol if isinstance(d, str) else d for d in spec.shape)
            inputs.append(gc.input(prefix + spec.name, shape, getattr(gc, spec.dtype)))
    values = program.function("gc")(*inputs)
    outputs = [values[name] for name in program.outputs]
    fed = [t for t, spec in zip(inputs, program.inputs, strict=True) if not spec.variable]
    labels = [f"output {i} ({name})" for i, name in enumerate(program.outputs)]
    results = list(outputs)
    weight_shapes = []
    if program.grad:
        floats = [o for o in outputs if o.dtype.is_float]
        weights = [gc.input(f"{prefix}w{i}", o.shape, o.dtype) for i, o in enumerate(floats)]
        weight_shapes = [o.shape for o in floats]
        loss = sum((o * w).sum() for o, w in zip(floats, weights, strict=True))
        wrt = [
            (t, spec.name)
            for t, spec in zip(inputs, program.inputs, strict=True)
            if spec.dtype in FLOATS
        ]
        results += gc.grad(loss, [t for t, _ in wrt], materialize_grads=True)
        labels += [f"gradient for {name}" for _, name in wrt]
        fed += weights
    steps = {step.name for step in program.steps}
    floats_seen = [t for name, t in values.items() if name in steps and t.dtype.is_float]
    return _Built(program, symbol, fed, results, labels, floats_seen, weight_shapes)


def _feeds(built: _Built, run: int) -> list[np.ndarray]:
    """Return the values fed to a program's placeholders in one run: its inputs, then the
    loss weights (a program with fewer runs than its batch repeats its last one)."""
    program = built.program
    run = min(run, len(program.batches) - 1)
    bindings = {built.symbol: program.batches[run]} if program.symbolic else {}
    arrays = [
        a for a, spec in zip(program.arrays(run), program.inputs, strict=True) if not spec.variable
    ]
    shapes = [evaluate_shape(shape, bindings) for shape in built.weight_shapes]
    weights = program.loss_weights(shapes, run)
    floats = [t for t in built.results[: len(program.outputs)] if t.dtype.is_float]
    floats = floats if program.grad else []
    weights = [w.astype(t.dtype.numpy) for w, t in zip(weights, floats, strict=True)]
    return arrays + weights


def _call(function: gc.Function, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    result = function(*feeds)
    return list(result) if isinstance(result, tuple) else [result]


def _split(arrays: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    parts, start = [], 0
    for size in sizes:
        parts.append(list(arrays[start : start + size]))
        start += size
    return parts


def _scale_and_eps(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """Return the largest finite magnitude among the float arrays, and their coarsest eps."""
    scale, eps = 1.0, EPS["float64"]
    for array in arrays:
        if array.dtype.kind == "f" and array.size:
            finite = np.abs(array[np.isfinite(array)])
            if finite.size:
                scale = max(scale, float(finite.max()))
            eps = max(eps, EPS.get(str(array.dtype), eps))
    return scale, eps


def _difference(got: Any, want: np.ndarray, scale: float, eps: float, ulps: float) -> str | None:
    """Return why got differs from want beyond rounding, or None."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"shape {got.shape} instead of {want.shape}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} instead of {want.dtype}"
    if want.dtype.kind != "f":
        wrong = got != want
        if wrong.any():
            at = tuple(int(i) for i in np.argwhere(wrong)[0])
            return (
                f"{int(wrong.sum())} of {want.size} elements differ, first at {at}: "
                f"{got[at]!r} instead of {want[at]!r}"
            )
        return None
    tolerance = ulps * eps * (scale + np.abs(want))
    with np.errstate(invalid="ignore"):
        error = np.abs(got.astype(np.float64) - want)
        wrong = ~(error <= tolerance) & ~(np.isnan(got) & np.isnan(want))
        wrong &= ~((got == want) & np.isinf(want))
    if not wrong.any():
        return None
    at = tuple(int(i) for i in np.argwhere(wrong)[0])
    worst = float(np.nanmax(np.where(wrong, error, 0))) if np.isfinite(error).any() else math.nan
    return (
        f"{int(wrong.sum())} of {want.size} elements differ, first at {at}: {got[at]!r} "
        f"instead of {want[at]!r} (largest error {worst:.3g}, tolerance {ulps} ulp x scale "
        f"{scale:.3g})"
    )


def _torch_results(built: _Built, fed: list[np.ndarray], run: int) -> list[np.ndarray]:
    """Return the program's outputs (and gradients) computed by PyTorch from the same values."""
    import torch

    program = built.program
    placeholders = iter(fed[: len(fed) - len(built.weight_shapes)])
    weights = fed[len(fed) - len(built.weight_shapes) :]
    arrays = [
        value if spec.variable else next(placeholders)
        for spec, value in zip(program.inputs, program.arrays(run), strict=True)
    ]
    tensors = [torch.from_numpy(np.array(a)) for a in arrays]
    wrt = [t for t, spec in zip(tensors, program.inputs, strict=True) if spec.dtype in FLOATS]
    for t in wrt if program.grad else []:
        t.requires_grad_(True)
    values = program.function("torch")(*tensors)
    outputs = [values[name] for name in program.outputs]
    results = [o.detach().numpy() for o in outputs]
    if program.grad:
        floats = [o for o in outputs if o.is_floating_point()]
        pairs = zip(floats, weights, strict=True)
        loss = sum((o * torch.from_numpy(w).to(o.dtype)).sum() for o, w in pairs)
        needed = isinstance(loss, torch.Tensor) and loss.requires_grad
        grads = torch.autograd.grad(loss, wrt, allow_unused=True) if needed else [None] * len(wrt)
        for g, t in zip(grads, wrt, strict=True):
            results.append(np.zeros_like(t.detach().numpy()) if g is None else g.numpy())
    return results


def _run_label(program: Program, run: int) -> str:
    if not program.symbolic:
        return f"call {run + 1}"
    return f"call {run + 1} (B={program.batches[min(run, len(program.batches) - 1)]})"


@dataclass
class _Outcome:
    """What checking some programs together found."""

    failures: list[Failure] = field(default_factory=list)
    crashed: str = ""  # an exception at batch level: the programs must be checked alone
    functions: dict[str, gc.Function] = field(default_factory=dict)

    def fail(self, seeds: Sequence[int], check: str, message: str, run: int = 0) -> None:
        self.failures.append(Failure(tuple(seeds), check, message, run))


def _check(programs: Sequence[Program], with_torch: bool) -> _Outcome:
    """Compile the programs together on every backend, run them, and compare."""
    outcome = _Outcome()
    alone = len(programs) == 1
    built = []
    for program in programs:
        prefix, symbol = ("", "B") if alone else (f"p{program.seed}_", f"B{program.seed}")
        try:
            built.append(_build(program, prefix, symbol))
        except Exception as error:  # noqa: BLE001 - reported with the program
            outcome.fail((program.seed,), "backends", f"building the graph raised {error!r}")
    if built and _compile(built, outcome, alone):
        for run in range(max(len(b.program.batches) for b in built)):
            if not _run(built, run, outcome, alone, with_torch):
                break
    return outcome


def _compile(built: list[_Built], outcome: _Outcome, alone: bool) -> bool:
    """Compile every program's results on each backend; the reference backend also returns
    every step value, for the scale of the tolerance."""
    fed = [t for b in built for t in b.fed]
    for backend in ("reference", "llvm"):
        results = [t for b in built for t in b.results]
        if backend == "reference":
            results += [t for b in built for t in b.values]
        try:
            outcome.functions[backend] = gc.compile(fed, results, backend=backend)
        except Exception as error:  # noqa: BLE001
            message = f"compiling on {backend} raised {error!r}"
            if alone:
                outcome.fail((built[0].program.seed,), "backends", message)
            outcome.crashed = message
            return False
    return True


def _run(built: list[_Built], run: int, outcome: _Outcome, alone: bool, with_torch: bool) -> bool:
    """Call both backends once and compare them (and PyTorch); return False after a crash."""
    feeds = [_feeds(b, run) for b in built]
    got = {}
    for backend, function in outcome.functions.items():
        try:
            got[backend] = _call(function, [a for arrays in feeds for a in arrays])
        except Exception as error:  # noqa: BLE001
            message = f"{_run_label(built[0].program, run)} on {backend} raised {error!r}"
            if alone:
                outcome.fail((built[0].program.seed,), "backends", message, run)
            outcome.crashed = message
            return False
    sizes = [len(b.results) for b in built]
    reference = _split(got["reference"], sizes + [len(b.values) for b in built])
    llvm = _split(got["llvm"], sizes)
    for index, (b, arrays) in enumerate(zip(built, feeds, strict=True)):
        program, want = b.program, reference[index]
        everything = want + reference[len(built) + index] + arrays
        scale, eps = _scale_and_eps(everything)
        # Long sums round more: allow for sums over as many elements as the largest value has.
        ulps = ULPS * max(1.0, math.sqrt(max(a.size for a in everything) / 16))
        where = _run_label(program, run)
        for label, mine, theirs in zip(b.labels, llvm[index], want, strict=True):
            if problem := _difference(mine, theirs, scale, eps, ulps):
                message = f"llvm and reference differ in {label}, {where}: {problem}"
                outcome.fail((program.seed,), "backends", message, run)
        if with_torch and run < len(program.batches):
            try:
                computed = _torch_results(b, arrays, run)
            except Exception as error:  # noqa: BLE001
                outcome.fail((program.seed,), "torch", f"PyTorch raised {error!r}", run)
                continue
            for label, mine, theirs in zip(b.labels, computed, want, strict=True):
                if problem := _difference(mine, theirs, scale, eps, ulps * TORCH_ULPS / ULPS):
                    message = f"PyTorch and reference differ in {label}, {where}: {problem}"
                    outcome.fail((program.seed,), "torch", message, run)
    return True


# -- reports ----------------------------------------------------------------------------------
def _described(program: Program, failures: list[Failure], listing: str | None) -> str:
    lines = [f"seed {program.seed}:"]
    lines += [f"  {f.message}" for f in failures]
    lines.append("program" + (" (and its gradients):" if program.grad else ":"))
    lines += ["  " + line for line in program.source("gc").splitlines()]
    if program.symbolic:
        lines.append(f"  (B takes the sizes {list(program.batches)})")
    if listing:
        lines.append("graph on llvm:")
        lines += ["  " + line for line in listing.splitlines()]
    lines.append(f"replay: GRAPHC_FUZZ_SEED={program.seed} python -m pytest tests/test_fuzz.py -s")
    return "\n".join(lines)


def _minimized(program: Program, check: str, with_torch: bool) -> Program:
    """Return the program with every output (and the gradient) the failure does not need
    dropped."""

    def fails(candidate: Program) -> bool:
        outcome = _check([candidate], with_torch)
        return any(f.check == check for f in outcome.failures)

    if program.grad and fails(replace(program, grad=False)):
        program = replace(program, grad=False)
    outputs = list(program.outputs)
    for name in list(outputs):
        if len(outputs) > 1:
            trial = [o for o in outputs if o != name]
            if fails(program.pruned(trial)):
                outputs = trial
    program = program.pruned(outputs)
    for step in program.steps:  # the earliest single value that fails is smaller still
        if step.name not in outputs and fails(program.pruned([step.name])):
            return program.pruned([step.name])
    return program


@dataclass
class _Report:
    """The failures of a batch, described for the reader, by check."""

    backends: list[str] = field(default_factory=list)
    torch: list[str] = field(default_factory=list)
    failed_runs: dict[int, int] = field(default_factory=dict)  # seed: its first failing call


_REPORTS: dict[tuple[int, ...], _Report] = {}


def _report(seeds: tuple[int, ...], with_torch: bool) -> _Report:
    """Return the failures of a batch of seeds (computed once for both tests): each failing
    program is checked again alone, and minimised when seeds were chosen for a replay."""
    if seeds in _REPORTS:
        return _REPORTS[seeds]
    programs = [generate(seed, KNOWN_FAILURES) for seed in seeds]
    outcome = _check(programs, with_torch)
    report = _Report()
    suspects = {s for f in outcome.failures for s in f.seeds}
    if outcome.crashed:
        suspects = set(seeds)
    failing_alone = 0
    for program in programs:
        if program.seed not in suspects:
            continue
        own = _check([program], with_torch) if len(programs) > 1 else outcome
        if not own.failures:
            continue
        failing_alone += 1
        report.failed_runs[program.seed] = own.failures[0].run
        listing = str(own.functions["llvm"].graph) if "llvm" in own.functions else None
        for check in ("backends", "torch"):
            mine = [f for f in own.failures if f.check == check]
            if not mine:
                continue
            text = _described(program, mine, listing)
            if _chosen_seeds() is not None or os.environ.get("GRAPHC_FUZZ_MINIMIZE"):
                small = _minimized(program, check, with_torch)
                run = min(own.failures[0].run, len(small.batches) - 1)
                text += "\nminimised, as a standalone script:\n" + script(small, run)
            getattr(report, check).append(text)
    if suspects and not failing_alone:
        together = "; ".join(f.message for f in outcome.failures) or outcome.crashed
        report.backends.append(
            f"seeds {list(seeds)} fail only when compiled together ({together}); replay: "
            f"GRAPHC_FUZZ_BATCH={','.join(map(str, seeds))} python -m pytest tests/test_fuzz.py"
        )
    _REPORTS[seeds] = report
    return report


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_backends_agree(seeds: tuple[int, ...]) -> None:
    """The LLVM backend computes what the reference backend computes, forward and backward."""
    report = _report(seeds, _torch_available())
    if _chosen_seeds() is not None:  # a replay: show the program as a script (with -s)
        for seed in seeds:
            print(script(generate(seed, KNOWN_FAILURES), report.failed_runs.get(seed, 0)))
    if report.backends:
        pytest.fail("\n\n".join(report.backends), pytrace=False)


def test_agrees_with_torch(seeds: tuple[int, ...]) -> None:
    """The reference backend computes what PyTorch computes, forward and backward."""
    pytest.importorskip("torch")
    report = _report(seeds, True)
    if report.torch:
        pytest.fail("\n\n".join(report.torch), pytrace=False)


def test_known_failures_name_constructs() -> None:
    from fuzz_programs import CONSTRUCTS, KIND_WEIGHTS

    assert set(KNOWN_FAILURES) <= set(KIND_WEIGHTS) | set(CONSTRUCTS)
