"""gc.scan on the CUDA backend, on the emulator (and on the GPU where there is one): loops
against numpy and against the LLVM and reference backends (symbolic lengths, reverse,
gradients, nn.LSTM and nn.GRU forward and training), test_scan.py's backend tests, and a step
that costs launches only, no transfer. test_cuda_ptx.py assembles the loop kernels."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_cuda_backend import DRIVERS
from test_scan import test_body_reads_outside_values_as_inputs as body_reads_outside_values
from test_scan import test_carries_and_steps_may_be_trees as carries_and_steps_may_be_trees
from test_scan import test_kernels_reading_a_loops_results_run_after_it as results_after_the_loop
from test_scan import test_length_without_xs_and_no_ys as length_without_xs_and_no_ys
from test_scan import test_nested_scans as nested_scans
from test_scan import test_repeated_steps_and_bad_indices_inside_the_body as bad_indices_in_body
from test_scan import test_training_step_updates_the_weights_the_loop_reads as training_updates

import graphc as gc
from graphc import nn, optim
from graphc.backends.cuda.driver import DRIVER_VARIABLE, selected_driver


@pytest.fixture(params=DRIVERS, autouse=True)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test on the emulator, and on the GPU where there is one."""
    monkeypatch.setenv(DRIVER_VARIABLE, request.param)
    return request.param


SCAN_TESTS = {
    "trees": carries_and_steps_may_be_trees,
    "length_without_xs": length_without_xs_and_no_ys,
    "outside_values": body_reads_outside_values,
    "nested": nested_scans,
    "results_after_the_loop": results_after_the_loop,
    "training_updates": training_updates,
    "bad_indices_in_body": bad_indices_in_body,
}


@pytest.mark.skipif(
    os.environ.get(DRIVER_VARIABLE) == "emulate",
    reason="test_scan.py runs these on cuda itself when the whole suite runs on the emulator",
)
@pytest.mark.parametrize("name", list(SCAN_TESTS))
def test_scan_backend_tests_run_on_cuda(name, rng):
    check = SCAN_TESTS[name]
    if name == "length_without_xs":
        check("cuda")
    else:
        check("cuda", rng)


@pytest.mark.parametrize("dtype", [gc.float32, gc.int64])
def test_cumulative_sum_matches_numpy(rng, dtype):
    xs = gc.input("xs", ("T", 3), dtype)
    total, running = gc.scan(lambda c, x: (c + x, c + x), gc.zeros(3, dtype=dtype), xs)
    f = gc.compile([xs], [total, running], backend="cuda")
    for length in (6, 1, 0):
        values = (rng.standard_normal((length, 3)) * 10).astype(dtype.numpy)
        got_total, got_running = f(values)
        want = np.cumsum(values, axis=0, dtype=dtype.numpy)
        np.testing.assert_allclose(got_running, want, rtol=1e-6)
        np.testing.assert_allclose(got_total, values.sum(axis=0), rtol=1e-6, atol=1e-5)


def test_weight_read_at_every_step_is_read_unpacked(rng):
    """The CUDA GEMM reads B where it lies: a loop's matmul by a weight gets no packed copy
    (the LLVM backend packs it once per call), so no device memory is planned for one."""
    xs, w = gc.input("xs", ("T", 30, 40)), gc.input("w", (40, 70))
    _, ys = gc.scan(lambda c, x: (c, x @ w), gc.zeros(()), xs)
    f = gc.compile([xs, w], [ys], backend="cuda")
    program = f._executable.program
    assert not [name for name in program.buffers if name.endswith(".packed_b")]
    x0, w0 = rng.standard_normal((3, 30, 40)), rng.standard_normal((40, 70))
    x0, w0 = x0.astype(np.float32), w0.astype(np.float32)
    np.testing.assert_allclose(f(x0, w0), x0 @ w0, rtol=1e-5, atol=1e-5)


def test_reverse_scan_matches_numpy(rng):
    """Two carries and two ys from the last x to the first; ys[t] belongs to xs[t]."""
    xs = gc.input("xs", ("T", 2, 3))
    weights = gc.input("weights", ("T",))

    def step(carry, x):
        decayed, count = carry
        value, weight = x
        decayed = decayed * 0.5 + value * weight
        return (decayed, count + 1), (decayed.sum(dim=1), count)

    (decayed, count), (sums, counts) = gc.scan(
        step, (gc.zeros((2, 3)), gc.tensor(0)), (xs, weights), reverse=True
    )
    f = gc.compile([xs, weights], [decayed, count, sums, counts], backend="cuda")
    for length in (5, 2):
        x = rng.standard_normal((length, 2, 3)).astype(np.float32)
        w = rng.standard_normal(length).astype(np.float32)
        got = f(x, w)
        carry = np.zeros((2, 3), np.float32)
        want_sums = np.zeros((length, 2), np.float32)
        for t in reversed(range(length)):
            carry = carry * 0.5 + x[t] * w[t]
            want_sums[t] = carry.sum(axis=1)
        np.testing.assert_allclose(got[0], carry, rtol=1e-5, atol=1e-6)
        assert got[1] == length
        np.testing.assert_allclose(got[2], want_sums, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[3], np.arange(length)[::-1])


def _rnn(rng, reverse: bool = False):
    """Return a tanh RNN over xs (T, B, 3) from h0 (B, 4): the inputs, (last h, every h) and
    the weights, Variables."""
    weights = [
        gc.Variable(rng.standard_normal(shape).astype(np.float32) * scale)
        for shape, scale in (((4, 4), 0.5), ((3, 4), 1.0), ((4,), 1.0))
    ]
    w, u, b = weights
    xs, h0 = gc.input("xs", ("T", "B", 3)), gc.input("h0", ("B", 4))
    h, hs = gc.scan(lambda h, x: (gc.tanh(h @ w + x @ u + b),) * 2, h0, xs, reverse=reverse)
    return [xs, h0], [h, hs], weights


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_cell_serves_two_lengths_like_llvm(rng, reverse):
    inputs, outputs, _ = _rnn(rng, reverse)
    cuda = gc.compile(inputs, outputs, backend="cuda")
    llvm = gc.compile(inputs, outputs, backend="llvm")
    for length, batch in ((3, 2), (11, 5)):
        x = rng.standard_normal((length, batch, 3)).astype(np.float32)
        h0 = rng.standard_normal((batch, 4)).astype(np.float32)
        for got, want in zip(cuda(x, h0), llvm(x, h0), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gradient_through_scan_matches_llvm_and_reference(rng):
    (xs, h0), (h, hs), weights = _rnn(rng)
    loss = (h * h).sum() + (hs * gc.tensor(np.linspace(-1, 1, 4, dtype=np.float32))).sum()
    outputs = [loss, *gc.grad(loss, [xs, h0, *weights])]
    functions = {name: gc.compile([xs, h0], outputs, backend=name) for name in ("cuda", "llvm")}
    functions["reference"] = gc.compile([xs, h0], outputs, backend="reference")
    for length in (4, 9):
        x = rng.standard_normal((length, 3, 3)).astype(np.float32)
        start = rng.standard_normal((3, 4)).astype(np.float32)
        got = functions["cuda"](x, start)
        for other in ("llvm", "reference"):
            for value, want in zip(got, functions[other](x, start), strict=True):
                np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)


LAYERS = {"LSTM": nn.LSTM, "GRU": nn.GRU}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_recurrent_layers_forward_and_training_match_llvm(rng, kind):
    """A 2-layer bidirectional batch_first layer: outputs and final states at two lengths,
    then four Adam steps from the same weights, on cuda and llvm."""
    models = {
        name: LAYERS[kind](3, 5, num_layers=2, bidirectional=True, batch_first=True)
        for name in ("cuda", "llvm")
    }
    models["cuda"].load_state_dict(models["llvm"].state_dict())
    forward, train = {}, {}
    for name, model in models.items():
        x, y = gc.input("x", ("N", "T", 3)), gc.input("y", ("N", "T", 10))
        out, state = model(x)
        finals = list(state) if kind == "LSTM" else [state]
        forward[name] = gc.compile([x], [out, *finals], backend=name)
        loss = ((out - y) ** 2).mean()
        opt = optim.Adam(model.parameters(), lr=0.02)
        train[name] = gc.compile([x, y], [loss], updates=opt.minimize(loss), backend=name)
    for length in (4, 7):
        x = rng.standard_normal((2, length, 3)).astype(np.float32)
        for got, want in zip(forward["cuda"](x), forward["llvm"](x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    batches = [
        (
            rng.standard_normal((2, t, 3)).astype(np.float32),
            rng.standard_normal((2, t, 10)).astype(np.float32),
        )
        for t in (6, 3, 6, 5)
    ]
    losses = {name: [float(step(*batch)) for batch in batches] for name, step in train.items()}
    np.testing.assert_allclose(losses["cuda"], losses["llvm"], rtol=1e-4)
    assert losses["cuda"][-1] != losses["cuda"][0]
    want_state = models["llvm"].state_dict()
    for key, value in models["cuda"].state_dict().items():
        scale = np.abs(want_state[key]).max()
        np.testing.assert_allclose(value, want_state[key], rtol=1e-4, atol=1e-4 * scale)


def test_a_step_costs_launches_not_transfers(driver, rng):
    """A call's copies do not depend on the sequence length: the loop moves its buffers on
    the device. Its launches are its own (the initial and final carry copies, `start`,
    `advance`: one thread each) and its body's, listed under the loop's kernel."""
    if driver != "emulate":
        pytest.skip("counts the emulated driver's copies")
    inputs, outputs, _ = _rnn(rng)
    f = gc.compile(inputs, outputs, backend="cuda")
    emulated = selected_driver()
    f(np.ones((1, 2, 3), np.float32), np.zeros((2, 4), np.float32))  # uploads the weights
    copies = []
    for length in (2, 5, 30):
        uploads, downloads = sum(emulated.uploads.values()), sum(emulated.downloads.values())
        f(np.ones((length, 2, 3), np.float32), np.zeros((2, 4), np.float32))
        copies.append(
            (sum(emulated.uploads.values()) - uploads, sum(emulated.downloads.values()) - downloads)
        )
    assert copies[0] == copies[1] == copies[2]
    (loop,) = [info for info in f.kernels() if info.name.startswith("scan")]
    launches = {launch.symbol.removesuffix(".launch"): launch for launch in loop.launches}
    for mover in ("start", "advance"):
        launch = launches[f"{loop.name}${mover}"]
        assert (launch.grid, launch.block) == ("1", 1)
    assert f"{loop.name}$init0" in launches and f"{loop.name}$final0" in launches
    assert any(symbol.startswith(f"{loop.name}$") and "tanh" in symbol for symbol in launches)
