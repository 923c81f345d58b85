"""graphc.onnx: models exported by PyTorch load and compute what PyTorch computes, graphc
graphs exported to ONNX compute in onnxruntime what graphc computes, imported weights train,
and what graphc cannot represent is refused by name.

PyTorch's models are exported with its TorchScript-based exporter (`dynamo=False`): the
torch.export-based one needs the onnxscript package, which the test extra does not install.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import graphc as gc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc import nn, optim  # noqa: E402
from graphc.onnx import OnnxExportError, OnnxImportError  # noqa: E402


def torch_to_onnx(module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool) -> bytes:
    """Return the ONNX bytes of an eval-mode module, with a symbolic `batch` dim if asked."""
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None,
            dynamo=False,
        )
    return buffer.getvalue()


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(20, 32),
        torch.nn.GELU(),
        torch.nn.Linear(32, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 4),
        torch.nn.LogSoftmax(dim=1),
    )


def _cnn() -> torch.nn.Module:
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )
    # Non-trivial running statistics, so eval mode's normalisation is exercised.
    with torch.no_grad():
        for layer in cnn:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    return cnn


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(
            d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


ROUND_TRIPS = {
    "mlp": (_mlp, (20,)),
    "cnn_batchnorm": (_cnn, (3, 16, 16)),
    "transformer_encoder": (_Encoder, (6, 16)),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_pytorch_models_load_with_a_symbolic_batch_and_match_pytorch(name, backend):
    torch.manual_seed(0)
    build, shape = ROUND_TRIPS[name]
    module = build()
    data = onnx.load_from_string(torch_to_onnx(module, torch.randn(2, *shape), True))
    imported = graphc.onnx.load(data)
    (x,) = imported.inputs
    assert x.shape[0] == gc.Sym.named("batch") and x.shape[1:] == shape
    predict = gc.compile(imported.inputs, imported.outputs, backend=backend)
    for batch in (1, 5):
        sample = torch.randn(batch, *shape)
        with torch.no_grad():
            want = module(sample).numpy()
        np.testing.assert_allclose(predict(sample.numpy()), want, rtol=1e-5, atol=1e-6)


class _Recurrent(torch.nn.Module):
    """A recurrent layer whose outputs are its output and final states, as one tuple."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output, states = self.layer(x)
        return (output, *(states if isinstance(states, tuple) else (states,)))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_pytorch_recurrent_layers_load_with_a_symbolic_length_and_batch(kind, backend):
    """A bidirectional 2-layer LSTM or GRU becomes ONNX LSTM/GRU nodes (ONNX's gate order);
    one compiled Function matches PyTorch at two sequence lengths and batches."""
    torch.manual_seed(0)
    module = _Recurrent(getattr(torch.nn, kind)(5, 4, num_layers=2, bidirectional=True)).eval()
    names = ["y", "h_n", "c_n"][: 3 if kind == "LSTM" else 2]
    dynamic = {"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"}}
    dynamic.update({name: {1: "batch"} for name in names[1:]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.randn(3, 2, 5),),
            buffer,
            input_names=["x"],
            output_names=names,
            dynamic_axes=dynamic,
            dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    assert kind in {node.op_type for node in model.graph.node}
    imported = graphc.onnx.load(model)
    assert imported.inputs[0].shape == (gc.Sym.named("seq"), gc.Sym.named("batch"), 5)
    predict = imported.compile(backend=backend)
    for length, batch in ((3, 2), (7, 1)):
        sample = torch.randn(length, batch, 5)
        with torch.no_grad():
            want = module(sample)
        for got, expected in zip(predict(sample.numpy()), want, strict=True):
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_imported_models_export_back_and_onnxruntime_matches_graphc(name, tmp_path):
    torch.manual_seed(1)
    build, shape = ROUND_TRIPS[name]
    imported = graphc.onnx.load(
        onnx.load_from_string(torch_to_onnx(build(), torch.randn(2, *shape), True))
    )
    predict = imported.compile()
    path = tmp_path / "model.onnx"
    graphc.onnx.export(predict, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [v.name for v in model.graph.output] == ["y"]
    sample = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    (got,) = run_onnxruntime(model, {"x": sample})
    np.testing.assert_allclose(got, predict(sample), rtol=1e-5, atol=1e-6)


def _graphc_models() -> dict:
    """Graphs of many graphc ops, with symbolic dims: name -> (inputs, outputs, feeds)."""
    gc.manual_seed(0)
    rng = np.random.default_rng(0)
    x = gc.input("x", ("B", 3, 9, 9))
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    # Stride 1 and no weight gradient: its windows are flat_im2col's runs of flattened rows.
    dilated = nn.Conv2d(3, 5, 3, padding=(1, 2), dilation=(1, 2))
    # 32 channels: the product reads the channels-last padded input's windows (window_matmul).
    wide = nn.Conv2d(3, 32, 3, padding=(2, 1), dilation=(2, 1))
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    pooled = gc.avg_pool2d(gc.max_pool2d(x, 3, 2, 1, ceil_mode=True), 2, 1, count_include_pad=False)
    images = {
        "x": rng.standard_normal((2, 3, 9, 9)).astype(np.float32),
    }
    tokens = gc.input("tokens", ("B", "T"), gc.int64)
    table = nn.Embedding(10, 6)
    h = table(tokens)
    words = {"tokens": rng.integers(0, 10, (3, 5)).astype(np.int64)}
    a = gc.input("a", ("N", 4), gc.int64)
    arithmetic = {"a": rng.integers(-20, 20, (3, 4)).astype(np.int64)}
    b = gc.tensor([3, -3, 7, -2])
    seq = gc.input("seq", ("B", "T", 8))
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    length = seq.shape[1]
    sequences = {"seq": rng.standard_normal((2, 5, 8)).astype(np.float32)}
    return {
        "causal_attention": (
            [seq],
            [layer(seq, is_causal=True), gc.tril(seq), gc.arange(1, length + 1) * 2],
            sequences,
        ),
        "conv_pool_transpose": (
            [x],
            [
                up(gc.relu(conv(x))),
                pooled,
                x.reshape(-1, 27 * 9).softmax(1),
                x[:, 1:, ::2, -3:],
                dilated(x),
                wide(x),
            ],
            images,
        ),
        "embedding_layer_norm": (
            [tokens],
            [
                nn.LayerNorm(6)(h).sum(1),
                h.transpose(1, 2).amax(-1),
                gc.cat([h, h * 2], 2).flatten(1),
            ],
            words,
        ),
        "integer_arithmetic": (
            [a],
            [a // b, a % b, (a * a).argmax(1), gc.where(a > 0, a, -a).prod(0), a.float().mean(0)],
            arithmetic,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["conv_pool_transpose", "embedding_layer_norm", "integer_arithmetic", "causal_attention"],
)
@pytest.mark.parametrize("source", ["tensors", "function"])
def test_graphc_graphs_run_in_onnxruntime_as_in_graphc(name, source, tmp_path):
    inputs, outputs, feeds = _graphc_models()[name]
    function = gc.compile(inputs, outputs)
    path = tmp_path / "graph.onnx"
    graphc.onnx.export(function if source == "function" else outputs, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    want = function(*feeds.values())
    got = run_onnxruntime(model, feeds)
    for value, expected in zip(got, want, strict=True):
        assert value.dtype == expected.dtype and value.shape == expected.shape
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_gradients_export_as_outputs_and_onnxruntime_computes_them():
    gc.manual_seed(0)
    tokens = gc.input("tokens", ("B", 5), gc.int64)
    labels = gc.input("labels", ("B",), gc.int64)
    table, head = nn.Embedding(12, 8), nn.Linear(40, 3)
    loss = nn.CrossEntropyLoss()(head(gc.tanh(table(tokens)).flatten(1)), labels)
    gradients = gc.grad(loss, [table.weight, head.weight])
    model = graphc.onnx.to_model([loss, *gradients])
    rng = np.random.default_rng(1)
    feeds = {
        "tokens": rng.integers(0, 12, (4, 5)).astype(np.int64),
        "labels": rng.integers(0, 3, 4).astype(np.int64),
    }
    want = gc.compile([tokens, labels], [loss, *gradients])(*feeds.values())
    for got, expected in zip(run_onnxruntime(model, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_shape_error_inside_a_converter_names_the_onnx_node():
    x, y = _info("x", [2, 3]), _info("y", [4])
    w = _info("w", [4, 5])
    with pytest.raises(OnnxImportError, match=r"ONNX MatMul node 'n1' .*matmul"):
        graphc.onnx.load(_single_node_model("MatMul", [x, w], [y]))


def test_an_imported_model_fine_tunes_and_saves(tmp_path):
    torch.manual_seed(0)
    module = _mlp()
    imported = graphc.onnx.load(
        onnx.load_from_string(torch_to_onnx(module, torch.randn(2, 20), True))
    )
    (x,) = imported.inputs
    labels = gc.input("labels", ("batch",), gc.int64)
    loss = nn.NLLLoss()(imported.outputs[0], labels)
    parameters = list(imported.variables.values())
    assert {p.name for p in parameters} == {n for n, _ in module.named_parameters()}
    step = gc.compile([x, labels], [loss], updates=optim.Adam(parameters, lr=1e-2).minimize(loss))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((32, 20)).astype(np.float32)
    target = (data[:, 0] > 0).astype(np.int64)
    losses = [float(step(data, target)) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]
    gc.save({name: v.numpy() for name, v in imported.variables.items()}, tmp_path / "tuned.npz")
    saved = gc.load(tmp_path / "tuned.npz")
    np.testing.assert_array_equal(saved["0.weight"], imported.variables["0.weight"].numpy())
    assert not np.array_equal(saved["0.weight"], module[0].weight.detach().numpy())


def _single_node_model(op_type: str, inputs, outputs, opset: int = 18, **attrs) -> onnx.ModelProto:
    node = onnx.helper.make_node(
        op_type, [i.name for i in inputs], [o.name for o in outputs], name="n1", **attrs
    )
    graph = onnx.helper.make_graph([node], "g", inputs, outputs)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def _info(name: str, shape, elem=onnx.TensorProto.FLOAT):
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def test_unsupported_ops_attributes_and_types_are_refused_by_name():
    x, y = _info("x", [2, 3]), _info("y", [2, 3])
    with pytest.raises(OnnxImportError, match=r"ONNX Det node 'n1' .*not supported"):
        graphc.onnx.load(_single_node_model("Det", [x], [y]))
    with pytest.raises(OnnxImportError, match=r"Gelu node 'n1' .*approximate='fast'"):
        graphc.onnx.load(_single_node_model("Gelu", [x], [y], approximate="fast"))
    with pytest.raises(OnnxImportError, match=r"Relu node 'n1' .*attribute\(s\) alpha"):
        graphc.onnx.load(_single_node_model("Relu", [x], [y], alpha=1.0))
    with pytest.raises(OnnxImportError, match="input 'h' has element type FLOAT16"):
        h = _info("h", [2], onnx.TensorProto.FLOAT16)
        graphc.onnx.load(
            _single_node_model("Relu", [h], [_info("o", [2], onnx.TensorProto.FLOAT16)])
        )
    with pytest.raises(OnnxImportError, match="opset 11"):
        graphc.onnx.load(_single_node_model("Relu", [x], [y], opset=11))
    with pytest.raises(OnnxImportError, match="dim 0 of input 'x' has neither a size nor a name"):
        graphc.onnx.load(_single_node_model("Relu", [_info("x", [None, 3])], [y]))
    pooled = _info("p", [2, 3, 1, 1, 1])
    with pytest.raises(OnnxImportError, match="MaxPool node 'n1' .*3-d spatial"):
        graphc.onnx.load(
            _single_node_model(
                "MaxPool", [_info("v", [2, 3, 2, 2, 2])], [pooled], kernel_shape=[2, 2, 2]
            )
        )


def test_recurrent_sequence_lens_shorter_than_the_sequence_are_refused():
    """graphc's scan runs every batch entry for the whole sequence, so per-entry lengths
    that differ from it are refused, naming them."""
    x, w, r = _info("x", [3, 2, 4]), _info("w", [1, 5, 4]), _info("r", [1, 5, 5])
    lengths = onnx.helper.make_tensor("lens", onnx.TensorProto.INT32, [2], [3, 2])
    node = onnx.helper.make_node(
        "RNN", ["x", "w", "r", "", "lens"], ["", "h"], name="n1", hidden_size=5
    )
    graph = onnx.helper.make_graph(
        [node], "g", [x, w, r], [_info("h", [1, 2, 5])], initializer=[lengths]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(OnnxImportError, match=r"RNN node 'n1' .*sequence_lens \[3, 2\]"):
        graphc.onnx.load(model)


def test_a_shape_computed_from_data_is_refused_naming_the_value():
    data, shape = _info("data", [2, 3]), _info("shape", [2], onnx.TensorProto.INT64)
    model = _single_node_model("Reshape", [data, shape], [_info("out", [3, 2])])
    with pytest.raises(
        graphc.onnx.OnnxStaticValueError, match="input 1 \\(shape, 'shape'\\)"
    ) as caught:
        graphc.onnx.load(model)
    assert caught.value.name == "shape"


def test_dynamic_dims_makes_a_fixed_batch_symbolic():
    module = _mlp()
    data = onnx.load_from_string(torch_to_onnx(module, torch.randn(2, 20), False))
    imported = graphc.onnx.load(data, dynamic_dims={"x": ("N", 20)})
    predict = imported.compile(backend="reference")
    sample = torch.randn(7, 20)
    with torch.no_grad():
        np.testing.assert_allclose(
            predict(sample.numpy()), module(sample).numpy(), rtol=1e-5, atol=1e-6
        )
    with pytest.raises(OnnxImportError, match="names no input"):
        graphc.onnx.load(data, dynamic_dims={"z": (1,)})


def test_a_training_step_or_a_random_draw_is_refused_by_the_exporter(tmp_path):
    x = gc.input("x", ("B", 4))
    layer = nn.Linear(4, 2)
    loss = layer(x).square().mean()
    step = gc.compile([x], [loss], updates=optim.SGD(layer.parameters(), lr=0.1).minimize(loss))
    with pytest.raises(OnnxExportError, match="updates Variables"):
        graphc.onnx.export(step, tmp_path / "step.onnx")
    with pytest.raises(OnnxExportError, match="'random'"):
        graphc.onnx.export(x + gc.rand(4), tmp_path / "noise.onnx")


def test_graphc_imports_without_onnx_and_graphc_onnx_says_what_to_install():
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'onnxruntime'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import graphc\n"
        "try:\n"
        "    import graphc.onnx\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "pip install 'graphc[onnx]'" in result.stdout


def _resize_model(attrs: dict, roi, scales, sizes, opset: int = 19) -> onnx.ModelProto:
    """Return Resize(x * w) whose roi, scales and sizes (those given) are initializers, as
    exporters that fold constants store them; w is a weight the model computes with."""
    names, initializers = ["xw"], [onnx.numpy_helper.from_array(np.float32(1.5), "w")]
    for name, value in (("roi", roi), ("scales", scales), ("sizes", sizes)):
        names.append("" if value is None else name)
        if value is not None:
            initializers.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    while not names[-1]:
        names.pop()
    nodes = [
        onnx.helper.make_node("Mul", ["x", "w"], ["xw"]),
        onnx.helper.make_node("Resize", names, ["y"], name="n1", **attrs),
    ]
    graph = onnx.helper.make_graph(
        nodes, "g", [_info("x", [1, 2, 4, 5])], [_info("y", None)], initializer=initializers
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


_F32, _I64 = np.float32, np.int64
RESIZE_INITIALIZERS = {
    "linear_scales": ({"mode": "linear"}, None, _F32([1, 1, 1.5, 2]), None),
    "nearest_down_and_up": ({"mode": "nearest"}, _F32([]), _F32([1, 1, 2, 0.6]), None),
    "cubic_sizes": ({"mode": "cubic"}, None, None, _I64([1, 2, 7, 3])),
    "crop_roi_sizes": (
        {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
        _F32([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8]),
        None,
        _I64([1, 2, 5, 6]),
    ),
}


@pytest.mark.parametrize("name", sorted(RESIZE_INITIALIZERS))
def test_resize_reads_initializer_scales_sizes_and_roi_as_constants(name):
    """Initializers that only decide the output's shape are constants, not Variables (the
    weight the model multiplies by stays one), and the result is onnxruntime's."""
    model = _resize_model(*RESIZE_INITIALIZERS[name])
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5)).astype(np.float32)
    (want,) = run_onnxruntime(model, {"x": x})
    imported = graphc.onnx.load(model)
    assert list(imported.variables) == ["w"]
    got = imported.compile(backend="reference")(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize(
    "scales", [(1, 1, 2, 3), (1, 1, 1.5, 2.7), (1, 2, 1.3, 1), (1, 1, 1.5, 1.05), (1, 1, 1, 1.01)]
)
def test_upsample_computes_what_onnxruntime_computes(opset, mode, scales):
    """Upsample (scales an attribute at opset 7, an initializer input at opset 9) is Resize
    with asymmetric coordinates and nearest rounding down, sizes and coordinates computed
    in float32 (1.05 * 40 is 42, not 41), and the input itself where no size changes."""
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 40)).astype(np.float32)
    if opset < 9:
        scales = [float(s) for s in scales]  # ONNX wants FLOATS, not INTS
        node = onnx.helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=scales)
        initializers = []
    else:
        node = onnx.helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)
        initializers = [onnx.numpy_helper.from_array(np.float32(scales), "s")]
    graph = onnx.helper.make_graph(
        [node], "g", [_info("x", x.shape)], [_info("y", None)], initializer=initializers
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 7  # what onnxruntime reads for these opsets
    (want,) = run_onnxruntime(model, {"x": x})
    imported = graphc.onnx.load(model)
    assert not imported.variables
    got = imported.compile(backend="reference")(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opset", [9, None])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_pytorch_upsample_loads_as_upsample_or_resize(opset, mode):
    """torch.nn.Upsample exports as Upsample at opset 9 and as Resize after; both load. At
    opset 9 bilinear is ONNX's asymmetric Upsample, not PyTorch's half-pixel (PyTorch warns),
    so the models are compared with onnxruntime."""
    module = torch.nn.Upsample(scale_factor=2, mode=mode)
    example = torch.randn(2, 3, 4, 5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {} if opset is None else {"opset_version": opset}
        torch.onnx.export(module, (example,), buffer, input_names=["x"], dynamo=False, **options)
    model = onnx.load_from_string(buffer.getvalue())
    assert ("Upsample" if opset else "Resize") in {node.op_type for node in model.graph.node}
    (want,) = run_onnxruntime(model, {"x": example.numpy()})
    got = graphc.onnx.load(model).compile(backend="reference")(example.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if opset is None:
        np.testing.assert_allclose(got, module(example).numpy(), rtol=1e-5, atol=1e-6)


def test_older_opsets_load_where_their_definitions_are_the_ones_graphc_reads():
    """And-7 is And-13, so an opset-7 model loads; Relu-6 is not Relu-13, and Upsample is
    deprecated from opset 10, so those are refused naming the definition."""
    a, b = _info("a", [2, 3], onnx.TensorProto.BOOL), _info("b", [3], onnx.TensorProto.BOOL)
    model = _single_node_model("And", [a, b], [_info("c", [2, 3], onnx.TensorProto.BOOL)], 7)
    left, right = np.array([[True, False, True]] * 2), np.array([True, True, False])
    got = graphc.onnx.load(model).compile(backend="reference")(left, right)
    np.testing.assert_array_equal(got, run_onnxruntime(model, {"a": left, "b": right})[0])
    x, y, s = _info("x", [2, 3]), _info("y", [2, 3]), _info("s", [2])
    with pytest.raises(OnnxImportError, match=r"Relu node 'n1' \(opset 11\): Relu-6,.*Relu-13"):
        graphc.onnx.load(_single_node_model("Relu", [x], [y], opset=11))
    with pytest.raises(OnnxImportError, match=r"Upsample node 'n1' \(opset 13\): .*deprecated"):
        graphc.onnx.load(_single_node_model("Upsample", [x, s], [y], opset=13))
    with pytest.raises(OnnxImportError, match=r"Upsample node 'n1' .*at least 1"):
        graphc.onnx.load(_single_node_model("Upsample", [x], [y], opset=7, scales=[1.0, 0.5]))


_TINY_TO_HUGE = np.float32([0, -0.0, 1e-30, -1e-8, 3e-4, 0.5, 1, 2, 7e3, 3e8, -3e20, 3e38, np.nan])
INVERSE_TRIG_INPUTS = {
    "Asin": np.float32([-1, -0.99999994, -0.7, -1e-30, 0, 1e-8, 0.3, 0.9999999, 1, 1.5, np.nan]),
    "Acos": np.float32([-1, -0.99999994, -0.7, -1e-30, 0, 1e-8, 0.3, 0.9999999, 1, 1.5, np.nan]),
    "Atanh": np.float32([-1, -0.99999994, -0.7, -1e-30, 0, 1e-8, 0.3, 0.9999999, 1, 1.5]),
    "Asinh": np.concatenate([_TINY_TO_HUGE, -_TINY_TO_HUGE, np.float32([np.inf, -np.inf])]),
    "Acosh": np.float32([0.5, 1, 1.0000001, 1.001, 2, 7e3, 3e8, 3e20, 3e38, np.inf, np.nan]),
}


@pytest.mark.parametrize("op", sorted(INVERSE_TRIG_INPUTS))
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_inverse_trigonometric_functions_match_onnxruntime_from_tiny_to_huge(op, backend):
    """The inverse trigonometric and hyperbolic functions, composed from atan2, sqrt, log1p
    and log, keep float32's relative accuracy where the textbook forms lose it (near 0 and
    near 1) or overflow (huge inputs), and give NaN and inf where onnxruntime does."""
    x = INVERSE_TRIG_INPUTS[op]
    model = _single_node_model(op, [_info("x", [len(x)])], [_info("y", [len(x)])], opset=22)
    (want,) = run_onnxruntime(model, {"x": x})
    got = graphc.onnx.load(model).compile(backend=backend)(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
