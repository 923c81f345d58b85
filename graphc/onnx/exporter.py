"""Write graphc tensors, or a compiled Function's graph, as an ONNX model.

The graph's inputs become ONNX inputs (a symbolic dim becomes a named dim), its Variables
initializers holding their current values, its constants Constant nodes, and every other node
the ONNX ops its emitter in `export_ops` writes. Sizes that depend on symbols (a reshape to
`B*4`) are computed in the model from the inputs' shapes, so it runs for any size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

import graphc as gc
from graphc.dims import Dim
from graphc.onnx.common import OnnxExportError, elem_type_of
from graphc.onnx.export_ops import EMITTERS

# The opset the exporter writes (Col2Im and reductions with axes inputs need 18).
EXPORT_OPSET = 18


class ExportContext:
    """The model being written: its nodes, initializers and the ONNX name of each graphc
    node's value."""

    def __init__(self, graph: gc.Graph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[int, str] = {}
        self._used: set[str] = set()
        self._symbols: dict[str, tuple[str, int]] = {}
        self._symbol_values: dict[str, str] = {}
        for node in graph.inputs:
            for axis, dim in enumerate(node.type.shape):
                if isinstance(dim, gc.Sym) and dim.single_symbol:
                    self._symbols.setdefault(dim.single_symbol, (node.attrs["name"], axis))

    def reserve(self, name: str) -> None:
        """Mark a name (a graph input's) as taken."""
        self._used.add(name)

    def fresh(self, base: str) -> str:
        """Return a value name not used yet, built from base."""
        name, count = base, 0
        while name in self._used:
            count += 1
            name = f"{base}_{count}"
        self._used.add(name)
        return name

    def add(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Append an ONNX node with one output; return the output's name."""
        out = self.fresh(f"{op_type.lower()}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value: Any, dtype: Any = None) -> str:
        """Return a Constant node's output holding value."""
        array = np.asarray(value, dtype=dtype)
        out = self.fresh("const")
        tensor = numpy_helper.from_array(array, out)
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def dim(self, dim: Dim) -> str:
        """Return a 1-element int64 value holding a size, computed from the inputs' shapes
        where it has symbols."""
        if isinstance(dim, int):
            return self.const([dim], np.int64)
        total = None
        for monomial, coefficient in dim.terms:
            term = self.const([coefficient], np.int64)
            for symbol in monomial:
                term = self.add("Mul", [term, self._symbol(symbol)])
            total = term if total is None else self.add("Add", [total, term])
        assert total is not None
        return total

    def _symbol(self, symbol: str) -> str:
        """Return a 1-element int64 value holding a symbol's size, read from the shape of
        the first input that has the symbol as a dim."""
        if symbol not in self._symbol_values:
            if symbol not in self._symbols:
                raise OnnxExportError(f"the symbolic dim {symbol} is no dim of any input")
            name, axis = self._symbols[symbol]
            self._symbol_values[symbol] = self.add("Shape", [name], start=axis, end=axis + 1)
        return self._symbol_values[symbol]

    def shape(self, dims: Sequence[Dim]) -> str:
        """Return a 1-d int64 value holding a shape."""
        if all(isinstance(d, int) for d in dims):
            return self.const(list(dims), np.int64)
        return self.add("Concat", [self.dim(d) for d in dims], axis=0)

    def value_of(self, node: gc.Node) -> str:
        """Return the ONNX name of a graphc node's value."""
        return self.names[node.id]


def _value_info(name: str, node: gc.Node) -> onnx.ValueInfoProto:
    shape = [d if isinstance(d, int) else str(d) for d in node.type.shape]
    return helper.make_tensor_value_info(name, elem_type_of(node.type.dtype), shape)


def _graph_of(function_or_outputs: Any, inputs: Sequence[gc.Tensor] | None) -> gc.Graph:
    if isinstance(function_or_outputs, gc.Function):
        graph = function_or_outputs.graph
        if graph.updates:
            raise OnnxExportError(
                "the Function updates Variables (a training step), which an ONNX model cannot "
                "express; export the tensors it computes instead"
            )
        return graph
    outputs = (
        [function_or_outputs]
        if isinstance(function_or_outputs, gc.Tensor)
        else list(function_or_outputs)
    )
    nodes = gc.Graph((), tuple(t.node for t in outputs)).nodes
    found = tuple(n for n in nodes if n.op == "input")
    given = found if inputs is None else tuple(t.node for t in inputs)
    missing = [n.attrs["name"] for n in found if n not in given]
    if missing:
        raise OnnxExportError(f"the outputs read inputs that are not among `inputs`: {missing}")
    return gc.Graph(given, tuple(t.node for t in outputs))


def to_model(
    function_or_outputs: gc.Function | gc.Tensor | Sequence[gc.Tensor],
    inputs: Sequence[gc.Tensor] | None = None,
    output_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Return the ONNX model of a Function (without updates), or of output tensors computed
    from `inputs` (by default every input they read, in the order they were made)."""
    graph = _graph_of(function_or_outputs, inputs)
    context = ExportContext(graph)
    graph_inputs = []
    for node in graph.inputs:
        name = node.attrs["name"]
        context.reserve(name)
        context.names[node.id] = name
        graph_inputs.append(_value_info(name, node))
    for node in graph.nodes:
        if node.id in context.names:
            continue
        if node.op == "variable":
            name = context.fresh(node.attrs["storage"].name)
            context.initializers.append(numpy_helper.from_array(node.attrs["storage"].read(), name))
        elif node.op == "input":
            raise OnnxExportError(f"input {node.attrs['name']!r} is not among the graph's inputs")
        elif node.op not in EMITTERS:
            raise OnnxExportError(
                f"graphc op {node.op!r} ({node.type}, made at {node.location}) has no ONNX form"
            )
        else:
            name = EMITTERS[node.op](context, node)
        context.names[node.id] = name
    names = (
        list(output_names)
        if output_names is not None
        else [node.name or f"output{i}" for i, node in enumerate(graph.outputs)]
    )
    graph_outputs = []
    for name, node in zip(names, graph.outputs, strict=True):
        name = context.fresh(name)
        context.nodes.append(helper.make_node("Identity", [context.value_of(node)], [name]))
        graph_outputs.append(_value_info(name, node))
    onnx_graph = helper.make_graph(
        context.nodes, "graphc", graph_inputs, graph_outputs, context.initializers
    )
    model = helper.make_model(
        onnx_graph,
        producer_name="graphc",
        producer_version=gc.__version__,
        opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
    )
    onnx.checker.check_model(model)
    return model


def export(
    function_or_outputs: gc.Function | gc.Tensor | Sequence[gc.Tensor],
    path: str | os.PathLike[str],
    inputs: Sequence[gc.Tensor] | None = None,
    output_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Write a Function's graph (one without updates), or output tensors, as an ONNX model
    file that onnx.checker accepts; return the model. Variables are written with their
    current values as initializers, named as the Variables."""
    model = to_model(function_or_outputs, inputs, output_names)
    onnx.save(model, os.fspath(path))
    return model
