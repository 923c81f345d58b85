"""Gradient clipping (nn.utils.clip_grad_norm and minimize(max_grad_norm=...)) and
nn.Embedding.from_pretrained, against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.errors import GraphError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _mlp(lib):
    return lib.Sequential(lib.Linear(4, 6), lib.Tanh(), lib.Linear(6, 3))


def _load(model, reference):
    model.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.05, 100.0], ids=["clipped", "unchanged"])
def test_clip_grad_norm_matches_torch(backend, rng, norm_type, max_norm):
    torch.manual_seed(0)
    reference = _mlp(torch.nn)
    model = _mlp(nn)
    _load(model, reference)
    x_array = rng.standard_normal((5, 4)).astype(np.float32)
    params = list(model.parameters())
    grads = gc.grad((model(gc.tensor(x_array)) ** 2).sum(), params)
    clipped, total = nn.utils.clip_grad_norm([None, *grads], max_norm, norm_type)
    assert clipped[0] is None
    got = gc.compile([], [total, *clipped[1:]], backend=backend)()

    (reference(torch.from_numpy(x_array)) ** 2).sum().backward()
    want_total = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm, norm_type)
    np.testing.assert_allclose(got[0], want_total.numpy(), rtol=1e-5)
    for value, param in zip(got[1:], reference.parameters(), strict=True):
        np.testing.assert_allclose(value, param.grad.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(GraphError, match="no gradient"):
        nn.utils.clip_grad_norm([None], 1.0)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_minimize_with_max_grad_norm_trains_as_torch(backend, accumulate):
    data = np.random.default_rng(2)
    batches = [
        (data.standard_normal((8, 4)).astype(np.float32), data.integers(0, 3, 8)) for _ in range(4)
    ]
    torch.manual_seed(1)
    reference = _mlp(torch.nn)
    model = _mlp(nn)
    _load(model, reference)
    t_opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    want = []
    for step in range(20):
        x, y = batches[step % len(batches)]
        loss = torch.nn.functional.cross_entropy(
            reference(torch.from_numpy(x)), torch.from_numpy(y)
        )
        loss.backward()
        want.append(loss.item())
        if (step + 1) % accumulate == 0:
            norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.1)
            assert norm > 0.1  # the clipping is active
            t_opt.step()
            t_opt.zero_grad()

    x = gc.input("x", ("B", 4))
    y = gc.input("y", ("B",), gc.int64)
    loss = nn.functional.cross_entropy(model(x), y)
    opt = optim.Adam(model.parameters(), lr=0.05)
    updates = opt.minimize(loss, accumulate=accumulate, max_grad_norm=0.1)
    train = gc.compile([x, y], [loss], updates=updates, backend=backend)
    losses = [float(train(*batches[step % len(batches)])) for step in range(20)]
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    for name, value in reference.state_dict().items():
        expected = value.detach().numpy()
        assert np.abs(model.state_dict()[name] - expected).max() <= 1e-4 * np.abs(expected).max()
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.minimize(loss, max_grad_norm=-1.0)


@pytest.mark.parametrize("freeze", [True, False])
def test_embedding_from_pretrained_matches_torch(backend, rng, freeze):
    table = rng.standard_normal((6, 3))
    reference = torch.nn.Embedding.from_pretrained(
        torch.tensor(table, dtype=torch.float32), freeze=freeze, padding_idx=1
    )
    model = nn.Embedding.from_pretrained(gc.tensor(table.astype(np.float32)), freeze, 1)
    assert model.weight.dtype == gc.float32 and model.padding_idx == 1
    np.testing.assert_array_equal(model.weight.numpy()[1], table[1].astype(np.float32))
    head = nn.Linear(3, 1)
    t_head = torch.nn.Linear(3, 1)
    _load(head, t_head)
    ids = np.array([[0, 1, 2], [1, 5, 4]])
    targets = rng.standard_normal((2, 3, 1)).astype(np.float32)

    x = gc.input("ids", (2, 3), gc.int64)
    loss = ((head(model(x)) - targets) ** 2).mean()
    opt = optim.SGD([*model.parameters(), *head.parameters()], lr=0.5)
    train = gc.compile([x], [loss], updates=opt.minimize(loss), backend=backend)
    t_opt = torch.optim.SGD([*reference.parameters(), *t_head.parameters()], lr=0.5)
    for _ in range(3):
        got = float(train(ids))
        t_opt.zero_grad()
        t_loss = (t_head(reference(torch.from_numpy(ids))) - torch.from_numpy(targets)) ** 2
        t_loss.mean().backward()
        t_opt.step()
        np.testing.assert_allclose(got, t_loss.mean().item(), rtol=1e-5)
    np.testing.assert_allclose(model.weight.numpy(), reference.weight.detach().numpy(), rtol=1e-5)
    if freeze:
        np.testing.assert_array_equal(model.weight.numpy(), table.astype(np.float32))
    else:
        assert not np.array_equal(model.weight.numpy()[0], table[0].astype(np.float32))
        np.testing.assert_array_equal(model.weight.numpy()[1], table[1].astype(np.float32))


def test_from_pretrained_keeps_a_float64_table_and_checks_its_shape():
    table = np.arange(6.0).reshape(3, 2)
    model = nn.Embedding.from_pretrained(table)
    assert model.weight.dtype == gc.float64
    np.testing.assert_array_equal(model(gc.tensor([2, 0])).numpy(), table[[2, 0]])
    with pytest.raises(GraphError, match="2-d"):
        nn.Embedding.from_pretrained(np.zeros(3))
