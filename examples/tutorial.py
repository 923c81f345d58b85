"""The CS224N PyTorch tutorial, written with graphc: tensors first, then nn, optimizers and
the training loop.

Every tensor here is a node in a graph; `.numpy()` and `.item()` compile the subgraph that
produces it on the default backend and run it. The second half builds layers with graphc.nn
and compiles a whole training step (forward, backward and Adam update) into one Function.
Run it with `python examples/tutorial.py`.
"""

from __future__ import annotations

import textwrap

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.errors import InputError, ShapeError


def show(label: str, t: gc.Tensor) -> None:
    """Print a tensor's type (dtype and shape) and then its value, indented."""
    print(f"{label} : {t.node.type}")
    print(textwrap.indent(np.array2string(t.numpy()), "    "))


def creating_tensors() -> None:
    """Creating tensors and their dtypes"""
    list_of_lists = [[1, 2, 3], [4, 5, 6]]
    print("list_of_lists =", list_of_lists)
    show("gc.tensor(list_of_lists)", gc.tensor(list_of_lists))

    data = gc.tensor([[0, 1], [2, 3], [4, 5]])
    print("Python ints give", data.dtype)
    show("data", data)

    data = gc.tensor([[0, 1], [2, 3], [4, 5]], dtype=gc.float32)
    print("dtype=gc.float32 gives", data.dtype)
    show("data", data)

    data = gc.tensor([[0.11111111, 1], [2, 3], [4, 5]])
    print("one Python float makes the whole tensor", data.dtype)
    show("data", data)

    show("gc.zeros(2, 5)", gc.zeros(2, 5))
    show("gc.ones(3, 4)", gc.ones(3, 4))
    rr = gc.arange(1, 11)
    show("rr = gc.arange(1, 11)", rr)
    show("rr.reshape(2, 5)", rr.reshape(2, 5))


def elementwise_ops() -> None:
    """Elementwise operations"""
    rr = gc.arange(1, 11)
    show("rr + 2", rr + 2)
    show("rr * 2", rr * 2)
    half = rr / 2
    print("int64 / int gives", half.dtype, "(as in PyTorch)")
    show("rr / 2", half)
    show("rr.float() * 0.5 == rr / 2", rr.float() * 0.5 == half)


def broadcasting() -> None:
    """Broadcasting"""
    a = gc.ones(3, 2)
    offsets = gc.tensor([10.0, 20.0])
    show("gc.ones(3, 2) + [10., 20.]", a + offsets)

    column = gc.arange(3).reshape(3, 1)
    row = gc.arange(4)
    show("[3, 1] + [4] broadcasts to [3, 4]", column * 10 + row)

    per_row = gc.tensor([1.0, 2.0, 3.0])
    print("Adding a [3] vector to a [3, 2] matrix: the trailing dims 2 and 3 differ.")
    try:
        a + per_row
    except ShapeError as error:
        print("ShapeError:", error)
    print("graphc raised while building the graph, at the line with the mistake.")
    print("Give the vector a size-1 trailing dim so it lines up with the rows:")
    show("a + per_row.reshape(3, 1)", a + per_row.reshape(3, 1))


def matrix_multiplication() -> None:
    """Matrix multiplication"""
    a = gc.tensor([[1.0, 2.0], [2.0, 3.0], [4.0, 5.0]])
    b = gc.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    print("a.shape =", a.shape, " b.shape =", b.shape)
    show("a.matmul(b)", a.matmul(b))
    show("a @ b", a @ b)

    # The tutorial's batched product: [batch, M, 1] @ [batch, 1, N] -> [batch, M, N].
    columns = gc.arange(1, 7, dtype=gc.float32).reshape(2, 3, 1)
    rows = gc.ones(2, 1, 4)
    outer = columns @ rows
    print("[2, 3, 1] @ [2, 1, 4] ->", outer.shape)
    show("columns @ rows", outer)

    # Batch dims broadcast too: one [4, 5] matrix multiplies every matrix in the batch.
    print("[2, 3, 4] @ [4, 5] ->", (outer @ gc.ones(4, 5)).shape)

    print("a @ a with a of shape", a.shape, "does not contract:")
    try:
        a @ a
    except ShapeError as error:
        print("ShapeError:", error)


def shapes() -> None:
    """Shapes"""
    v = gc.tensor([1, 2, 3])
    print("v.shape =", v.shape, " v.ndim =", v.ndim, " v.numel() =", v.numel())
    m = gc.tensor([[1, 2, 3], [4, 5, 6]])
    print("m.shape =", m.shape, " m.ndim =", m.ndim, " m.numel() =", m.numel())
    t = gc.zeros(4, 3, 2)
    print("t.shape =", t.shape, " t.ndim =", t.ndim, " t.numel() =", t.numel())
    print("repr(t) =", repr(t), "(a tensor shows its type and op, not its values)")


def reshaping() -> None:
    """Reshape, view and transpose"""
    rr = gc.arange(1, 16)
    print("rr.shape =", rr.shape)
    show("rr.reshape(5, 3)", rr.reshape(5, 3))
    # A graph has no aliasing, so view is the same operation as reshape.
    show("rr.view(3, 5)", rr.view(3, 5))
    print("rr.view(-1, 5).shape =", rr.view(-1, 5).shape)
    show("rr.reshape(5, 3).transpose(0, 1)", rr.reshape(5, 3).transpose(0, 1))
    print("rr.reshape(5, 3).T.shape =", rr.reshape(5, 3).T.shape)


def numpy_round_trip() -> None:
    """NumPy round trip"""
    ndarray = np.array([[1, 2], [3, 4]])
    t = gc.tensor(ndarray)
    show("gc.tensor(np.array([[1, 2], [3, 4]]))", t)
    back = (t * 10).numpy()
    print("(t * 10).numpy() is a", type(back).__name__, "of dtype", back.dtype)
    print(textwrap.indent(np.array2string(back), "    "))
    print("an array keeps its dtype:", gc.tensor(np.array([0.5, 1.5])).dtype)


def reductions() -> None:
    """Reductions over a dim"""
    data = gc.arange(1, 36, dtype=gc.float32).reshape(5, 7)
    show("data", data)
    # The dim you name is the dim that disappears: [5, 7] summed over dim 0 is [7].
    show("data.sum(dim=0)", data.sum(dim=0))
    show("data.sum(dim=1)", data.sum(dim=1))
    show("data.sum()", data.sum())
    show("data.std(dim=0)", data.std(dim=0))
    show("data.mean()", data.mean())

    data = gc.arange(1, 7, dtype=gc.float32).reshape(2, 3)
    show("data", data)
    show("row average, data.mean(dim=1)", data.mean(dim=1))
    show("column average, data.mean(dim=0)", data.mean(dim=0))

    scores = gc.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    values, indices = scores.max(dim=1)
    show("scores", scores)
    show("scores.max(dim=1).values", values)
    show("scores.max(dim=1).indices", indices)


def indexing() -> None:
    """Indexing"""
    x = gc.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]])
    print("x.shape =", x.shape)
    show("x[0]", x[0])
    show("x[:, 0]", x[:, 0])
    show("x[:, 0, 0]", x[:, 0, 0])
    show("x[..., 1]", x[..., 1])
    print("x[:, :, :].shape =", x[:, :, :].shape)

    x = gc.arange(1, 16).reshape(5, 3)
    show("x = gc.arange(1, 16).reshape(5, 3)", x)
    show("x[0:3]", x[0:3])
    show("x[1:4, 1:]", x[1:4, 1:])
    show("x[[0, 2, 4]]", x[[0, 2, 4]])
    show("x[::2, -1]", x[::2, -1])


def scalars() -> None:
    """Getting a Python number with .item()"""
    scalar = gc.tensor([1])
    print("gc.tensor([1]).item() =", scalar.item())
    total = gc.arange(1, 36, dtype=gc.float32).reshape(5, 7).sum()
    print("data.sum().item() =", total.item(), "of type", type(total.item()).__name__)


def symbolic_batch() -> None:
    """A symbolic batch dim and compiled functions"""
    x = gc.input("x", ("B", 4))
    w = gc.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 1.0, 0.0], [-1.0, 2.0, 1.0]])
    b = gc.tensor([0.0, -1.0, 1.0])
    h = (x @ w.named("W") + b.named("b")).relu()
    total = h.sum(dim=1)
    print("x.shape =", x.shape, " h.shape =", h.shape, " total.shape =", total.shape)
    print("x.numel() =", x.numel())
    print("gc.show(total) prints the graph that produces total, as it was built:")
    gc.show(total)

    f = gc.compile(inputs=[x], outputs=[h, total])
    print("print(f.graph) prints the optimised graph that f runs:")
    print(f.graph)
    for batch in (2, 5):
        xb = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) / 10
        hb, totalb = f(xb)
        print(f"B={batch}: fed {xb.shape}, got h {hb.shape} and total {totalb.shape}")
        print(textwrap.indent(np.array2string(totalb), "    "))
    try:
        f(np.zeros((2, 5), dtype=np.float32))
    except InputError as error:
        print("InputError:", error)


def autograd() -> None:
    """Autograd: gradients as graph nodes"""
    x = gc.tensor(2.0)
    y = 3 * x * x
    dy_dx = gc.grad(y, x)
    print("x = 2, y = 3x^2; dy/dx =", dy_dx.item())
    z = 3 * x * x
    print("gc.grad(y + z, x) =", gc.grad(y + z, x).item())
    print(
        "PyTorch's second y.backward() prints 24 because it adds into x.grad; graphc's "
        "gradients are values in the graph, so nothing accumulates behind your back."
    )
    print(
        "To sum gradients over several terms you add them in the graph (as y + z above); "
        "across calls of a training step, the optimizer's accumulate=k does it for you."
    )
    w = gc.input("w", (3,))
    loss = ((w * w).sum() + w[0]).named("loss")
    grad_w = gc.grad(loss, w)
    print("gradient graph of loss = sum(w^2) + w[0]:")
    gc.show(grad_w)
    print("at w = [1, 2, 3]:", grad_w.eval({w: np.array([1.0, 2.0, 3.0], np.float32)}))


def nn_linear() -> None:
    """nn.Linear"""
    gc.manual_seed(0)
    x = gc.randn(2, 3, 4)
    linear = nn.Linear(4, 2)
    print("linear =", linear)
    output = linear(x)
    print("x.shape =", x.shape, "-> linear(x).shape =", output.shape)
    show("linear(x)", output)
    print("Linear maps the last dim (in_features=4) to out_features=2; the other dims ride along.")
    print("Matching the wrong dim is caught as the layer is called, before anything runs:")
    try:
        nn.Linear(2, 2)(x)
    except ShapeError as error:
        print("ShapeError:", error)


def nn_parameters() -> None:
    """Parameters"""
    gc.manual_seed(0)
    linear = nn.Linear(4, 2)
    for name, parameter in linear.named_parameters():
        print(f"{name}: {parameter!r}")
        print(textwrap.indent(np.array2string(parameter.numpy()), "    "))
    print(
        "A Parameter is a gc.Variable: its value persists between calls of compiled functions, "
        "and a training step updates it in place. weight is (out_features, in_features), as in "
        "PyTorch, and both start from PyTorch's default (Kaiming-uniform) initialisation."
    )


def nn_sequential() -> None:
    """Activations, other layers and nn.Sequential"""
    gc.manual_seed(0)
    x = gc.randn(2, 3, 4)
    linear = nn.Linear(4, 2)
    sigmoid = nn.Sigmoid()
    show("sigmoid(linear(x))", sigmoid(linear(x)))
    block = nn.Sequential(linear, sigmoid)
    print("block =", block)
    show("block(x) (the same layers, applied in order)", block(x))
    print("Other layers work the same way; the shapes of an image batch through a few:")
    images = gc.randn(1, 3, 8, 8)
    print(f"  input {images.shape}")
    for layer in (
        nn.Conv2d(3, 4, kernel_size=3, padding=1),
        nn.BatchNorm2d(4),
        nn.MaxPool2d(2),
        nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2),
        nn.Upsample(scale_factor=2),
    ):
        images = layer(images)
        print(f"  {type(layer).__name__:>15} -> {images.shape}")


class MultilayerPerceptron(nn.Module):
    """The tutorial's MLP: Linear, ReLU, Linear, Sigmoid, back to the input size."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.model = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, input_size),
            nn.Sigmoid(),
        )

    def forward(self, x: gc.Tensor) -> gc.Tensor:
        """Return the model's output for x; this builds graph nodes, it computes nothing."""
        return self.model(x)


def nn_module() -> None:
    """Your own nn.Module: a multilayer perceptron"""
    gc.manual_seed(0)
    model = MultilayerPerceptron(5, 3)
    print("model =", model)
    x = gc.randn(2, 5)
    show("model(x)", model(x))
    for name, parameter in model.named_parameters():
        print(f"  {name}: {parameter.node.type}")


def _training_problem() -> tuple[MultilayerPerceptron, gc.Tensor, gc.Tensor, gc.Tensor]:
    """Return (model, x, y, loss) for the optimisation sections, built the same every time."""
    gc.manual_seed(0)
    model = MultilayerPerceptron(5, 3)
    x = gc.input("x", ("B", 5))
    y = gc.input("y", ("B",), gc.int64)
    loss_function = nn.CrossEntropyLoss()
    loss = loss_function(model(x), y)
    return model, x, y, loss


def _random_data() -> tuple[np.ndarray, np.ndarray]:
    """Return 10 noisy points x (10, 5) whose class y is the position of their largest entry."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=10)
    x = (np.eye(5)[y] * 3 + rng.standard_normal((10, 5))).astype(np.float32)
    return x, y


def optimization() -> None:
    """Optimizers and losses: Adam and CrossEntropyLoss"""
    model, x, y, loss = _training_problem()
    adam = optim.Adam(model.parameters(), lr=1e-1)
    print("adam =", adam)
    print("loss =", loss, "(a scalar in the graph: CrossEntropyLoss of model(x) and y)")
    xb, yb = _random_data()
    print("the loss on random data before training:", loss.eval({x: xb, y: yb}))
    print(
        "PyTorch's loop calls zero_grad(), backward() and step() every iteration. In graphc "
        "the gradients are graph values, so nothing accumulates between calls and there is "
        "nothing to zero: adam.minimize(loss) returns the new value of every parameter and "
        "every piece of Adam's state, and gc.compile turns forward, backward and update into "
        "one function. (To sum gradients over several batches, as .grad does, use "
        "adam.minimize(loss, accumulate=k).)"
    )
    updates = adam.minimize(loss)
    for variable in list(updates)[:4]:
        print(f"  updates[{variable.storage.name}] = {updates[variable]!r}")
    print(f"  ... {len(updates)} updates in all")


def training_loop() -> None:
    """The training loop"""
    model, x, y, loss = _training_problem()
    adam = optim.Adam(model.parameters(), lr=1e-1)
    step = gc.compile(inputs=[x, y], outputs=[loss], updates=adam.minimize(loss))
    xb, yb = _random_data()
    weight = model.model[0].weight
    before = weight.numpy()
    for epoch in range(10):
        loss_value = step(xb, yb)  # forward, backward and the Adam update, in one call
        print(f"epoch {epoch + 1:2d}: loss {loss_value:.4f}")
    print("the first layer's weight moved by up to", np.abs(weight.numpy() - before).max())
    model.eval()
    predict = gc.compile(inputs=[x], outputs=[model(x).argmax(dim=1)])
    print("predictions:", predict(xb), " labels:", yb)
    print(
        "(The MLP ends in a Sigmoid, as in the tutorial, so its class scores stay in (0, 1) "
        "and the loss cannot reach 0; the predictions show the fit.)"
    )


def compiled_step() -> None:
    """The compiled training step's graph"""
    model, x, y, loss = _training_problem()
    adam = optim.Adam(model.parameters(), lr=1e-1)
    step = gc.compile(inputs=[x, y], outputs=[loss], updates=adam.minimize(loss))
    print("print(step.graph): the forward pass, its gradients and the Adam update, with shapes:")
    print(step.graph)


# Sections run in order: the tensor half, then nn, optimizers and the training loop.
SECTIONS = (
    creating_tensors,
    elementwise_ops,
    broadcasting,
    matrix_multiplication,
    shapes,
    reshaping,
    numpy_round_trip,
    reductions,
    indexing,
    scalars,
    symbolic_batch,
    autograd,
    nn_linear,
    nn_parameters,
    nn_sequential,
    nn_module,
    optimization,
    training_loop,
    compiled_step,
)


def main() -> None:
    """Run every section, each under a header taken from its docstring."""
    for number, section in enumerate(SECTIONS, start=1):
        title = f"{number}. {section.__doc__}"
        print(f"\n{title}\n{'=' * len(title)}")
        section()


if __name__ == "__main__":
    main()
