"""ONNX in and out: `load` turns an ONNX model into graphc tensors (inputs, outputs and
trainable Variables); `export` writes graphc tensors or a compiled Function as an ONNX model.

Written with graphc's public Tensor API, like `graphc.nn`. It needs the optional `onnx`
package (and `onnxruntime` to run what it exports): `pip install 'graphc[onnx]'`.
"""

try:
    import onnx as _onnx  # noqa: F401 - fail here, with what to install, rather than later
except ImportError as error:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "graphc.onnx needs the onnx package: pip install 'graphc[onnx]' "
        "(or pip install onnx onnxruntime)"
    ) from error

from graphc.onnx.common import OnnxExportError, OnnxImportError, OnnxStaticValueError
from graphc.onnx.exporter import export, to_model
from graphc.onnx.importer import OnnxModel, load

__all__ = [
    "OnnxExportError",
    "OnnxImportError",
    "OnnxModel",
    "OnnxStaticValueError",
    "export",
    "load",
    "to_model",
]
