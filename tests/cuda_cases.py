"""Which op-table entries the CUDA tests run by default: a representative part of the table,
since the emulator and ptxas take longer per entry than the CPU backend; --cuda-full runs all."""

from __future__ import annotations

import re
from collections.abc import Sequence

from op_table import OpCase


def representative(cases: Sequence[OpCase]) -> list[OpCase]:
    """Return the first entry of each op family (the name up to its first '(', '_', '-' or
    digit), with and without symbolic dims."""
    chosen: dict[tuple[str, bool], OpCase] = {}
    for case in cases:
        family = re.split(r"[(_\-0-9]", case.name)[0]
        chosen.setdefault((family, case.symbolic), case)
    return list(chosen.values())


def selected(cases: Sequence[OpCase], full: bool) -> list[OpCase]:
    """Return every case when full, else the representative ones."""
    return list(cases) if full else representative(cases)
