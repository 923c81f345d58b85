"""State updates: the changes a train-mode forward pass makes to state Variables.

A graph cannot write a Variable while it is being built, so a module that changes state
(BatchNorm's running statistics, Dropout's step) records each change as a StateRecord tied to
the call's output. Collecting the records that a graph's outputs depend on gives
`{Variable: new value}` for `gc.compile(..., updates=...)`; records of the same Variable
compose in call order, like PyTorch's in-place updates.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphc.errors import GraphError, located, user_location
from graphc.tensor import Tensor
from graphc.variable import Variable

UpdateRule = Callable[[Tensor], Tensor]


@dataclass(frozen=True, slots=True, eq=False)
class StateRecord:
    """One forward call's change to a state Variable: `rule(current value) -> new value`.

    `output` is the call's result; the record belongs to every graph whose outputs depend on
    it. `order` keeps the calls in the order they were made, so two calls in one graph compose
    like two in-place updates in PyTorch.
    """

    variable: Variable
    rule: UpdateRule
    output: Tensor
    order: int


_record_order = itertools.count()
# Every module that has recorded something. Each keeps its records in `_state_records`, so
# the records (whose rules may refer back to the module) die with it.
_owners: weakref.WeakSet[Any] = weakref.WeakSet()


def add_record(owner: Any, variable: Variable, rule: UpdateRule, output: Tensor) -> None:
    """Append a record of owner's forward call to owner._state_records."""
    owner._state_records.append(StateRecord(variable, rule, output, next(_record_order)))
    _owners.add(owner)


def _ancestor_ids(outputs: tuple[Tensor, ...]) -> set[int]:
    """Return the ids of every node the outputs depend on (themselves included)."""
    seen: set[int] = set()
    stack = [t.node for t in outputs]
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        stack.extend(node.inputs)
    return seen


def collect_state_updates(
    records: list[StateRecord], outputs: tuple[Tensor, ...]
) -> dict[Variable, Tensor]:
    """Return {Variable: new value} from the records, those outputs depend on if any given."""
    for t in outputs:
        if not isinstance(t, Tensor):
            raise GraphError(
                located(
                    f"state_updates: outputs must be graphc Tensors, got {type(t).__name__}",
                    user_location(),
                )
            )
    if outputs:
        reachable = _ancestor_ids(outputs)
        records = [r for r in records if r.output.node.id in reachable]
    updates: dict[Variable, Tensor] = {}
    for record in sorted(records, key=lambda r: r.order):
        current = updates.get(record.variable, record.variable)
        updates[record.variable] = record.rule(current)
    return updates


def state_updates(*outputs: Tensor) -> dict[Variable, Tensor]:
    """Return the state updates of every module's train-mode calls that outputs depend on.

    This is what an optimizer's `minimize(loss)` merges into its updates: the new running
    statistics of each BatchNorm and the next step of each Dropout whose result feeds the
    loss, whichever models they belong to.
    """
    if not outputs:
        raise GraphError(
            located(
                "nn.state_updates() needs the outputs (e.g. the loss) whose graph the updates "
                "belong to; model.state_updates() collects one model's without them",
                user_location(),
            )
        )
    records = [r for owner in list(_owners) for r in owner._state_records]
    return collect_state_updates(records, outputs)
