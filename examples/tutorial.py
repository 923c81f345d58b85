"""The tensor half of the CS224N PyTorch tutorial, written with graphc.

Every tensor here is a node in a graph; `.numpy()` and `.item()` compile the subgraph that
produces it on the default backend and run it. Run it with `python examples/tutorial.py`.
"""

from __future__ import annotations

import textwrap

import numpy as np

import graphc as gc
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


# Sections run in order. The tutorial's second half (nn onwards) is appended here.
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
)


def main() -> None:
    """Run every section, each under a header taken from its docstring."""
    for number, section in enumerate(SECTIONS, start=1):
        title = f"{number}. {section.__doc__}"
        print(f"\n{title}\n{'=' * len(title)}")
        section()


if __name__ == "__main__":
    main()
