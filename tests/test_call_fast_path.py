"""A Function's repeated calls and its many-steps-per-call form (Function.repeat).

A call of a kind seen lately (same dtypes, shapes and layouts) reuses what its checks decided;
these tests warm a Function up with good calls, then make each kind of bad call and compare
what it raises with a fresh Function's first call. repeat(k) must give what k calls give: bit
for bit on the reference backend, within 1e-6 on llvm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.backends.llvm import executable
from graphc.backends.llvm.executable import LLVMExecutable
from graphc.errors import GraphError, IndexingError, InputError

RNG = np.random.default_rng(16)
X = RNG.standard_normal((3, 4)).astype(np.float32)
Y = RNG.standard_normal((3,)).astype(np.float32)


def make_function(backend: str) -> tuple[gc.Function, gc.Variable]:
    """Return f(x[B,4], y[B]) -> (x * 2 + v, row sums + y, x[1:] doubled) and its Variable."""
    v = gc.Variable(np.arange(4, dtype=np.float32), name="v")
    x = gc.input("x", ("B", 4))
    y = gc.input("y", ("B",))
    f = gc.compile([x, y], [x * 2 + v, x.sum(dim=1) + y, x[1:] * 2], backend=backend)
    return f, v


def outputs_for(batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.empty((batch, 4), np.float32),
        np.empty(batch, np.float32),
        np.empty((batch - 1, 4), np.float32),
    )


def raised(call: Callable[[], Any]) -> tuple[type, str]:
    """Return the type and message of what call raises."""
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


def warmed(backend: str) -> tuple[gc.Function, gc.Variable]:
    """Return a Function that has run plain and out= calls of the good kind several times."""
    f, v = make_function(backend)
    for _ in range(3):
        f(X, Y)
        f(X, Y, out=outputs_for(3))
    return f, v


def overlapping_outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return out arrays for make_function's outputs of batch 3 where out[2] is in out[0]."""
    rows = np.empty((3, 4), np.float32)
    return rows, np.empty(3, np.float32), rows[1:]


BAD_CALLS: dict[str, Callable[[gc.Variable], tuple[tuple, dict]]] = {
    "dtype": lambda v: ((X.astype(np.float64), Y), {}),
    "static dim": lambda v: ((np.ones((3, 5), np.float32), Y), {}),
    "ndim": lambda v: ((X[None], Y), {}),
    "symbol binding": lambda v: ((X, np.ones(4, np.float32)), {}),
    "run-time slice bound": lambda v: ((X[:0], Y[:0]), {}),
    "too few inputs": lambda v: ((X,), {}),
    "too many inputs": lambda v: ((X, Y, Y), {}),
    "a list input": lambda v: ((X.tolist(), [1.0, 2.0]), {}),
    "out shape": lambda v: ((X, Y), {"out": outputs_for(4)}),
    "out dtype": lambda v: ((X, Y), {"out": (X.astype(np.float64), Y.copy(), X[1:].copy())}),
    "out count": lambda v: ((X, Y), {"out": outputs_for(3)[:2]}),
    "out not an array": lambda v: ((X, Y), {"out": ([[0.0] * 4] * 3, Y.copy(), X[1:].copy())}),
    "out aliasing a variable": lambda v: (
        (np.ones((4, 4), np.float32), Y.repeat(2)[:4]),
        {"out": (np.empty((4, 4), np.float32), v.storage.value, np.empty((3, 4), np.float32))},
    ),
    "out aliasing another out": lambda v: ((X, Y), {"out": overlapping_outputs()}),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_a_warm_function_raises_what_a_fresh_one_raises(backend, case):
    f, v = warmed(backend)
    fresh, fresh_v = make_function(backend)
    args, kwargs = BAD_CALLS[case](v)
    fresh_args, fresh_kwargs = BAD_CALLS[case](fresh_v)
    before = v.numpy()
    got = raised(lambda: f(*args, **kwargs))
    assert got == raised(lambda: fresh(*fresh_args, **fresh_kwargs))
    assert issubclass(got[0], (InputError, IndexingError))
    np.testing.assert_array_equal(v.numpy(), before)


def test_out_aliasing_the_same_variable_array_is_caught_on_every_call(backend):
    # The same kind (dtypes and shapes) as a good call, so only the memory differs.
    v = gc.Variable(np.arange(4, dtype=np.float32), name="v")
    x = gc.input("x", (4,))
    f = gc.compile([x], [x + v], updates={v: v * 3}, backend=backend)
    data = np.ones(4, np.float32)
    target = np.empty(4, np.float32)
    for _ in range(3):
        f(data, out=target)
    for _ in range(2):
        with pytest.raises(InputError, match=r"out\[0\] shares memory with Variable 'v'"):
            f(data, out=v.storage.value)
    np.testing.assert_array_equal(v.numpy(), [0.0, 27.0, 54.0, 81.0])


def test_out_aliasing_an_input_of_a_warm_kind_is_staged(backend):
    x = gc.input("x", (6, 6))
    f = gc.compile([x], [x.T + x], backend=backend)
    data = RNG.standard_normal((6, 6)).astype(np.float32)
    target = np.empty((6, 6), np.float32)
    for _ in range(3):
        f(data, out=target)
    np.testing.assert_allclose(target, data.T + data, rtol=1e-6)
    same = data.copy()
    assert f(same, out=same) is same
    np.testing.assert_allclose(same, data.T + data, rtol=1e-6)


def test_a_fed_view_of_an_updated_variable_of_a_warm_kind_is_read_as_it_was(backend):
    v = gc.Variable(np.arange(8, dtype=np.float32), name="v")
    x = gc.input("x", (4,))
    f = gc.compile([x], [x * 1], updates={v: v + 10}, backend=backend)
    for _ in range(3):
        f(np.ones(4, np.float32))
    before = v.numpy()
    # Variables are read through their storage's array; the fed array is a view of it.
    view = v.storage.value[2:6]
    np.testing.assert_array_equal(f(view), before[2:6])
    np.testing.assert_array_equal(v.numpy(), before + 10)


def test_an_out_array_inside_a_fed_array_of_a_warm_kind_is_staged(backend):
    x = gc.input("x", (2, 2))
    f = gc.compile([x], [x.T * 2], backend=backend)
    buffer = np.arange(12, dtype=np.float32)
    for _ in range(3):
        f(buffer[:4].reshape(2, 2).copy(), out=np.empty((2, 2), np.float32))
    # Distinct objects over overlapping bytes: the output must not clobber x before it is read.
    fed, target = buffer[:4].reshape(2, 2), buffer[1:5].reshape(2, 2)
    expected = fed.T * 2
    assert f(fed, out=target) is target
    np.testing.assert_array_equal(target, expected)


def test_calls_sharing_no_memory_skip_the_python_memory_checks(monkeypatch):
    # Where the native entry point screens a call's memory, only a call it flags pays
    # for the Python checks.
    v = gc.Variable(np.zeros(4, np.float32), name="v")
    x = gc.input("x", (4,))
    f = gc.compile([x], [x + v], updates={v: v + x}, backend="llvm")
    if not f._screened:
        pytest.skip("this interpreter's objects cannot be read by native code")
    data, target = np.ones(4, np.float32), np.empty(4, np.float32)
    f(data)  # the first call of each kind takes every check
    f(data, out=target)

    def refuse(*_):
        raise AssertionError("the Python memory checks ran")

    monkeypatch.setattr(gc.overlap.VariableMemory, "detached", refuse)
    monkeypatch.setattr(gc.overlap.VariableMemory, "check_outputs", refuse)
    for _ in range(3):
        f(data)
        f(data, out=target)
    np.testing.assert_array_equal(v.numpy(), [8.0] * 4)
    with pytest.raises(AssertionError, match="memory checks ran"):
        f(data, out=v.storage.value)


def test_an_out_array_changed_in_place_is_checked_again(backend):
    f, v = warmed(backend)
    fresh, _ = make_function(backend)
    targets = outputs_for(3)
    f(X, Y, out=targets)
    targets[0].flags.writeable = False
    assert raised(lambda: f(X, Y, out=targets)) == raised(lambda: fresh(X, Y, out=targets))
    targets[0].flags.writeable = True
    targets[0].shape = (4, 3)
    assert raised(lambda: f(X, Y, out=targets)) == raised(lambda: fresh(X, Y, out=targets))
    targets[0].shape = (3, 4)
    result = f(X, Y, out=targets)
    np.testing.assert_allclose(result[0], X * 2 + v.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "layout",
    [
        lambda a: np.asfortranarray(a),
        lambda a: np.repeat(a, 2, axis=1)[:, ::2],
        lambda a: np.ascontiguousarray(a).view(np.matrix) if a.ndim == 2 else a,
    ],
    ids=["fortran", "strided", "matrix"],
)
def test_another_layout_after_warm_calls_gives_the_same_values(backend, layout):
    f, v = warmed(backend)
    fresh, _ = make_function(backend)
    fed = layout(X)
    assert not (type(fed) is np.ndarray and fed.flags.c_contiguous)
    got = f(fed, Y)
    want = fresh(X, Y)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[0], X * 2 + v.numpy())


def test_every_batch_size_after_warm_calls_is_checked_and_right(backend):
    f, v = warmed(backend)
    for batch in (5, 2, 3, 7, 2):
        x = RNG.standard_normal((batch, 4)).astype(np.float32)
        y = RNG.standard_normal(batch).astype(np.float32)
        doubled, sums, tail = f(x, y)
        np.testing.assert_allclose(doubled, x * 2 + v.numpy(), rtol=1e-6)
        np.testing.assert_allclose(sums, x.sum(axis=1) + y, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(tail, x[1:] * 2)
    with pytest.raises(InputError, match=r"input 'y' .* dim 0 should be B = 2"):
        f(np.ones((2, 4), np.float32), np.ones(7, np.float32))


def test_a_remembered_call_follows_the_arena_when_a_larger_call_moves_it():
    x = gc.input("x", ("B", 4))
    e = (x * 3).exp()
    f = gc.compile([x], [e / e.sum(0), (x * 2).tanh().sum(1)], backend="llvm")

    executable = f._executable

    def check(batch: int) -> int:
        data = np.linspace(-1.0, 1.0, batch * 4, dtype=np.float32).reshape(batch, 4)
        share, rows = f(data)
        np.testing.assert_allclose(share, np.exp(3 * data) / np.exp(3 * data).sum(0), rtol=1e-5)
        np.testing.assert_allclose(rows, np.tanh(2 * data).sum(1), rtol=1e-5, atol=1e-6)
        # The intermediates' addresses the last call used lie in the arena as it is now.
        arena = executable._planner._arena
        start = arena.ctypes.data
        used = executable._table[executable._temp_slots]
        assert len(used) and all(start <= int(a) < start + arena.nbytes for a in used)
        return f.memory_stats()["arena_bytes"]

    small = [check(2) for _ in range(3)][-1]
    large = check(4096)  # reallocates the arena the remembered batch-2 call pointed into
    assert large > small
    assert check(2) == small
    assert check(4096) == large


# -- Function.repeat: k steps per call ---------------------------------------------------------


def training_step(backend: str, optimizer: str) -> tuple[gc.Function, nn.Module]:
    """Return a compiled step(x[B,5], y[B]) -> (loss, logits) with a batch-dim of B."""
    gc.manual_seed(3)
    x = gc.input("x", ("B", 5))
    y = gc.input("y", ("B",), gc.int64)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    logits = model(x)
    loss = nn.CrossEntropyLoss()(logits, y)
    if optimizer == "sgd":
        opt: optim.Optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = optim.Adam(model.parameters(), lr=0.05)
    step = gc.compile([x, y], [loss, logits], updates=opt.minimize(loss), backend=backend)
    return step, model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("batch", [2, 5])
def test_k_steps_per_call_equal_k_calls(backend, optimizer, batch):
    steps = 6
    xs = RNG.standard_normal((steps, batch, 5)).astype(np.float32)
    ys = RNG.integers(0, 3, (steps, batch))
    single, single_model = training_step(backend, optimizer)
    one_by_one = [single(xs[i].copy(), ys[i].copy()) for i in range(steps)]
    stepped, stepped_model = training_step(backend, optimizer)
    repeated = stepped.repeat(steps)
    assert repeated.steps == steps
    losses, logits = repeated(xs, ys)
    assert losses.shape == (steps,) and logits.shape == (steps, batch, 3)
    want_losses = np.array([loss for loss, _ in one_by_one])
    want_logits = np.stack([out for _, out in one_by_one])
    pairs = [(losses, want_losses), (logits, want_logits)]
    pairs += [
        (a.numpy(), b.numpy())
        for a, b in zip(stepped_model.parameters(), single_model.parameters(), strict=True)
    ]
    for got, want in pairs:
        if backend == "reference":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not np.allclose(losses[0], losses[-1])  # the steps did train


def test_k_steps_with_out_and_then_single_steps_continue(backend):
    steps = 4
    xs = RNG.standard_normal((steps, 3, 5)).astype(np.float32)
    ys = RNG.integers(0, 3, (steps, 3))
    single, _ = training_step(backend, "adam")
    want = [single(xs[i], ys[i]) for i in range(steps)] + [single(xs[0], ys[0])]
    step, _ = training_step(backend, "adam")
    targets = (np.empty(steps, np.float32), np.empty((steps, 3, 3), np.float32))
    result = step.repeat(steps)(xs, ys, out=targets)
    assert result[0] is targets[0] and result[1] is targets[1]
    last_loss, _ = step(xs[0], ys[0])
    got = [*targets[0], last_loss]
    np.testing.assert_allclose(got, [loss for loss, _ in want], rtol=0, atol=1e-6)


def test_a_failing_step_changes_no_variable(backend):
    x = gc.input("x", ("N", 3), gc.int64)
    embedding = nn.Embedding(10, 4)
    loss = embedding(x).sum()
    step = gc.compile(
        [x], loss, updates=optim.SGD(embedding.parameters(), lr=0.1).minimize(loss), backend=backend
    )
    before = embedding.weight.numpy()
    indices = np.zeros((4, 2, 3), np.int64)
    indices[2, 1, 1] = 11  # the third step gathers row 11 of 10
    with pytest.raises(IndexingError, match="11"):
        step.repeat(4)(indices)
    np.testing.assert_array_equal(embedding.weight.numpy(), before)
    step.repeat(4)(np.zeros((4, 2, 3), np.int64))
    assert embedding.weight.numpy()[0, 0] == pytest.approx(before[0, 0] - 4 * 0.1 * 6)


def test_bad_k_step_inputs_name_the_leading_dim(backend):
    step, _ = training_step(backend, "sgd")
    repeated = step.repeat(5)
    xs = np.zeros((5, 2, 5), np.float32)
    ys = np.zeros((5, 2), np.int64)
    repeated(xs, ys)
    with pytest.raises(InputError, match=r"input 'x' is f32\[5,B,5\]: a Function made by "):
        repeated(xs[:4], ys[:4])
    with pytest.raises(InputError, match=r"input .y. is i64\[5,B\]: .* shape \[4,2\]"):
        repeated(xs, ys[:4])
    with pytest.raises(InputError, match=r"input 'x' is f32\[5,B,5\] \(3-d\), got .* \[2,5\]"):
        repeated(xs[0], ys)
    with pytest.raises(InputError, match=r"input 'y' .* dim 1 should be B = 2"):
        repeated(xs, np.zeros((5, 3), np.int64))
    with pytest.raises(InputError, match=r"out\[0\] must be .* of shape \[5\], got .* \[1\]"):
        repeated(xs, ys, out=(np.empty(1, np.float32), np.empty((5, 2, 3), np.float32)))


def test_repeat_refuses_what_it_cannot_run(backend):
    step, _ = training_step(backend, "sgd")
    for steps in (0, -2, 1.5, True, "3"):
        with pytest.raises(GraphError, match="positive int number of steps"):
            step.repeat(steps)
    with pytest.raises(GraphError, match="already runs 3 steps per call"):
        step.repeat(3).repeat(2)
    assert "3 steps per call" in repr(step.repeat(3))


def test_every_kind_of_output_is_stacked_per_step(backend):
    def compiled() -> tuple[gc.Function, gc.Variable]:
        x = gc.input("x", ("B", 3))
        total = gc.Variable(np.zeros(3, np.float32), name="total")
        outputs = [x, gc.tensor(2.0), x * 2, x * 2, total]
        return gc.compile([x], outputs, updates={total: total + x.sum(0)}, backend=backend), total

    xs = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    single, single_total = compiled()
    want = [np.stack(values) for values in zip(*[single(x) for x in xs], strict=True)]
    repeated, total = compiled()
    got = repeated.repeat(4)(xs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(total.numpy(), single_total.numpy())
    targets = tuple(np.empty_like(a) for a in got)
    repeated.repeat(4)(xs, out=targets)
    np.testing.assert_array_equal(targets[4], want[4] + xs.sum(axis=(0, 1)))
    for a, b in zip(targets[:4], want[:4], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "test",
    [
        test_out_aliasing_the_same_variable_array_is_caught_on_every_call,
        test_out_aliasing_an_input_of_a_warm_kind_is_staged,
        test_a_fed_view_of_an_updated_variable_of_a_warm_kind_is_read_as_it_was,
        test_an_out_array_inside_a_fed_array_of_a_warm_kind_is_staged,
        test_every_batch_size_after_warm_calls_is_checked_and_right,
        test_k_steps_with_out_and_then_single_steps_continue,
        test_a_failing_step_changes_no_variable,
    ],
    ids=lambda test: test.__name__.removeprefix("test_"),
)
def test_calls_through_ctypes_behave_the_same(monkeypatch, test):
    """Where CPython's object layouts are unknown, the LLVM backend calls graph_run through
    ctypes, Python writes the arrays' addresses into the table and every memory check runs
    in Python: the same results and errors."""
    entered = []
    through_ctypes = LLVMExecutable._enter_by_ctypes

    def counted(self, screen, handed):
        entered.append(screen)
        return through_ctypes(self, screen, handed)

    monkeypatch.setattr(executable, "entry_builtins", lambda frame: None)
    monkeypatch.setattr(executable, "TUPLE_ITEMS_OFFSET", None)
    monkeypatch.setattr(LLVMExecutable, "_enter_by_ctypes", counted)
    test("llvm")
    assert entered and not any(entered), "the calls did not go through ctypes unscreened"
