"""Optimizer: the base of graphc's optimizers, which build parameter updates as graph values.

PyTorch's optimizer mutates tensors when `step()` is called. A graphc optimizer instead
returns, from `minimize(loss)`, a dict `{Variable: new value}` holding the new value of every
parameter and of every piece of optimizer state; `gc.compile(..., updates=...)` turns it into
one compiled training step that applies all of it in place after each call. The state
(momentum buffers, Adam's moments, the step counter, the learning rate) lives in Variables,
so it persists between calls and a compiled step reads its current value every time.

How the PyTorch training loop maps onto a compiled step:

    PyTorch                                  graphc
    opt.zero_grad()                          (nothing: gradients are values in the graph)
    loss = loss_fn(model(x), y)              loss = loss_fn(model(x), y)    # built once
    loss.backward()                          step = gc.compile([x, y], [loss],
    opt.step()                                                 updates=opt.minimize(loss))
                                             step(xb, yb)                  # once per batch

Clipping between `backward()` and `step()`, `torch.nn.utils.clip_grad_norm_(params, 1.0)`, is
`opt.minimize(loss, max_grad_norm=1.0)`.

Gradient accumulation: in PyTorch, `.grad` adds up over `backward()` calls until
`zero_grad()`, so calling `zero_grad()` and `step()` only every k batches trains on the sum of
k batches' gradients. `opt.minimize(loss, accumulate=k)` builds the same thing statically: each
call adds the gradient into a buffer Variable, and the k-th call applies the update to the sum
and clears the buffers (a step counter Variable and `gc.where` decide which call is the k-th,
so the graph stays the same). As in PyTorch, the update sees the *sum* of k gradients: divide
a mean loss by k to train as on one batch k times larger. `opt.zero_grad()` discards a
partly accumulated sum.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

import graphc as gc
from graphc import Tensor, Variable, distributed
from graphc.errors import DTypeError, GraphError, InputError, ShapeError, located, user_location
from graphc.nn.utils import clip_grad_norm

Updates = dict[Variable, Tensor]


class ParamGroup(MutableMapping):
    """One parameter group: its 'params' and hyperparameters, as a dict like PyTorch's.

    `group["lr"]` reads and writes a float64 Variable, so a new learning rate reaches compiled
    steps without recompiling. The other hyperparameters are read when `minimize()` builds the
    graph; changing them later needs a new `minimize()` and `gc.compile()`.
    """

    def __init__(self, options: Mapping[str, Any], lr_variable: Variable) -> None:
        self._options = {key: value for key, value in options.items() if key != "lr"}
        self.lr_variable = lr_variable

    def __getitem__(self, key: str) -> Any:
        if key == "lr":
            return float(self.lr_variable.value)
        return self._options[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "lr":
            self.lr_variable.assign(np.float64(value))
        else:
            self._options[key] = value

    def __delitem__(self, key: str) -> None:
        if key in ("lr", "params"):
            raise KeyError(f"a parameter group always has {key!r}")
        del self._options[key]

    def __iter__(self) -> Iterator[str]:
        yield "lr"
        yield from self._options

    def __len__(self) -> int:
        return len(self._options) + 1

    def __repr__(self) -> str:
        shown = {key: value for key, value in self.items() if key != "params"}
        return f"ParamGroup({len(self['params'])} params, {shown})"


class Optimizer:
    """Base class: holds parameter groups and state Variables; subclasses give the update rule.

    A subclass implements `init_state(param, group)`, returning the state Variables of one
    parameter, and `param_update(param, grad, state, group, lr, step)`, returning the new value
    of the parameter and of each state Variable as graph values.

    Differences from torch.optim that come from compiling the step: the state Variables exist
    from the start (zeros) rather than appearing at the first step; one step counter
    (`step_count`) serves every parameter, where PyTorch keeps one per parameter (they differ
    only for a parameter that some compiled steps do not train); and only the learning rate
    is read at run time, so changing another hyperparameter needs a new `minimize()`.
    """

    def __init__(self, params: Any, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[ParamGroup] = []
        self.state: dict[Variable, dict[str, Variable]] = {}
        if isinstance(params, Tensor):
            raise TypeError(
                "params should be an iterable of Variables or of dicts, got one "
                f"{type(params).__name__}; wrap it in a list"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)
        self.step_count = Variable(np.int64(0), name="step", trainable=False)
        self._accumulation: _Accumulation | None = None

    # -- parameter groups ---------------------------------------------------------------
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill the rest)."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("a parameter group is a dict with a 'params' entry")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        for position, param in enumerate(params):
            if not isinstance(param, Variable):
                raise TypeError(
                    f"optimizer can only optimize Variables (nn.Parameter), got {param!r} at "
                    f"position {position}"
                )
            if not param.dtype.is_float:
                raise DTypeError(f"optimizer can only optimize floating-point Variables: {param!r}")
            if id(param) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
            seen.add(id(param))
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group lists the same parameter twice")
        options = {**self.defaults, **param_group, "params": params}
        unknown = set(options) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} in parameter group; "
                f"{type(self).__name__} takes {sorted(self.defaults)}"
            )
        self._check_options(options)
        index = len(self.param_groups)
        lr = Variable(
            np.float64(options["lr"]),
            name="lr" if index == 0 else f"lr.{index}",
            dtype=gc.float64,
            trainable=False,
        )
        group = ParamGroup(options, lr)
        self.param_groups.append(group)
        for param in params:
            self.state[param] = self.init_state(param, group)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ValueError for hyperparameters PyTorch rejects too."""
        if options["lr"] < 0:
            raise ValueError(f"invalid learning rate: {options['lr']}")

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        """Set every group's learning rate; compiled steps use it from their next call."""
        for group in self.param_groups:
            group["lr"] = value

    def parameters(self) -> list[Variable]:
        """Return every optimized parameter, group by group."""
        return [p for group in self.param_groups for p in group["params"]]

    # -- the update rule (subclasses) ---------------------------------------------------
    def init_state(self, param: Variable, group: ParamGroup) -> dict[str, Variable]:
        """Return the state Variables of one parameter (none by default)."""
        return {}

    def param_update(
        self,
        param: Variable,
        grad: Tensor,
        state: dict[str, Variable],
        group: ParamGroup,
        lr: Tensor,
        step: Tensor,
    ) -> Updates:
        """Return the new values of param and its state; lr and step are float64 scalars."""
        raise NotImplementedError

    def state_variable(self, param: Variable, what: str, dtype: Any = None) -> Variable:
        """Return a zero-filled, non-trainable Variable shaped like param, named after it."""
        value = np.zeros(param.storage.shape, dtype=(dtype or param.dtype).numpy)
        return Variable(value, name=f"{param.storage.name}.{what}", trainable=False)

    # -- building the step --------------------------------------------------------------
    def minimize(
        self,
        loss: Tensor,
        accumulate: int = 1,
        max_grad_norm: float | None = None,
        weight: Any = None,
    ) -> Updates:
        """Return {Variable: new value} that takes one optimizer step on loss's gradients.

        The dict covers the parameters, the optimizer state and (when graphc.nn provides
        them) the state updates of the modules that computed loss, e.g. BatchNorm's running
        statistics. Pass it to `gc.compile(..., updates=...)`. With `accumulate=k` the
        gradients are summed over k calls and the parameters change on every k-th call only.
        With `max_grad_norm`, the gradients (the sums, with accumulate) are clipped to that
        total 2-norm before the step, as `torch.nn.utils.clip_grad_norm_(params,
        max_grad_norm)` between `backward()` and `step()` does (`nn.utils.clip_grad_norm`).

        In a world of several processes (`graphc.distributed`) it first broadcasts the
        parameters from rank 0, and the step averages the gradients across the ranks before
        anything else uses them (`distributed.average_gradients`); `weight` is this rank's
        share of that average (its batch size, when the ranks' shards differ in size), by
        which its loss is scaled (`distributed.loss_share`).
        """
        location = user_location()
        _check_loss(loss, location)
        if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
            raise ValueError(f"accumulate must be a positive int, got {accumulate!r}")
        if max_grad_norm is not None and not max_grad_norm >= 0:
            raise ValueError(f"max_grad_norm must be a number >= 0, got {max_grad_norm!r}")
        # A frozen parameter (requires_grad_(False)) gets no gradient and no update, as in
        # PyTorch, where its .grad stays None and step() skips it.
        params = [p for p in self.parameters() if p.storage.trainable]
        several = distributed.active_world_size() > 1
        if several and weight is not None:
            loss = loss * distributed.loss_share(weight, loss.dtype)
        grads = gc.grad(loss, params, allow_unused=True) if params else []
        if several:
            distributed.broadcast_parameters(params)
            grads = distributed.average_gradients(grads)
        if all(g is None for g in grads):
            raise GraphError(
                located(
                    "minimize: the loss depends on none of the optimizer's trainable parameters",
                    location,
                )
            )
        updates: Updates = {}
        apply = None
        if accumulate > 1:
            apply, grads = self._accumulate(params, grads, accumulate, updates)
        if max_grad_norm is not None:
            grads, _ = clip_grad_norm(grads, max_grad_norm)
        step = self.step_count + 1
        step_float = step.to(gc.float64)
        step_updates: Updates = {}
        by_param = dict(zip((id(p) for p in params), grads, strict=True))
        for group in self.param_groups:
            for param in group["params"]:
                grad = by_param.get(id(param))
                if grad is None:
                    continue
                state = self.state[param]
                new_values = self.param_update(
                    param, grad, state, group, group.lr_variable, step_float
                )
                step_updates[param] = new_values.pop(param)  # the parameter first, then its state
                step_updates.update(new_values)
        step_updates[self.step_count] = step
        for variable, value in step_updates.items():
            updates[variable] = value if apply is None else gc.where(apply, value, variable)
        updates.update(_module_state_updates(loss, updates))
        return updates

    def _accumulate(
        self, params: list[Variable], grads: list[Tensor | None], k: int, updates: Updates
    ) -> tuple[Tensor, list[Tensor | None]]:
        """Add grads into the accumulation buffers; return (apply, the sums to step on)."""
        if self._accumulation is None:
            self._accumulation = _Accumulation(k)
        elif self._accumulation.k != k:
            raise ValueError(
                f"this optimizer already accumulates over {self._accumulation.k} calls; "
                f"a second minimize() cannot use accumulate={k}"
            )
        acc = self._accumulation
        count = acc.count + 1
        apply = count >= k
        sums: list[Tensor | None] = []
        for param, grad in zip(params, grads, strict=True):
            if grad is None:
                sums.append(None)
                continue
            buffer = acc.buffer(param, self)
            total = buffer + grad
            sums.append(total)
            updates[buffer] = gc.where(apply, gc.zeros_like(total), total)
        updates[acc.count] = gc.where(apply, gc.zeros_like(count), count)
        return apply, sums

    def zero_grad(self) -> None:
        """Discard gradients accumulated by `minimize(..., accumulate=k)` since the last update.

        Without accumulation there is nothing to clear: a compiled step computes its
        gradients afresh on every call, so the PyTorch loop's `zero_grad()` is not needed.
        """
        if self._accumulation is not None:
            self._accumulation.clear()

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the optimizer state as a flat {name: array} dict (copies), for gc.save.

        Keys: 'step', 'param_groups.{g}.lr' and 'state.{i}.{what}', where i numbers the
        parameters across groups in order, as PyTorch does. A partly accumulated gradient
        (`accumulate=k`) is not included, as PyTorch's `.grad` is not: save between updates.
        """
        result = {"step": self.step_count.numpy()}
        for index, group in enumerate(self.param_groups):
            result[f"param_groups.{index}.lr"] = group.lr_variable.numpy()
        for index, param in enumerate(self.parameters()):
            for what, variable in self.state[param].items():
                result[f"state.{index}.{what}"] = variable.numpy()
        return result

    def _state_variables(self) -> dict[str, Variable]:
        result = {"step": self.step_count}
        for index, group in enumerate(self.param_groups):
            result[f"param_groups.{index}.lr"] = group.lr_variable
        for index, param in enumerate(self.parameters()):
            for what, variable in self.state[param].items():
                result[f"state.{index}.{what}"] = variable
        return result

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state_dict() of an optimizer of the same kind over the same parameters.

        Every key, shape and dtype is checked before anything is written, so a mismatch
        raises and leaves this optimizer as it was.
        """
        targets = self._state_variables()
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(map(str, unexpected))}")
        values = {}
        for key, variable in targets.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            want = variable.storage
            if value.shape != want.shape:
                problems.append(
                    f"{key}: shape {list(value.shape)} in the state dict, "
                    f"{list(want.shape)} in the optimizer"
                )
            elif not np.can_cast(value.dtype, want.dtype.numpy, casting="same_kind"):
                problems.append(
                    f"{key}: dtype {value.dtype} in the state dict, {want.dtype.name} in "
                    "the optimizer"
                )
            else:
                values[key] = value
        if problems:
            raise InputError(
                f"cannot load the state dict into {type(self).__name__} (nothing was changed):\n  "
                + "\n  ".join(problems)
            )
        for key, value in values.items():
            targets[key].assign(value)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


class _Accumulation:
    """The buffers and the call counter behind minimize(..., accumulate=k)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.count = Variable(np.int64(0), name="accumulated_calls", trainable=False)
        self.buffers: dict[Variable, Variable] = {}

    def buffer(self, param: Variable, optimizer: Optimizer) -> Variable:
        if param not in self.buffers:
            self.buffers[param] = optimizer.state_variable(param, "grad_sum")
        return self.buffers[param]

    def clear(self) -> None:
        self.count.assign(np.int64(0))
        for buffer in self.buffers.values():
            buffer.assign(np.zeros_like(buffer.value))


def _check_loss(loss: Any, location: str) -> None:
    if not isinstance(loss, Tensor):
        raise GraphError(
            located(f"minimize: loss must be a graphc Tensor, got {type(loss).__name__}", location)
        )
    if loss.ndim != 0:
        raise ShapeError(
            located(
                f"minimize: the loss must be a scalar, got {loss!r}; reduce it (e.g. .mean())",
                location,
            )
        )
    if not loss.dtype.is_float:
        raise DTypeError(
            located(f"minimize: the loss must be floating-point, got {loss!r}", location)
        )


def _module_state_updates(loss: Tensor, updates: Updates) -> Updates:
    """Return the state updates graphc.nn recorded for the modules that computed loss
    (BatchNorm's running statistics, Dropout's step counter), checked against updates."""
    try:
        from graphc.nn import state_updates
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("graphc.nn"):
            return {}
        raise
    module_updates = state_updates(loss)
    clashes = [variable for variable in module_updates if variable in updates]
    if clashes:
        names = ", ".join(variable.storage.name for variable in clashes)
        raise GraphError(
            located(
                f"minimize: {names} is both optimized and updated by its module's forward pass",
                user_location(),
            )
        )
    return module_updates
