"""Eager-style evaluation of a tensor (.numpy(), .item(), .eval()): compile its subgraph on
the default backend, caching the compiled Function per tensor and set of fed inputs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.errors import GraphError, located, user_location
from graphc.tensor import Tensor

_CACHE_SIZE = 256
_cache: OrderedDict[tuple, Any] = OrderedDict()


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
    function = _cache.get(cache_key)
    if function is None:
        function = compile_function(inputs, [tensor])
        _cache[cache_key] = function
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(cache_key)
    return function(*(feed[t] for t in inputs))


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
