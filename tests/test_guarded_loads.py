"""Padded reads skip their loads outside the input (`backends/kernel/guards.py`): the clamps a
select makes no-ops go, and the load happens only where the select takes it. Checked on the
kernel IR, and end to end on arrays that end (or start) at an unreadable page, where a load
one element outside would crash the process."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest

import graphc as gc
from graphc.backends.kernel.guards import conjuncts, unclamped
from graphc.backends.kernel.index import clamp, in_range
from graphc.backends.kernel.ir import IBin, IConst, Var, iadd, imul
from graphc.nn import functional as F

I, J = Var("i"), Var("j")
ROW = iadd(I, IConst(-1))
COLUMN = iadd(J, IConst(-1))


def _value(expr, i: int, j: int) -> int:
    """Return an index expression's value at loop indices (i, j)."""
    if isinstance(expr, IConst):
        return expr.value
    if isinstance(expr, Var):
        return {"i": i, "j": j}[expr.name]
    a, b = _value(expr.a, i, j), _value(expr.b, i, j)
    ops = {"add": a + b, "mul": a * b, "min": min(a, b), "max": max(a, b)}
    ops |= {"le": int(a <= b), "lt": int(a < b), "and": int(bool(a and b))}
    return ops[expr.op]


def _clamps(expr) -> int:
    """Return how many min/max nodes an index expression has."""
    if not isinstance(expr, IBin):
        return 0
    return (expr.op in ("min", "max")) + _clamps(expr.a) + _clamps(expr.b)


OFFSET = iadd(imul(clamp(ROW, IConst(14)), IConst(14)), clamp(COLUMN, IConst(14)))


def test_clamps_the_condition_makes_no_ops_are_removed():
    inside = IBin("and", in_range(ROW, IConst(14)), in_range(COLUMN, IConst(14)))
    found = unclamped(OFFSET, conjuncts(inside))
    assert _clamps(OFFSET) == 4 and _clamps(found) == 0
    for i, j in np.ndindex(18, 18):
        assert _value(found, i - 2, j - 2) == (i - 3) * 14 + (j - 3)


@pytest.mark.parametrize(
    "condition, left",
    [
        (in_range(ROW, IConst(14)), 2),  # the column's clamp is not covered
        (IBin("le", IConst(0), COLUMN), 3),  # only the column's lower bound is
        (in_range(COLUMN, IConst(15)), 3),  # another size covers the lower bound only
    ],
)
def test_clamps_the_condition_does_not_cover_stay(condition, left):
    found = unclamped(OFFSET, conjuncts(condition))
    assert _clamps(found) == left
    for i, j in np.ndindex(18, 18):
        if _value(condition, i - 2, j - 2):
            assert _value(found, i - 2, j - 2) == _value(OFFSET, i - 2, j - 2)


def _fenced(shape: tuple[int, ...], at_end: bool) -> tuple[np.ndarray, mmap.mmap]:
    """Return a float32 array whose bytes end where an unreadable page starts (at_end), or
    start where one ends, and the mapping that holds it."""
    page = mmap.PAGESIZE
    nbytes = int(np.prod(shape)) * 4
    pages = -(-nbytes // page)
    mapping = mmap.mmap(-1, (pages + 2) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    libc = ctypes.CDLL(None)
    for guard in (base, base + (pages + 1) * page):
        assert libc.mprotect(ctypes.c_void_p(guard), page, 0) == 0  # PROT_NONE
    start = page + (pages * page - nbytes if at_end else 0)
    array = np.frombuffer(mapping, np.float32, int(np.prod(shape)), start).reshape(shape)
    return array, mapping


# The convolution's windows: 300 channels keep im2col on every target (its guarded reads of
# the fenced input), 4 take flat_im2col over a padded copy, and a 3x1 window without padding
# takes flat_im2col straight from the fenced input, its last run ending at the input's last
# element.
WINDOWS = {
    "im2col": ((300, 3, 3, 3), 1, "im2col"),
    "flat_padded": ((4, 3, 3, 3), 1, "flat_im2col"),
    "flat_unpadded": ((4, 3, 3, 1), 0, "flat_im2col"),
}


@pytest.mark.parametrize("windows", sorted(WINDOWS))
@pytest.mark.parametrize("at_end", [False, True], ids=["after_a_fence", "before_a_fence"])
def test_padded_reads_stay_inside_the_input(rng, at_end, windows):
    shape, padding, op = WINDOWS[windows]
    values = rng.standard_normal((2, 3, 14, 14)).astype(np.float32)
    x_value, mapping = _fenced(values.shape, at_end)
    x_value[...] = values
    weight = rng.standard_normal(shape).astype(np.float32)
    x = gc.input("x", values.shape)
    padded = F.pad(x, (1, 2, 2, 1))
    convolved = F.conv2d(x, gc.tensor(weight), padding=padding)
    f = gc.compile([x], [padded, convolved])
    assert op in {node.op for _, nodes in f.kernels() for node in nodes}
    got_padded, got_convolved = f(x_value)
    np.testing.assert_array_equal(got_padded, np.pad(values, ((0, 0), (0, 0), (2, 1), (1, 2))))
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.conv2d(
        torch.from_numpy(values), torch.from_numpy(weight), padding=padding
    ).numpy()
    np.testing.assert_allclose(got_convolved, want, rtol=1e-4, atol=1e-4)
    del x_value
    mapping.close()
