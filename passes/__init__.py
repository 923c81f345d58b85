"""Graph -> Graph passes, one module each; `optimize` runs the standard pipeline."""

from graphc.errors import register_internal_root
from graphc.graph import Graph
from graphc.passes.constant_fold import constant_fold
from graphc.passes.cse import cse
from graphc.passes.dce import dce
from graphc.passes.simplify import simplify
from graphc.passes.stabilize import stabilize
from graphc.passes.verify import verify


def optimize(graph: Graph) -> Graph:
    """Return the verified graph stabilised, constants folded, duplicates merged, dead code gone."""
    return dce(cse(constant_fold(simplify(stabilize(verify(graph))))))


__all__ = ["constant_fold", "cse", "dce", "optimize", "simplify", "stabilize", "verify"]

register_internal_root(__file__)
