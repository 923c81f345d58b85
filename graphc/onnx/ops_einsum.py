"""The converter of ONNX's Einsum, built from permute, reshape, sum, gather and matmul.

Each operand first takes the diagonal of a label it repeats (`ii`) and sums the labels that
no other operand and not the output has; the operands are then contracted two at a time as
one batched matmul (shared labels still needed stay batch dims, the others are the contracted
dim), and the result is permuted to the output's order. An ellipsis stands for the same dims
in every operand, aligned from the right; broadcasting a size-1 dim against another is
refused, as is a label whose sizes differ between operands.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

import graphc as gc
from graphc.dims import Dim, dim_prod, dims_equal
from graphc.onnx.nodes import NodeContext, converter
from graphc.onnx.ops_shape import take

Labels = list[str]


def _parse(node: NodeContext, equation: str, ranks: list[int]) -> tuple[list[Labels], Labels]:
    """Return each operand's labels and the output's; an ellipsis becomes labels `.0`, `.1`,
    ... aligned from the right, and an implicit output is the ellipsis then the letters used
    once, in alphabetical order."""
    text = equation.replace(" ", "")
    inputs, arrow, output = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise node.error(f"equation {equation!r} names {len(terms)} operands, given {len(ranks)}")
    widths = [rank - len(term.replace("...", "")) for term, rank in zip(terms, ranks, strict=True)]
    ellipsis = max([w for w, term in zip(widths, terms, strict=True) if "..." in term], default=0)
    labels = []
    for term, width in zip(terms, widths, strict=True):
        if width < 0 or (width and "..." not in term):
            raise node.error(f"equation {equation!r} does not match operand ranks {ranks}")
        labels.append(_labels(term, [f".{j}" for j in range(ellipsis - width, ellipsis)]))
    if arrow:
        return labels, _labels(output, [f".{j}" for j in range(ellipsis)])
    counts = Counter(c for term in terms for c in term.replace("...", ""))
    once = sorted(c for c, n in counts.items() if n == 1)
    return labels, [f".{j}" for j in range(ellipsis)] + once


def _labels(term: str, ellipsis: Labels) -> Labels:
    before, dots, after = term.partition("...")
    return [*before, *(ellipsis if dots else []), *after]


def _diagonals(node: NodeContext, x: gc.Tensor, labels: Labels) -> tuple[gc.Tensor, Labels]:
    """Return x with the diagonal taken of every label it repeats, and its labels."""
    while len(set(labels)) < len(labels):
        label = next(a for a in labels if labels.count(a) > 1)
        first, second = [i for i, a in enumerate(labels) if a == label][:2]
        size = x.shape[first]
        if not isinstance(size, int) or not dims_equal(size, x.shape[second]):
            raise node.error(f"the diagonal of {label!r} needs equal static sizes, got {x.shape}")
        rest = [i for i in range(x.ndim) if i not in (first, second)]
        flat = x.permute(*rest, first, second).reshape(*(x.shape[i] for i in rest), size * size)
        x = take(flat, len(rest), np.arange(size, dtype=np.int64) * (size + 1))
        labels = [labels[i] for i in rest] + [label]
    return x, labels


def _contract(
    a: gc.Tensor, a_labels: Labels, b: gc.Tensor, b_labels: Labels, keep: set[str]
) -> tuple[gc.Tensor, Labels]:
    """Return a and b contracted over their shared labels not in keep, as one matmul."""
    batch = [label for label in a_labels if label in b_labels and label in keep]
    summed = [label for label in a_labels if label in b_labels and label not in keep]
    left = [label for label in a_labels if label not in b_labels]
    right = [label for label in b_labels if label not in a_labels]
    sizes = dict(zip(a_labels + b_labels, (*a.shape, *b.shape), strict=True))

    def arranged(x: gc.Tensor, labels: Labels, rows: Labels, cols: Labels) -> gc.Tensor:
        grouped = x.permute(*(labels.index(label) for label in batch + rows + cols))
        return grouped.reshape(
            *(sizes[label] for label in batch),
            dim_prod([sizes[label] for label in rows]),
            dim_prod([sizes[label] for label in cols]),
        )

    product = arranged(a, a_labels, left, summed) @ arranged(b, b_labels, summed, right)
    out = batch + left + right
    return product.reshape(*(sizes[label] for label in out)), out


@converter("Einsum")
def einsum(node: NodeContext) -> gc.Tensor:
    """The Einstein sum of the operands that `equation` describes."""
    operands = [node.tensor(i) for i in range(len(node))]
    equation = node.attr("equation")
    if not equation:
        raise node.error("the equation attribute is required")
    terms, output = _parse(node, equation, [x.ndim for x in operands])
    _check_sizes(node, operands, terms)
    pending = []
    for index, (x, labels) in enumerate(zip(operands, terms, strict=True)):
        x, labels = _diagonals(node, x, labels)
        elsewhere = set(output).union(*(t for i, t in enumerate(terms) if i != index))
        lone = [i for i, label in enumerate(labels) if label not in elsewhere]
        if lone:
            x = x.sum(tuple(lone))
            labels = [label for i, label in enumerate(labels) if i not in lone]
        pending.append((x, labels))
    x, labels = pending[0]
    for position, (y, y_labels) in enumerate(pending[1:], start=1):
        keep = set(output).union(*(t for _, t in pending[position + 1 :]))
        x, labels = _contract(x, labels, y, y_labels, keep)
    order = [labels.index(label) for label in output]
    return x.permute(*order) if order != sorted(order) else x


def _check_sizes(node: NodeContext, operands: list[gc.Tensor], terms: list[Labels]) -> None:
    """Raise where a label has different sizes in different places (broadcasting too)."""
    seen: dict[str, Dim] = {}
    for x, labels in zip(operands, terms, strict=True):
        for label, size in zip(labels, x.shape, strict=True):
            if label in seen and not dims_equal(seen[label], size):
                raise node.error(
                    f"label {label!r} has sizes {seen[label]} and {size}; broadcasting an "
                    "ellipsis or a label is not supported"
                )
            seen.setdefault(label, size)
