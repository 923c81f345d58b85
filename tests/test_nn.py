"""graphc.nn against PyTorch: every layer's and loss's forward pass, and the gradients of the
trainable layers, with weights copied through state dicts, on every backend.

All cases are built into one graph that is compiled once per backend (compiling is what
costs time on the LLVM backend); each test then checks its own outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.nn import functional as F

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
tnn = torch.nn
TF = torch.nn.functional

RNG = np.random.default_rng(20240607)


def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape) * scale, dtype=np.float32)


def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def to_torch(state: dict) -> dict:
    return {name: torch.from_numpy(np.array(value)) for name, value in state.items()}


def from_torch(module) -> dict:
    return {name: value.detach().numpy().copy() for name, value in module.state_dict().items()}


class GcFn(nn.Module):
    """A graphc module around a function, for testing the functional forms."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class TorchFn(tnn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def with_running_stats(gc_bn: nn.Module) -> nn.Module:
    """Give a BatchNorm non-trivial running statistics (and a batch count)."""
    c = gc_bn.num_features
    gc_bn.running_mean.assign(normal(c))
    gc_bn.running_var.assign(uniform(c, low=0.5, high=2.0))
    gc_bn.num_batches_tracked.assign(np.int64(7))
    gc_bn.weight.assign(uniform(c, low=0.5, high=1.5))
    gc_bn.bias.assign(normal(c))
    return gc_bn


@dataclass
class Case:
    """A graphc module and the PyTorch module it should equal, with inputs to feed both."""

    name: str
    build: Callable[[], tuple[nn.Module, object]]
    inputs: tuple[np.ndarray, ...]
    grad: bool = False  # also compare gradients w.r.t. parameters and float inputs
    train: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5
    gc_model: nn.Module | None = field(default=None, repr=False)
    torch_model: object = field(default=None, repr=False)


def labels(*shape: int, classes: int) -> np.ndarray:
    return RNG.integers(0, classes, shape).astype(np.int64)


IGNORED = labels(6, classes=5)
IGNORED[[1, 4]] = -100
SEGMENT_TARGETS = labels(2, 3, 2, classes=4)
SEGMENT_TARGETS[0, 1, 1] = 7
CLASS_WEIGHTS = uniform(5, low=0.5, high=2.0)

CASES = [
    # -- layers -----------------------------------------------------------------------
    Case("linear", lambda: (nn.Linear(5, 3), tnn.Linear(5, 3)), (normal(2, 4, 5),), grad=True),
    Case(
        "linear_no_bias",
        lambda: (nn.Linear(5, 3, bias=False), tnn.Linear(5, 3, bias=False)),
        (normal(4, 5),),
    ),
    Case(
        "conv_groups_stride",
        lambda: (
            nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
            tnn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
        ),
        (normal(2, 4, 7, 7),),
        grad=True,
    ),
    Case(
        "conv_dilation",
        lambda: (
            nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2),
            tnn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2),
        ),
        (normal(2, 3, 6, 7),),
        grad=True,
    ),
    Case(
        "conv_same_no_bias",
        lambda: (
            nn.Conv2d(2, 3, 4, padding="same", bias=False),
            tnn.Conv2d(2, 3, 4, padding="same", bias=False),
        ),
        (normal(1, 2, 5, 6),),
    ),
    Case(
        "conv_transpose",
        lambda: (
            nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
            tnn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        ),
        (normal(2, 4, 4, 5),),
        grad=True,
    ),
    Case(
        "conv_transpose_dilation",
        lambda: (
            nn.ConvTranspose2d(3, 2, 2, dilation=2, bias=False),
            tnn.ConvTranspose2d(3, 2, 2, dilation=2, bias=False),
        ),
        (normal(2, 3, 3, 4),),
    ),
    Case(
        "max_pool",
        lambda: (nn.MaxPool2d(3, stride=2, padding=1), tnn.MaxPool2d(3, stride=2, padding=1)),
        (normal(2, 3, 7, 6),),
        grad=True,
    ),
    Case("avg_pool", lambda: (nn.AvgPool2d(2), tnn.AvgPool2d(2)), (normal(2, 3, 6, 5),)),
    Case(
        "avg_pool_exclude_pad",
        lambda: (
            nn.AvgPool2d(3, 2, 1, count_include_pad=False),
            tnn.AvgPool2d(3, 2, 1, count_include_pad=False),
        ),
        (normal(2, 2, 5, 6),),
    ),
    Case(
        "adaptive_avg_pool_1",
        lambda: (nn.AdaptiveAvgPool2d(1), tnn.AdaptiveAvgPool2d(1)),
        (normal(2, 3, 5, 4),),
        grad=True,
    ),
    Case(
        "adaptive_avg_pool_2x3",
        lambda: (nn.AdaptiveAvgPool2d((2, 3)), tnn.AdaptiveAvgPool2d((2, 3))),
        (normal(2, 3, 4, 6),),
    ),
    Case(
        "batch_norm2d_train",
        lambda: (with_running_stats(nn.BatchNorm2d(3)), tnn.BatchNorm2d(3)),
        (normal(4, 3, 3, 2, scale=2.0) + 1,),
        grad=True,
    ),
    Case(
        "batch_norm2d_eval",
        lambda: (with_running_stats(nn.BatchNorm2d(3)), tnn.BatchNorm2d(3)),
        (normal(2, 3, 3, 2),),
        grad=True,
        train=False,
    ),
    Case(
        "batch_norm1d_train_2d",
        lambda: (with_running_stats(nn.BatchNorm1d(4)), tnn.BatchNorm1d(4)),
        (normal(5, 4),),
    ),
    Case(
        "batch_norm1d_train_3d_no_affine",
        lambda: (nn.BatchNorm1d(3, affine=False), tnn.BatchNorm1d(3, affine=False)),
        (normal(2, 3, 4),),
    ),
    Case(
        "batch_norm1d_eval",
        lambda: (with_running_stats(nn.BatchNorm1d(4)), tnn.BatchNorm1d(4)),
        (normal(5, 4),),
        train=False,
    ),
    Case(
        "layer_norm",
        lambda: (nn.LayerNorm((3, 4)), tnn.LayerNorm((3, 4))),
        (normal(2, 3, 4, scale=3.0),),
        grad=True,
    ),
    Case(
        "layer_norm_no_affine",
        lambda: (
            nn.LayerNorm(4, elementwise_affine=False),
            tnn.LayerNorm(4, elementwise_affine=False),
        ),
        (normal(3, 4),),
    ),
    Case(
        "embedding_padding",
        lambda: (nn.Embedding(6, 3, padding_idx=1), tnn.Embedding(6, 3, padding_idx=1)),
        (np.array([[0, 1, 5, 1], [2, 1, 1, 3]], dtype=np.int64),),
        grad=True,
    ),
    Case(
        "upsample_nearest",
        lambda: (nn.Upsample(scale_factor=2), tnn.Upsample(scale_factor=2)),
        (normal(2, 2, 3, 4),),
        grad=True,
    ),
    Case(
        "upsample_nearest_size",
        lambda: (nn.Upsample(size=(5, 7)), tnn.Upsample(size=(5, 7))),
        (normal(1, 2, 3, 4),),
    ),
    Case(
        "upsample_bilinear",
        lambda: (
            nn.Upsample(scale_factor=2, mode="bilinear"),
            tnn.Upsample(scale_factor=2, mode="bilinear"),
        ),
        (normal(2, 2, 3, 4),),
        grad=True,
    ),
    Case(
        "upsample_bilinear_3",
        lambda: (
            nn.Upsample(scale_factor=3, mode="bilinear"),
            tnn.Upsample(scale_factor=3, mode="bilinear"),
        ),
        (normal(1, 2, 3, 2),),
    ),
    Case(
        "upsample_bilinear_align_corners",
        lambda: (
            nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
            tnn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        ),
        (normal(1, 2, 3, 4),),
    ),
    Case("flatten", lambda: (nn.Flatten(), tnn.Flatten()), (normal(2, 3, 2, 2),)),
    Case("relu", lambda: (nn.ReLU(), tnn.ReLU()), (normal(3, 4),), grad=True),
    Case("sigmoid", lambda: (nn.Sigmoid(), tnn.Sigmoid()), (normal(3, 4, scale=5.0),)),
    Case("tanh", lambda: (nn.Tanh(), tnn.Tanh()), (normal(3, 4, scale=3.0),)),
    Case("gelu", lambda: (nn.GELU(), tnn.GELU()), (normal(3, 4, scale=3.0),), grad=True),
    Case(
        "gelu_tanh",
        lambda: (nn.GELU(approximate="tanh"), tnn.GELU(approximate="tanh")),
        (normal(3, 4, scale=3.0),),
    ),
    Case(
        "leaky_relu",
        lambda: (nn.LeakyReLU(0.2), tnn.LeakyReLU(0.2)),
        (normal(3, 4),),
        grad=True,
    ),
    Case("silu", lambda: (nn.SiLU(), tnn.SiLU()), (normal(3, 4, scale=5.0),), grad=True),
    Case("mish", lambda: (nn.Mish(), tnn.Mish()), (normal(3, 4, scale=10.0),), grad=True),
    Case("softplus", lambda: (nn.Softplus(), tnn.Softplus()), (normal(3, 4, scale=10.0),)),
    Case(
        "softplus_beta_threshold",
        lambda: (nn.Softplus(beta=0.5, threshold=3.0), tnn.Softplus(beta=0.5, threshold=3.0)),
        (normal(3, 4, scale=10.0),),
        grad=True,
    ),
    Case("elu", lambda: (nn.ELU(), tnn.ELU()), (normal(3, 4, scale=3.0),), grad=True),
    Case(
        "elu_alpha",
        lambda: (nn.ELU(alpha=0.3, inplace=True), tnn.ELU(alpha=0.3)),
        (normal(3, 4, scale=3.0),),
        grad=True,
    ),
    Case("hardtanh", lambda: (nn.Hardtanh(), tnn.Hardtanh()), (normal(3, 4, scale=2.0),)),
    Case(
        "hardtanh_bounds",
        lambda: (nn.Hardtanh(-0.5, 1.5), tnn.Hardtanh(-0.5, 1.5)),
        (normal(3, 4, scale=2.0),),
        grad=True,
    ),
    Case(
        "leaky_relu_default",
        lambda: (nn.LeakyReLU(), tnn.LeakyReLU()),
        (normal(3, 4),),
        grad=True,
    ),
    Case(
        "gelu_tanh_grad",
        lambda: (nn.GELU("tanh"), tnn.GELU("tanh")),
        (normal(3, 4, scale=3.0),),
        grad=True,
    ),
    Case(
        "softmax",
        lambda: (nn.Softmax(dim=1), tnn.Softmax(dim=1)),
        (normal(3, 4, 2, scale=10.0),),
        grad=True,
    ),
    Case(
        "log_softmax",
        lambda: (nn.LogSoftmax(dim=-1), tnn.LogSoftmax(dim=-1)),
        (normal(3, 5, scale=100.0),),
    ),
    Case(
        "mlp",
        lambda: (
            nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid()),
            tnn.Sequential(tnn.Linear(6, 8), tnn.Tanh(), tnn.Linear(8, 3), tnn.Sigmoid()),
        ),
        (normal(4, 6),),
        grad=True,
    ),
    # -- functional forms -----------------------------------------------------------------
    Case(
        "F.pad",
        lambda: (
            GcFn(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5)),
            TorchFn(lambda x: TF.pad(x, (1, 2, 0, 1), value=0.5)),
        ),
        (normal(2, 3, 4),),
    ),
    Case(
        "F.interpolate_linear",
        lambda: (
            GcFn(lambda x: F.interpolate(x, scale_factor=2, mode="linear")),
            TorchFn(lambda x: TF.interpolate(x, scale_factor=2, mode="linear")),
        ),
        (normal(2, 3, 4),),
    ),
    Case(
        "F.batch_norm_running",
        lambda: (
            GcFn(lambda x, m, v: F.batch_norm(x, m, v, eps=1e-3)),
            TorchFn(lambda x, m, v: TF.batch_norm(x, m, v, eps=1e-3)),
        ),
        (normal(3, 2, 4), normal(2), uniform(2, low=0.5, high=1.5)),
    ),
    Case(
        "F.conv2d_unbatched",
        lambda: (
            GcFn(lambda x, w: F.conv2d(x, w, padding=1)),
            TorchFn(lambda x, w: TF.conv2d(x, w, padding=1)),
        ),
        (normal(2, 4, 4), normal(3, 2, 3, 3)),
    ),
    # -- losses -------------------------------------------------------------------------
    Case(
        "cross_entropy",
        lambda: (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()),
        (normal(6, 5, scale=3.0), labels(6, classes=5)),
        grad=True,
    ),
    Case(
        "cross_entropy_ignore_smoothing",
        lambda: (
            nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.2),
            tnn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.2),
        ),
        (normal(6, 5, scale=3.0), IGNORED),
        grad=True,
    ),
    Case(
        "cross_entropy_weighted_smoothing",
        lambda: (
            nn.CrossEntropyLoss(weight=CLASS_WEIGHTS, label_smoothing=0.1),
            tnn.CrossEntropyLoss(weight=torch.from_numpy(CLASS_WEIGHTS), label_smoothing=0.1),
        ),
        (normal(6, 5), IGNORED),
        grad=True,
    ),
    Case(
        "cross_entropy_sum",
        lambda: (
            nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.3),
            tnn.CrossEntropyLoss(reduction="sum", label_smoothing=0.3),
        ),
        (normal(6, 5), IGNORED),
    ),
    Case(
        "cross_entropy_none_segments",
        lambda: (
            nn.CrossEntropyLoss(reduction="none", ignore_index=7),
            tnn.CrossEntropyLoss(reduction="none", ignore_index=7),
        ),
        (normal(2, 4, 3, 2), SEGMENT_TARGETS),
    ),
    Case(
        "cross_entropy_large_logits",
        lambda: (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()),
        (normal(6, 5, scale=1e4), labels(6, classes=5)),
        grad=True,
    ),
    Case(
        "cross_entropy_probabilities",
        lambda: (
            nn.CrossEntropyLoss(label_smoothing=0.1),
            tnn.CrossEntropyLoss(label_smoothing=0.1),
        ),
        (normal(4, 3), np.full((4, 3), 1 / 3, np.float32)),
    ),
    Case(
        "nll_loss_weighted",
        lambda: (
            nn.NLLLoss(weight=CLASS_WEIGHTS),
            tnn.NLLLoss(weight=torch.from_numpy(CLASS_WEIGHTS)),
        ),
        (np.log(uniform(6, 5, low=0.05)), IGNORED),
        grad=True,
    ),
    Case(
        "bce",
        lambda: (nn.BCELoss(), tnn.BCELoss()),
        (uniform(3, 4, low=0.02, high=0.98), uniform(3, 4)),
        grad=True,
    ),
    Case(
        "bce_saturated",
        lambda: (nn.BCELoss(reduction="none"), tnn.BCELoss(reduction="none")),
        (np.array([0.0, 1.0, 0.5, 1e-30], np.float32), np.array([1.0, 0.0, 1.0, 1.0], np.float32)),
    ),
    Case(
        "bce_with_logits",
        lambda: (
            nn.BCEWithLogitsLoss(pos_weight=np.array([0.5, 2.0, 1.0], np.float32)),
            tnn.BCEWithLogitsLoss(pos_weight=torch.tensor([0.5, 2.0, 1.0])),
        ),
        (normal(4, 3, scale=4.0), uniform(4, 3)),
        grad=True,
    ),
    Case(
        "bce_with_logits_large",
        lambda: (nn.BCEWithLogitsLoss(reduction="none"), tnn.BCEWithLogitsLoss(reduction="none")),
        (
            np.array([-200.0, -30.0, 0.0, 30.0, 200.0], np.float32),
            np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32),
        ),
        grad=True,
    ),
    Case(
        "mse",
        lambda: (nn.MSELoss(), tnn.MSELoss()),
        (normal(3, 4), normal(3, 4)),
        grad=True,
    ),
    Case(
        "l1_sum",
        lambda: (nn.L1Loss(reduction="sum"), tnn.L1Loss(reduction="sum")),
        (normal(3, 4), normal(3, 4)),
        grad=True,
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}
GRAD_CASES = [case.name for case in CASES if case.grad]


@dataclass
class Expected:
    """PyTorch's results for one case, and the graphc tensors that should equal them."""

    outputs: list  # graphc tensors: the forward value, then one gradient per wrt
    names: list[str]  # what each output is: "forward", a parameter name or "input<i>"
    values: list[np.ndarray]  # PyTorch's value of each


def _input(case: Case, position: int, array: np.ndarray) -> gc.Tensor:
    dtype = gc.int64 if array.dtype == np.int64 else gc.float32
    return gc.input(f"{case.name.replace('.', '_')}_{position}", array.shape, dtype)


def _prepare(case: Case) -> tuple[list[gc.Tensor], Expected]:
    gc.manual_seed(len(case.name))
    gc_model, torch_model = case.build()
    # Our initial values go to PyTorch through the state dict (strict: same names and shapes).
    torch_model.load_state_dict(to_torch(gc_model.state_dict()))
    gc_model.train(case.train)
    torch_model.train(case.train)
    case.gc_model, case.torch_model = gc_model, torch_model

    inputs = [_input(case, i, a) for i, a in enumerate(case.inputs)]
    t_inputs = [torch.from_numpy(a.copy()) for a in case.inputs]
    float_positions = [i for i, a in enumerate(case.inputs) if a.dtype == np.float32]
    if case.grad:
        for i in float_positions:
            t_inputs[i].requires_grad_(True)
    y = gc_model(*inputs)
    t_y = torch_model(*t_inputs)
    outputs, names, values = [y], ["forward"], [t_y.detach().numpy()]
    if case.grad:
        weights = normal(*t_y.shape)
        params = dict(gc_model.named_parameters())
        t_params = dict(torch_model.named_parameters())
        wrt = [params[n] for n in params] + [inputs[i] for i in float_positions]
        t_wrt = [t_params[n] for n in params] + [t_inputs[i] for i in float_positions]
        loss = (y * gc.tensor(weights)).sum()
        t_loss = (t_y * torch.from_numpy(weights)).sum()
        outputs += gc.grad(loss, wrt)
        values += [g.numpy() for g in torch.autograd.grad(t_loss, t_wrt)]
        names += list(params) + [f"input{i}" for i in float_positions]
    return inputs, Expected(outputs, names, values)


@pytest.fixture(scope="module")
def prepared() -> dict[str, tuple[list[gc.Tensor], Expected]]:
    return {case.name: _prepare(case) for case in CASES}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, list[np.ndarray]]]:
    """The results of each backend's run, filled in by the first test that needs them."""
    return {}


@pytest.fixture
def results(prepared, runs, backend) -> dict[str, list[np.ndarray]]:
    """Every case's graphc outputs on this backend, from one compiled Function."""
    if backend not in runs:
        inputs = [t for name in prepared for t in prepared[name][0]]
        outputs = [t for name in prepared for t in prepared[name][1].outputs]
        function = gc.compile(inputs, outputs, backend=backend)
        feeds = [a for case in CASES for a in case.inputs]
        values = iter(function(*feeds))
        runs[backend] = {
            name: [next(values) for _ in expected.outputs]
            for name, (_, expected) in prepared.items()
        }
    return runs[backend]


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_forward_matches_torch(name, prepared, results):
    case, expected = CASES_BY_NAME[name], prepared[name][1]
    got = results[name][0]
    assert got.shape == expected.values[0].shape
    np.testing.assert_allclose(got, expected.values[0], rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_match_torch(name, prepared, results):
    case, expected = CASES_BY_NAME[name], prepared[name][1]
    for label, got, want in zip(
        expected.names[1:], results[name][1:], expected.values[1:], strict=True
    ):
        assert np.isfinite(got).all(), label
        np.testing.assert_allclose(
            got, want, rtol=case.rtol, atol=case.atol, err_msg=f"gradient of {label}"
        )


def test_embedding_padding_row_gets_no_gradient(prepared, results):
    names = prepared["embedding_padding"][1].names
    weight_grad = results["embedding_padding"][names.index("weight")]
    assert np.all(weight_grad[1] == 0) and np.any(weight_grad[[0, 2, 3, 5]] != 0)


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_torch_state_dict_loads_into_graphc(name, prepared):
    """A PyTorch state dict converted with .numpy() loads directly, and the model then
    computes what PyTorch computes (reference backend)."""
    case = CASES_BY_NAME[name]
    torch_model = case.torch_model
    with torch.no_grad():
        for param in torch_model.parameters():
            param.add_(torch.linspace(-0.5, 0.5, param.numel()).reshape(param.shape))
    state = from_torch(torch_model)
    gc.manual_seed(99)
    gc_model, _ = case.build()
    gc_model.load_state_dict(state)
    for key, value in gc_model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
        assert value.dtype == state[key].dtype
    gc_model.train(case.train)
    inputs = [_input(case, i, a) for i, a in enumerate(case.inputs)]
    got = gc.compile(inputs, [gc_model(*inputs)], backend="reference")(*case.inputs)
    with torch.no_grad():
        want = torch_model(*[torch.from_numpy(a.copy()) for a in case.inputs]).numpy()
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
