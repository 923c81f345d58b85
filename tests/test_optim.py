"""graphc.optim: optimizer steps against torch.optim, learning-rate changes without
recompiling, schedulers, gradient accumulation, state dicts and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.errors import DTypeError, GraphError, InputError, ShapeError
from graphc.optim.lr_scheduler import CosineAnnealingLR, StepLR

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test-only dependency
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

RNG = np.random.default_rng(7)
W0 = RNG.standard_normal((4, 3)).astype(np.float32)
B0 = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((6, 4)).astype(np.float32)
STEPS = 6


def graphc_problem():
    """Return (W, b, x, loss): a small nonlinear least-squares problem on two Variables."""
    w = gc.Variable(W0, name="W")
    b = gc.Variable(B0, name="b")
    x = gc.input("x", ("B", 4))
    loss = ((x @ w + b).tanh() - 0.5).square().mean()
    return w, b, x, loss


def torch_losses(make_optimizer, steps=STEPS, lrs=None):
    """Train the torch twin of graphc_problem; return (losses, W, b)."""
    w = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    opt = make_optimizer([w, b])
    losses = []
    for index in range(steps):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[index]
        opt.zero_grad()
        loss = ((torch.tensor(X) @ w + b).tanh() - 0.5).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses), w.detach().numpy(), b.detach().numpy()


def graphc_losses(make_optimizer, backend, steps=STEPS, lrs=None):
    """Train graphc_problem with one compiled step; return (losses, W, b)."""
    w, b, x, loss = graphc_problem()
    opt = make_optimizer([w, b])
    step = gc.compile([x], [loss], updates=opt.minimize(loss), backend=backend)
    losses = []
    for index in range(steps):
        if lrs is not None:
            opt.lr = lrs[index]
        losses.append(float(step(X)))
    return np.array(losses), w.numpy(), b.numpy()


def assert_matches_torch(ours, theirs, rtol=1e-5, atol=1e-6):
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, reference, rtol=rtol, atol=atol)


SGD_OPTIONS = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "maximize": True},
]


@needs_torch
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: ",".join(o))
def test_sgd_matches_torch(backend, options):
    ours = graphc_losses(lambda p: optim.SGD(p, **options), backend)
    theirs = torch_losses(lambda p: torch.optim.SGD(p, **options))
    assert_matches_torch(ours, theirs)


ADAM_OPTIONS = [
    ("Adam", {"lr": 0.05}),
    ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("Adam", {"lr": 0.05, "maximize": True}),
    ("AdamW", {"lr": 0.05}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True}),
]


@needs_torch
@pytest.mark.parametrize(
    "name,options", ADAM_OPTIONS, ids=lambda o: o if isinstance(o, str) else ",".join(o)
)
def test_adam_and_adamw_match_torch(backend, name, options):
    ours = graphc_losses(lambda p: getattr(optim, name)(p, **options), backend)
    theirs = torch_losses(lambda p: getattr(torch.optim, name)(p, **options))
    assert_matches_torch(ours, theirs)


@needs_torch
def test_param_groups_match_torch():
    def groups(w, b):
        return [{"params": [w]}, {"params": [b], "lr": 0.01, "momentum": 0.5}]

    ours = graphc_losses(lambda p: optim.SGD(groups(*p), lr=0.1, momentum=0.9), "reference")
    theirs = torch_losses(lambda p: torch.optim.SGD(groups(*p), lr=0.1, momentum=0.9))
    assert_matches_torch(ours, theirs)


@needs_torch
def test_lr_change_takes_effect_without_recompiling(backend):
    lrs = [0.1, 0.1, 0.02, 0.0, 0.3, 0.05]
    ours = graphc_losses(lambda p: optim.Adam(p, lr=0.1), backend, lrs=lrs)
    theirs = torch_losses(lambda p: torch.optim.Adam(p, lr=0.1), lrs=lrs)
    assert_matches_torch(ours, theirs)


def test_zero_lr_freezes_parameters_and_setter_writes_the_variable():
    w, b, x, loss = graphc_problem()
    opt = optim.SGD([w, b], lr=0.5)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    step(X)
    moved = w.numpy()
    assert not np.allclose(moved, W0)
    opt.lr = 0.0
    assert opt.lr == 0.0 and opt.param_groups[0]["lr"] == 0.0
    assert opt.param_groups[0].lr_variable.value == 0.0
    step(X)
    np.testing.assert_array_equal(w.numpy(), moved)


@needs_torch
@pytest.mark.parametrize(
    "make",
    [
        lambda opt: ("StepLR", {"step_size": 3, "gamma": 0.5}),
        lambda opt: ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001}),
        lambda opt: ("CosineAnnealingLR", {"T_max": 4}),
    ],
    ids=["step", "cosine", "cosine-restarts"],
)
def test_schedulers_match_torch(make):
    name, options = make(None)
    ours_opt = optim.SGD([gc.Variable(np.zeros(2, np.float32))], lr=0.1)
    theirs_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    ours = getattr(optim.lr_scheduler, name)(ours_opt, **options)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **options)
    for _ in range(20):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12, abs=1e-15)
        assert ours_opt.lr == pytest.approx(theirs_opt.param_groups[0]["lr"], rel=1e-12)
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_scheduler_drives_a_compiled_step():
    w, b, x, loss = graphc_problem()
    opt = optim.SGD([w, b], lr=0.2)
    scheduler = StepLR(opt, step_size=1, gamma=0.0)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    step(X)
    scheduler.step()
    assert opt.lr == 0.0
    frozen = w.numpy()
    step(X)
    np.testing.assert_array_equal(w.numpy(), frozen)


def test_cosine_annealing_reaches_eta_min():
    opt = optim.Adam([gc.Variable(np.zeros(2, np.float32))], lr=1.0)
    scheduler = CosineAnnealingLR(opt, T_max=10, eta_min=0.1)
    for _ in range(10):
        scheduler.step()
    assert opt.lr == pytest.approx(0.1)
    assert scheduler.state_dict()["last_epoch"] == 10


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), optim.Adam])
def test_accumulation_equals_one_big_batch(backend, make):
    k = 3
    big = np.concatenate([X, X[::-1] * 0.5, X * -1.5])

    w, b, x, loss = graphc_problem()
    opt = make([w, b])
    step = gc.compile([x], [loss], updates=opt.minimize(loss), backend=backend)
    step(big)
    big_w, big_b = w.numpy(), b.numpy()

    w, b, x, loss = graphc_problem()
    opt = make([w, b])
    # The update sees the sum of k gradients, as PyTorch's .grad does: dividing a mean loss
    # by k makes the sum the big batch's mean gradient.
    accumulate = gc.compile(
        [x], [loss], updates=opt.minimize(loss / k, accumulate=k), backend=backend
    )
    for index, micro in enumerate(np.split(big, k)):
        accumulate(micro)
        if index < k - 1:
            np.testing.assert_array_equal(w.numpy(), W0)
            assert int(opt.step_count.value) == 0
    np.testing.assert_allclose(w.numpy(), big_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), big_b, rtol=1e-5, atol=1e-6)
    assert int(opt.step_count.value) == 1
    buffers = opt._accumulation.buffers.values()
    assert all(not buffer.value.any() for buffer in buffers)


def test_zero_grad_discards_a_partial_accumulation():
    w, b, x, loss = graphc_problem()
    opt = optim.SGD([w, b], lr=0.1)
    step = gc.compile([x], [loss], updates=opt.minimize(loss, accumulate=2))
    step(X * 100)
    opt.zero_grad()
    step(X)
    step(X)
    w2, b2, x2, loss2 = graphc_problem()
    opt2 = optim.SGD([w2, b2], lr=0.1)
    plain = gc.compile([x2], [loss2], updates=opt2.minimize(loss2 * 2))
    plain(X)
    np.testing.assert_allclose(w.numpy(), w2.numpy(), rtol=1e-6)


def test_minimize_returns_parameters_and_state():
    w, b, x, loss = graphc_problem()
    opt = optim.Adam([w, b], lr=0.1, amsgrad=True)
    updates = opt.minimize(loss)
    expected = {w, b, opt.step_count}
    for state in opt.state.values():
        expected.update(state.values())
    assert set(updates) == expected
    assert set(opt.state[w]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    step = gc.compile([x], [loss], updates=updates)
    assert "update %W" in str(step.graph)


def test_unused_parameter_is_left_alone():
    w, b, x, loss = graphc_problem()
    spare = gc.Variable(np.ones(5, np.float32), name="spare")
    opt = optim.SGD([w, b, spare], lr=0.1, momentum=0.9)
    updates = opt.minimize(loss)
    assert spare not in updates and opt.state[spare]["momentum_buffer"] not in updates
    gc.compile([x], [loss], updates=updates)(X)
    np.testing.assert_array_equal(spare.numpy(), np.ones(5))


def test_two_steps_share_the_optimizer_state():
    w, b, x, loss = graphc_problem()
    opt = optim.Adam([w, b], lr=0.05)
    first = gc.compile([x], [loss], updates=opt.minimize(loss))
    second = gc.compile([x], [loss], updates=opt.minimize(loss), backend="llvm")
    first(X)
    second(X)
    assert int(opt.step_count.value) == 2
    w2, b2, x2, loss2 = graphc_problem()
    opt2 = optim.Adam([w2, b2], lr=0.05)
    one = gc.compile([x2], [loss2], updates=opt2.minimize(loss2))
    one(X)
    one(X)
    np.testing.assert_allclose(w.numpy(), w2.numpy(), rtol=1e-6)


def test_state_dict_round_trip_resumes_training():
    w, b, x, loss = graphc_problem()
    opt = optim.AdamW([w, b], lr=0.05)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    for _ in range(3):
        step(X)
    saved_params, saved_opt = (w.numpy(), b.numpy()), opt.state_dict()
    assert set(saved_opt) == {
        "step",
        "param_groups.0.lr",
        "state.0.exp_avg",
        "state.0.exp_avg_sq",
        "state.1.exp_avg",
        "state.1.exp_avg_sq",
    }
    continued = [float(step(X)) for _ in range(2)]

    w2, b2, x2, loss2 = graphc_problem()
    opt2 = optim.AdamW([w2, b2], lr=0.05)
    step2 = gc.compile([x2], [loss2], updates=opt2.minimize(loss2))
    w2.assign(saved_params[0])
    b2.assign(saved_params[1])
    opt2.load_state_dict(saved_opt)
    resumed = [float(step2(X)) for _ in range(2)]
    np.testing.assert_allclose(resumed, continued, rtol=1e-6)
    np.testing.assert_allclose(w2.numpy(), w.numpy(), rtol=1e-6)


def test_load_state_dict_mismatch_changes_nothing():
    w, b, x, loss = graphc_problem()
    opt = optim.Adam([w, b], lr=0.05)
    gc.compile([x], [loss], updates=opt.minimize(loss))(X)
    before = opt.state_dict()
    bad = dict(before)
    bad["step"] = np.int64(99)
    bad["state.0.exp_avg"] = np.zeros((3, 4), np.float32)
    del bad["state.1.exp_avg_sq"]
    bad["state.7.momentum_buffer"] = np.zeros(3, np.float32)
    with pytest.raises(InputError) as error:
        opt.load_state_dict(bad)
    message = str(error.value)
    assert "state.0.exp_avg: shape [3, 4]" in message
    assert "missing keys: state.1.exp_avg_sq" in message
    assert "unexpected keys: state.7.momentum_buffer" in message
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_constructor_errors():
    w = gc.Variable(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="only optimize Variables"):
        optim.SGD([gc.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(DTypeError, match="floating-point"):
        optim.SGD([gc.Variable(np.zeros(3, np.int64))], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid learning rate"):
        optim.Adam([w], lr=-1.0)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="unknown option"):
        optim.SGD([{"params": [w], "betas": (0.9, 0.99)}], lr=0.1)


def test_minimize_errors():
    w, b, x, loss = graphc_problem()
    opt = optim.SGD([w, b], lr=0.1)
    with pytest.raises(ShapeError, match="must be a scalar"):
        opt.minimize(x @ w)
    with pytest.raises(GraphError, match="none of the optimizer's trainable parameters"):
        opt.minimize(x.sum())
    with pytest.raises(ValueError, match="accumulate must be a positive int"):
        opt.minimize(loss, accumulate=0)
    opt.minimize(loss, accumulate=2)
    with pytest.raises(ValueError, match="already accumulates over 2"):
        opt.minimize(loss, accumulate=3)


def test_repr_lists_the_groups():
    opt = optim.SGD([gc.Variable(np.zeros(3, np.float32))], lr=0.25, momentum=0.5)
    text = repr(opt)
    assert text.startswith("SGD (") and "lr: 0.25" in text and "momentum: 0.5" in text
    assert math.isclose(opt.param_groups[0]["lr"], 0.25)


def test_minimize_includes_the_modules_state_updates():
    from graphc import nn

    norm, linear = nn.BatchNorm1d(3), nn.Linear(3, 1)
    x = gc.input("x", ("B", 3))
    loss = linear(norm(x)).square().mean()
    opt = optim.SGD([*norm.parameters(), *linear.parameters()], lr=0.1)
    updates = opt.minimize(loss, accumulate=2)
    buffers = dict(norm.named_buffers())
    assert set(buffers.values()) <= set(updates)
    step = gc.compile([x], [loss], updates=updates)
    batch = RNG.standard_normal((8, 3)).astype(np.float32)
    step(batch)
    # Running statistics move on every call, as in PyTorch's forward pass; the parameters
    # only on every second call.
    assert int(buffers["num_batches_tracked"].value) == 1
    np.testing.assert_allclose(buffers["running_mean"].value, 0.1 * batch.mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(norm.weight.value, np.ones(3))
    step(batch)
    assert int(buffers["num_batches_tracked"].value) == 2
    assert not np.array_equal(norm.weight.value, np.ones(3))


def test_a_frozen_parameter_list_is_the_users_choice():
    from graphc import nn

    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    x = gc.input("x", ("B", 4))
    loss = model(x).square().mean()
    head = model[2]
    opt = optim.SGD(head.parameters(), lr=0.5)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    first, last = model[0].weight.numpy(), head.weight.numpy()
    step(X)
    np.testing.assert_array_equal(model[0].weight.numpy(), first)
    assert not np.array_equal(head.weight.numpy(), last)


def test_frozen_parameters_are_skipped_like_torch():
    from graphc import nn

    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    x = gc.input("x", ("B", 4))
    loss = model(x).square().mean()
    opt = optim.Adam(model.parameters(), lr=0.1)
    updates = opt.minimize(loss)
    assert model[0].weight not in updates and model[0].bias in updates
    frozen = model[0].weight.numpy()
    gc.compile([x], [loss], updates=updates)(X)
    np.testing.assert_array_equal(model[0].weight.numpy(), frozen)


def test_variable_keeps_a_numpy_scalars_dtype():
    # A numpy scalar keeps its dtype, like gc.tensor's; only Python floats become float32.
    assert gc.tensor(np.float64(0.5)).dtype == gc.float64
    assert gc.Variable(np.float64(0.5)).dtype == gc.float64


@needs_torch
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_float64_parameters_match_torch_to_double_precision(name):
    options = {"lr": 0.05, "momentum": 0.9} if name == "SGD" else {"lr": 0.05}
    start = RNG.standard_normal((4, 3))
    data = RNG.standard_normal((6, 4))

    w = gc.Variable(start, name="w")
    x = gc.input("x", ("B", 4), gc.float64)
    loss = (x @ w).tanh().square().mean()
    opt = getattr(optim, name)([w], **options)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    ours = [float(step(data)) for _ in range(STEPS)]

    tw = torch.tensor(start, requires_grad=True)
    topt = getattr(torch.optim, name)([tw], **options)
    theirs = []
    for _ in range(STEPS):
        topt.zero_grad()
        tloss = (torch.tensor(data) @ tw).tanh().square().mean()
        tloss.backward()
        topt.step()
        theirs.append(tloss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-12, atol=1e-14)
