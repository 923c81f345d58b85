"""RecentValues: a bounded map that keeps the most recently used entries.

Function keeps what it decided for each recent kind of call in one, and the LLVM backend keeps
its arena plans and bound calls in others. Lookups sit on the per-call path, so they are the
OrderedDict's own methods, in C.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import TypeVar

Value = TypeVar("Value")


class RecentValues(OrderedDict[Hashable, Value]):
    """An ordered dict that keeps the `size` most recently used keys: look up with recall()
    (or get() and move_to_end()), add with remember()."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def recall(self, key: Hashable) -> Value | None:
        """Return the value stored for key, marked as the most recently used, or None."""
        value = self.get(key)
        if value is not None:
            # Not contextlib.suppress: this is the per-call path, and a try costs nothing.
            try:  # noqa: SIM105
                self.move_to_end(key)
            except KeyError:
                pass  # dropped by a concurrent caller's remember(); the value is still good
        return value

    def remember(self, key: Hashable, value: Value) -> Value:
        """Store value for key, dropping the least recently used beyond `size`; return it."""
        self[key] = value
        while len(self) > self.size:
            try:
                self.popitem(last=False)
            except KeyError:
                break  # emptied by concurrent callers
        return value
