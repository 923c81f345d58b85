"""graphc.nn's Module machinery: naming, containers, repr, state dicts and their errors,
train/eval, state updates (BatchNorm running statistics, Dropout steps), initialisation and
error messages."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
from conftest import BACKENDS

import graphc as gc
from graphc import nn
from graphc.errors import DTypeError, GraphError, InputError, ShapeError
from graphc.nn import functional as F

torch = pytest.importorskip("torch")
tnn = torch.nn

RNG = np.random.default_rng(7)


def normal(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), dtype=np.float32)


def to_torch(state: dict) -> dict:
    return {name: torch.from_numpy(np.array(value)) for name, value in state.items()}


def small_cnn(lib):
    """The same CNN in graphc.nn or torch.nn (lib is the nn module)."""
    return lib.Sequential(
        lib.Conv2d(1, 4, 3, padding=1),
        lib.BatchNorm2d(4),
        lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Flatten(),
        lib.Linear(4 * 3 * 3, 5),
    )


class GcMLP(nn.Module):
    """The tutorial's MLP, written as a user would."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.heads = nn.ModuleDict({"out": nn.Linear(sizes[-1], 2)})
        self.act = nn.Tanh()

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return self.heads["out"](x)


class TorchMLP(tnn.Module):
    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.layers = tnn.ModuleList(
            tnn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.heads = tnn.ModuleDict({"out": tnn.Linear(sizes[-1], 2)})
        self.act = tnn.Tanh()

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))
        return self.heads["out"](x)


# -- naming, containers, printing -----------------------------------------------------------
def test_repr_matches_torch():
    def build(lib):
        return lib.Sequential(
            small_cnn(lib),
            lib.BatchNorm1d(3, affine=False),
            lib.ConvTranspose2d(2, 3, 3, stride=2, output_padding=1, groups=1, bias=False),
            lib.Conv2d(2, 4, (3, 1), stride=2, padding=1, dilation=2),
            lib.AvgPool2d(2),
            lib.AdaptiveAvgPool2d(1),
            lib.Upsample(scale_factor=2, mode="bilinear"),
            lib.Upsample(size=(4, 4)),
            lib.LayerNorm([2, 3]),
            lib.Dropout(0.25),
            lib.GELU(approximate="tanh"),
            lib.LeakyReLU(0.2),
            lib.LeakyReLU(0.1, inplace=True),
            lib.ELU(),
            lib.ELU(alpha=0.5, inplace=True),
            lib.Softplus(),
            lib.Softplus(beta=2, threshold=10),
            lib.Hardtanh(),
            lib.Hardtanh(-2, 3, inplace=True),
            lib.Mish(),
            lib.SiLU(inplace=True),
            lib.ReLU(inplace=True),
            lib.Softmax(dim=-1),
            lib.LogSoftmax(dim=1),
            lib.Sigmoid(),
            lib.Tanh(),
            lib.Embedding(10, 3, padding_idx=0),
            lib.ModuleList([lib.ReLU(), lib.ReLU(), lib.Identity()]),
            lib.ModuleDict({"a": lib.ReLU()}),
            lib.CrossEntropyLoss(label_smoothing=0.1),
            lib.BCEWithLogitsLoss(),
            lib.MSELoss(),
        )

    assert repr(build(nn)) == repr(build(tnn))
    ours, theirs = repr(GcMLP([3, 4, 4])), repr(TorchMLP([3, 4, 4]))
    assert ours.replace("GcMLP", "MLP") == theirs.replace("TorchMLP", "MLP")


def test_names_shapes_and_dtypes_match_torch():
    gc_model, torch_model = small_cnn(nn), small_cnn(tnn)
    ours = [(n, p.shape) for n, p in gc_model.named_parameters()]
    theirs = [(n, tuple(p.shape)) for n, p in torch_model.named_parameters()]
    assert ours == theirs
    ours_state = gc_model.state_dict()
    theirs_state = torch_model.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name, value in ours_state.items():
        assert value.shape == tuple(theirs_state[name].shape), name
        assert value.dtype == theirs_state[name].numpy().dtype, name
    # Both directions load strictly.
    torch_model.load_state_dict(to_torch(ours_state))
    gc_model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
    mlp = GcMLP([3, 4, 4])
    assert list(mlp.state_dict()) == list(TorchMLP([3, 4, 4]).state_dict())


def test_module_tree_and_containers():
    model = small_cnn(nn)
    assert len(model) == 6 and isinstance(model[0], nn.Conv2d) and model[-1] is model[5]
    assert [type(m).__name__ for m in model.children()][:2] == ["Conv2d", "BatchNorm2d"]
    assert [name for name, _ in model.named_modules()][:3] == ["", "0", "1"]
    assert len(list(model.modules())) == 7
    head = model[4:]
    assert isinstance(head, nn.Sequential) and [*head._modules] == ["4", "5"]
    assert model.get_submodule("5") is model[5]
    model.append(nn.Sigmoid())
    assert list(model._modules)[-1] == "6"

    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.ReLU()).extend([nn.Linear(2, 3)])
    layers.insert(1, nn.Tanh())
    assert [type(m).__name__ for m in layers] == ["Linear", "Tanh", "ReLU", "Linear"]
    assert list(layers._modules) == ["0", "1", "2", "3"]
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 3
    with pytest.raises(GraphError, match="ModuleList has no forward"):
        layers(gc.zeros(2))

    heads = nn.ModuleDict({"a": nn.Linear(2, 2)})
    heads["b"] = nn.Linear(2, 1)
    assert list(heads) == ["a", "b"] and "b" in heads and len(heads) == 2
    assert [n for n, _ in heads.named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]

    # A shared layer's parameters are listed once.
    shared = nn.Linear(2, 2)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(twice.parameters())) == 2


def test_parameters_and_buffers_are_variables():
    bn = nn.BatchNorm2d(3)
    assert all(isinstance(p, nn.Parameter) and isinstance(p, gc.Variable) for p in bn.parameters())
    assert all(p.requires_grad and p.storage.trainable for p in bn.parameters())
    buffers = dict(bn.named_buffers())
    assert list(buffers) == ["running_mean", "running_var", "num_batches_tracked"]
    assert not any(b.storage.trainable for b in buffers.values())
    assert buffers["num_batches_tracked"].dtype == gc.int64

    drop = nn.Dropout()
    assert [n for n, _ in drop.named_buffers()] == ["step"]
    assert drop.state_dict() == OrderedDict()  # non-persistent, as torch has no such state

    # Every Variable of every layer has its own name (backends key buffers by it).
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.BatchNorm1d(2))
    names = [v.storage.name for v in [*model.parameters(), *model.buffers()]]
    assert len(set(names)) == len(names)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = gc.Variable(np.ones(3, np.float32))  # trainable: a parameter
            self.count = gc.Variable(np.int64(0), trainable=False)  # a buffer

    custom = Custom()
    assert [n for n, _ in custom.named_parameters()] == ["scale"]
    assert list(custom.state_dict()) == ["scale", "count"]
    custom.requires_grad_(False)
    assert not custom.scale.storage.trainable


def test_assigning_before_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(GraphError, match=r"super\(\).__init__\(\)"):
        Forgetful()


# -- state dicts ----------------------------------------------------------------------------
def test_state_dict_round_trip():
    gc.manual_seed(1)
    a = small_cnn(nn)
    gc.manual_seed(2)
    b = small_cnn(nn)
    state = a.state_dict()
    assert not np.array_equal(state["0.weight"], b.state_dict()["0.weight"])
    assert b.load_state_dict(state) == nn.IncompatibleKeys([], [])
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    state["0.weight"][...] = 0  # the state dict holds copies
    assert np.any(a[0].weight.value != 0)
    assert a.state_dict(keep_vars=True)["0.weight"] is a[0].weight


@pytest.mark.parametrize(
    "mutation, error, message",
    [
        ("rename", InputError, r"missing keys: '5.bias'.*unexpected keys: '5.b'"),
        ("extra", InputError, r"unexpected keys: 'extra.weight'"),
        ("shape", ShapeError, r"'5.weight': the model has \(5, 36\), the state dict \(36, 5\)"),
        ("dtype", DTypeError, r"'1.running_mean': the model holds float32, the state dict float64"),
        ("count_dtype", DTypeError, r"'1.num_batches_tracked'.*int64.*int32"),
        ("not_numbers", DTypeError, r"'0.bias' holds <U"),
    ],
)
def test_load_state_dict_errors_leave_the_model_unchanged(mutation, error, message):
    model = small_cnn(nn)
    before = model.state_dict()
    state = {k: v + 1 for k, v in before.items()}  # every value differs from the model's
    if mutation == "rename":
        state["5.b"] = state.pop("5.bias")
    elif mutation == "extra":
        state["extra.weight"] = np.zeros(2, np.float32)
    elif mutation == "shape":
        state["5.weight"] = state["5.weight"].T.copy()
    elif mutation == "dtype":
        state["1.running_mean"] = state["1.running_mean"].astype(np.float64)
    elif mutation == "count_dtype":
        state["1.num_batches_tracked"] = np.int32(3)
    else:
        state["0.bias"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(error, match=message) as info:
        model.load_state_dict(state)
    assert "test_nn_module.py:" in str(info.value)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_load_state_dict_not_strict():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    state = {"0.weight": np.ones((3, 2), np.float32), "2.weight": np.zeros(1, np.float32)}
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["2.weight"]
    assert "0.bias" in result.missing_keys and "1.running_var" in result.missing_keys
    np.testing.assert_array_equal(model[0].weight.value, np.ones((3, 2)))


# -- train / eval and state updates ------------------------------------------------------------
def test_train_and_eval_set_every_module():
    model = small_cnn(nn)
    assert all(m.training for m in model.modules())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_batchnorm_running_statistics_update_in_the_compiled_step(backend):
    """Train-mode BatchNorm records its running-statistic updates; a Function compiled with
    model.state_updates(y) applies them on every call, exactly as PyTorch's forward does.
    An eval Function compiled afterwards reads the same Variables."""
    gc_model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3, momentum=None))
    torch_model = tnn.Sequential(tnn.BatchNorm2d(3), tnn.BatchNorm2d(3, momentum=None))
    torch_model.load_state_dict(to_torch(gc_model.state_dict()))
    x = gc.input("x", ("B", 3, 2, 2))
    y = gc_model(x)
    updates = gc_model.state_updates(y)
    assert len(updates) == 6
    step = gc.compile([x], [y], updates=updates, backend=backend)
    for batch in (normal(4, 3, 2, 2) * 3 + 1, normal(2, 3, 2, 2) - 2):
        got = step(batch)
        want = torch_model(torch.from_numpy(batch)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for key, value in torch_model.state_dict().items():
        np.testing.assert_allclose(
            gc_model.state_dict()[key], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key
        )
    assert gc_model[0].num_batches_tracked.value == 2

    gc_model.eval()
    torch_model.eval()
    evaluate = gc.compile([x], [gc_model(x)], backend=backend)
    batch = normal(3, 3, 2, 2)
    np.testing.assert_allclose(
        evaluate(batch), torch_model(torch.from_numpy(batch)).detach().numpy(), atol=1e-5
    )
    assert gc_model.state_updates(gc_model(x)) == {}


def test_state_updates_belong_to_the_graph_that_uses_them():
    bn = nn.BatchNorm1d(2, momentum=0.5)
    x1, x2 = gc.input("x1", (4, 2)), gc.input("x2", (4, 2))
    y1 = bn(x1)
    y2 = bn(x2)
    only_first = bn.state_updates(y1)
    assert set(only_first) == {bn.running_mean, bn.running_var, bn.num_batches_tracked}
    # Built from x1 alone: compiling it with x1 as the only input works.
    gc.compile([x1], [y1], updates=only_first, backend="reference")(normal(4, 2))
    assert bn.num_batches_tracked.value == 1
    # nn.state_updates finds the same records without being told the model.
    assert set(nn.state_updates(y2)) == set(only_first)
    with pytest.raises(GraphError, match="needs the outputs"):
        nn.state_updates()
    # Without outputs every recorded call counts, composed in call order.
    both = bn.state_updates()
    assert both[bn.num_batches_tracked].eval({x1: normal(4, 2), x2: normal(4, 2)}) == 3
    bn.clear_state_updates()
    assert bn.state_updates() == {}


def test_two_calls_in_one_graph_compose_like_torch():
    gc_bn, torch_bn = nn.BatchNorm1d(2), tnn.BatchNorm1d(2)
    x = gc.input("x", (5, 2))
    y = gc_bn(gc_bn(x) * 2 + 1)
    step = gc.compile([x], [y], updates=gc_bn.state_updates(y), backend="reference")
    batch = normal(5, 2)
    np.testing.assert_allclose(
        step(batch), torch_bn(torch_bn(torch.from_numpy(batch)) * 2 + 1).detach(), atol=1e-5
    )
    for key, value in torch_bn.state_dict().items():
        np.testing.assert_allclose(gc_bn.state_dict()[key], value.numpy(), atol=1e-6)


def test_custom_module_state_update():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", gc.Variable(np.int64(0), trainable=False))
            self.register_buffer("total", gc.Variable(np.float32(0), trainable=False))

        def forward(self, x):
            y = x * 2
            self.add_state_update(self.calls, lambda current: current + 1, y)
            self.add_state_update(self.total, self.total + x.sum(), y)
            return y

    counter = Counter()
    x = gc.input("x", (3,))
    y = counter(x)
    step = gc.compile([x], [y], updates=counter.state_updates(y), backend="reference")
    step(np.ones(3, np.float32))
    step(np.ones(3, np.float32))
    assert counter.calls.value == 2 and counter.total.value == 6


def test_dropout_rate_fresh_masks_and_eval_identity(backend):
    p = 0.3
    drop = nn.Dropout(p)
    x = gc.input("x", (50, 80))
    y = drop(x)
    step = gc.compile([x], [y], updates=drop.state_updates(y), backend=backend)
    ones = np.ones((50, 80), np.float32)
    masks = []
    for _ in range(3):
        out = step(ones)
        dropped = out == 0
        # 4000 draws: the rate is within 4.5 standard deviations (0.032) of p.
        assert abs(dropped.mean() - p) < 0.032
        np.testing.assert_allclose(out[~dropped], 1 / (1 - p), rtol=1e-6)
        masks.append(dropped)
    assert drop.step.value == 3
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    # Without the updates a compiled Function draws the same mask every call.
    fixed = gc.compile([x], [drop(x)], backend=backend)
    np.testing.assert_array_equal(fixed(ones), fixed(ones))
    drop.eval()
    assert drop(x) is x and drop.state_updates(drop(x)) == {}
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(gc.compile([x], [F.dropout(x, 1.0)], backend=backend)(ones), 0)


def test_dropout_masks_agree_across_backends():
    drop = nn.Dropout(0.5)
    x = gc.input("x", (6, 7))
    y = drop(x)
    ones = np.ones((6, 7), np.float32)
    results = [gc.compile([x], [y], backend=b)(ones) for b in BACKENDS]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_symbolic_batch_model(backend):
    """One compiled Function runs any batch size, in train mode (with the BatchNorm updates)
    and in eval mode, matching PyTorch."""
    gc_model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    torch_model = tnn.Sequential(tnn.Linear(6, 4), tnn.BatchNorm1d(4), tnn.ReLU(), tnn.Linear(4, 3))
    torch_model.load_state_dict(to_torch(gc_model.state_dict()))
    x = gc.input("x", ("B", 6))
    y = gc_model(x)
    step = gc.compile([x], [y], updates=gc_model.state_updates(y), backend=backend)
    for batch in (normal(3, 6), normal(5, 6)):
        np.testing.assert_allclose(
            step(batch), torch_model(torch.from_numpy(batch)).detach().numpy(), atol=1e-5
        )
    np.testing.assert_allclose(
        gc_model[1].running_var.value, torch_model[1].running_var.numpy(), atol=1e-6
    )


# -- initialisation ------------------------------------------------------------------------------
def test_initialisation_follows_torch_and_the_seed():
    gc.manual_seed(3)
    first = nn.Linear(64, 32).state_dict()
    gc.manual_seed(3)
    again = nn.Linear(64, 32).state_dict()
    gc.manual_seed(4)
    other = nn.Linear(64, 32).state_dict()
    np.testing.assert_array_equal(first["weight"], again["weight"])
    assert not np.array_equal(first["weight"], other["weight"])

    def check_uniform(values, bound):
        assert np.abs(values).max() <= bound
        assert abs(values.std() - bound / math.sqrt(3)) < 0.1 * bound

    check_uniform(first["weight"], 1 / 8)
    check_uniform(nn.Linear(64, 300).bias.value, 1 / 8)
    conv = nn.Conv2d(4, 64, 3)
    check_uniform(conv.weight.value, 1 / 6)
    transposed = nn.ConvTranspose2d(64, 6, 3, groups=2)  # fan_in is dim 1: 3 * 9
    check_uniform(transposed.weight.value, 1 / math.sqrt(27))
    table = nn.Embedding(500, 8, padding_idx=3).weight.value
    assert np.all(table[3] == 0)
    assert abs(table.mean()) < 0.05 and abs(table.std() - 1) < 0.05
    bn = nn.BatchNorm2d(3)
    assert np.all(bn.weight.value == 1) and np.all(bn.bias.value == 0)
    assert np.all(bn.running_var.value == 1) and bn.num_batches_tracked.value == 0
    w = gc.Variable(np.zeros((40, 50), np.float32))
    nn.init.xavier_uniform_(w)
    assert np.abs(w.value).max() <= math.sqrt(6 / 90)
    nn.init.constant_(w, 0.5)
    assert np.all(w.value == 0.5)


# -- error messages ------------------------------------------------------------------------------
def test_linear_shape_error_names_shapes_and_line():
    layer = nn.Linear(4, 3)
    x = gc.zeros(2, 3, 5)
    with pytest.raises(ShapeError) as info:
        layer(x)
    message = str(info.value)
    assert "in_features=4" in message and "(2, 3, 5)" in message
    assert f"test_nn_module.py:{info.tb.tb_lineno}" in message


@pytest.mark.parametrize(
    "build, error, message",
    [
        (
            lambda: nn.Conv2d(3, 4, 3)(gc.zeros(1, 2, 5, 5)),
            ShapeError,
            r"\(N, 3, H, W\).*\(1, 2, 5, 5\)",
        ),
        (lambda: nn.BatchNorm2d(3)(gc.zeros(2, 4, 2, 2)), ShapeError, r"C=3.*\(2, 4, 2, 2\)"),
        (lambda: nn.BatchNorm1d(3)(gc.zeros(1, 3)), ShapeError, "more than 1 value per channel"),
        (lambda: nn.LayerNorm(4)(gc.zeros(2, 5)), ShapeError, r"\(4,\).*\(2, 5\)"),
        (
            lambda: nn.CrossEntropyLoss()(gc.zeros(4, 3), gc.zeros(3, dtype=gc.int64)),
            ShapeError,
            r"targets must have shape \(4,\).*got \(3,\)",
        ),
        (lambda: nn.MSELoss()(gc.zeros(4), gc.zeros(3)), ShapeError, r"\(3,\).*\(4,\)"),
        (lambda: nn.Embedding(4, 2)(gc.zeros(3)), DTypeError, "integer"),
        (lambda: nn.MSELoss(reduction="avg"), GraphError, "reduction"),
        (lambda: nn.MaxPool2d(2, return_indices=True), GraphError, "return_indices"),
        (lambda: nn.Conv2d(3, 4, 3, groups=2), GraphError, "divisible by groups"),
        (lambda: F.interpolate(gc.zeros(1, 1, 2, 2), mode="bicubic", size=3), GraphError, "mode"),
    ],
)
def test_clear_errors(build, error, message):
    with pytest.raises(error, match=message) as info:
        build()
    assert "test_nn_module.py:" in str(info.value)


# -- a core behaviour nn relies on --------------------------------------------------------------
def test_variables_with_equal_names_stay_distinct(backend):
    """Two Variables with one name are two buffers (the LLVM backend once keyed its buffers
    by Variable name, and they silently shared one); nn names its Variables uniquely too."""
    a = gc.Variable(np.ones(3, np.float32), name="w")
    b = gc.Variable(np.full(3, 2, np.float32), name="w")
    x = gc.input("x", (3,))
    out = gc.compile([x], [x * a + b], backend=backend)(np.ones(3, np.float32))
    np.testing.assert_array_equal(out, [3, 3, 3])
