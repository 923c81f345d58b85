"""Eager-style evaluation of a tensor (.numpy(), .item(), .eval()): compile its subgraph on
the default backend, caching the compiled Function per tensor and set of fed inputs.

The cache keeps the most recently used Functions up to a count and an estimate of the bytes
they hold (their constants, their intermediates' arena and a fixed share for the compiled
code), so evaluating many one-off tensors does not pin their graphs and code for long."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.errors import GraphError, located, user_location
from graphc.tensor import Tensor

CACHE_FUNCTIONS = 64
CACHE_BYTES = 64 << 20
# What one compiled Function costs beyond its arrays: machine code, engine, Python objects.
FUNCTION_OVERHEAD_BYTES = 256 << 10

_cache: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
_cached_bytes = 0
_lock = threading.Lock()


def evaluate(tensor: Tensor, feed: Mapping[Tensor, Any]) -> np.ndarray:
    """Return the value of tensor with feed giving arrays for the inputs it depends on."""
    from graphc.compiler import compile as compile_function
    from graphc.compiler import default_backend

    for key in feed:
        if not isinstance(key, Tensor) or key.node.op != "input":
            raise GraphError(
                located(f"feed keys must be gc.input() tensors, got {key!r}", user_location())
            )
    inputs = list(feed)
    cache_key = (tensor.node.id, tuple(t.node.id for t in inputs), default_backend())
    with _lock:
        entry = _cache.get(cache_key)
        if entry is not None:
            _cache.move_to_end(cache_key)
    if entry is not None:
        return entry[0](*(feed[t] for t in inputs))
    function = compile_function(inputs, [tensor])
    result = function(*(feed[t] for t in inputs))
    _remember(cache_key, function)
    return result


def cache_footprint() -> tuple[int, int]:
    """Return how many compiled Functions the evaluation cache holds and their estimated bytes."""
    with _lock:
        return len(_cache), _cached_bytes


def _remember(key: tuple, function: Any) -> None:
    """Cache function, dropping the least recently used beyond the count and byte bounds; one
    that alone exceeds the byte bound is not kept."""
    global _cached_bytes
    size = _footprint(function)
    if size > CACHE_BYTES:
        return
    with _lock:
        if key in _cache:
            return
        _cache[key] = (function, size)
        _cached_bytes += size
        while len(_cache) > CACHE_FUNCTIONS or _cached_bytes > CACHE_BYTES:
            _, (_, dropped) = _cache.popitem(last=False)
            _cached_bytes -= dropped


def _footprint(function: Any) -> int:
    """Return the bytes a compiled Function holds: its constants, its arena (as sized by the
    call just made) and a fixed overhead."""
    constants = sum(
        np.asarray(node.attrs["value"]).nbytes
        for node in function.graph.nodes
        if node.op == "constant"
    )
    arena = function.memory_stats().get("arena_bytes", 0)
    return FUNCTION_OVERHEAD_BYTES + constants + arena


def item(tensor: Tensor) -> Any:
    """Return the single element of a tensor as a Python scalar."""
    value = evaluate(tensor, {})
    if value.size != 1:
        raise GraphError(
            located(
                f"item() needs a one-element tensor, {tensor!r} has {value.size} elements",
                user_location(),
            )
        )
    return value.reshape(()).item()
