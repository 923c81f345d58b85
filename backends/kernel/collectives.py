"""Build a collective's kernel: an all_reduce node becomes a `CollectiveKernel` reading its
input's buffer and writing its own.

Fusion makes every all_reduce a kernel of its own whose input is a buffer (MPI sends from
memory), so the kernel is one call over whole buffers. In a world of one process an
all_reduce is its input: the kernel is then a copy (a `LoopKernel`), which every backend runs
without MPI. Which one is built follows the world when the graph is compiled, so a Function
compiled in a world of one process stays local even if a larger world is installed later.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import GROUP_BUILDERS, BufferSpec
from graphc.backends.kernel.index import dim_expr, row_major_offset
from graphc.dims import dim_prod
from graphc.graph import Graph, Node
from graphc.ops.collectives import world


def collective_kernel(
    graph: Graph, node: Node, name: str, names: Mapping[int, str]
) -> tuple[k.Kernel, dict[str, BufferSpec]]:
    """Return the kernel computing the all_reduce node `node` of graph (it adds no buffers)."""
    source, out = names[node.inputs[0].id], names[node.id]
    dtype = node.type.dtype
    if world().size > 1:
        count = dim_expr(dim_prod(node.type.shape))
        return k.CollectiveKernel(name, node.attrs["op"], source, out, count, dtype, (node.id,)), {}
    domain = tuple(dim_expr(d) for d in node.type.shape)
    variables = tuple(k.Var(f"i{axis}") for axis in range(len(domain)))
    element = row_major_offset(variables, domain)
    store = k.Store(out, k.Load(source, element, dtype))
    return k.LoopKernel(name, domain, variables, (store,), (node.id,)), {}


GROUP_BUILDERS["collective"] = collective_kernel
