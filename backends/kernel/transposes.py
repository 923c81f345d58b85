"""Which loop kernels read a buffer across its rows, as a transpose does: the next element of
an output row lies a cache line or more further on, and the next output row reads the element
beside it. Row by row, such a kernel loads a new line per element and has lost it before the
next row wants its neighbour; a backend runs these kernels over tiles of rows instead."""

from __future__ import annotations

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.index_ranges import linear_terms

# Elements between two reads of an output row from which each read touches a line of its own
# (64-byte lines, elements of 4 bytes or more).
LINE_ELEMENTS = 16
# Output rows shorter than this take their reads from few lines anyway.
MIN_ROW = 32


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
