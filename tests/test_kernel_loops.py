"""The shape of loop kernels' loops: adjacent dims that every access walks contiguously become
one loop (`backends/kernel/coalesce.py`), and divisions the loop variables' ranges decide are
removed (`backends/kernel/index_ranges.py`). Checked on the kernel IR, by evaluating index
expressions before and after for every value of their loop variables, and end to end against
numpy on every backend.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.coalesce import coalesce
from graphc.backends.kernel.index_ranges import simplify_indices
from graphc.backends.llvm import program
from graphc.backends.llvm.target import cpu_target
from graphc.dtypes import bool_, float32, float64, int32, int64


def _evaluate(expr: k.IntExpr, values: dict) -> int:
    """Return an index expression's value; values maps Vars and symbol names to ints."""
    if isinstance(expr, k.Var):
        return values[expr]
    if isinstance(expr, k.SymSize):
        return values[expr.symbol]
    if isinstance(expr, k.IConst):
        return expr.value
    assert isinstance(expr, k.IBin), expr
    folded = k.ibin(
        expr.op, k.IConst(_evaluate(expr.a, values)), k.IConst(_evaluate(expr.b, values))
    )
    assert isinstance(folded, k.IConst)
    return folded.value


def _kernel_of(index: k.IntExpr, extents: tuple[int, ...]) -> k.LoopKernel:
    variables = tuple(k.Var(f"i{d}") for d in range(len(extents)))
    store = k.Store("out", k.IndexValue(index, int64))
    return k.LoopKernel("probe", tuple(map(k.IConst, extents)), variables, (store,))


def _index_of(kernel: k.LoopKernel) -> k.IntExpr:
    (store,) = kernel.stores
    assert isinstance(store.value, k.IndexValue)
    return store.value.index


def _divisions(expr) -> int:
    own = isinstance(expr, k.IBin) and expr.op in ("div", "mod")
    return own + sum(_divisions(child) for child in k.children(expr))


def _linear(coefficients, constant, variables) -> k.IntExpr:
    total: k.IntExpr = k.IConst(constant)
    for coefficient, var in zip(coefficients, variables, strict=True):
        total = k.iadd(total, k.imul(k.IConst(coefficient), var))
    return total


@pytest.mark.parametrize("seed", range(40))
def test_simplified_divisions_keep_their_values(seed):
    rng = np.random.default_rng(seed)
    extents = tuple(int(e) for e in rng.integers(1, 6, 3))
    variables = tuple(k.Var(f"i{d}") for d in range(3))
    divisor = int(rng.integers(1, 13))
    # Coefficients that are multiples of the divisor or small, so both outcomes occur.
    coefficients = [
        int(divisor * rng.integers(-3, 4)) if rng.random() < 0.5 else int(rng.integers(-3, 4))
        for _ in variables
    ]
    dividend = _linear(coefficients, int(rng.integers(-12, 13)), variables)
    for op in ("div", "mod"):
        original = k.IBin(op, dividend, k.IConst(divisor))
        simplified = _index_of(simplify_indices(_kernel_of(original, extents)))
        for point in itertools.product(*(range(e) for e in extents)):
            values = dict(zip(variables, point, strict=True))
            assert _evaluate(simplified, values) == _evaluate(original, values), (op, point)


def test_a_reshaped_read_needs_no_division():
    # (i1 * 25 + i2) // 25 and % 25 with i2 < 25: row i1, column i2.
    i0, i1, i2 = (k.Var(f"i{d}") for d in range(3))
    flat = k.iadd(k.iadd(k.imul(k.IConst(125), i0), k.imul(k.IConst(25), i1)), i2)
    row = k.IBin("div", flat, k.IConst(25))
    column = k.IBin("mod", flat, k.IConst(25))
    index = k.iadd(k.imul(row, k.IConst(25)), column)
    simplified = _index_of(simplify_indices(_kernel_of(index, (4, 5, 25))))
    assert _divisions(simplified) == 0
    # A part below the divisor that may reach it keeps the division: i2 + 3 can be 27.
    shifted = k.IBin("mod", k.iadd(i2, k.IConst(3)), k.IConst(25))
    assert _divisions(_index_of(simplify_indices(_kernel_of(shifted, (4, 5, 25))))) == 1


def test_symbolic_divisors_split_a_flat_offset_too():
    # A (B, T, 384) gradient reading heads merged over T positions: the flat offset
    # i0 * 128T + i1 * 128 + max(i2 - 256, 0) divided by 128T and by 128, then taken mod 128.
    i0, i1, i2 = (k.Var(f"i{d}") for d in range(3))
    t = k.SymSize("T")
    window = k.IBin("max", k.iadd(i2, k.IConst(-256)), k.IConst(0))
    flat = k.iadd(k.iadd(k.imul(i0, k.imul(k.IConst(128), t)), k.imul(i1, k.IConst(128))), window)
    by_sequence = k.IBin("div", flat, k.imul(k.IConst(128), t))
    position = k.IBin("div", k.IBin("mod", flat, k.imul(k.IConst(128), t)), k.IConst(128))
    within = k.IBin("mod", flat, k.IConst(128))
    index = k.iadd(
        k.iadd(k.imul(by_sequence, k.IConst(1000)), k.imul(position, k.IConst(7))), within
    )
    variables = (i0, i1, i2)
    store = k.Store("out", k.IndexValue(index, int64))
    kernel = k.LoopKernel("probe", (k.SymSize("B"), t, k.IConst(384)), variables, (store,))
    simplified = _index_of(simplify_indices(kernel))
    assert _divisions(simplified) == 0
    for size in (1, 2, 3):
        for point in itertools.product(range(2), range(size), range(0, 384, 7)):
            values = {**dict(zip(variables, point, strict=True)), "T": size}
            assert _evaluate(simplified, values) == _evaluate(index, values)


def _elementwise(domain, offsets, buffers=("a",)) -> k.LoopKernel:
    """Return a kernel storing the sum of buffers read at offsets (functions of the vars)."""
    variables = tuple(k.Var(f"i{d}") for d in range(len(domain)))
    value: k.Expr = k.Const(0.0, float32)
    for buffer, offset in zip(buffers, offsets, strict=True):
        load = k.Load(buffer, offset(*variables), float32)
        value = k.Binary("add", value, load, float32)
    store = k.Store("out", value)
    return k.LoopKernel("probe", tuple(map(k.IConst, domain)), variables, (store,))


def _row_major(*dims: int):
    def offset(*variables):
        return _linear([int(np.prod(dims[d + 1 :])) for d in range(len(dims))], 0, variables)

    return offset


def test_contiguous_dims_become_one_loop():
    kernel = coalesce(_elementwise((165, 25), [_row_major(165, 25)] * 2, ("a", "b")))
    assert kernel.domain == (k.IConst(4125),)
    assert [load.offset for load in k.loads(kernel.stores[0].value)] == [kernel.vars[0]] * 2


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(lambda i0, i1: i1, id="broadcast_row"),
        pytest.param(lambda i0, i1: i0, id="broadcast_column"),
        pytest.param(lambda i0, i1: k.iadd(k.imul(k.IConst(26), i0), i1), id="padded_rows"),
        pytest.param(lambda i0, i1: k.iadd(i0, k.imul(k.IConst(8), i1)), id="transposed"),
        pytest.param(lambda i0, i1: k.IBin("lt", i0, i1), id="compared"),
    ],
)
def test_dims_read_apart_stay_apart(offset):
    kernel = _elementwise((8, 25), [_row_major(8, 25), offset], ("a", "b"))
    assert coalesce(kernel) == kernel


def test_three_dims_coalesce_as_far_as_they_walk_together():
    # (2, 3, 4) with the outer dim broadcast in b: the two inner dims merge, the outer stays.
    def b_offset(i0, i1, i2):
        return k.iadd(k.imul(k.IConst(4), i1), i2)

    kernel = coalesce(_elementwise((2, 3, 4), [_row_major(2, 3, 4), b_offset], ("a", "b")))
    assert kernel.domain == (k.IConst(2), k.IConst(12))


@pytest.mark.parametrize("shape", [(165, 25), (3, 5, 7), (2, 1, 9), (1, 1)])
def test_coalesced_updates_match_numpy(backend, rng, shape):
    table = rng.standard_normal(shape).astype(np.float32)
    variable = gc.Variable(table.copy())
    g = gc.input("g", shape)
    step = gc.compile([g], [], updates={variable: variable - 0.5 * g}, backend=backend)
    gradient = rng.standard_normal(shape).astype(np.float32)
    step(gradient)
    np.testing.assert_allclose(variable.numpy(), table - np.float32(0.5) * gradient, rtol=1e-6)


def test_embedding_window_lookup_matches_numpy(backend, rng):
    # A (N, 5) window of word ids through a 25-wide embedding, viewed as (N, 125).
    vectors = rng.standard_normal((40, 25)).astype(np.float32)
    words = gc.input("words", ("N", 5), gc.int64)
    looked_up = gc.Variable(vectors)[words.reshape(-1)].reshape(-1, 125)
    f = gc.compile([words], [looked_up * 2], backend=backend)
    ids = rng.integers(-40, 40, (7, 5))
    np.testing.assert_array_equal(f(ids), (vectors[ids.reshape(-1)] * 2).reshape(7, 125))


@pytest.mark.parametrize("width", [1, 7, 14, 25, 63, 64, 65, 127, 128, 200, 224, 300, 511])
def test_rows_of_every_width_match_numpy(backend, rng, width):
    # Rows below SHORT_ROW (and longer ones with a long remainder) run masked vector
    # iterations to their end, the others a scalar remainder: both against numpy, with a
    # broadcast operand that keeps the rows apart.
    bias_value = rng.standard_normal(width).astype(np.float32)
    x = gc.input("x", ("N", width))
    f = gc.compile([x], [gc.tanh(x + gc.Variable(bias_value)) * 2], backend=backend)
    data = rng.standard_normal((5, width)).astype(np.float32)
    np.testing.assert_allclose(f(data), np.tanh(data + bias_value) * 2, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 7, 50, 13), (3, 1, 40, 9)])
def test_outer_indices_carried_from_row_to_row_match_numpy(monkeypatch, rng, shape, threads):
    """Rows of a deep domain carry their outer indices (an odometer that wraps several dims at
    once at the end of a block): reads that depend on each outer index, chunks over threads
    that start mid-row and mid-block, against numpy."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    a, b, c, d = shape
    x = gc.input("x", shape)
    y = gc.input("y", (a, 1, c, 1))
    z = gc.input("z", (1, b, 1, d))
    f = gc.compile([x, y, z], [(x * y + z) * 2 + x.sum(dim=3, keepdim=True)])
    xv, yv, zv = (
        rng.standard_normal(s).astype(np.float32) for s in (shape, (a, 1, c, 1), (1, b, 1, d))
    )
    want = (xv * yv + zv) * 2 + xv.sum(axis=3, keepdims=True)
    np.testing.assert_allclose(f(xv, yv, zv), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 7, 50, 13), (5, 40, 9), (3, 2, 2, 20, 17)])
def test_rows_in_groups_split_anywhere_match_numpy(monkeypatch, rng, shape):
    """Short rows run in groups along the second-to-last dim (`_emit_row_groups`): kernels
    split over three threads in chunks of 64 elements (the threshold lowered so every kernel
    splits) start and end mid-row and mid-group; a padded channels-last pool's bounds and a
    broadcast read depend on every index. Against numpy."""
    from graphc.backends.llvm import parallel

    monkeypatch.setenv("GRAPHC_CACHE", "0")
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "3")
    monkeypatch.setattr(parallel, "PARALLEL_THRESHOLD", 1)
    *outer, rows, width = shape
    x = gc.input("x", shape)
    y = gc.input("y", (*outer, rows, 1))
    padded = gc.pad(gc.relu(x * y), (0, 0, 1, 1))
    pooled = gc.maximum(padded[..., 0::2, :], padded[..., 1::2, :])
    f = gc.compile([x, y], [pooled], backend="llvm")
    assert "rows.head" in f._executable.llvm_ir  # unoptimised: the rows do run in groups
    xv = rng.standard_normal(shape).astype(np.float32)
    yv = rng.standard_normal((*outer, rows, 1)).astype(np.float32)
    pads = [(0, 0)] * (len(shape) - 2) + [(1, 1), (0, 0)]
    want = np.pad(np.maximum(xv * yv, 0), pads)
    np.testing.assert_array_equal(f(xv, yv), np.maximum(want[..., 0::2, :], want[..., 1::2, :]))


def test_rows_in_groups_of_a_symbolic_dim_match_numpy(rng):
    x, w = gc.input("x", (3, "N", 12)), gc.input("w", (1, "N", 1))
    f = gc.compile([x, w], [gc.exp(x) * w + 1], backend="llvm")
    assert "rows.head" in f._executable.llvm_ir
    for n in (1, 7, 300):
        xv = rng.standard_normal((3, n, 12)).astype(np.float32)
        wv = rng.standard_normal((1, n, 1)).astype(np.float32)
        np.testing.assert_allclose(f(xv, wv), np.exp(xv) * wv + 1, rtol=1e-6, atol=1e-6)


def _masked_iterations(width: int) -> bool:
    """Return whether a row of `width` elements asks for masked vector iterations."""
    x = gc.input("x", ("N", width))
    f = gc.compile([x], [x + gc.Variable(np.ones(width, np.float32))], backend="llvm")
    return "llvm.loop.vectorize.predicate.enable" in f._executable.llvm_ir  # unoptimised


def test_only_short_rows_ask_for_masked_vector_iterations_on_avx512(monkeypatch):
    # The kernels are emitted as for an AVX-512 target (kernels.KernelContext.masked_tails)
    # and compiled for the host, whatever its vectors: the hints are in the unoptimised IR.
    monkeypatch.setattr(program, "selected_target", lambda: cpu_target("skylake-avx512", ""))
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    assert _masked_iterations(25) and not _masked_iterations(1024)
    # Longer rows are masked where the main loop would leave a long scalar remainder.
    assert _masked_iterations(224) and _masked_iterations(300)
    assert not _masked_iterations(256) and not _masked_iterations(196)


def test_rows_run_no_masked_iterations_without_avx512(monkeypatch):
    # AVX2's masked stores are microcoded on AMD's Zen 3 (kernels.KernelContext.masked_tails).
    monkeypatch.setenv("GRAPHC_CPU", "avx2")
    monkeypatch.setenv("GRAPHC_CACHE", "0")
    assert not any(_masked_iterations(width) for width in (14, 25, 224, 300))


def test_a_whole_short_row_is_not_unrolled_before_vectorising_but_its_vector_loop_may_be():
    # The row of 14 is kept from the full unroller (it would become 14 scalar stores); the
    # vector loop made of it gets hints of its own, without that one, so its two masked
    # iterations can be unrolled and their masks become constants.
    x = gc.input("x", ("N", 14))
    f = gc.compile([x], [x * gc.Variable(np.full(14, 2.0, np.float32))], backend="llvm")
    hints = f._executable.llvm_ir  # unoptimised
    assert "llvm.loop.unroll.disable" in hints
    assert '!{ !"llvm.loop.vectorize.followup_vectorized", !' in hints
    data = np.arange(42, dtype=np.float32).reshape(3, 14)
    np.testing.assert_array_equal(f(data), data * 2)


@pytest.mark.parametrize("op", ["sum", "max", "min", "prod"])
@pytest.mark.parametrize("shape", [(5, 7), (37, 300), (1100, 600), (3, 4, 257)])
def test_column_reductions_match_numpy(backend, rng, op, shape):
    # Reductions over the leading dims run with the loops swapped (a block of columns at a
    # time, kernels.COLUMN_BLOCK wide); 1100 x 600 splits over threads; a NaN propagates.
    data = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    data[1, ..., 3] = np.nan
    x = gc.input("x", ("N", *shape[1:]))
    axes = tuple(range(len(shape) - 1))
    method = f"a{op}" if op in ("max", "min") else op
    f = gc.compile([x], [getattr(x, method)(dim=axes) * 2 - 1], backend=backend)
    want = getattr(np, op)(data.astype(np.float64), axis=axes) * 2 - 1
    # A float32 product of 1100 factors is good to about 1e-4 in any order.
    np.testing.assert_allclose(f(data), want, rtol=1e-3 if op == "prod" else 1e-4, equal_nan=True)


def test_only_reductions_down_columns_swap_their_loops():
    from graphc.backends.kernel.reductions import column_reductions

    def swapped(reduce) -> bool:
        x = gc.input("x", (64, 48))
        f = gc.compile([x], [reduce(x) + 1], backend="llvm")
        loops = [kn for kn in f._executable.program.kernels if isinstance(kn, k.LoopKernel)]
        return any(column_reductions(kernel) for kernel in loops)

    assert swapped(lambda x: x.sum(dim=0))
    assert not swapped(lambda x: x.sum(dim=1))  # along rows: the loop reads contiguously
    assert not swapped(lambda x: x.T.sum(dim=0))  # a transposed read is not unit stride


def _loop_kernels(function) -> list[k.LoopKernel]:
    return [kn for kn in function._executable.program.kernels if isinstance(kn, k.LoopKernel)]


@pytest.mark.parametrize(
    "shape, perm, flat",
    [
        ((3, 7, 7, 32), (0, 3, 1, 2), (3, 1568)),  # channels last to a Linear's rows
        ((2, 5, 6, 4), (0, 3, 1, 2), (2, 120)),
        ((2, 3, 4, 5), (0, 2, 1, 3), (2, 4, 15)),  # attention's heads merged back
        ((2, 4, 8, 32), (0, 2, 1, 3), (2, 8, 128)),  # the same divided by powers of two
        ((2, 4, 8, 32), (0, 2, 1, 3), (16, 128)),  # and the batch and tokens merged too
    ],
)
def test_a_flattening_copy_loops_over_the_dims_it_flattens(backend, rng, shape, perm, flat):
    """A copy that flattens a permuted value loops over the permuted value's dims, so its
    reads index each with a loop variable instead of dividing the flattened index."""
    x = gc.input("x", shape)
    f = gc.compile([x], [x.permute(*perm).reshape(*flat)], backend=backend)
    xv = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(f(xv), xv.transpose(perm).reshape(flat))
    if backend == "llvm":
        (copy,) = _loop_kernels(f)
        assert all(_divisions(load.offset) == 0 for s in copy.stores for load in k.loads(s.value))


def test_only_reads_across_rows_run_in_tiles():
    from graphc.backends.kernel.transposes import reads_across_rows

    def tiled(make, shape=(100, 300)) -> bool:
        x = gc.input("x", shape)
        f = gc.compile([x], [make(x)], backend="llvm")
        return any(reads_across_rows(kernel) for kernel in _loop_kernels(f))

    assert tiled(lambda x: x.T * 2)
    assert tiled(lambda x: x.T + x[:1].T)  # one transposed operand is enough
    assert not tiled(lambda x: x * 2)  # along rows
    assert not tiled(lambda x: x.T * 2, (20, 100))  # rows of 20 read 20 lines at most
    assert not tiled(lambda x: x.T.sum(dim=1))  # a reduction keeps its own loops


def _pool_gradient(x, kernel: int = 2):
    """The gradient of a max pool of relu(x), whose kernel reads the window at i // kernel."""
    (g,) = gc.grad((gc.nn.functional.max_pool2d(gc.relu(x), kernel) ** 2).sum(), [x])
    return g


def test_rows_read_at_a_division_take_its_elements_a_trip():
    from graphc.backends.kernel.divided_rows import divided_row

    def divided(make, shape) -> list:
        x = gc.input("x", shape)
        f = gc.compile([x], [make(x)], backend="llvm")
        return [row for row in map(divided_row, _loop_kernels(f)) if row is not None]

    rows = divided(_pool_gradient, (2, 3, 28, 28))
    assert [(row.size, row.trips) for row in rows] == [(2, 14)]
    (upsampled,) = divided(lambda x: _repeated(x, 2), (2, 3, 5, 7))
    assert (upsampled.size, upsampled.trips) == (2, 7)
    for stores in upsampled.stores:  # i // 2 became the trip's index
        divisions = [e for s in stores for e in k.subexpressions(s.value) if _is_division(e)]
        assert not any(upsampled.var in k.free_vars(e) for e in divisions)
    assert divided(lambda x: _pool_gradient(x, 5), (1, 2, 10, 10)) == []  # 5: too many copies
    assert divided(_pool_gradient, (1, 2, 9, 9)) == []  # rows of 9 are no whole pairs


def _repeated(x, times: int):
    """Each element of x's rows `times` times over (np.repeat along the last dim): a load at
    i // times."""
    *outer, width = x.shape
    return x.reshape(*outer, width, 1).expand(*outer, width, times).reshape(*outer, width * times)


def _is_division(e) -> bool:
    return isinstance(e, k.IBin) and e.op in ("div", "mod")


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize(
    "shape, kernel",
    [
        ((3, 2, 28, 28), 2),  # rows of 28: 14 trips, short rows
        ((2, 3, 12, 36), 3),
        ((2, 2, 8, 256), 4),  # long rows
        ((3, 2, 10, 9), 2),  # odd rows: element by element
        ((48, 8, 28, 28), 2),  # split over threads, parts of rows at the chunks' ends
    ],
)
def test_divided_rows_match_the_reference(monkeypatch, rng, threads, shape, kernel):
    """Rows read at i // k run k elements a trip (divided_rows.py): a max pool's gradient
    with a per-channel scale after its ReLU, and rows repeated k times; bitwise against the
    reference backend."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", shape)
    scale = gc.input("scale", (shape[1], 1, 1))
    (g,) = gc.grad((gc.nn.functional.max_pool2d(gc.relu(x) * scale, kernel) ** 2).sum(), [x])
    outputs = [g, _repeated(x * 2, kernel)]
    values = [rng.standard_normal(shape).astype(np.float32)]
    values.append(rng.standard_normal((shape[1], 1, 1)).astype(np.float32))
    got = gc.compile([x, scale], outputs, backend="llvm")(*values)
    want = gc.compile([x, scale], outputs, backend="reference")(*values)
    for got_value, want_value in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_value, want_value)


def test_short_rows_merge_into_the_rows_above():
    from graphc.backends.kernel.divided_rows import divided_row, merged_short_rows

    def merged(make, shape, dtype=float32) -> list:
        x = gc.input("x", shape, dtype)
        f = gc.compile([x], [make(x)], backend="llvm")
        return [m for m in map(merged_short_rows, _loop_kernels(f)) if m is not None]

    (to_nhwc,) = merged(lambda x: x.permute(0, 2, 3, 1) * 2, (2, 3, 8, 8))
    assert to_nhwc.domain == (k.IConst(2), k.IConst(192))  # the 8 x 8 pixels coalesced
    row = divided_row(to_nhwc)
    assert (row.size, row.trips) == (3, 64)
    for stores in row.stores:  # the channel and the pixel are constants and the trip
        assert not any(_is_division(e) for s in stores for e in k.subexpressions(s.value))
    assert len(merged(lambda x: x * gc.tensor(np.arange(4, dtype=np.float32)), (9, 4))) == 1
    assert merged(lambda x: x.permute(0, 2, 3, 1) * 2, (2, 5, 8, 8)) == []  # rows of 5
    assert merged(lambda x: x.permute(0, 2, 3, 1) * 2, (2, 1, 8, 8)) == []  # one channel
    assert merged(lambda x: x.permute(0, 2, 1) * 2, (2, 3, 2)) != []  # a whole (2, 3) row
    assert merged(lambda x: x.sum(dim=-1, keepdim=True) + x, (5, 3)) == []  # a reduction


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("dtype", [float32, float64, int32, int64, bool_])
@pytest.mark.parametrize(
    "shape, perm",
    [
        ((2, 3, 8, 8), (0, 2, 3, 1)),  # an RGB image to channels last
        ((5, 3, 7, 11), (0, 2, 3, 1)),  # odd rows
        ((64, 3, 32, 32), (0, 2, 3, 1)),  # split over threads mid-row
        ((3, 2, 67), (0, 2, 1)),
        ((2, 4, 33), (0, 2, 1)),
        ((40, 2), (0, 1)),  # rows of 2 read contiguously, beside a broadcast column
    ],
)
def test_merged_short_rows_match_numpy(monkeypatch, rng, threads, dtype, shape, perm):
    """Rows of 2 to 4 merged into the rows above them and taken k elements a trip
    (divided_rows.merged_short_rows): a permuted copy and one times a value per column of
    the short row; bitwise against numpy, on 1 to 3 threads."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", shape, dtype)
    width = shape[perm[-1]]
    per_column = gc.input("c", (width,), dtype)
    moved = x.permute(*perm)
    outputs = [moved] if dtype == bool_ else [moved, moved * per_column]
    f = gc.compile([x, per_column], outputs, backend="llvm")
    values, scales = rng.standard_normal(shape) * 100, rng.standard_normal(width) * 100
    xv = (values > 0) if dtype == bool_ else values.astype(dtype.numpy)
    cv = (scales > 0) if dtype == bool_ else scales.astype(dtype.numpy)
    got = f(xv, cv)
    got = [got] if dtype == bool_ else got
    np.testing.assert_array_equal(got[0], xv.transpose(perm))
    if dtype != bool_:
        np.testing.assert_array_equal(got[1], xv.transpose(perm) * cv)


def test_only_plain_transposing_copies_run_in_blocks():
    from graphc.backends.kernel.transposes import transposed_copy

    def blocks(make, shape=(100, 40)) -> list:
        x = gc.input("x", shape)
        f = gc.compile([x], [make(x)], backend="llvm")
        return [transposed_copy(kernel, 8) for kernel in _loop_kernels(f)]

    (copy,) = blocks(lambda x: x.T)
    assert copy is not None and copy.step == 40
    (copy,) = blocks(lambda x: x.permute(0, 3, 1, 2).reshape(3, 1568), (3, 7, 7, 32))
    assert copy is not None and copy.step == 32  # the MNIST CNN's flatten
    (copy,) = blocks(lambda x: x.T.reshape(-1), (64, 128))  # flattened by powers of two
    assert copy is not None and copy.step == 128
    assert blocks(lambda x: x.T * 2) == [None]  # computes more than a copy
    assert blocks(lambda x: x.T, (100, 37)) == [None]  # 37 rows: not in blocks of 8
    assert blocks(lambda x: x.T, (24, 16)) == [None]  # rows of 24 are not read across


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize(
    "shape, perm",
    [
        ((64, 7, 7, 32), (0, 3, 1, 2)),  # rows of 49: 6 blocks of columns and one left
        ((100, 48), (1, 0)),  # 6 blocks of rows: three pairs
        ((5, 40, 33), (0, 2, 1)),  # 5 blocks of rows in each of 5 matrices
        ((3, 24, 100), (0, 2, 1)),  # an odd number of blocks of rows
        ((2, 1024, 16), (0, 2, 1)),  # rows 4 KiB apart: one block of rows at a time
        ((1024, 640), (1, 0)),  # large enough to split over threads, chunks start mid-row
    ],
)
@pytest.mark.parametrize("dtype", [gc.float32, gc.float64, gc.int32, gc.int64, gc.bool_])
def test_block_transposes_match_numpy(monkeypatch, rng, threads, shape, perm, dtype):
    """Plain transposing copies run in register-transposed blocks (llvm/transposed_copy.py):
    whole rows in blocks of 8 (4-byte elements) or 4 (8-byte), the rows at a chunk's ends
    and the columns past the last block element by element, booleans element by element;
    bitwise against numpy."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", shape, dtype)
    f = gc.compile([x], [x.permute(*perm)], backend="llvm")
    values = rng.standard_normal(shape) * 1000
    xv = (values > 0) if dtype == gc.bool_ else values.astype(dtype.numpy)
    np.testing.assert_array_equal(f(xv), xv.transpose(perm))


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize(
    "shape, perm, loops",
    [
        ((64, 128), (1, 0), 2),
        ((2, 16, 16, 64), (0, 3, 1, 2), 3),  # (2, 64, 256) once coalesced
        ((4, 8, 64, 64), (0, 2, 1, 3), 4),  # reads along rows of 64
        ((4, 64), (1, 0), 1),  # rows of 4: the flat loop, shifts
    ],
)
def test_flattened_transposes_match_numpy(monkeypatch, rng, threads, shape, perm, loops):
    """A transpose flattened to one dim loops over the transposed dims (build._domain_shape)
    even though its divisions are by powers of two, unless those dims' rows are shorter than
    FINER_ROW_LEAST: bitwise against numpy."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", shape)
    f = gc.compile([x], [x.permute(*perm).reshape(-1)], backend="llvm")
    xv = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(f(xv), xv.transpose(perm).reshape(-1))
    (kernel,) = _loop_kernels(f)
    assert len(kernel.domain) == loops


@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize(
    "shape, perm",
    [
        ((37, 100), (1, 0)),
        ((100, 37), (1, 0)),
        ((3, 50, 41), (0, 2, 1)),
        ((6, 33, 2, 70), (3, 2, 0, 1)),
        ((300, 1001), (1, 0)),  # large enough to split over threads
        ((4, 333, 257), (0, 2, 1)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_tiles_match_numpy(monkeypatch, rng, threads, shape, perm, dtype):
    """Transposes run TILE_ROWS x TILE_COLUMNS tiles (kernels._emit_row_tiles): partial tiles
    at both edges, outer indices carried across a tile, chunks over threads that start
    mid-row, with an elementwise operand read along rows: bitwise against numpy."""
    monkeypatch.setenv("GRAPHC_NUM_THREADS", threads)
    x = gc.input("x", shape, dtype)
    out_shape = tuple(shape[p] for p in perm)
    y = gc.input("y", out_shape, dtype)
    f = gc.compile([x, y], [x.permute(*perm) * 2 + y], backend="llvm")
    xv = rng.standard_normal(shape).astype(dtype)
    yv = rng.standard_normal(out_shape).astype(dtype)
    np.testing.assert_array_equal(f(xv, yv), xv.transpose(perm) * 2 + yv)
