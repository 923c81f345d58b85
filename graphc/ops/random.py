"""A counter-based RNG: Philox-4x32-10 keyed by a seed, one counter per element.

Element i of a draw uses counter (offset + i), so any backend reproduces the same bits from
(seed, offset) alone; the offset is an int64 scalar input, so a Variable can advance it
between calls of a compiled step.
"""

from __future__ import annotations

import numpy as np

from graphc.dims import evaluate_shape
from graphc.dtypes import as_dtype, int64
from graphc.errors import DTypeError, ShapeError
from graphc.ops.registry import define_op
from graphc.types import TensorType

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
DISTRIBUTIONS = ("uniform", "normal")
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """Return the four uint32 words of Philox-4x32-10 for uint64 counters and a 64-bit seed."""
    c0 = (counter & _MASK32).astype(np.uint64)
    c1 = (counter >> np.uint64(32)).astype(np.uint64)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for _ in range(PHILOX_ROUNDS):
        p0 = np.uint64(PHILOX_M0) * c0
        p1 = np.uint64(PHILOX_M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def uniform_from_bits(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Map uint32 words to [0, 1): the top 24 bits for float32, 32 bits for float64."""
    if np.dtype(dtype) == np.float32:
        return (bits >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)
    return bits.astype(np.float64) * 2.0**-32


def _random_infer(types, attrs):
    (offset,) = types
    if offset.shape != () or offset.dtype != int64:
        raise DTypeError(f"the counter offset must be an int64 scalar, got {offset}")
    dtype = as_dtype(attrs["dtype"])
    if not dtype.is_float:
        raise DTypeError(f"random values must be float32 or float64, got {dtype.name}")
    if attrs["distribution"] not in DISTRIBUTIONS:
        raise ShapeError(f"unknown distribution {attrs['distribution']!r}")
    return TensorType(tuple(attrs["shape"]), dtype)


def _random_reference(args, attrs, env):
    shape = evaluate_shape(attrs["shape"], env)
    dtype = as_dtype(attrs["dtype"]).numpy
    count = int(np.prod(shape, dtype=np.int64))
    counter = np.uint64(int(args[0]) & 0xFFFFFFFFFFFFFFFF) + np.arange(count, dtype=np.uint64)
    words = philox4x32(counter, attrs["seed"])
    if attrs["distribution"] == "uniform":
        values = uniform_from_bits(words[0], dtype)
    else:
        # Box-Muller on words 0 and 1; 1 - u keeps the logarithm's argument in (0, 1].
        u1 = 1 - uniform_from_bits(words[0], dtype)
        u2 = uniform_from_bits(words[1], dtype)
        values = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    return values.astype(dtype).reshape(shape)


define_op("random", "random", _random_infer, _random_reference, differentiable=False)
