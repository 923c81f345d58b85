"""Load an ONNX model as graphc tensors: inputs become placeholders, floating-point
initializers Variables (or constants, where they only decide shapes), and every node the
Tensor ops its converter builds.

Values that decide shapes (Shape, and the integer arithmetic on it that exporters emit before
a Reshape) are computed while the graph is built, symbolic dims included, so a model exported
with a dynamic batch dim keeps it symbolic; see `shape_values`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

import graphc as gc
from graphc.dims import Dim
from graphc.onnx import (  # noqa: F401 - registers converters
    ops_einsum,
    ops_index,
    ops_loss,
    ops_math,
    ops_nn,
    ops_reduce,
    ops_resize,
    ops_rnn,
    ops_shape,
)
from graphc.onnx.common import OnnxImportError, dtype_of
from graphc.onnx.nodes import (
    CONVERTERS,
    MIN_OPSET,
    OLDEST_OPSET,
    Initializer,
    Known,
    NodeContext,
    Stored,
    as_tensor,
)
from graphc.onnx.shape_values import fold


@dataclass
class OnnxModel:
    """An imported model: `inputs` are the placeholders in the model's order, `outputs` the
    tensors it computes, `variables` the floating-point initializers it computes with, by name
    (trainable, and saved with `gc.save({name: v.numpy() ...})`; one that only decides a
    shape, such as Resize's scales, is a constant)."""

    inputs: list[gc.Tensor]
    outputs: list[gc.Tensor]
    variables: dict[str, gc.Variable] = field(default_factory=dict)

    def compile(self, backend: str | None = None) -> gc.Function:
        """Return a Function computing the outputs from the inputs (one array each)."""
        return gc.compile(self.inputs, self.outputs, backend=backend)


def load(
    model_or_path: onnx.ModelProto | bytes | str | os.PathLike[str],
    dynamic_dims: Mapping[str, Sequence[int | str]] | None = None,
) -> OnnxModel:
    """Return the graphc tensors of an ONNX model (a ModelProto, its serialized bytes or a
    file).

    Each graph input becomes `gc.input` with the model's shape: a named ONNX dim (`batch`)
    becomes a graphc symbol, a fixed one an int. `dynamic_dims` gives the shape of inputs by
    name where the model's does not suit, e.g. `{"x": ("B", 3, 32, 32)}` for a model exported
    with a fixed batch of 1; an input dim that is neither named nor fixed must be given there.
    """
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    elif isinstance(model_or_path, bytes):
        model = onnx.load_from_string(model_or_path)
    else:
        model = onnx.load(os.fspath(model_or_path))
    opset = _default_opset(model)
    graph = model.graph
    values: dict[str, Stored] = {}
    initializers: list[Initializer] = []
    for proto in graph.initializer:
        array = onnx.numpy_helper.to_array(proto)
        dtype = dtype_of(proto.data_type, f"initializer {proto.name!r}")
        if dtype.is_float:  # a Variable where the model computes with it (see Initializer)
            initializer = Initializer(np.asarray(array), dtype, proto.name)
            initializers.append(initializer)
            values[proto.name] = initializer
        else:  # shapes, axes and indices: nothing trains them, and shapes must be known
            values[proto.name] = Known(np.asarray(array), dtype)
    overrides = dict(dynamic_dims or {})
    inputs = []
    for info in graph.input:
        if info.name in values:  # older models list initializers among the inputs
            continue
        placeholder = _placeholder(info, overrides.pop(info.name, None))
        values[info.name] = placeholder
        inputs.append(placeholder)
    if overrides:
        raise OnnxImportError(f"dynamic_dims names no input of the model: {sorted(overrides)}")
    for node in graph.node:
        _convert(node, values, opset)
    outputs = []
    for info in graph.output:
        value = values[info.name]
        tensor = value.as_variable() if isinstance(value, Initializer) else as_tensor(value)
        outputs.append(_named(tensor, info.name))
    variables = {i.name: i.variable for i in initializers if i.variable is not None}
    return OnnxModel(inputs, outputs, variables)


def _named(tensor: gc.Tensor, name: str) -> gc.Tensor:
    """Return a computed output under its ONNX name, which graphc's listings and a later
    export then use (a name that is no identifier, or a placeholder, is left as it is)."""
    if not name.isidentifier() or tensor.node.op in ("input", "variable"):
        return tensor
    return tensor.named(name)


def _default_opset(model: onnx.ModelProto) -> int:
    """Return the model's default-domain opset, checked against the installed onnx's (an older
    one is checked node by node, see _check_version)."""
    latest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            if entry.version > latest:
                raise OnnxImportError(
                    f"the model uses opset {entry.version}; the installed onnx defines opsets "
                    f"up to {latest}"
                )
            return entry.version
    raise OnnxImportError("the model imports no opset of the default ONNX domain")


def symbol_name(dim_param: str) -> str:
    """Return the graphc symbol for an ONNX dim name: the name, with every character that
    cannot be in an identifier replaced by '_' (ONNX allows any string)."""
    name = re.sub(r"\W", "_", dim_param)
    return name if name.isidentifier() else f"d_{name}"


def _placeholder(info: onnx.ValueInfoProto, override: Sequence[int | str] | None) -> gc.Tensor:
    if not info.type.HasField("tensor_type"):
        raise OnnxImportError(f"input {info.name!r} is not a tensor (sequences, maps, optionals)")
    tensor_type = info.type.tensor_type
    dtype = dtype_of(tensor_type.elem_type, f"input {info.name!r}")
    if override is not None:
        return gc.input(info.name, tuple(override), dtype)
    if not tensor_type.HasField("shape"):
        raise OnnxImportError(
            f"input {info.name!r} has no shape in the model; give it with dynamic_dims"
        )
    shape: list[Dim | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(symbol_name(dim.dim_param))
        else:
            raise OnnxImportError(
                f"dim {axis} of input {info.name!r} has neither a size nor a name; give the "
                f"input's shape with dynamic_dims={{{info.name!r}: (...)}}"
            )
    return gc.input(info.name, tuple(shape), dtype)


def _convert(proto: onnx.NodeProto, values: dict[str, Stored], opset: int) -> None:
    """Convert one node, storing its outputs in values."""
    node = NodeContext(proto, values, opset)
    if proto.domain not in ("", "ai.onnx"):
        raise node.error(f"domain {proto.domain!r} is not supported (only the default domain)")
    _check_version(node)
    for name in proto.input:
        if name and name not in values:
            raise node.error(f"input {name!r} is not defined before the node")
    try:
        outputs = fold(node)
        if outputs is None:
            if proto.op_type not in CONVERTERS:
                raise node.error("this op is not supported by graphc's importer")
            result: Any = CONVERTERS[proto.op_type](node)
            outputs = [result] if isinstance(result, (gc.Tensor, Known)) else list(result)
    except OnnxImportError:
        raise
    except gc.errors.GraphcError as error:  # a shape or type graphc refuses: name the node
        raise node.error(str(error)) from error
    unread = node.unread_attributes()
    if unread:
        raise node.error(f"attribute(s) {', '.join(unread)} are not supported")
    if node.output_count > len(outputs):
        raise node.error(
            f"output {len(outputs)} ({proto.output[len(outputs)]!r}) is not supported; graphc "
            f"computes the first {len(outputs)}"
        )
    for name, value in zip(proto.output, outputs, strict=False):
        if name:
            values[name] = value


def _check_version(node: NodeContext) -> None:
    """Raise where the node's op is deprecated at the model's opset (onnx's checker refuses
    it), or defined there as an older version than its converter implements (Softmax-11
    flattens to 2-d, Softmax-13 does not)."""
    try:
        schema = onnx.defs.get_schema(node.op, node.opset)
    except onnx.defs.SchemaError:  # not an ONNX op at that opset: refused as unknown later
        return
    used = schema.since_version
    if schema.deprecated:
        raise node.error(f"{node.op}-{used} is deprecated at opset {node.opset}")
    if node.opset >= MIN_OPSET:
        return
    read = onnx.defs.get_schema(node.op, OLDEST_OPSET.get(node.op, MIN_OPSET)).since_version
    if used < read:
        raise node.error(
            f"{node.op}-{used}, the definition at opset {node.opset}, is not supported; graphc "
            f"reads {node.op} as defined from {node.op}-{read} on "
            "(onnx.version_converter.convert_version can update a model)"
        )
