"""Fusion: partition a graph into kernels. Each op's role comes from its definition
(`OpDef.fusion`, the roles listed in `graphc.ops.registry.FUSION_ROLES`). Rules, applied in
reverse topological order:

1. Buffers (inputs, variables, multi-element constants) are in memory before any kernel runs;
   inlined nodes (scalar constants, symbolic sizes, movement ops such as reshape, permute,
   broadcast_to, slice, pad, concat, gather, and casts and stop_gradient) are index
   arithmetic, inlined into every consumer.
2. Graph outputs, update values, and ops that start a kernel of their own (matmul,
   scatter-add, convolution and pooling) get their own buffer and kernel (a "root"). A loop
   (scan) is a kernel of its own too: its inputs are buffers, and its results, the
   tuple_get nodes, are roots of its kernel (buffers it stores). So is `flat_im2col`, whose
   input is a buffer: it copies runs of that buffer's memory.
3. Any other node (elementwise, random, reductions) joins its consumers' kernel when all of
   them are in one kernel that is not one of rule 2's; otherwise it becomes a root. The one
   exception is a pool whose windows never overlap (role `disjoint_windows`): an elementwise
   node joins it when it reads each of the node's elements at most once (through elementwise
   ops of the node's shape, permutes, reshapes and slices), so a convolution's bias and ReLU
   run inside the 2x2 pool after it instead of storing an image the pool reads back. A
   scalar feeding a larger kernel is a root too, so its math runs once rather than once per
   element. A reduction joins a kernel over its own shape, or one over its input's shape
   that reads it broadcast along the reduced, trailing axes (so the backend computes it once
   per row, before the row's loop).
   A reduction whose one user is a reduction of the same op and dtype joins it, and the
   lowering folds the two into one loop nest over the first one's input (a sum over the
   batch dim of a sum over the spatial dims: one pass, read in the input's order).
4. Matmul operands must be strided views of buffers (ops with a `view` rule: permute,
   reshape, broadcast_to of a buffer); the first node under a view chain that is not a buffer
   becomes a root. `window_matmul`'s padded image, which its GEMM reads as overlapping
   windows, must moreover lie in memory as a buffer of its shape would (a reshape of one).
5. Epilogues: an elementwise root whose shape equals an earlier kernel's and that reads that
   kernel's result at the same index joins it (bias + activation after a matmul; a chain of
   materialised elementwise values), provided everything else it reads is ready by then and
   it reads the values that kernel stores only at the element being computed: an element at
   another index (`y - y[3]`, `y - y.T`) may not be written yet, so such a root stays apart.
6. Sibling reductions: a loop kernel with a reduction joins an earlier one with a reduction
   whose domain has the same elements (the same shape once size-1 dims are dropped), where
   everything it reads is computed before that kernel; failing that, the earlier kernel
   moves after the later one's inputs to take it in, when no kernel in between and not the
   later one read what it computes. BatchNorm's per-channel sums and a mean next to a sum
   become one kernel, and the backend runs their reductions in one loop nest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphc.dims import dims_equal, same_dims
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.ops.movement import contiguous_strides
from graphc.ops.reduce import reduced_axes
from graphc.ops.registry import fusion_role

# Roles that start a kernel of their own, and the kind of kernel each starts.
_KERNEL_OF_ROLE = {
    "root": "loop",
    "windows": "loop",
    "disjoint_windows": "loop",
    "matmul": "matmul",
    "scatter_add": "scatter_add",
    "loop": "scan",
    "collective": "collective",
}

# Kernels that take no epilogue.
_OWN_KERNELS = ("scatter_add", "scan", "collective")


@dataclass
class Group:
    """One kernel: the roots it materialises (in order) and every node it covers."""

    kind: str  # "loop" | "matmul" | "scatter_add" | "scan" | "collective"
    roots: list[Node]
    members: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        ops = []
        for node in self.members:
            if node.op not in ops and fusion_role(node) not in ("inline", "result"):
                ops.append(node.op)
        return "fused_" + "_".join(ops[:4]) if len(ops) > 1 else f"{ops[0] if ops else 'copy'}"


@dataclass
class Partition:
    """The kernels of a graph in execution order, and which nodes own a buffer."""

    groups: list[Group]
    buffers: set[int]


def is_buffer_source(node: Node) -> bool:
    """Return True for nodes whose value lives in memory before any kernel runs."""
    return fusion_role(node) == "buffer"


def _trailing(axes: tuple[int, ...], ndim: int) -> bool:
    return tuple(axes) == tuple(range(ndim - len(axes), ndim))


def partition(graph: Graph) -> Partition:
    """Return the kernels computing graph's outputs and updates."""
    users = graph.users()
    forced = {n.id for n in graph.outputs} | {value.id for _, value in graph.updates}
    forced |= _matmul_operand_roots(graph)
    # A loop steps through its inputs' memory, MPI sends from memory, and flat windows are
    # runs of their padded input's memory: each is a buffer.
    forced |= {
        s.id
        for n in graph.nodes
        if fusion_role(n) in ("loop", "collective", "windows")
        for s in n.inputs
    }
    root_of: dict[int, int | None] = {}
    node_by_id = {n.id: n for n in graph.nodes}

    def consumer_roots(node: Node) -> set[int]:
        found: set[int] = set()
        for user in users[node.id]:
            root = root_of[user.id]
            if root is None:
                found |= consumer_roots(user)
            else:
                found.add(root)
        return found

    for node in reversed(graph.nodes):
        role = fusion_role(node)
        if role == "result":  # stored by its loop's kernel, one of that kernel's roots
            root_of[node.id] = node.inputs[0].id
            continue
        if role == "buffer" or node.id in forced or role in _KERNEL_OF_ROLE:
            root_of[node.id] = node.id
            continue
        if role == "inline":
            root_of[node.id] = None
            continue
        roots = consumer_roots(node)
        joinable = len(roots) == 1
        if node.type.ndim == 0 and any(node_by_id[r].type.ndim > 0 for r in roots):
            joinable = False  # scalar math (Adam's bias corrections) runs once, not per element
        if joinable and get_op(node.op).kind == "reduce":
            joinable = _reduction_joins(node, node_by_id[next(iter(roots))]) or _folds_into(
                node, users[node.id]
            )
        if joinable:
            (target,) = roots
            joinable = fusion_role(node_by_id[target]) not in _KERNEL_OF_ROLE or (
                _read_once(node, node_by_id[target], users)
            )
        root_of[node.id] = next(iter(roots)) if joinable else node.id

    groups: dict[int, Group] = {}
    for node in graph.nodes:
        if is_buffer_source(node):
            continue
        root = root_of[node.id]
        if root == node.id:
            groups[root] = Group(_KERNEL_OF_ROLE.get(fusion_role(node), "loop"), [node])
    for node in graph.nodes:
        root = root_of.get(node.id)
        if root is not None and root in groups:
            groups[root].members.append(node)
            if fusion_role(node) == "result":
                groups[root].roots.append(node)
    ordered = [groups[n.id] for n in graph.nodes if n.id in groups]
    buffers = {n.id for n in graph.nodes if is_buffer_source(n)}
    buffers |= {root.id for group in groups.values() for root in group.roots}
    free = {node_id for node_id, root in root_of.items() if root is None}
    return Partition(_merge_epilogues(ordered, free), buffers)


# Movement ops that read each element of their input at most once.
_ONE_TO_ONE = ("permute", "reshape", "slice")


def _read_once(node: Node, root: Node, users: dict[int, list[Node]]) -> bool:
    """Return True if node is elementwise and root has windows that never overlap and reads
    each of node's elements at most once: through elementwise ops of node's shape and
    movement ops that read each element once (not a broadcast, which repeats them)."""
    if fusion_role(root) != "disjoint_windows" or get_op(node.op).kind != "elementwise":
        return False
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        for user in users[current.id]:
            if user is root:
                continue
            if get_op(user.op).kind == "elementwise":
                if not _same_shape(user, current):
                    return False
            elif user.op not in _ONE_TO_ONE:
                return False
            stack.append(user)
    return True


def _reduction_joins(reduction: Node, root: Node) -> bool:
    """Return True if the reduction can be computed inside root's kernel without repeating
    work: root is over the reduction's own shape (one reduction per element), or over its
    input's shape reading it broadcast along trailing reduced axes (one per row, hoisted)."""
    if _same_shape(reduction, root):
        return True
    source = reduction.inputs[0]
    return (
        _same_shape(source, root)
        and _trailing(reduced_axes(reduction), source.type.ndim)
        and reduction.attrs["keepdims"]
    )


# Reductions whose chains fold into one loop nest: a sum of a sum is a sum over both's dims.
_FOLDING = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")


def _folds_into(reduction: Node, users: list[Node]) -> bool:
    """Return True if the reduction's one user is a reduction of the same op and dtype, which
    then reduces the reduction's input directly, in one loop nest (a gradient summed over the
    batch dim and then over the spatial dims, as BatchNorm's backward does)."""
    return (
        len(users) == 1
        and reduction.op in _FOLDING
        and users[0].op == reduction.op
        and users[0].inputs[0] is reduction
        and users[0].type.dtype == reduction.type.dtype == reduction.inputs[0].type.dtype
    )


@dataclass(frozen=True)
class StridedView:
    """A node's value read from another node's buffer: element i at sum(i_k * strides_k)."""

    base: Node
    shape: tuple
    strides: tuple


def strided_view(node: Node, is_buffer) -> StridedView | None:
    """Return node as a strided view of a buffer through ops with a `view` rule (permute,
    reshape, broadcast_to), or None when the chain cannot be expressed with strides (a reshape
    of a non-contiguous view)."""
    if is_buffer(node):
        return StridedView(node, node.type.shape, contiguous_strides(node.type.shape))
    view = get_op(node.op).view
    if view is None:
        return None
    inner = strided_view(node.inputs[0], is_buffer)
    if inner is None:
        return None
    strides = view(node, inner.shape, inner.strides)
    return None if strides is None else StridedView(inner.base, node.type.shape, strides)


def _matmul_operand_roots(graph: Graph) -> set[int]:
    """Return the nodes that must be buffers because a GEMM reads them as strided views."""
    needed = set()
    for node in graph.nodes:
        if fusion_role(node) != "matmul":
            continue
        for position, operand in enumerate(node.inputs):
            base = operand
            while get_op(base.op).view is not None:
                base = base.inputs[0]
            if not is_buffer_source(base):
                needed.add(base.id)
            view = strided_view(operand, lambda n, b=base: n is b)
            # window_matmul reads its image's memory as overlapping windows: in its own layout.
            image = node.op == "window_matmul" and position == 0
            if view is None or (image and not _laid_out(view)):
                needed.add(operand.id)
    return needed


def _laid_out(view: StridedView) -> bool:
    """Return True if a view's elements lie in its buffer as in a buffer of its own shape (the
    strides of dims of size 1 aside)."""
    contiguous = contiguous_strides(view.shape)
    return all(
        (isinstance(d, int) and d == 1) or same_dims((s,), (c,))
        for d, s, c in zip(view.shape, view.strides, contiguous, strict=True)
    )


def _same_shape(a: Node, b: Node) -> bool:
    return same_dims(a.type.shape, b.type.shape)


def _keeps_index(reader: Node, source: Node) -> bool:
    """Return True if reader's element i is computed from source's element i: an elementwise
    op, or a view that leaves the layout as it is (a reshape or broadcast to the same shape)."""
    if not _same_shape(reader, source):
        return False
    op = get_op(reader.op)
    if op.kind == "elementwise":
        return True
    if op.view is None:
        return False
    layout = contiguous_strides(source.type.shape)
    strides = op.view(reader, source.type.shape, layout)
    return strides is not None and all(map(dims_equal, strides, layout))


def _reads_only_at_same_index(group: Group, producer: Node, free: set[int]) -> bool:
    """Return True if the group reads producer, and only at the element being computed.

    A kernel that stores producer must not read it at another element, even through inlined
    movement ops (`y - y[3]`): that element may not have been written yet."""
    inside = {m.id for m in group.members} | free
    read = False
    seen: set[tuple[int, bool]] = set()
    stack = [(root, True) for root in group.roots]
    while stack:
        node, aligned = stack.pop()
        if (node.id, aligned) in seen:
            continue
        seen.add((node.id, aligned))
        for source in node.inputs:
            source_aligned = aligned and _keeps_index(node, source)
            if source is producer:
                if not source_aligned:
                    return False
                read = True
            elif source.id in inside:
                stack.append((source, source_aligned))
    return read


def _external_reads(group: Group, free: set[int]) -> list[Node]:
    """Return the materialised nodes a group reads, looking through inlined movement ops."""
    member_ids = {m.id for m in group.members}
    found, stack = [], [s for m in group.members for s in m.inputs]
    while stack:
        source = stack.pop()
        if source.id in member_ids:
            continue
        if source.id in free:
            stack.extend(source.inputs)
        elif source not in found:
            found.append(source)
    return found


def _merge_epilogues(groups: list[Group], free: set[int]) -> list[Group]:
    """Fold elementwise roots into an earlier kernel over the same shape (rule 5), and
    reduction kernels over the same elements into one (rule 6)."""
    merged: list[Group] = []
    defined_at: dict[int, int] = {}
    for group in groups:
        target = None
        if group.kind == "loop":
            target = _epilogue_target(group, merged, defined_at, free)
            if target is None:
                target = _sibling_target(group, merged, defined_at, free)
            if target is None:
                target = _delayed_sibling(group, merged, free)
                if target is not None:
                    merged.append(merged.pop(target))
                    target = len(merged) - 1
                    defined_at = {n.id: p for p, g in enumerate(merged) for n in g.roots}
        if target is None:
            merged.append(group)
            position = len(merged) - 1
        else:
            position = target
            merged[target].roots.extend(group.roots)
            merged[target].members.extend(group.members)
        for node in group.roots:
            defined_at[node.id] = position
    return merged


def _siblings(host: Group, group: Group) -> bool:
    return host.kind == "loop" and _reduces(host) and _same_elements(host.roots[0], group.roots[0])


def _sibling_target(
    group: Group, merged: list[Group], defined_at: dict[int, int], free: set[int]
) -> int | None:
    """Return the earliest kernel a reduction kernel can join (rule 6): one with reductions
    over a domain of the same elements, computed after everything the group reads."""
    if not _reduces(group):
        return None
    ready = max(
        (defined_at[s.id] for s in _external_reads(group, free) if s.id in defined_at), default=-1
    )
    for position in range(ready + 1, len(merged)):
        if _siblings(merged[position], group):
            return position
    return None


def _delayed_sibling(group: Group, merged: list[Group], free: set[int]) -> int | None:
    """Return the latest earlier reduction kernel over the same elements that can move after
    every kernel so far to take the group in (rule 6, the other way): no kernel since reads
    what it computes, and neither does the group."""
    if not _reduces(group):
        return None
    for position in reversed(range(len(merged))):
        host = merged[position]
        if not _siblings(host, group):
            continue
        computed = {n.id for n in host.roots}
        readers = [group, *merged[position + 1 :]]
        if not any(s.id in computed for g in readers for s in _external_reads(g, free)):
            return position
    return None


def _reduces(group: Group) -> bool:
    return any(get_op(node.op).kind == "reduce" for node in group.members)


def _same_elements(a: Node, b: Node) -> bool:
    """Return True if a and b have the same shape once their size-1 dims are dropped, so one
    loop over either's elements stores both at the same offsets."""
    kept_a = [d for d in a.type.shape if not (isinstance(d, int) and d == 1)]
    kept_b = [d for d in b.type.shape if not (isinstance(d, int) and d == 1)]
    return same_dims(kept_a, kept_b)


def _epilogue_target(
    group: Group, merged: list[Group], defined_at: dict[int, int], free: set[int]
) -> int | None:
    root = group.roots[0]
    if get_op(root.op).kind != "elementwise":
        return None
    if any(get_op(m.op).kind == "reduce" for m in group.members):
        return None
    external = [s for s in _external_reads(group, free) if s.id in defined_at]
    for producer in external:
        position = defined_at[producer.id]
        host = merged[position]
        if host.kind in _OWN_KERNELS or not _same_shape(host.roots[0], root):
            continue
        if all(defined_at[s.id] <= position for s in external) and all(
            _reads_only_at_same_index(group, s, free)
            for s in external
            if defined_at[s.id] == position
        ):
            return position
    return None
