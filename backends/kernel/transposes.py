"""Which loop kernels read a buffer across its rows, as a transpose does: the next element of
an output row lies a cache line or more further on, and the next output row reads the element
beside it. Row by row, such a kernel loads a new line per element and has lost it before the
next row wants its neighbour; a backend runs these kernels over tiles of rows instead."""

from __future__ import annotations

from dataclasses import dataclass

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index_ranges import linear_terms

# Elements between two reads of an output row from which each read touches a line of its own
# (64-byte lines, elements of 4 bytes or more).
LINE_ELEMENTS = 16
# Output rows shorter than this take their reads from few lines anyway.
MIN_ROW = 32
# A tile of such a kernel: 16 rows share the lines they read (16 floats each), and 64 columns
# of 16 rows read 64 lines and write 64, well inside L1.
TILE_ROWS = 16
TILE_COLUMNS = 64


def reads_across_rows(kernel: k.LoopKernel) -> bool:
    """Return True for a kernel of at least two dims, rows of at least MIN_ROW elements and no
    reductions, one of whose loads steps by LINE_ELEMENTS or more along the output's row and
    by one from an output row to the next."""
    if len(kernel.vars) < 2:
        return False
    row = kernel.domain[-1]
    if not isinstance(row, k.IConst) or row.value < MIN_ROW:
        return False
    values = [store.value for store in kernel.stores]
    if any(isinstance(e, k.Reduce) for value in values for e in k.subexpressions(value)):
        return False
    along, across = kernel.vars[-1], kernel.vars[-2]
    for value in values:
        for load in k.loads(value):
            terms = linear_terms(load.offset)
            step = terms.get(along)
            if isinstance(step, int) and abs(step) >= LINE_ELEMENTS and terms.get(across) == 1:
                return True
    return False


@dataclass(frozen=True)
class TransposedCopy:
    """A kernel that only copies a buffer across its rows: out[row, i] = source[base(row) +
    i * step], base(row + 1) = base(row) + 1 within a block of rows (see transposed_copy)."""

    source: k.Load
    step: int


def transposed_copy(kernel: k.LoopKernel, block: int) -> TransposedCopy | None:
    """Return the copy a kernel that reads across rows makes, if that is all it does: one
    store of a load of another buffer, the load's offset linear in the last two variables
    (step 1 across rows, a constant step along them), and rows in whole blocks of `block`
    (the second-last dim a constant multiple of it), so a block of rows by `block` columns
    is a square a backend can transpose in registers."""
    if not reads_across_rows(kernel) or len(kernel.stores) != 1:
        return None
    (store,) = kernel.stores
    source = store.value
    if not isinstance(source, k.Load) or source.buffer == store.buffer:
        return None
    across = kernel.domain[-2]
    if not isinstance(across, k.IConst) or across.value % block:
        return None
    along_var, across_var = kernel.vars[-1], kernel.vars[-2]
    terms = linear_terms(source.offset)
    step = terms.get(along_var)
    if not isinstance(step, int) or step < LINE_ELEMENTS or terms.get(across_var) != 1:
        return None
    others = (term for term in terms if term not in (None, along_var, across_var))
    if any({along_var, across_var} & k.free_vars(term) for term in others):
        return None
    return TransposedCopy(source, step)
