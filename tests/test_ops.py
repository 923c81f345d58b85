"""Every op-table entry on every backend against numpy/PyTorch, and the RNG against its spec."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pytest
from op_table import OP_TABLE, SYMBOL_SIZES, OpCase

import graphc as gc
from graphc.dims import evaluate_shape
from graphc.errors import DTypeError
from graphc.ops import make_node

# (rtol, atol) per float dtype; an entry's `tol` scales both (sums of many products).
FLOAT_TOLERANCE = {
    np.dtype(np.float32): (1e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-12),
}


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def assert_matches(got: np.ndarray, want: np.ndarray, tol: float = 1.0, what: str = "") -> None:
    """Assert equality for integers and bools, closeness for floats (NaN and inf must match)."""
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what, strict=True)
    else:
        rtol, atol = FLOAT_TOLERANCE[want.dtype]
        np.testing.assert_allclose(
            got, want, rtol=rtol * tol, atol=atol * tol, equal_nan=True, err_msg=what, strict=True
        )


def _sizes_for(case: OpCase) -> tuple[Mapping[str, int], ...]:
    return SYMBOL_SIZES if case.symbolic else SYMBOL_SIZES[:1]


@pytest.mark.parametrize("case", OP_TABLE, ids=lambda case: case.id)
def test_op_matches_reference(case: OpCase, backend: str, rng: np.random.Generator) -> None:
    inputs = case.make_inputs()
    outputs = _as_tuple(case.fn(*inputs))
    function = gc.compile(inputs, list(outputs), backend=backend)
    for position, output in enumerate(outputs):
        assert function.graph.outputs[position].type == output.node.type
    # A graph with a symbolic dim runs for each size without being compiled again.
    for sizes in _sizes_for(case):
        arrays = case.make_arrays(rng, sizes)
        fed = [a.copy() for a in arrays]
        results = _as_tuple(function(*fed))
        for before, after in zip(arrays, fed, strict=True):
            np.testing.assert_array_equal(before, after, err_msg="an input was modified")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's var with ddof >= N
            expected = _as_tuple(case.ref(*[a.copy() for a in arrays]))
        assert len(results) == len(expected) == len(outputs)
        for position, (output, got, want) in enumerate(
            zip(outputs, results, expected, strict=True)
        ):
            want = np.asarray(want)
            what = f"{case.id} output {position} with {dict(sizes)}"
            assert output.dtype.numpy == want.dtype, (
                f"{what}: the graph says {output.dtype.name}, the reference gives {want.dtype}"
            )
            assert isinstance(got, np.ndarray), what
            assert got.dtype == want.dtype, f"{what}: got {got.dtype}, expected {want.dtype}"
            declared = evaluate_shape(output.shape, sizes)
            assert got.shape == declared == want.shape, (
                f"{what}: got shape {got.shape}, the graph says {declared}, numpy {want.shape}"
            )
            assert_matches(got, want, case.tol, what)


@pytest.mark.parametrize("case", [c for c in OP_TABLE if not c.symbolic], ids=lambda case: case.id)
def test_op_on_constants_matches_reference(
    case: OpCase, backend: str, rng: np.random.Generator
) -> None:
    """The same entries with constant inputs: what constant folding and the rewrites see."""
    arrays = case.make_arrays(rng)
    outputs = _as_tuple(case.fn(*[gc.tensor(a) for a in arrays]))
    results = _as_tuple(gc.compile([], list(outputs), backend=backend)())
    with np.errstate(all="ignore"):
        expected = _as_tuple(case.ref(*arrays))
    for position, (output, got, want) in enumerate(zip(outputs, results, expected, strict=True)):
        want = np.asarray(want)
        what = f"{case.id} output {position} on constants"
        assert output.dtype.numpy == want.dtype and got.dtype == want.dtype, what
        assert got.shape == output.shape == want.shape, what
        assert_matches(got, want, case.tol, what)


def test_table_covers_every_primitive() -> None:
    """Every registered op the Tensor API can reach has at least one table entry."""
    names = " ".join(case.name for case in OP_TABLE)
    internal = {"constant", "input", "variable", "dim_size", "random"}  # tested elsewhere
    internal |= {"scan", "tuple_get"}  # loops: tests/test_scan.py, on every backend
    spelled = {
        "reduce_sum": "sum",
        "reduce_max": "max",
        "reduce_min": "min",
        "reduce_prod": "prod",
        "concat": "cat",
        "slice": "getitem",
    }
    missing = [
        op
        for op in gc.ops.OPS
        if op not in internal and spelled.get(op, op) not in names and not op.startswith("_")
    ]
    assert not missing, f"ops without a table entry: {missing}"


# -- errors the type rules promise -------------------------------------------------------------
def test_mean_of_an_integer_tensor_is_a_dtype_error() -> None:
    x = gc.input("x", (3,), gc.int64)
    with pytest.raises(DTypeError):
        x.mean()


def test_expand_minus_one_in_a_new_leading_dim_is_a_shape_error() -> None:
    """As in PyTorch: -1 keeps an existing dim's size; a new leading dim has none to keep."""
    x = gc.input("x", (4,), gc.float32)
    with pytest.raises(gc.errors.ShapeError):
        x.expand(-1, 4)


def test_symbol_against_a_concrete_size_is_a_shape_error() -> None:
    a = gc.input("a", ("B", 3), gc.float32)
    b = gc.input("b", (4, 3), gc.float32)
    with pytest.raises(gc.errors.ShapeError, match="B"):
        a + b


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (np.float64(1.25), gc.float64),
        (np.float32(1.25), gc.float32),
        (np.int32(3), gc.int32),
        (np.int64(3), gc.int64),
        (np.bool_(True), gc.bool),
        (1.25, gc.float32),
        (3, gc.int64),
        (np.array(1.25), gc.float64),
    ],
    ids=["np.float64", "np.float32", "np.int32", "np.int64", "np.bool_", "float", "int", "0-d"],
)
def test_tensor_of_a_scalar_has_the_dtype_pytorch_gives(backend, value, dtype) -> None:
    """torch.tensor keeps a numpy scalar's dtype; only Python floats default to float32."""
    t = gc.tensor(value)
    assert t.dtype == dtype
    got = gc.compile([], [t], backend=backend)()
    assert got.dtype == dtype.numpy and got.shape == ()
    assert got == np.asarray(value).astype(dtype.numpy)


@pytest.mark.parametrize(
    ("symbol", "build", "bitwise"),
    [
        ("&", lambda a, b: a & b, np.bitwise_and),
        ("|", lambda a, b: a | b, np.bitwise_or),
        ("~", lambda a, b: ~a, lambda a, b: np.invert(a)),
    ],
    ids=["and", "or", "invert"],
)
def test_bitwise_operators_on_integers_are_bitwise_or_refused(backend, symbol, build, bitwise):
    """`&`, `|`, `~` on int tensors are bitwise in PyTorch and numpy; a logical result would
    silently differ, so graphc must either compute the bitwise result or raise DTypeError."""
    a = gc.input("a", (4,), gc.int64)
    b = gc.input("b", (4,), gc.int64)
    try:
        result = build(a, b)
    except DTypeError:
        return
    x, y = np.array([1, 2, 6, -3]), np.array([3, 1, 5, 7])
    got = gc.compile([a, b], [result], backend=backend)(x, y)
    assert_matches(got, bitwise(x, y), what=f"int64 {symbol}")


def test_invert_of_a_float_tensor_is_refused() -> None:
    """~x on floats is an error in PyTorch and numpy (logical_not() is the explicit form)."""
    with pytest.raises(DTypeError):
        ~gc.input("x", (3,), gc.float32)


# -- the counter-based generator ---------------------------------------------------------------
_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter: int, key: int) -> tuple[int, int, int, int]:
    """Return Philox-4x32-10 (Salmon et al., Random123) of the counter (c0, c1, 0, 0)."""
    c = [counter & _MASK32, (counter >> 32) & _MASK32, 0, 0]
    k0, k1 = key & _MASK32, (key >> 32) & _MASK32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & _MASK32, (p0 >> 32) ^ c[3] ^ k1, p0 & _MASK32]
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return c[0], c[1], c[2], c[3]


def expected_uniform(seed: int, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Return element i = word 0 of Philox(offset + i): its top 24 bits for float32, all 32
    for float64, scaled to [0, 1) (the generator's documented mapping)."""
    words = [philox4x32_10(offset + i, seed)[0] for i in range(count)]
    if np.dtype(dtype) == np.float32:
        return np.array([(w >> 8) * 2.0**-24 for w in words], dtype=np.float32)
    return np.array([w * 2.0**-32 for w in words], dtype=np.float64)


def expected_normal(seed: int, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Return Box-Muller of words 0 and 1 (as uniforms of dtype) of Philox(offset + i)."""
    bits = 24 if np.dtype(dtype) == np.float32 else 32
    values = []
    for i in range(count):
        w0, w1, _, _ = philox4x32_10(offset + i, seed)
        u1, u2 = 1 - (w0 >> (32 - bits)) * 2.0**-bits, (w1 >> (32 - bits)) * 2.0**-bits
        values.append(np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2))
    return np.array(values, dtype=dtype)


def test_philox_reference_matches_the_random123_known_answer() -> None:
    assert philox4x32_10(0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)


def _random_function(backend, shape, dtype, seed, distribution):
    offset = gc.input("offset", (), gc.int64)
    attrs = {"shape": shape, "dtype": dtype, "seed": seed, "distribution": distribution}
    values = gc.Tensor(make_node("random", [offset.node], attrs))
    function = gc.compile([offset], [values], backend=backend)
    return lambda at: function(np.array(at, dtype=np.int64))


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64], ids=lambda d: d.name)
@pytest.mark.parametrize("seed", [0, 12345, 2**40 + 7])
def test_uniform_bits_follow_the_philox_spec(backend, dtype, seed) -> None:
    draw = _random_function(backend, (4, 8), dtype, seed, "uniform")
    for offset in (0, 1000, 2**33 + 5):
        got = draw(offset)
        assert got.dtype == dtype.numpy and got.shape == (4, 8)
        want = expected_uniform(seed, offset, 32, dtype.numpy).reshape(4, 8)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64], ids=lambda d: d.name)
def test_normal_values_follow_box_muller(backend, dtype) -> None:
    got = _random_function(backend, (16,), dtype, 99, "normal")(123)
    assert_matches(got, expected_normal(99, 123, 16, dtype.numpy), tol=10)


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64], ids=lambda d: d.name)
def test_uniform_lies_in_unit_interval_with_the_right_moments(backend, dtype) -> None:
    values = _random_function(backend, (100_000,), dtype, 7, "uniform")(0).astype(np.float64)
    assert values.min() >= 0.0 and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.005
    assert abs(values.var() - 1 / 12) < 0.002
    counts, _ = np.histogram(values, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - 10_000) < 600), counts


@pytest.mark.parametrize("dtype", [gc.float32, gc.float64], ids=lambda d: d.name)
def test_normal_has_the_right_moments(backend, dtype) -> None:
    values = _random_function(backend, (100_000,), dtype, 11, "normal")(0)
    assert values.dtype == dtype.numpy
    assert np.all(np.isfinite(values))
    x = values.astype(np.float64)
    mean, var = x.mean(), x.var()
    assert abs(mean) < 0.016
    assert abs(var - 1) < 0.025
    z = (x - mean) / np.sqrt(var)
    assert abs(np.mean(z**3)) < 0.04  # skewness
    assert abs(np.mean(z**4) - 3) < 0.08  # kurtosis
    assert abs(np.mean(np.abs(x) < 1) - 0.6827) < 0.008


def test_same_seed_and_offset_give_the_same_bits(backend) -> None:
    first = _random_function(backend, (5, 7), gc.float32, 42, "normal")
    again = _random_function(backend, (5, 7), gc.float32, 42, "normal")
    np.testing.assert_array_equal(first(17), first(17))
    np.testing.assert_array_equal(first(17), again(17))


def test_different_offsets_and_seeds_differ(backend) -> None:
    draw = _random_function(backend, (64,), gc.float64, 42, "uniform")
    other_seed = _random_function(backend, (64,), gc.float64, 43, "uniform")
    base = draw(0)
    assert np.count_nonzero(base == draw(64)) == 0
    assert np.count_nonzero(base == other_seed(0)) == 0
    # Element i uses counter offset + i: shifting the offset shifts the stream.
    np.testing.assert_array_equal(draw(5)[:-5], base[5:])


def test_manual_seed_and_rand_use_consecutive_offsets(backend) -> None:
    gc.manual_seed(2024)
    first, second = gc.rand(3, 4), gc.rand(6, dtype=gc.float64)
    noise = gc.randn(2, 2)
    a, b, n = gc.compile([], [first, second, noise], backend=backend)()
    np.testing.assert_array_equal(a, expected_uniform(2024, 0, 12, np.float32).reshape(3, 4))
    np.testing.assert_array_equal(b, expected_uniform(2024, 12, 6, np.float64))
    np.testing.assert_allclose(
        n.ravel(), expected_normal(2024, 18, 4, np.float32), rtol=1e-5, atol=1e-5
    )
    gc.manual_seed(2024)
    again = gc.compile([], [gc.rand(3, 4)], backend=backend)()
    np.testing.assert_array_equal(again, a)
