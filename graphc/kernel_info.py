"""KernelInfo: what Function.kernels() tells of one kernel of a compiled Function."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphc.graph import Node

if TYPE_CHECKING:
    from graphc.backends.calls import LaunchGeometry


@dataclass(frozen=True)
class KernelInfo:
    """A kernel of a compiled Function: its name, the graph nodes it computes and, on a device
    backend, its launches (grid, block, shared memory; a scatter-add is two). It unpacks and
    indexes as the pair (name, nodes)."""

    name: str
    nodes: list[Node]
    launches: tuple[LaunchGeometry, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.name, self.nodes))

    def __getitem__(self, position: int) -> Any:
        return (self.name, self.nodes)[position]

    def __len__(self) -> int:
        return 2

    def __str__(self) -> str:
        ops = ", ".join(node.op for node in self.nodes)
        return "\n".join([f"{self.name}: {ops}", *(f"  {launch}" for launch in self.launches)])
