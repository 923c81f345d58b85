"""Bring PyTorch models into graphc through ONNX, fine-tune them, and ship them back out.

For a small CNN and an MLP built in PyTorch: export each with `torch.onnx.export` (a dynamic
batch dim), load it with `graphc.onnx.load` (the batch dim stays symbolic, the weights become
Variables), check graphc's outputs against PyTorch's, fine-tune the Variables for a few Adam
steps on the digits of examples/mlp.py, export the tuned model with `graphc.onnx.export`, and
run that file in onnxruntime, which must agree with graphc. Needs the onnx extra
(`pip install 'graphc[onnx]'`) and PyTorch. Run it with `python examples/onnx_import.py`.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from mlp import load_digits

import graphc as gc
import graphc.onnx
from graphc import nn, optim


def pytorch_models() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """Return the PyTorch models by name, each with the shape of one input row."""
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    return {"cnn": (cnn.eval(), (1, 8, 8)), "mlp": (mlp.eval(), (1, 8, 8))}


def to_onnx(module: torch.nn.Module, row: tuple[int, ...]) -> bytes:
    """Return the module as ONNX bytes with a symbolic batch dim. The TorchScript-based
    exporter (dynamo=False) needs no package beyond torch and onnx."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice
        torch.onnx.export(
            module,
            (torch.zeros(2, *row),),
            buffer,
            input_names=["images"],
            output_names=["scores"],
            dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}},
            dynamo=False,
        )
    return buffer.getvalue()


def fine_tune(
    model: graphc.onnx.OnnxModel, images, labels, steps: int, lr: float, backend: str
) -> list[float]:
    """Train every Variable of an imported model with Adam; return the loss of each step."""
    (x,) = model.inputs
    y = gc.input("labels", ("batch",), gc.int64)
    loss = nn.CrossEntropyLoss()(model.outputs[0], y)
    parameters = list(model.variables.values())
    updates = optim.Adam(parameters, lr=lr).minimize(loss)
    step = gc.compile([x, y], [loss], updates=updates, backend=backend)
    return [float(step(images, labels)) for _ in range(steps)]


def main() -> None:
    """Round-trip both models and print how closely each stage agrees."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--backend", default="llvm", choices=gc.available_backends())
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = load_digits(flat=False)
    batch = x_train[:256]
    folder = Path(tempfile.mkdtemp())
    for name, (module, row) in pytorch_models().items():
        model = graphc.onnx.load(to_onnx(module, row))
        print(f"{name}: inputs {model.inputs}, {len(model.variables)} Variables")

        predict = model.compile(args.backend)
        with torch.no_grad():
            want = module(torch.from_numpy(x_test)).numpy()
        print(f"{name}: max |graphc - PyTorch| = {np.abs(predict(x_test) - want).max():.2e}")

        losses = fine_tune(model, batch, y_train[:256], args.steps, args.lr, args.backend)
        accuracy = (predict(x_test).argmax(1) == y_test).mean()
        print(
            f"{name}: fine-tuned loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
            f"test accuracy {accuracy:.1%}"
        )

        path = folder / f"{name}.onnx"
        graphc.onnx.export(predict, path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"images": x_test})
        difference = np.abs(got - predict(x_test)).max()
        print(f"{name}: onnxruntime vs graphc, max difference {difference:.2e}")


if __name__ == "__main__":
    main()
