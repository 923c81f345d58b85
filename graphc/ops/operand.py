"""Operand: a Node with PyTorch's operators and elementwise methods, written once.

`Operand` is the base of the Tensor API's `Tensor` and of `Value`, what gradient rules
compute with. Its operators and methods build nodes through `promotion.elementwise` (PyTorch's
type promotion, then `make_node`), and hand the new node to the one method a subclass
defines, `_wrap`, so a Tensor's `x + 1` is a Tensor and a Value's is a Value. This module sits
below the Tensor API and never imports it, which is what lets the autodiff pass and the
gradient rules beside each op build nodes without reaching up into the user's API.

The elementwise methods named after ops (`exp`, `log1p`, `maximum`, `atan2`, ...) are listed
here by name and bound from the op definitions (`OpDef.api`, `doc`, `arity`), so type checkers
and editors see them; `tests/test_tensor_api.py` checks that the list and the op table agree.
`Value` adds the primitive forms of the movement ops, reductions and matmul that gradient
rules need: dims are non-negative ints, shapes complete, no promotion beyond elementwise ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from graphc.dims import Dim, dims_equal
from graphc.dtypes import DType
from graphc.errors import DTypeError, GraphError, located, user_location
from graphc.graph import Node
from graphc.ops import elementwise as _elementwise_ops  # noqa: F401 - the ops bound below
from graphc.ops import promotion
from graphc.ops.registry import OPS, OpDef, make_node

R = TypeVar("R", bound="Operand[Any]")


def node_of(value: Any) -> Any:
    """Return the node of an Operand; any other value (scalar, array, list) unchanged."""
    return value.node if isinstance(value, Operand) else value


def require_bool(*operands: Any, op: str) -> None:
    """Raise DTypeError unless every operand is bool: graphc's &, |, ~ are logical."""
    for operand in operands:
        if isinstance(operand, Operand) and not operand.dtype.is_bool:
            raise DTypeError(
                located(
                    f"{op}: only defined for bool tensors here, got {operand!r}; compare first "
                    "(x > 0) or use gc.where",
                    user_location(),
                )
            )


def public_op(api: str) -> OpDef:
    """Return the elementwise op exposed under a public name (gc.<api>, Tensor.<api>)."""
    for op in OPS.values():
        if op.api == api and op.promotion and op.arity:
            return op
    raise LookupError(f"no elementwise op has the public name {api!r}")


def _unary(api: str) -> Callable[[Operand[R]], R]:
    """Return the method `x.<api>()` of a one-operand elementwise op, with the op's doc."""
    op = public_op(api)
    assert op.arity == 1, api

    def method(self: Operand[R]) -> R:
        return self._elementwise(op.name, self)

    method.__name__ = api
    method.__qualname__ = f"Operand.{api}"
    method.__doc__ = op.doc
    return method


def _binary(api: str) -> Callable[[Operand[R], Any], R]:
    """Return the method `x.<api>(other)` of a two-operand elementwise op, with the op's doc."""
    op = public_op(api)
    assert op.arity == 2, api

    def method(self: Operand[R], other: Any) -> R:
        return self._elementwise(op.name, self, other)

    method.__name__ = api
    method.__qualname__ = f"Operand.{api}"
    method.__doc__ = op.doc
    return method


class Operand(Generic[R]):
    """A node with operators and elementwise methods; a subclass says how to wrap a result."""

    __slots__ = ()
    node: Node
    # Make numpy hand `ndarray (op) operand` to our reflected operators.
    __array_ufunc__ = None

    def _wrap(self, node: Node) -> R:
        """Return a new node wrapped as this operand's kind (Tensor, Value)."""
        raise NotImplementedError

    def _elementwise(self, op: str, *operands: Any) -> R:
        """Return the elementwise op applied to operands, promoted as the op says."""
        return self._wrap(promotion.elementwise(op, *map(node_of, operands)))

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.node.type.shape

    @property
    def dtype(self) -> DType:
        return self.node.type.dtype

    @property
    def ndim(self) -> int:
        return self.node.type.ndim

    __hash__ = object.__hash__

    # -- operators ----------------------------------------------------------------------------
    def __add__(self, other: Any) -> R:
        return self._elementwise("add", self, other)

    def __radd__(self, other: Any) -> R:
        return self._elementwise("add", other, self)

    def __sub__(self, other: Any) -> R:
        return self._elementwise("sub", self, other)

    def __rsub__(self, other: Any) -> R:
        return self._elementwise("sub", other, self)

    def __mul__(self, other: Any) -> R:
        return self._elementwise("mul", self, other)

    def __rmul__(self, other: Any) -> R:
        return self._elementwise("mul", other, self)

    def __truediv__(self, other: Any) -> R:
        return self._elementwise("div", self, other)

    def __rtruediv__(self, other: Any) -> R:
        return self._elementwise("div", other, self)

    def __floordiv__(self, other: Any) -> R:
        return self._elementwise("floordiv", self, other)

    def __rfloordiv__(self, other: Any) -> R:
        return self._elementwise("floordiv", other, self)

    def __mod__(self, other: Any) -> R:
        return self._elementwise("mod", self, other)

    def __rmod__(self, other: Any) -> R:
        return self._elementwise("mod", other, self)

    def __pow__(self, other: Any) -> R:
        return self._elementwise("pow", self, other)

    def __rpow__(self, other: Any) -> R:
        return self._elementwise("pow", other, self)

    def __neg__(self) -> R:
        return self._elementwise("neg", self)

    def __abs__(self) -> R:
        return self._elementwise("abs", self)

    def __invert__(self) -> R:
        require_bool(self, op="~")
        return self._elementwise("logical_not", self)

    def __and__(self, other: Any) -> R:
        require_bool(self, other, op="and")
        return self._elementwise("logical_and", self, other)

    def __rand__(self, other: Any) -> R:
        require_bool(self, other, op="and")
        return self._elementwise("logical_and", other, self)

    def __or__(self, other: Any) -> R:
        require_bool(self, other, op="or")
        return self._elementwise("logical_or", self, other)

    def __ror__(self, other: Any) -> R:
        require_bool(self, other, op="or")
        return self._elementwise("logical_or", other, self)

    # == and != build comparisons, as in PyTorch, rather than answering a bool: they override
    # object's with another return type, which no annotation can make compatible.
    def __eq__(self, other: Any) -> R:  # type: ignore[override]
        return self._elementwise("eq", self, other)

    def __ne__(self, other: Any) -> R:  # type: ignore[override]
        return self._elementwise("ne", self, other)

    def __lt__(self, other: Any) -> R:
        return self._elementwise("lt", self, other)

    def __le__(self, other: Any) -> R:
        return self._elementwise("le", self, other)

    def __gt__(self, other: Any) -> R:
        return self._elementwise("gt", self, other)

    def __ge__(self, other: Any) -> R:
        return self._elementwise("ge", self, other)

    # -- one method per elementwise op with a public name (OpDef.api) ---------------------------
    neg = _unary("neg")
    abs = _unary("abs")
    sign = _unary("sign")
    exp = _unary("exp")
    expm1 = _unary("expm1")
    log = _unary("log")
    log1p = _unary("log1p")
    sqrt = _unary("sqrt")
    rsqrt = _unary("rsqrt")
    sin = _unary("sin")
    cos = _unary("cos")
    tanh = _unary("tanh")
    sigmoid = _unary("sigmoid")
    erf = _unary("erf")
    floor = _unary("floor")
    ceil = _unary("ceil")
    round = _unary("round")
    logical_not = _unary("logical_not")
    add = _binary("add")
    sub = _binary("sub")
    mul = _binary("mul")
    div = _binary("div")
    floor_divide = _binary("floor_divide")
    remainder = _binary("remainder")
    pow = _binary("pow")
    maximum = _binary("maximum")
    minimum = _binary("minimum")
    atan2 = _binary("atan2")
    eq = _binary("eq")
    ne = _binary("ne")
    lt = _binary("lt")
    le = _binary("le")
    gt = _binary("gt")
    ge = _binary("ge")
    logical_and = _binary("logical_and")
    logical_or = _binary("logical_or")


class Value(Operand["Value"]):
    """What gradient rules compute with: a node whose operations build nodes directly.

    Elementwise operators and methods come from Operand; the movement ops, reductions and
    matmul here are the primitives themselves (non-negative axes, complete shapes), and a
    movement that would not change the value returns it unchanged.
    """

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def _wrap(self, node: Node) -> Value:
        return Value(node)

    def __repr__(self) -> str:
        return f"Value({self.node.type}, {self.node.op})"

    def __bool__(self) -> bool:
        raise GraphError(
            f"the truth value of {self!r} is not known while the graph is built; use "
            "where(condition, a, b)"
        )

    def _apply(self, op: str, attrs: dict[str, Any]) -> Value:
        return Value(make_node(op, [self.node], attrs))

    def to(self, dtype: DType) -> Value:
        """Return the value converted to dtype."""
        return Value(promotion.cast(self.node, dtype))

    def sum(self, dim: tuple[int, ...], keepdim: bool = False) -> Value:
        """Return the sum over the axes dim (a float or int64 value)."""
        return self._apply("reduce_sum", {"axes": tuple(sorted(dim)), "keepdims": keepdim})

    def prod(self, dim: tuple[int, ...], keepdim: bool = False) -> Value:
        """Return the product over the axes dim."""
        return self._apply("reduce_prod", {"axes": tuple(sorted(dim)), "keepdims": keepdim})

    def reshape(self, *shape: Dim) -> Value:
        """Return the value with a new shape of the same size."""
        if len(shape) == self.ndim and all(map(dims_equal, shape, self.shape)):
            return self
        return self._apply("reshape", {"shape": tuple(shape)})

    def unsqueeze(self, axis: int) -> Value:
        """Return the value with a size-1 dim inserted at axis."""
        return self.reshape(*self.shape[:axis], 1, *self.shape[axis:])

    def broadcast_to(self, shape: tuple[Dim, ...]) -> Value:
        """Return the value broadcast to shape."""
        if len(shape) == self.ndim and all(map(dims_equal, shape, self.shape)):
            return self
        return self._apply("broadcast_to", {"shape": tuple(shape)})

    def permute(self, *perm: int) -> Value:
        """Return the value with its dims reordered."""
        if perm == tuple(range(self.ndim)):
            return self
        return self._apply("permute", {"perm": tuple(perm)})

    @property
    def mT(self) -> Value:  # noqa: N802 - PyTorch's name
        """Return the value with its last two dims swapped."""
        perm = list(range(self.ndim))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return self.permute(*perm)

    def __matmul__(self, other: Value) -> Value:
        return Value(make_node("matmul", [self.node, other.node]))
