"""How one ONNX node becomes graphc tensors: the converter registry and the node's view of its
inputs and attributes.

A converter is a function registered for one or more ONNX op types (`@converter("Relu")`). It
receives a `NodeContext` and returns the node's outputs. It reads each input either as a
Tensor (`node.tensor(i)`), or as a value known while the graph is built (`node.static(i)`:
Reshape's shape, Slice's starts, a reduction's axes), since graphc's shapes are fixed when a
node is built. It reads each attribute through `node.attr`, which records the read: an
attribute that no converter read is one it does not implement, and the importer refuses the
node rather than ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import onnx

import graphc as gc
from graphc.dims import Dim
from graphc.onnx.common import OnnxImportError, OnnxStaticValueError
from graphc.reductions import count_tensor


@dataclass(frozen=True)
class Known:
    """A value known while the graph is built: a constant, an integer initializer, or a shape.
    `array` holds numbers, or (object dtype) graphc dims where a shape has symbols; `dtype` is
    the ONNX value's element type."""

    array: np.ndarray
    dtype: gc.DType

    @property
    def symbolic(self) -> bool:
        """Return whether the array holds symbolic dims."""
        return self.array.dtype == object


class Initializer:
    """A floating-point initializer, which becomes a Variable only where the model computes
    with it: an initializer that only decides shapes (Resize's scales and roi) is read as the
    constant it is, and trains nothing."""

    __slots__ = ("array", "dtype", "name", "variable")

    def __init__(self, array: np.ndarray, dtype: gc.DType, name: str) -> None:
        self.array = array
        self.dtype = dtype
        self.name = name
        self.variable: gc.Variable | None = None

    def as_variable(self) -> gc.Variable:
        """Return the initializer's Variable, made on the first use as data."""
        if self.variable is None:
            self.variable = gc.Variable(
                np.ascontiguousarray(self.array), name=self.name, dtype=self.dtype
            )
        return self.variable


Value = Union[gc.Tensor, Known]  # noqa: UP007 - a runtime alias, read on Python 3.10
Stored = Union[Value, Initializer]  # noqa: UP007
Outputs = Union[Value, Sequence[Value]]  # noqa: UP007
Converter = Callable[["NodeContext"], Outputs]

# The oldest default-domain opset whose definitions the converters implement. An older model
# imports where each node's op is defined at its opset as at MIN_OPSET (And, Not), or its
# converter reads the older definitions too (OLDEST_OPSET: Upsample from opset 7).
MIN_OPSET = 13

CONVERTERS: dict[str, Converter] = {}
OLDEST_OPSET: dict[str, int] = {}


def converter(*op_types: str, since: int = MIN_OPSET) -> Callable[[Converter], Converter]:
    """Register a function as the converter of the given ONNX op types, which implements
    their definitions in effect from opset `since` on."""

    def register(function: Converter) -> Converter:
        """Record function as the converter of every op type named."""
        for op_type in op_types:
            if op_type in CONVERTERS:
                raise ValueError(f"two converters for ONNX op {op_type}")
            CONVERTERS[op_type] = function
            if since != MIN_OPSET:
                OLDEST_OPSET[op_type] = since
        return function

    return register


def as_tensor(value: Value) -> gc.Tensor:
    """Return a value as a Tensor: a known array becomes a constant, a symbolic size a
    scalar computed from the call's sizes."""
    if isinstance(value, gc.Tensor):
        return value
    if not value.symbolic:
        return gc.tensor(value.array, dtype=value.dtype)
    flat = [count_tensor(dim, value.dtype) for dim in value.array.reshape(-1)]
    if not flat:
        return gc.zeros(*value.array.shape, dtype=value.dtype)
    return gc.stack(flat).reshape(*value.array.shape)


class NodeContext:
    """One ONNX node as its converter sees it: its inputs (by position), its attributes
    (each read recorded), its opset, and the errors it raises."""

    def __init__(self, proto: onnx.NodeProto, values: dict[str, Stored], opset: int) -> None:
        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else "")
        self.opset = opset
        self._values = values
        self._attrs = {a.name: a for a in proto.attribute}
        self.read: set[str] = set()

    # -- errors -------------------------------------------------------------------------------
    def error(self, what: str) -> OnnxImportError:
        """Return the error for something this node needs that graphc cannot give."""
        return OnnxImportError(f"ONNX {self.op} node {self.name!r} (opset {self.opset}): {what}")

    def unsupported(self, attribute: str, value: Any, supported: str) -> OnnxImportError:
        """Return the error for an attribute value that graphc does not implement."""
        return self.error(f"attribute {attribute}={value!r} is not supported ({supported})")

    # -- inputs -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.proto.input)

    def has(self, index: int) -> bool:
        """Return whether input `index` is given (ONNX leaves optional inputs out or empty)."""
        return index < len(self.proto.input) and bool(self.proto.input[index])

    def stored(self, index: int) -> Stored:
        """Return input `index` as it was stored, a floating-point initializer not yet made
        a Variable."""
        if not self.has(index):
            raise self.error(f"input {index} is required")
        return self._values[self.proto.input[index]]

    def value(self, index: int) -> Value:
        """Return input `index` as it was converted: a Tensor (a floating-point initializer
        as its Variable) or a Known value."""
        value = self.stored(index)
        return value.as_variable() if isinstance(value, Initializer) else value

    def values(self) -> list[Value]:
        """Return every given input."""
        return [self.value(i) for i in range(len(self)) if self.has(i)]

    def tensor(self, index: int) -> gc.Tensor:
        """Return input `index` as a Tensor."""
        return as_tensor(self.value(index))

    def optional(self, index: int) -> gc.Tensor | None:
        """Return input `index` as a Tensor, or None where it is not given."""
        return self.tensor(index) if self.has(index) else None

    def static(self, index: int, what: str) -> np.ndarray | None:
        """Return input `index`'s value, which the graph's shape depends on, or None where the
        input is not given. It must be known while the graph is built."""
        if not self.has(index):
            return None
        value = self.stored(index)
        if isinstance(value, (Known, Initializer)):
            return value.array
        message = (
            f"input {index} ({what}, {self.proto.input[index]!r}) must be known when the graph "
            "is built (a constant, an initializer or computed from shapes), since "
            "graphc's shapes are fixed by the graph; it is computed from the model's inputs"
        )
        raise OnnxStaticValueError(str(self.error(message)), self.proto.input[index])

    def ints(self, index: int, what: str) -> list[int] | None:
        """Return a static input of plain integers (axes, pads, starts), or None if absent."""
        array = self.static(index, what)
        if array is None:
            return None
        if array.dtype == object and not all(isinstance(v, int) for v in array.flat):
            raise self.error(f"input {index} ({what}) depends on a symbolic dim: {array.tolist()}")
        return [int(v) for v in array.reshape(-1)]

    def dims(self, index: int, what: str) -> list[Dim]:
        """Return a static 1-d input of sizes, whose entries may be symbolic dims."""
        array = self.static(index, what)
        if array is None:
            raise self.error(f"input {index} ({what}) is required")
        return [v if not isinstance(v, (int, np.integer)) else int(v) for v in array.reshape(-1)]

    # -- attributes ---------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """Return an attribute's value (ints, floats, strings as str, tensors as arrays), or
        default where the node does not set it."""
        self.read.add(name)
        if name not in self._attrs:
            return default
        value = onnx.helper.get_attribute_value(self._attrs[name])
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, onnx.TensorProto):
            return onnx.numpy_helper.to_array(value)
        if isinstance(value, list):
            return [v.decode() if isinstance(v, bytes) else v for v in value]
        return value

    def require(self, name: str, allowed: Sequence[Any], default: Any, supported: str) -> Any:
        """Return an attribute whose value must be one of `allowed`, or raise naming it."""
        value = self.attr(name, default)
        if value not in allowed:
            raise self.unsupported(name, value, supported)
        return value

    def unread_attributes(self) -> list[str]:
        """Return the attributes the node sets that its converter did not read."""
        return [name for name in self._attrs if name not in self.read]

    @property
    def output_count(self) -> int:
        """Return how many outputs the model uses (trailing optional ones may be left out)."""
        names = list(self.proto.output)
        while names and not names[-1]:
            names.pop()
        return len(names)
