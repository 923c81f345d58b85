"""Module and Parameter: named, nested state and the PyTorch-compatible state dict.

A Module is a graph builder with named state: calling it builds graph nodes (it computes
nothing), and its Parameters and buffers are Variables, so a compiled Function reads them
and writes them in place. Names, nesting, `state_dict()` keys and the printed form follow
PyTorch's, so a PyTorch `state_dict` converted with `.numpy()` loads directly.

State a forward pass changes (BatchNorm's running statistics, Dropout's step counter) cannot
be written in place while a graph is being built. A module records each such change with
`add_state_update`; `state_updates(loss)` turns the records whose forward results the loss
depends on into `{Variable: new value}` for `gc.compile(..., updates=...)` (see state.py).
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from graphc.errors import DTypeError, GraphError, InputError, ShapeError, located, user_location
from graphc.nn.state import (  # noqa: F401 - state_updates is re-exported for optimizers
    StateRecord,
    UpdateRule,
    add_record,
    collect_state_updates,
    state_updates,
)
from graphc.tensor import Tensor
from graphc.variable import Variable


class Parameter(Variable):
    """A trainable Variable that a Module registers as a parameter (torch.nn.Parameter)."""

    __slots__ = ()

    def __init__(
        self, data: Any, requires_grad: bool = True, *, name: str | None = None, dtype: Any = None
    ) -> None:
        super().__init__(data, name, dtype, trainable=requires_grad)

    @property
    def requires_grad(self) -> bool:
        """Return whether optimizers train this parameter."""
        return self.storage.trainable

    def requires_grad_(self, requires_grad: bool = True) -> Parameter:
        """Set whether optimizers train this parameter; returns the parameter."""
        self.storage.trainable = bool(requires_grad)
        return self

    def __repr__(self) -> str:
        return f"Parameter({self.storage.name!r}, {self.node.type})"


class IncompatibleKeys(NamedTuple):
    """What load_state_dict(strict=False) could not match: missing and unexpected keys."""

    missing_keys: list[str]
    unexpected_keys: list[str]


_name_counters: dict[str, itertools.count] = {}


def unique_prefix(module: Module) -> str:
    """Return a fresh 'linear3'-style name for a module's Variables (each name is unique)."""
    kind = re.sub(r"\W", "", type(module).__name__.lower()) or "module"
    counter = _name_counters.setdefault(kind, itertools.count(1))
    return f"{kind}{next(counter)}"


# -- Module ------------------------------------------------------------------------------------
class Module:
    """Base class of every layer and model (torch.nn.Module): subclass it, assign Parameters,
    buffers and sub-modules as attributes in __init__, and build the graph in forward()."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_state_records", [])
        object.__setattr__(self, "_prefix", None)

    # -- attributes -----------------------------------------------------------------------------
    def _require_init(self, name: str) -> None:
        if "_parameters" not in self.__dict__:
            raise GraphError(
                located(
                    f"cannot assign {name!r} before Module.__init__() ran; call "
                    "super().__init__() first in your Module's __init__",
                    user_location(),
                )
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Module, Variable)):
            self._require_init(name)
        parameters = self.__dict__.get("_parameters")
        buffers = self.__dict__.get("_buffers")
        modules = self.__dict__.get("_modules")
        if isinstance(value, Variable) and (
            isinstance(value, Parameter) or value.storage.trainable
        ):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif parameters is not None and name in parameters:
            if value is not None:
                raise GraphError(
                    located(
                        f"cannot assign {type(value).__name__} to parameter {name!r}; "
                        "assign a Parameter or None",
                        user_location(),
                    )
                )
            parameters[name] = None
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Variable):
                raise GraphError(
                    located(
                        f"cannot assign {type(value).__name__} to buffer {name!r}; assign a "
                        "Variable or None",
                        user_location(),
                    )
                )
            buffers[name] = value
        elif isinstance(value, Variable):
            self._forget(name)
            self._buffers[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise GraphError(
                    located(
                        f"cannot assign {type(value).__name__} to sub-module {name!r}; assign a "
                        "Module or None",
                        user_location(),
                    )
                )
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if any(name in self.__dict__[t] for t in ("_parameters", "_buffers", "_modules")):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        own = [*self._parameters, *self._buffers, *self._modules]
        return sorted(set(super().__dir__()) | set(own))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder, e.g. a disabled bias) under name."""
        self._require_init(name)
        if param is not None and not isinstance(param, Parameter):
            raise GraphError(
                located(f"parameter {name!r} must be a Parameter or None", user_location())
            )
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Variable | None, persistent: bool = True) -> None:
        """Add a buffer: a Variable that is state but not trained (e.g. running statistics).

        Persistent buffers are part of state_dict(); non-persistent ones are not.
        """
        self._require_init(name)
        if tensor is not None and not isinstance(tensor, Variable):
            raise GraphError(
                located(
                    f"buffer {name!r} must be a gc.Variable or None, got {type(tensor).__name__}",
                    user_location(),
                )
            )
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a sub-module under name."""
        self._require_init(name)
        if module is not None and not isinstance(module, Module):
            raise GraphError(located(f"{name!r} must be a Module or None", user_location()))
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    def variable_name(self, attribute: str) -> str:
        """Return a unique Variable name for one of this module's attributes ('linear3.bias')."""
        if self._prefix is None:
            object.__setattr__(self, "_prefix", unique_prefix(self))
        return f"{self._prefix}.{attribute}"

    # -- calling ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Build the module's graph for the given inputs (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield (name, module) for the direct sub-modules."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """Yield the direct sub-modules."""
        for _, module in self.named_children():
            yield module

    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Yield (dotted name, module) for this module and every module below it."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            child_prefix = f"{prefix}.{name}" if prefix else name
            yield from module.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """Yield this module and every module below it."""
        for _, module in self.named_modules():
            yield module

    def _named_members(self, table: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        scopes = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for scope, module in scopes:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{scope}.{name}" if scope else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter), each shared parameter once."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Yield the Parameters (what an optimizer trains)."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Variable]]:
        """Yield (dotted name, Variable) for the buffers (running statistics and the like)."""
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Variable]:
        """Yield the buffers."""
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        """Return the sub-module at a dotted path ('0.conv')."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no sub-module {part!r}")
            module = child
        return module

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every sub-module and then on this module; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its sub-modules; returns self.

        Graphs built afterwards use it: BatchNorm uses batch statistics and records running
        statistic updates, Dropout drops. Graphs built before are not affected.
        """
        if not isinstance(mode, bool):
            raise GraphError(located("train(mode): mode must be a bool", user_location()))
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (train(False)); returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set whether optimizers train every parameter; returns self."""
        for param in self.parameters():
            param.storage.trainable = bool(requires_grad)
        return self

    # -- state updates ---------------------------------------------------------------------
    def add_state_update(
        self, variable: Variable, new_value: Tensor | UpdateRule, output: Tensor
    ) -> None:
        """Record that the forward call that produced `output` changes `variable`.

        new_value is the new value, or a function from the current value to the new one
        (used when one graph calls the module twice: the second call's update then starts
        from the first's, as PyTorch's in-place updates would). Custom modules with state
        that changes in training call this from forward().
        """
        if not isinstance(variable, Variable):
            raise GraphError(
                located(f"add_state_update: {variable!r} is not a Variable", user_location())
            )
        rule = new_value if callable(new_value) else (lambda current, value=new_value: value)
        add_record(self, variable, rule, output)

    def state_updates(self, *outputs: Tensor) -> dict[Variable, Tensor]:
        """Return {Variable: new value} for the state this model's train-mode calls change.

        Pass the outputs (e.g. the loss) of the graph being compiled, so that only the calls
        it depends on count; without them every call recorded since clear_state_updates()
        counts. Merge the result into gc.compile's updates:
        `gc.compile([x], [y], updates=model.state_updates(y))`; optimizers' minimize(loss)
        merges it for you.
        """
        records = [r for m in self.modules() for r in m._state_records]
        return collect_state_updates(records, outputs)

    def clear_state_updates(self) -> None:
        """Forget the recorded state updates of this module and its sub-modules."""
        for module in self.modules():
            module._state_records.clear()

    # -- state dicts -------------------------------------------------------------------------
    def _state_entries(self, prefix: str = "") -> OrderedDict[str, Variable]:
        entries: OrderedDict[str, Variable] = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                entries[prefix + name] = param
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent:
                entries[prefix + name] = buffer
        for name, module in self._modules.items():
            if module is not None:
                entries.update(module._state_entries(f"{prefix}{name}."))
        return entries

    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Any]:
        """Return {dotted name: array copy} of parameters and persistent buffers, in
        PyTorch's order and with its names (keep_vars=True gives the Variables)."""
        entries = self._state_entries(prefix)
        if keep_vars:
            return entries
        return OrderedDict((name, var.numpy()) for name, var in entries.items())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers, all of them or (on an error) none.

        Raises InputError for missing or unexpected names (strict=True), ShapeError for a
        shape and DTypeError for a dtype that differs from the model's. Values may be numpy
        arrays, anything numpy converts (PyTorch CPU tensors), or graphc Variables.
        """
        location = user_location()
        if not isinstance(state_dict, Mapping):
            raise InputError(
                located(
                    f"load_state_dict: expected a mapping of names to arrays, got "
                    f"{type(state_dict).__name__}",
                    location,
                )
            )
        entries = self._state_entries()
        missing = [name for name in entries if name not in state_dict]
        unexpected = [name for name in state_dict if name not in entries]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(map(repr, missing))}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(map(repr, unexpected))}")
            raise InputError(
                located(
                    f"load_state_dict into {type(self).__name__}: "
                    + "; ".join(parts)
                    + f". The model's keys are: {', '.join(entries)}",
                    location,
                )
            )
        arrays, shape_errors, dtype_errors = {}, [], []
        for name, variable in entries.items():
            if name not in state_dict:
                continue
            array = _as_array(state_dict[name], name, location)
            storage = variable.storage
            if array.shape != storage.shape:
                shape_errors.append(
                    f"{name!r}: the model has {_shape_text(storage.shape)}, "
                    f"the state dict {_shape_text(array.shape)}"
                )
            elif array.dtype != storage.dtype.numpy:
                dtype_errors.append(
                    f"{name!r}: the model holds {storage.dtype.name}, the state dict "
                    f"{array.dtype} (convert with .astype(np.{storage.dtype.numpy}))"
                )
            arrays[name] = array
        if shape_errors:
            raise ShapeError(
                located("load_state_dict: shape mismatch for " + "; ".join(shape_errors), location)
            )
        if dtype_errors:
            raise DTypeError(
                located("load_state_dict: dtype mismatch for " + "; ".join(dtype_errors), location)
            )
        for name, array in arrays.items():
            entries[name].assign(array)
        return IncompatibleKeys(missing, unexpected)

    # -- printing ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """Return the text inside the parentheses of this module's repr (subclasses set it)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): {_indent(repr(module), 2)}"
            for name, module in self._modules.items()
            if module is not None
        ]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


def _indent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _as_array(value: Any, name: str, location: str) -> np.ndarray:
    if isinstance(value, Variable):
        return value.numpy()
    if isinstance(value, Tensor):
        raise InputError(
            located(
                f"load_state_dict: {name!r} is a symbolic Tensor; pass arrays (or .numpy() it)",
                location,
            )
        )
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - any conversion failure is the user's input
        raise InputError(
            located(f"load_state_dict: cannot convert {name!r} to an array: {error}", location)
        ) from None
    if array.dtype.kind not in "biuf":
        raise DTypeError(
            located(f"load_state_dict: {name!r} holds {array.dtype}, not numbers", location)
        )
    return array
