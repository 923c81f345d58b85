"""The channels_last_pools tier: a max pool of a channels-last value reads it in that layout.

A convolution computed as windows^T @ weights^T (`conv_gemm.windows_on_the_left`) has a
channels-last product, (N, H, W, C), which a permute shows as the (N, C, H, W) image. A max
pool of that image (of its bias and ReLU, which only the pool reads) steps C elements from
one output to the next along a row: every tap of every row is gathered from a line of its
own. Where the pool's windows do not overlap and lie inside the image, it becomes the maximum
of its kH * kW taps, each a strided slice of the channels-last value, and a permute back:

    max_pool2d(f(permute(y, (0, 3, 1, 2)), c)) -> permute(max over taps of slice(f(y, c')))

one elementwise kernel whose rows run along the channels, contiguous in memory, with f
computed inside it once per element (no two windows share one). The small operands c of f
(scalars, or tensors with one dim that is not 1: a bias) are laid out for y's dims as c'. The
taps are combined in the pool's order by `maximum`, which propagates NaN as the pool does.
"""

from __future__ import annotations

from graphc.dims import Dim, same_dims
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.ops.registry import fusion_role, make_node
from graphc.passes.rewrite import GraphRewrite, Tier, rewrite

# The permute that shows an (N, H, W, C) value as an (N, C, H, W) image.
CHANNELS_FIRST = (0, 3, 1, 2)
# Taps a pool may have to become maxima of slices (a 3x3 window: 8 maxima per output).
MAX_TAPS = 9


def _is_image_of(node: Node) -> bool:
    return node.op == "permute" and tuple(node.attrs["perm"]) == CHANNELS_FIRST


def _is_small(node: Node) -> bool:
    """Return True for a scalar, or a tensor of rank <= 4 with at most one dim that is not 1."""
    wide = [d for d in node.type.shape if not (isinstance(d, int) and d == 1)]
    return node.type.ndim <= 4 and len(wide) <= 1


def _taps(pool: Node) -> list[tuple[int, int]] | None:
    """Return the offsets (row, column) of a max pool's taps, or None unless its windows do not
    overlap, need no padding and lie inside the image, with at most MAX_TAPS taps."""
    if pool.op != "max_pool2d" or fusion_role(pool) != "disjoint_windows":
        return None
    attrs = pool.attrs
    kernel, stride, dilation = attrs["kernel"], attrs["stride"], attrs.get("dilation", (1, 1))
    if any(attrs["padding"]) or kernel[0] * kernel[1] > MAX_TAPS:
        return None
    for out, size, k, s, d in zip(
        pool.type.shape[2:], pool.inputs[0].type.shape[2:], kernel, stride, dilation, strict=True
    ):
        if (
            not (isinstance(out, int) and isinstance(size, int))
            or (out - 1) * s + (k - 1) * d >= size
        ):
            return None
    return [(i * dilation[0], j * dilation[1]) for i in range(kernel[0]) for j in range(kernel[1])]


def _chain(pool: Node, users: dict[int, list[Node]], kept: set[int]) -> list[Node] | None:
    """Return the elementwise nodes between a pool and the channels-last values it reads
    (empty where it reads a permute itself), or None where the pool reads anything else, or
    anything but the pool (another node, a graph output or update: `kept`) reads one of them."""
    image = pool.inputs[0]
    found: dict[int, Node] = {}
    stack = [image]
    while stack:
        node = stack.pop()
        if node.id in found or _is_image_of(node):
            continue
        if get_op(node.op).kind != "elementwise":
            return None
        found[node.id] = node
        images = [s for s in node.inputs if same_dims(s.type.shape, image.type.shape)]
        others = [s for s in node.inputs if not same_dims(s.type.shape, image.type.shape)]
        if not images or not all(map(_is_small, others)):
            return None
        stack.extend(images)
    for node in found.values():
        if node.id in kept or any(u is not pool and u.id not in found for u in users[node.id]):
            return None
    return list(found.values())


def _channels_last_operand(operand: Node) -> Node:
    """Return a small operand of an op over the (N, C, H, W) image laid out for (N, H, W, C)."""
    shape: tuple[Dim, ...] = (1,) * (4 - operand.type.ndim) + tuple(operand.type.shape)
    target = (shape[0], shape[2], shape[3], shape[1])
    if all(isinstance(d, int) and d == 1 for d in target):
        return operand  # a scalar, or ones: broadcasts over either layout
    return make_node("reshape", [operand], {"shape": target}, location=operand.location)


def _channels_last_pool(pool: Node, chain: list[Node], taps: list[tuple[int, int]]) -> Node:
    """Return the pool's replacement: the maximum of its taps' slices of the chain computed
    over the channels-last values, permuted back to (N, C, OH, OW)."""
    rebuilt: dict[int, Node] = {}

    def channels_last(source: Node) -> Node:
        if _is_image_of(source):
            return source.inputs[0]
        if source.id in rebuilt:
            return rebuilt[source.id]
        return _channels_last_operand(source)

    for node in sorted(chain, key=lambda n: n.id):
        inputs = [channels_last(s) for s in node.inputs]
        rebuilt[node.id] = make_node(node.op, inputs, node.attrs, location=node.location)
    values = channels_last(pool.inputs[0])
    n, channels, rows, columns = pool.type.shape
    sizes = (n, rows, columns, channels)
    steps = (1, *pool.attrs["stride"], 1)
    highest: Node | None = None
    for row, column in taps:
        attrs = {"starts": (0, row, column, 0), "sizes": sizes, "steps": steps}
        tap = make_node("slice", [values], attrs, location=pool.location)
        highest = tap if highest is None else make_node("maximum", [highest, tap], {})
    assert highest is not None
    result = make_node("permute", [highest], {"perm": CHANNELS_FIRST}, location=pool.location)
    return Node(result.op, result.inputs, result.attrs, result.type, result.location, pool.name)


def _pools_of_channels_last_values(graph: Graph) -> tuple[Graph, int]:
    users = graph.users()
    kept = {n.id for n in graph.outputs} | {value.id for _, value in graph.updates}
    replacements: dict[int, Node] = {}
    for node in graph.nodes:
        taps = _taps(node)
        chain = None if taps is None else _chain(node, users, kept)
        if taps is not None and chain is not None and (chain or _is_image_of(node.inputs[0])):
            replacements[node.id] = _channels_last_pool(node, chain, taps)
    if not replacements:
        return graph, 0
    return rewrite(graph, lambda node: node, replacements), len(replacements)


pools_of_channels_last_values = GraphRewrite(
    "pools_of_channels_last_values", _pools_of_channels_last_values
)
CHANNELS_LAST_POOLS = Tier("channels_last_pools", (pools_of_channels_last_values,))
