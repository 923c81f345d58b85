"""Graph -> Graph passes, one module each; `optimize` runs the registered rewrite tiers."""

from __future__ import annotations

import os
import sys

from graphc.errors import GraphError, register_internal_root
from graphc.graph import Graph
from graphc.passes.channels_last_pools import CHANNELS_LAST_POOLS
from graphc.passes.constant_fold import FOLD, constant_fold
from graphc.passes.conv_gemm import CONV_GEMM, FLAT_WINDOWS, TARGET_VECTOR_BITS, conv_gemm
from graphc.passes.cse import CSE, cse
from graphc.passes.dce import DCE, dce
from graphc.passes.pool_argmax import POOL_ARGMAX
from graphc.passes.rewrite import RewriteReport, Tier, run_tiers
from graphc.passes.scan_autodiff import SCAN
from graphc.passes.scan_views import LOOP_VIEWS
from graphc.passes.simplify import CANONICALIZE, SIMPLIFY, canonicalize, simplify
from graphc.passes.stabilize import STABILIZE, stabilize
from graphc.passes.verify import verify

# The optimize pipeline, as PyTensor's optdb: (position, tier), run in order of position.
_TIERS: list[tuple[float, Tier]] = []


def register_tier(tier: Tier, position: float) -> None:
    """Add a tier to the optimize pipeline at position (equal positions run as registered)."""
    if any(registered.name == tier.name for _, registered in _TIERS):
        raise GraphError(f"a rewrite tier named {tier.name!r} is already registered")
    _TIERS.append((position, tier))
    _TIERS.sort(key=lambda entry: entry[0])


def tiers() -> tuple[Tier, ...]:
    """Return the registered tiers in the order optimize runs them."""
    return tuple(tier for _, tier in _TIERS)


register_tier(CANONICALIZE, 10)
register_tier(STABILIZE, 20)
register_tier(FOLD, 30)
register_tier(SIMPLIFY, 40)
register_tier(FLAT_WINDOWS, 44)
register_tier(CONV_GEMM, 45)
register_tier(POOL_ARGMAX, 46)
register_tier(CHANNELS_LAST_POOLS, 47)
register_tier(CSE, 50)
register_tier(SCAN, 55)
register_tier(LOOP_VIEWS, 56)
register_tier(DCE, 60)


def optimize(
    graph: Graph, report: RewriteReport | None = None, *, vector_bits: int | None = None
) -> Graph:
    """Return the verified graph with every tier run until none of them changes it.

    report, if given, collects per tier which rewrites fired and how often; GRAPHC_DUMP_REWRITES=1
    prints that report to stderr. vector_bits is the width of the vectors of the CPU target the
    graph will run on, where a rewrite's choice depends on it (`conv_gemm.channel_limits`);
    None for another backend's graph.
    """
    dump = os.environ.get("GRAPHC_DUMP_REWRITES", "") not in ("", "0")
    if dump and report is None:
        report = RewriteReport()
    target = TARGET_VECTOR_BITS.set(vector_bits)
    try:
        graph = run_tiers(verify(graph), tiers(), report)
    finally:
        TARGET_VECTOR_BITS.reset(target)
    if dump:
        print(report, file=sys.stderr)
    return graph


__all__ = [
    "RewriteReport",
    "Tier",
    "canonicalize",
    "constant_fold",
    "conv_gemm",
    "cse",
    "dce",
    "optimize",
    "register_tier",
    "simplify",
    "stabilize",
    "tiers",
    "verify",
]

register_internal_root(__file__)
