"""The loop ops: `scan`, one node that runs a body graph once per step, and `tuple_get`, which
reads one of its results.

A scan node's inputs are the initial carries, the sequences (`xs`, stepped along their leading
dim) and the body's implicit inputs (values the body reads from outside: weights, closures),
in that order. Its `body` attribute is a Graph whose inputs are placeholders for the same
three groups (a carry, one step of each sequence, each implicit input) and whose outputs are
the new carries then the per-step results `y`. The node's type is a TupleType: the final
carries, then each `y` stacked along a leading dim of `length` (which may be symbolic).

The gradient rule lives with the autodiff pass (`passes/scan_autodiff.py`), which it needs to
differentiate the body; the LLVM lowering is `backends/kernel/scan.py` and
`backends/llvm/scan.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from graphc.dims import Dim, dims_equal, evaluate_dim, evaluate_shape
from graphc.errors import DTypeError, GraphError, ShapeError
from graphc.graph import Graph, Node
from graphc.ops.evaluate import evaluate
from graphc.ops.registry import InferRule, ReferenceImpl, define_op, get_op, make_node
from graphc.types import TensorType, TupleType


def placeholder(name: str, declared: TensorType) -> Node:
    """Return a new input placeholder of a body graph."""
    attrs = {"name": name, "shape": declared.shape, "dtype": declared.dtype}
    return make_node("input", [], attrs, name=name)


def carry_names(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    """Return how the user's code names each carry (`carry[0][1]`), for error messages."""
    return attrs.get("carry_names") or tuple(f"carry {i}" for i in range(attrs["num_carry"]))


def _mismatch(expected: TensorType, got: TensorType) -> type[DTypeError | ShapeError] | None:
    """Return the error a value of type got raises where expected's type is needed, if any."""
    if expected.dtype != got.dtype:
        return DTypeError
    if len(expected.shape) != len(got.shape) or not all(map(dims_equal, expected.shape, got.shape)):
        return ShapeError
    return None


def _scan_infer(types: Sequence[Any], attrs: Mapping[str, Any]) -> TupleType:
    body: Graph = attrs["body"]
    carries, sequences = attrs["num_carry"], attrs["num_xs"]
    length: Dim = attrs["length"]
    if len(types) != len(body.inputs) or len(body.outputs) < carries:
        raise GraphError(
            f"{len(types)} inputs for a body of {len(body.inputs)} inputs and "
            f"{len(body.outputs)} outputs ({carries} carries)"
        )
    names = carry_names(attrs)
    for name, given, slot, result in zip(
        names, types[:carries], body.inputs[:carries], body.outputs[:carries], strict=True
    ):
        error = _mismatch(slot.type, given)
        if error is not None:
            raise error(f"the initial {name} is {given}, the body's carry is {slot.type}")
        error = _mismatch(slot.type, result.type)
        if error is not None:
            where = f" (at {result.location})" if result.location else ""
            raise error(
                f"{name} goes into fn as {slot.type} but fn returns {result.type} for it"
                f"{where}; a carry must keep its shape and dtype"
            )
    for position, (given, slot) in enumerate(
        zip(
            types[carries : carries + sequences],
            body.inputs[carries : carries + sequences],
            strict=True,
        )
    ):
        if given.ndim == 0 or not dims_equal(given.shape[0], length):
            raise ShapeError(f"xs {position} {given} needs a leading dim of the length {length}")
        step = TensorType(given.shape[1:], given.dtype)
        error = _mismatch(slot.type, step)
        if error is not None:
            raise error(f"a step of xs {position} is {step}, the body's is {slot.type}")
    for given, slot in zip(
        types[carries + sequences :], body.inputs[carries + sequences :], strict=True
    ):
        error = _mismatch(slot.type, given)
        if error is not None:
            raise error(f"the body's input {slot.name} is {slot.type}, given {given}")
    stacked = tuple(
        TensorType((length, *y.type.shape), y.type.dtype) for y in body.outputs[carries:]
    )
    return TupleType((*types[:carries], *stacked))


def _scan_reference(
    args: Sequence[np.ndarray], attrs: Mapping[str, Any], bindings: Mapping[str, int]
) -> tuple[np.ndarray, ...]:
    """Run the body once per step in Python, stacking each step's results."""
    body: Graph = attrs["body"]
    carries, sequences = attrs["num_carry"], attrs["num_xs"]
    carry = list(args[:carries])
    xs = args[carries : carries + sequences]
    implicit = list(args[carries + sequences :])
    length = evaluate_dim(attrs["length"], bindings)
    ys = [
        np.empty((length, *evaluate_shape(y.type.shape, bindings)), y.type.dtype.numpy)
        for y in body.outputs[carries:]
    ]
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    for t in steps:
        values = evaluate(body, [*carry, *(x[t] for x in xs), *implicit], bindings)
        results = [values[n.id] for n in body.outputs]
        carry = results[:carries]
        for stacked, value in zip(ys, results[carries:], strict=True):
            stacked[t] = value
    return (*carry, *ys)


def _scan_call_check(node: Node) -> Callable[[Mapping[str, int]], None] | None:
    """Return the checks the body's nodes need once the sizes are known (symbolic slices)."""
    checks = []
    for inner in node.attrs["body"].nodes:
        rule = get_op(inner.op).call_check
        check = rule(inner) if rule is not None else None
        if check is not None:
            checks.append(check)
    if not checks:
        return None

    def run_all(bindings: Mapping[str, int]) -> None:
        for check in checks:
            check(bindings)

    return run_all


# A loop's type is a TupleType and its reference returns one array per result: the registry's
# signatures name the single-result case every other op has.
define_op(
    "scan",
    "loop",
    cast(InferRule, _scan_infer),
    cast(ReferenceImpl, _scan_reference),
    call_check=_scan_call_check,
)


def _tuple_get_infer(types: Sequence[Any], attrs: Mapping[str, Any]) -> TensorType:
    (source,) = types
    if not isinstance(source, TupleType) or not 0 <= attrs["index"] < len(source.items):
        raise GraphError(f"no result {attrs['index']} in {source}")
    return source.items[attrs["index"]]


# Its value is one of the loop's results, which the loop's kernel stores. Autodiff hands its
# gradient to the loop as that result's (passes/autodiff.py).
define_op(
    "tuple_get",
    "loop",
    _tuple_get_infer,
    lambda args, attrs, env: args[0][attrs["index"]],
    fusion="result",
)


def tuple_items(node: Node) -> list[Node]:
    """Return one tuple_get node per result of a node of several results."""
    return [
        make_node("tuple_get", [node], {"index": i}, location=node.location)
        for i in range(len(node.type.items))  # type: ignore[attr-defined]
    ]
