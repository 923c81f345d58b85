"""What the ONNX importer and exporter share: their errors and the element types both sides have.

graphc has five element types; ONNX's other types (float16, the 8- and 16-bit integers,
strings, ...) have no graphc counterpart, and a model that uses one is refused by name rather
than converted to a nearby type.
"""

from __future__ import annotations

import onnx

import graphc as gc


class OnnxImportError(gc.errors.GraphError):
    """An ONNX model uses something graphc cannot represent (an op, an attribute value, a
    dtype, a shape only known when the model runs); the message names the op, the node and
    what is missing."""


class OnnxStaticValueError(OnnxImportError):
    """A value that decides a shape (Reshape's shape, Slice's starts) is computed from the
    model's inputs, so graphc cannot build the graph; `name` is the ONNX value."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class OnnxExportError(gc.errors.GraphError):
    """A graphc graph holds something ONNX cannot express (an op without an ONNX form, a
    Function with updates)."""


# ONNX TensorProto element type <-> graphc dtype, for the types both have.
_DTYPES: dict[int, gc.DType] = {
    onnx.TensorProto.FLOAT: gc.float32,
    onnx.TensorProto.DOUBLE: gc.float64,
    onnx.TensorProto.INT32: gc.int32,
    onnx.TensorProto.INT64: gc.int64,
    onnx.TensorProto.BOOL: gc.bool_,
}
_ELEM_TYPES: dict[gc.DType, int] = {dtype: elem for elem, dtype in _DTYPES.items()}


def elem_type_name(elem_type: int) -> str:
    """Return ONNX's name of an element type (FLOAT16, UINT8, ...)."""
    return onnx.TensorProto.DataType.Name(elem_type)


def dtype_of(elem_type: int, what: str) -> gc.DType:
    """Return the graphc dtype of an ONNX element type, or raise naming `what` uses it."""
    if elem_type not in _DTYPES:
        raise OnnxImportError(
            f"{what} has element type {elem_type_name(elem_type)}, which graphc has no dtype "
            f"for (graphc has float32, float64, int32, int64 and bool)"
        )
    return _DTYPES[elem_type]


def elem_type_of(dtype: gc.DType) -> int:
    """Return the ONNX element type of a graphc dtype."""
    return _ELEM_TYPES[dtype]
