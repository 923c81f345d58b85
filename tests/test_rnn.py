"""nn.LSTM and nn.GRU (and the driver they share with nn.RNN), and nn.RNNCell, LSTMCell and
GRUCell, against torch with its state dict loaded: outputs, final states and every gradient
on every backend, the argument forms (unbatched input, default states, batch_first), input
gradients against finite differences, one Function for every length, and 20 Adam steps of
training."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.backends.llvm.jit import compile_counts
from graphc.errors import DTypeError, GraphError, InputError, ShapeError
from graphc.testing import check_grad

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

LAYERS = {"LSTM": (nn.LSTM, torch.nn.LSTM), "GRU": (nn.GRU, torch.nn.GRU)}
OPTIONS = [
    {},
    {"num_layers": 2, "bidirectional": True, "batch_first": True},
    {"bias": False, "bidirectional": True},
]


def _load(model: nn.Module, reference) -> dict[str, np.ndarray]:
    state = {k: v.detach().numpy().astype(np.float32) for k, v in reference.state_dict().items()}
    model.load_state_dict(state)
    return state


def _close(got: np.ndarray, want, rtol: float = 1e-5) -> None:
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "deep_bidirectional", "no_bias"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_matches_torch_with_its_state_dict(backend, rng, kind, options):
    ours, theirs = LAYERS[kind]
    reference = theirs(3, 4, **options).double()
    model = ours(3, 4, **options)
    state = _load(model, reference)
    assert [name for name, _ in model.named_parameters()] == list(state)
    batch_first = options.get("batch_first", False)
    count = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x_array = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    h_arrays = [rng.standard_normal((count, 2, 4)) for _ in range(2 if kind == "LSTM" else 1)]
    x = gc.input("x", ("N", "T", 3) if batch_first else ("T", "N", 3))
    hs = [gc.input(f"h{i}", (count, "N", 4)) for i in range(len(h_arrays))]
    out, state_n = model(x, tuple(hs) if kind == "LSTM" else hs[0])
    finals = list(state_n) if kind == "LSTM" else [state_n]
    loss = (out * out).sum() + sum((s * (i + 1)).sum() for i, s in enumerate(finals))
    params = list(model.parameters())
    f = gc.compile([x, *hs], [out, *finals, *gc.grad(loss, [x, *hs, *params])], backend=backend)
    got = f(x_array.astype(np.float32), *(h.astype(np.float32) for h in h_arrays))

    tx = torch.tensor(x_array, requires_grad=True)
    ths = [torch.tensor(h, requires_grad=True) for h in h_arrays]
    t_out, t_state = reference(tx, tuple(ths) if kind == "LSTM" else ths[0])
    t_finals = list(t_state) if kind == "LSTM" else [t_state]
    ((t_out * t_out).sum() + sum((s * (i + 1)).sum() for i, s in enumerate(t_finals))).backward()
    grads = [tx.grad, *(h.grad for h in ths), *(p.grad for p in reference.parameters())]
    for value, expected in zip(got, [t_out, *t_finals, *grads], strict=True):
        _close(value, expected)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_unbatched_input_and_default_state(rng, kind):
    ours, theirs = LAYERS[kind]
    reference = theirs(2, 3, bidirectional=True).double()
    model = ours(2, 3, bidirectional=True)
    _load(model, reference)
    x_array = rng.standard_normal((5, 2))
    out, state_n = model(gc.tensor(x_array.astype(np.float32)))
    t_out, t_state = reference(torch.tensor(x_array))
    assert out.shape == (5, 6)
    _close(out.numpy(), t_out)
    for got, want in zip(
        state_n if kind == "LSTM" else [state_n],
        t_state if kind == "LSTM" else [t_state],
        strict=True,
    ):
        assert got.shape == (2, 3)
        _close(got.numpy(), want)


def test_argument_errors():
    lstm = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ShapeError, match="expects an input"):
        lstm(gc.zeros((5, 2, 7)))
    with pytest.raises(ShapeError, match=r"hx\[1\] of shape \(2, 2, 4\)"):
        lstm(gc.zeros((5, 2, 3)), (gc.zeros((2, 2, 4)), gc.zeros((1, 2, 4))))
    with pytest.raises(GraphError, match="pair"):
        lstm(gc.zeros((5, 2, 3)), gc.zeros((2, 2, 4)))
    with pytest.raises(GraphError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ShapeError, match=r"LSTMCell\(3, 4\) expects an input \(N, 3\)"):
        nn.LSTMCell(3, 4)(gc.zeros((2, 5)))
    with pytest.raises(GraphError, match="nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="gelu")
    assert repr(nn.GRU(3, 4, batch_first=True)) == "GRU(3, 4, batch_first=True)"


# -- training: 20 Adam steps against torch ------------------------------------------------------
def _model(lib, kind: str):
    class Tagger(lib.Module):
        """A recurrent layer and a linear readout of every step, as a sequence tagger."""

        def __init__(self):
            super().__init__()
            if kind == "LSTM":
                self.rnn = lib.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
                self.out = lib.Linear(10, 2)
            else:
                self.rnn = lib.GRU(3, 5)
                self.out = lib.Linear(5, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0])

    return Tagger()


def _batches() -> list[tuple[np.ndarray, np.ndarray]]:
    data = np.random.default_rng(3)
    shape = (4, 6, 3)  # (N, L, 3) for the batch_first LSTM, (L, N, 3) for the GRU
    return [(data.standard_normal(shape), data.standard_normal((*shape[:2], 2))) for _ in range(3)]


@functools.cache
def _torch_training(kind: str) -> tuple[dict, list[float], dict]:
    """Return (initial state, losses, final state) of 20 Adam steps in torch (once per run)."""
    torch.manual_seed(0)
    reference = _model(torch.nn, kind)
    initial = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
    opt = torch.optim.Adam(reference.parameters(), lr=0.02)
    losses = []
    for _, (x, y) in zip(range(20), itertools.cycle(_batches())):
        opt.zero_grad()
        loss = ((reference(torch.from_numpy(x).float()) - torch.from_numpy(y).float()) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return initial, losses, {k: v.detach().numpy() for k, v in reference.state_dict().items()}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_adam_training_matches_torch(backend, kind):
    initial, want_losses, want_state = _torch_training(kind)
    model = _model(nn, kind)
    model.load_state_dict(initial)
    x = gc.input("x", ("A", "B", 3))
    y = gc.input("y", ("A", "B", 2))
    loss = ((model(x) - y) ** 2).mean()
    opt = optim.Adam(model.parameters(), lr=0.02)
    train = gc.compile([x, y], [loss], updates=opt.minimize(loss), backend=backend)
    losses = [
        float(train(x.astype(np.float32), y.astype(np.float32)))
        for _, (x, y) in zip(range(20), itertools.cycle(_batches()))
    ]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    assert losses[-1] < losses[0] * 0.8
    state = model.state_dict()
    for name, want in want_state.items():
        assert np.abs(state[name] - want).max() <= 1e-4 * np.abs(want).max(), name


@pytest.mark.parametrize("kind", list(LAYERS))
def test_input_gradient_matches_finite_differences(backend, rng, kind):
    """In float64 (the float32 weights promote), through both directions."""
    model = LAYERS[kind][0](2, 3, bidirectional=True)

    def run(x):
        output, state = model(x)
        return output.sum(dim=2) + (state[1] if kind == "LSTM" else state).sum()

    assert check_grad(run, [rng.standard_normal((4, 2, 2))], backend=backend) < 1e-6


def test_one_function_serves_every_length(backend, rng):
    """The sequence length is a symbol: one compiled LSTM (outputs and weight gradients)
    answers for lengths 5, 17 and 64."""
    reference = torch.nn.LSTM(2, 3, batch_first=True).double()
    model = nn.LSTM(2, 3, batch_first=True)
    _load(model, reference)
    x = gc.input("x", (2, "T", 2))
    out, _ = model(x)
    f = gc.compile([x], [out, *gc.grad(out.sum(), list(model.parameters()))], backend=backend)
    for length in (5, 17, 64):
        x_array = rng.standard_normal((2, length, 2))
        got = f(x_array.astype(np.float32))
        reference.zero_grad()
        t_out, _ = reference(torch.tensor(x_array))
        t_out.sum().backward()
        for value, expected in zip(
            got, [t_out, *(p.grad for p in reference.parameters())], strict=True
        ):
            _close(value, expected)


def test_one_training_step_compiles_once_for_every_length(rng):
    """An LSTM training step whose sequence length is a symbol compiles its modules when it is
    built; calls with lengths 5, 17 and 64 compile nothing more, and each returns the loss
    of the weights it starts from (checked on the reference backend)."""
    model = nn.LSTM(3, 4)
    x = gc.input("x", ("T", 2, 3))
    out, _ = model(x)
    loss = (out * out).mean()
    updates = optim.Adam(model.parameters(), lr=0.05).minimize(loss)
    check = gc.compile([x], loss, backend="reference")
    before = compile_counts()
    step = gc.compile([x], loss, updates=updates, backend="llvm")
    built = compile_counts()
    assert built["compiled"] + built["loaded"] + built["reused"] > sum(before.values())
    for length in (5, 17, 64):
        xs = rng.standard_normal((length, 2, 3)).astype(np.float32)
        want = float(check(xs))
        assert float(step(xs)) == pytest.approx(want, rel=1e-5)
        assert float(check(xs)) != want  # the step updated the weights
    assert compile_counts() == built


CELLS = {
    "RNNCell": (lambda lib: lib.RNNCell(3, 4, nonlinearity="relu"), 1),
    "LSTMCell": (lambda lib: lib.LSTMCell(3, 4), 2),
    "GRUCell": (lambda lib: lib.GRUCell(3, 4, bias=False), 1),
}


@pytest.mark.parametrize("kind", list(CELLS))
def test_cells_match_torch(backend, rng, kind):
    """One step with given states (outputs and every gradient), and unbatched without."""
    build, states = CELLS[kind]
    reference = build(torch.nn).double()
    model = build(nn)
    _load(model, reference)
    x_array = rng.standard_normal((2, 3))
    h_arrays = [rng.standard_normal((2, 4)) for _ in range(states)]
    x = gc.input("x", ("N", 3))
    hs = [gc.input(f"h{i}", ("N", 4)) for i in range(states)]
    result = model(x, tuple(hs) if states == 2 else hs[0])
    results = list(result) if states == 2 else [result]
    loss = sum((r * (i + 1)).sum() ** 2 for i, r in enumerate(results))
    params = list(model.parameters())
    f = gc.compile([x, *hs], [*results, *gc.grad(loss, [x, *hs, *params])], backend=backend)
    got = f(x_array.astype(np.float32), *(h.astype(np.float32) for h in h_arrays))

    tx = torch.tensor(x_array, requires_grad=True)
    ths = [torch.tensor(h, requires_grad=True) for h in h_arrays]
    t_result = reference(tx, tuple(ths) if states == 2 else ths[0])
    t_results = list(t_result) if states == 2 else [t_result]
    sum((r * (i + 1)).sum() ** 2 for i, r in enumerate(t_results)).backward()
    grads = [tx.grad, *(h.grad for h in ths), *(p.grad for p in reference.parameters())]
    for value, expected in zip(got, [*t_results, *grads], strict=True):
        _close(value, expected)

    single = model(gc.tensor(x_array[0].astype(np.float32)))
    t_single = reference(torch.tensor(x_array[0]))
    for value, expected in zip(
        single if states == 2 else [single], t_single if states == 2 else [t_single], strict=True
    ):
        assert value.shape == (4,)
        _close(value.numpy(), expected)


# -- packed sequences: pack_padded_sequence, the layers on them, pad_packed_sequence -----------
PACKED_LAYERS = {**LAYERS, "RNN": (nn.RNN, torch.nn.RNN)}
PACKED_CASES = {
    # (layer options, padded length, lengths, enforce_sorted, lengths fed at call time, hx)
    "sorted_list": ({}, 6, [5, 3, 2], True, False, False),
    "unsorted_fed_deep_bidirectional": (
        {"num_layers": 2, "bidirectional": True, "batch_first": True},
        5,
        [3, 5, 1],
        False,
        True,
        True,
    ),
    "unsorted_array_bidirectional": (
        {"bidirectional": True},
        5,
        np.array([2, 5, 4]),
        False,
        False,
        True,
    ),
}


def _torch_packed(reference, x, lengths, batch_first: bool, enforce_sorted: bool, hx):
    """Return torch's padded output and final states for a padded batch packed by length."""
    rnn_utils = torch.nn.utils.rnn
    packed = rnn_utils.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted
    )
    out, state = reference(packed, hx)
    return rnn_utils.pad_packed_sequence(out, batch_first=batch_first)[0], state


@pytest.mark.parametrize("case", list(PACKED_CASES))
@pytest.mark.parametrize("kind", list(PACKED_LAYERS))
def test_packed_sequences_match_torch(backend, rng, kind, case):
    """Outputs after pad_packed_sequence, h_n, c_n and the gradients of a loss of them with
    respect to the input, the initial states and every weight, against torch's packed
    sequences (whose output ends at the longest sequence: ours is zero past it)."""
    options, steps, lengths, enforce_sorted, fed, given_hx = PACKED_CASES[case]
    ours, theirs = PACKED_LAYERS[kind]
    reference = theirs(3, 4, **options).double()
    model = ours(3, 4, **options)
    _load(model, reference)
    batch_first = options.get("batch_first", False)
    count = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x_array = rng.standard_normal((3, steps, 3) if batch_first else (steps, 3, 3))
    h_arrays = [rng.standard_normal((count, 3, 4)) for _ in range(2 if kind == "LSTM" else 1)]
    batch = "N" if fed else 3  # constant lengths need a static batch to broadcast with
    x = gc.input("x", (batch, "T", 3) if batch_first else ("T", batch, 3))
    hs = [gc.input(f"h{i}", (count, batch, 4)) for i in range(len(h_arrays))] if given_hx else []
    length_input = gc.input("lengths", ("N",), gc.int64)
    packed = nn.utils.rnn.pack_padded_sequence(
        x, length_input if fed else lengths, batch_first, enforce_sorted
    )
    out, state_n = model(packed, (tuple(hs) if kind == "LSTM" else hs[0]) if hs else None)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    padded, out_lengths = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first)
    finals = list(state_n) if kind == "LSTM" else [state_n]
    loss = (padded * padded).sum() + sum((s * (i + 1)).sum() for i, s in enumerate(finals))
    inputs = [x, *hs, *([length_input] if fed else [])]
    grads = gc.grad(loss, [x, *hs, *model.parameters()])
    f = gc.compile(inputs, [padded, out_lengths, *finals, *grads], backend=backend)
    feed = [x_array, *(h_arrays if given_hx else [])]
    got = f(*(a.astype(np.float32) for a in feed), *([np.array(lengths)] if fed else []))

    tx = torch.tensor(x_array, requires_grad=True)
    ths = [torch.tensor(h, requires_grad=True) for h in h_arrays] if given_hx else []
    t_hx = (tuple(ths) if kind == "LSTM" else ths[0]) if ths else None
    t_out, t_state = _torch_packed(reference, tx, lengths, batch_first, enforce_sorted, t_hx)
    t_finals = list(t_state) if kind == "LSTM" else [t_state]
    ((t_out * t_out).sum() + sum((s * (i + 1)).sum() for i, s in enumerate(t_finals))).backward()
    t_grads = [tx.grad, *(h.grad for h in ths), *(p.grad for p in reference.parameters())]
    longest = max(lengths)
    got_out = got[0][:, :longest] if batch_first else got[0][:longest]
    _close(got_out, t_out)
    assert not np.any(got[0][:, longest:] if batch_first else got[0][longest:])
    np.testing.assert_array_equal(got[1], lengths)
    for value, expected in zip(got[2:], [*t_finals, *t_grads], strict=True):
        _close(value, expected)


def test_one_packed_function_serves_every_length_vector(backend, rng):
    """Padded length, batch and lengths are all fed: one compiled bidirectional LSTM answers
    for two padded lengths, two batches and two length vectors (outputs, padded with -1 to a
    total length, h_n, c_n and the weights' gradients)."""
    reference = torch.nn.LSTM(2, 3, bidirectional=True).double()
    model = nn.LSTM(2, 3, bidirectional=True)
    _load(model, reference)
    rnn_utils = nn.utils.rnn
    x = gc.input("x", ("T", "N", 2))
    lengths = gc.input("lengths", ("N",), gc.int64)
    out, (h_n, c_n) = model(rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, _ = rnn_utils.pad_packed_sequence(out, padding_value=-1.0, total_length=9)
    loss = (padded * padded).sum() + h_n.sum() + c_n.sum()
    f = gc.compile(
        [x, lengths], [padded, h_n, c_n, *gc.grad(loss, list(model.parameters()))], backend=backend
    )
    for steps, length_values in ((4, [2, 4, 1]), (7, [7, 3])):
        x_array = rng.standard_normal((steps, len(length_values), 2))
        got = f(x_array.astype(np.float32), np.array(length_values))
        reference.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.tensor(x_array), torch.tensor(length_values), enforce_sorted=False
        )
        t_out, (t_h, t_c) = reference(packed)
        t_padded, _ = torch.nn.utils.rnn.pad_packed_sequence(
            t_out, padding_value=-1.0, total_length=9
        )
        ((t_padded * t_padded).sum() + t_h.sum() + t_c.sum()).backward()
        assert got[0].shape == (9, len(length_values), 6)
        expected = [t_padded, t_h, t_c, *(p.grad for p in reference.parameters())]
        for value, want in zip(got, expected, strict=True):
            _close(value, want)


def test_packed_training_step_matches_torch(backend):
    """Five Adam steps of a bidirectional GRU on packed, unsorted sequences: the losses
    match torch's."""
    data = np.random.default_rng(5)
    batches = [
        (data.standard_normal((6, 4, 3)), np.array(lengths), data.standard_normal((6, 4, 8)))
        for lengths in ([6, 2, 5, 3], [1, 4, 6, 6])
    ]
    torch.manual_seed(0)
    reference = torch.nn.GRU(3, 4, bidirectional=True)
    model = nn.GRU(3, 4, bidirectional=True)
    _load(model, reference)
    rnn_utils = nn.utils.rnn
    x = gc.input("x", ("T", "N", 3))
    lengths = gc.input("lengths", ("N",), gc.int64)
    y = gc.input("y", ("T", "N", 8))
    out, _ = model(rnn_utils.pack_padded_sequence(x, lengths, enforce_sorted=False))
    loss = ((rnn_utils.pad_packed_sequence(out)[0] - y) ** 2).mean()
    opt = optim.Adam(model.parameters(), lr=0.05)
    step = gc.compile([x, lengths, y], [loss], updates=opt.minimize(loss), backend=backend)
    t_opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    for _, (x_array, length_values, target) in zip(range(5), itertools.cycle(batches)):
        got = float(step(x_array.astype(np.float32), length_values, target.astype(np.float32)))
        t_opt.zero_grad()
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x_array).float(), torch.tensor(length_values), enforce_sorted=False
        )
        t_padded = torch.nn.utils.rnn.pad_packed_sequence(reference(packed)[0])[0]
        t_loss = ((t_padded - torch.from_numpy(target).float()) ** 2).mean()
        t_loss.backward()
        t_opt.step()
        assert got == pytest.approx(t_loss.item(), rel=1e-4)


def test_packed_sequence_errors():
    rnn_utils = nn.utils.rnn
    x = gc.zeros((5, 3, 2))
    with pytest.raises(ShapeError, match=r"lengths \[6, 5, 1\] exceed the padded length 5"):
        rnn_utils.pack_padded_sequence(x, [6, 5, 1])
    with pytest.raises(ShapeError, match=r"lengths must have shape \(B,\) = \(3,\).*\(2,\)"):
        rnn_utils.pack_padded_sequence(x, [5, 4])
    with pytest.raises(ShapeError, match=r"lengths must have shape .*\(1, 3\)"):
        rnn_utils.pack_padded_sequence(x, gc.input("lengths", (1, 3), gc.int64))
    with pytest.raises(DTypeError, match="lengths must be integers, got float64"):
        rnn_utils.pack_padded_sequence(x, [5.0, 4.0, 1.0])
    with pytest.raises(DTypeError, match="lengths must be integers"):
        rnn_utils.pack_padded_sequence(x, gc.input("lengths", (3,)))
    with pytest.raises(ShapeError, match="at least 1"):
        rnn_utils.pack_padded_sequence(x, [5, 0, 0])
    with pytest.raises(GraphError, match="decreasing order when enforce_sorted is True"):
        rnn_utils.pack_padded_sequence(x, [1, 5, 3])
    with pytest.raises(GraphError, match="expects a PackedSequence, got Tensor"):
        rnn_utils.pad_packed_sequence(x)
    packed = rnn_utils.pack_padded_sequence(x, [5, 3, 1])
    with pytest.raises(ShapeError, match="total_length=4 is shorter than the padded length 5"):
        rnn_utils.pad_packed_sequence(packed, total_length=4)
    with pytest.raises(ShapeError, match=r"GRU\(3, 4\) expects a PackedSequence of data"):
        nn.GRU(3, 4)(packed)

    # Lengths fed at call time are checked as every input is.
    x = gc.input("x", ("T", "N", 2))
    lengths = gc.input("lengths", ("N",), gc.int64)
    _, h_n = nn.GRU(2, 4)(rnn_utils.pack_padded_sequence(x, lengths))
    f = gc.compile([x, lengths], [h_n])
    x_array = np.zeros((5, 3, 2), np.float32)
    with pytest.raises(InputError, match="got an array of dtype float64"):
        f(x_array, np.array([5.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="dim 0 should be N = 3, got 2"):
        f(x_array, np.array([5, 3]))
