"""The ONNX backend node tests, run through graphc's importer.

The cases come from the installed onnx package's generators (`onnx.backend.test.case.node`,
which write `onnx/backend/test/data/node`; the wheels do not ship that folder). A case is in
scope when every op it uses is in IN_SCOPE_OPS, its types are graphc's and its opset is one
the importer reads; every in-scope case must load, compile on the reference backend and match
ONNX's expected outputs (with the case's own tolerances), and the first case of each op also
runs on LLVM. A case of an opset before 13 is in scope where each op it uses is defined there
as at opset 13 (see OLDER_DEFINITIONS). The cases out of scope, and why, are the tables below.

Inputs that decide a shape (Reshape's shape, Pad's pads) are inputs of the node tests, but
must be known when graphc builds its graph: the importer says which (OnnxStaticValueError),
and the test freezes them into Constant nodes holding the case's values.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import graphc as gc  # noqa: E402
from graphc.onnx import OnnxStaticValueError, load  # noqa: E402

# The ops whose node tests must all pass (every other op is refused by name).
_IN_SCOPE = """
    Abs Neg Exp Log Sqrt Sin Cos Tan Atan Sinh Cosh Tanh Sigmoid Erf Floor Ceil Round Sign Not
    Relu Reciprocal Softsign Softplus Mish IsNaN IsInf Identity Add Sub Mul Div Mod Pow Max Min
    Sum Mean Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor Where Clip Cast CastLike
    LeakyRelu Elu Celu Selu ThresholdedRelu HardSigmoid HardSwish Swish Gelu PRelu Dropout
    MatMul Gemm Conv ConvTranspose MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool
    BatchNormalization InstanceNormalization LayerNormalization GroupNormalization
    RMSNormalization LpNormalization MeanVarianceNormalization LRN
    ReduceSum ReduceMean ReduceProd ReduceMax ReduceMin ReduceL1 ReduceL2 ReduceSumSquare
    ReduceLogSum ReduceLogSumExp ArgMax ArgMin Softmax LogSoftmax Hardmax
    Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather GatherElements Expand
    Tile Pad DepthToSpace SpaceToDepth Trilu Shape Size Constant ConstantOfShape Range
    NegativeLogLikelihoodLoss SoftmaxCrossEntropyLoss RNN GRU LSTM Resize Upsample CumSum OneHot
    EyeLike Einsum Asin Acos Asinh Acosh Atanh Shrink CumProd ReverseSequence GatherND
    ScatterElements Scatter ScatterND
    """
IN_SCOPE_OPS = frozenset(_IN_SCOPE.split())

# Cases of opsets before 13 are in scope where every op they use is defined there as at opset
# 13 (And-7, Not-1), or is one of these ops, whose older definitions the importer reads from
# the opset given.
OLDER_DEFINITIONS = {"Upsample": 7, "Scatter": 9, "Constant": 1, "Shape": 1, "Size": 1}

# Why the other ops the node tests use are out of scope: (ops, reason).
_OUT_OF_SCOPE_FAMILIES: list[tuple[str, str]] = [
    (
        "Loop If Scan SequenceEmpty SequenceLength SequenceInsert SequenceMap "
        "SplitToSequence OptionalGetElement OptionalHasElement",
        "control flow, sequences and optionals have no static-graph form in the importer",
    ),
    (
        "Attention FlexAttention LinearAttention RotaryEmbedding CausalConvWithState "
        "SwiGLU TensorScatter",
        "fused transformer blocks (their _expanded cases, built from in-scope ops, run)",
    ),
    (
        "QuantizeLinear DequantizeLinear DynamicQuantizeLinear QLinearConv QLinearMatMul "
        "ConvInteger MatMulInteger BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot "
        "BitCast",
        "quantized and bitwise integer ops: graphc has no 8-bit or unsigned types",
    ),
    (
        "StringConcat StringNormalizer StringSplit RegexFullMatch LabelEncoder "
        "TfIdfVectorizer ImageDecoder",
        "strings and images: graphc has numeric tensors only",
    ),
    ("Adagrad Adam Momentum", "training operators (graphc.optim does this itself)"),
    (
        "Bernoulli RandomUniformLike RandomNormal RandomNormalLike RandomUniform Multinomial",
        "random draws: ONNX's generator is not graphc's, so values cannot match",
    ),
    (
        "NonZero NonMaxSuppression Unique Compress TopK",
        "data-dependent output shapes (or a sort) that a static graph cannot type",
    ),
    (
        "DFT STFT MelWeightMatrix BlackmanWindow HammingWindow HannWindow",
        "signal processing: complex values and window generators",
    ),
    (
        "GridSample AffineGrid RoiAlign DeformConv Col2Im MaxUnpool CenterCropPad",
        "sampling and rarer pooling layers: not among the in-scope ops",
    ),
    ("Det", "a determinant needs a pivoted factorization, which graphc's ops do not compose"),
    (
        "Binarizer ArrayFeatureExtractor TreeEnsemble",
        "the ai.onnx.ml domain: the importer reads the default domain only",
    ),
]
OUT_OF_SCOPE_OPS = {op: why for ops, why in _OUT_OF_SCOPE_FAMILIES for op in ops.split()}

_3D = "3-d convolution and pooling: graphc has 1-d and 2-d"
_TRAINING = "training_mode=1: the importer reads inference graphs (dropout masks, batch statistics)"
# Cases of in-scope ops that are out of scope, and why.
OUT_OF_SCOPE_CASES: dict[str, str] = {
    **dict.fromkeys(
        [
            "test_averagepool_3d_default",
            "test_averagepool_3d_dilations_small",
            "test_lppool_3d_default",
            "test_convtranspose_3d",
            "test_maxpool_3d_default",
            "test_maxpool_3d_dilations",
            "test_maxpool_3d_dilations_use_ref_impl",
            "test_maxpool_3d_dilations_use_ref_impl_large",
        ]
        + [
            f"test_averagepool_3d_dilations_large_count_include_pad_is_{p}_ceil_mode_is_{c}"
            for p in (0, 1)
            for c in (False, True)
        ],
        _3D,
    ),
    **dict.fromkeys(
        [
            "test_batchnorm_epsilon_training_mode",
            "test_batchnorm_example_training_mode",
            "test_training_dropout",
            "test_training_dropout_default",
            "test_training_dropout_default_mask",
            "test_training_dropout_mask",
            "test_training_dropout_zero_ratio",
            "test_training_dropout_zero_ratio_mask",
        ],
        _TRAINING,
    ),
    **dict.fromkeys(
        [
            "test_maxpool_with_argmax_2d_precomputed_pads",
            "test_maxpool_with_argmax_2d_precomputed_strides",
        ],
        "MaxPool's Indices output: graphc's max_pool2d gives the values only",
    ),
    **dict.fromkeys(
        [
            f"test_{window}{kind}_expanded"
            for window in ("blackmanwindow", "hammingwindow", "hannwindow")
            for kind in ("", "_symmetric")
        ],
        "a Range whose length is computed in floating point from an input",
    ),
}

_SUPPORTED_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.BOOL,
}


@cache
def all_cases() -> dict:
    """Return every node test case by name."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {case.name: case for case in collect_testcases(None)}


def _types(model) -> set[int]:
    graph = model.graph
    types = {v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)}
    types |= {t.data_type for t in graph.initializer}
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type in ("Cast", "EyeLike", "RandomNormal") and attribute.name == "to":
                types.add(attribute.i)
            if attribute.type == onnx.AttributeProto.TENSOR:
                types.add(attribute.t.data_type)
    return types


def scope(case) -> str | None:
    """Return why a case is out of scope, or None where it is in scope."""
    if case.name in OUT_OF_SCOPE_CASES:
        return OUT_OF_SCOPE_CASES[case.name]
    ops = sorted({node.op_type for node in case.model.graph.node})
    for op in ops:
        if op not in IN_SCOPE_OPS:
            return f"{op}: {OUT_OF_SCOPE_OPS.get(op, 'not among the in-scope ops')}"
    unsupported = sorted(_types(case.model) - _SUPPORTED_TYPES)
    if unsupported:
        names = ", ".join(onnx.TensorProto.DataType.Name(t) for t in unsupported)
        return f"element type {names}: graphc has float32/64, int32/64 and bool"
    opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
    for op in ops if opset < 13 else []:
        used = onnx.defs.get_schema(op, opset).since_version
        read = onnx.defs.get_schema(op, OLDER_DEFINITIONS.get(op, 13)).since_version
        if used < read:
            return f"{op}-{used} (opset {opset}): the importer reads {op}-{read} and later"
    return None


def in_scope() -> list[str]:
    return sorted(name for name, case in all_cases().items() if scope(case) is None)


def _on_llvm() -> set[str]:
    """The first in-scope case of each op: the subset that also runs on LLVM."""
    chosen: dict[str, str] = {}
    for name in in_scope():
        for node in all_cases()[name].model.graph.node:
            chosen.setdefault(node.op_type, name)
    return set(chosen.values())


def _frozen(model, name: str, value: np.ndarray):
    """Return the model with graph input `name` replaced by a Constant node holding value."""
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [v for v in frozen.graph.input if v.name != name]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    constant = onnx.helper.make_node(
        "Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(value), name)
    )
    frozen.graph.node.insert(0, constant)
    return frozen


def _integer_sources(model, name: str) -> list[str]:
    """Return the integer graph inputs that value `name` is computed from."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inputs = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    found, pending, seen = [], [name], set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in inputs and inputs[value] in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            found.append(value)
        pending.extend(producers[value].input if value in producers else [])
    return found


def _array(value) -> np.ndarray:
    return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def run_case(case, backend: str) -> None:
    """Load the case's model, freezing the inputs its shapes need, and check every data set."""
    names = [v.name for v in case.model.graph.input]
    for inputs, expected in case.data_sets:
        fed = dict(zip(names, map(_array, inputs), strict=True))
        expected = [_array(e) for e in expected]
        model = case.model
        while True:
            try:
                imported = load(model)
                break
            except OnnxStaticValueError as error:
                sources = [error.name] if error.name in fed else _integer_sources(model, error.name)
                if not sources:
                    raise
                for source in sources:
                    model = _frozen(model, source, fed.pop(source))
        function = gc.compile(imported.inputs, imported.outputs, backend=backend)
        got = function(*(fed[t.name] for t in imported.inputs))
        got = got if isinstance(got, tuple) else (got,)
        for output, value, want in zip(case.model.graph.output, got, expected, strict=True):
            assert value.dtype == want.dtype, f"{output.name}: {value.dtype} != {want.dtype}"
            assert value.shape == want.shape, f"{output.name}: {value.shape} != {want.shape}"
            np.testing.assert_allclose(
                value, want, rtol=case.rtol, atol=case.atol, err_msg=output.name
            )


@pytest.mark.parametrize("name", in_scope())
def test_node_case_on_the_reference_backend(name):
    run_case(all_cases()[name], "reference")


@pytest.mark.parametrize("name", sorted(_on_llvm()))
def test_node_case_on_llvm(name):
    run_case(all_cases()[name], "llvm")


def test_every_out_of_scope_case_is_refused():
    """A case out of scope raises OnnxImportError when loaded, naming what is missing: it is
    never imported as an approximation."""
    loaded = []
    for name, case in all_cases().items():
        if scope(case) is None:
            continue
        try:
            load(case.model)
        except gc.onnx.OnnxImportError:
            continue
        loaded.append(name)
    assert not loaded
