"""Build kernel IR from a fusion partition: one kernel per group, buffers named after nodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from graphc.backends.kernel.coalesce import coalesce_kernels
from graphc.backends.kernel.index import Index, dim_expr
from graphc.backends.kernel.ir import (
    IBin,
    IConst,
    IndexCheck,
    IntExpr,
    Kernel,
    LoopKernel,
    MatmulKernel,
    Operand,
    Runs,
    ScatterAddKernel,
    Store,
    ValueIndex,
    Var,
    buffers_used,
    ibin,
    imul,
    loads,
)
from graphc.backends.kernel.lowering import LoweringContext, kernel_rule
from graphc.dims import Dim, dim_prod, dims_equal, static_shape
from graphc.dtypes import DType, int64
from graphc.errors import CompileError
from graphc.graph import Graph, Node
from graphc.ops import get_op
from graphc.ops.registry import make_node
from graphc.passes.fusion import Group, Partition, is_buffer_source, strided_view
from graphc.types import TupleType

# Where a flattening copy's reads would divide only by powers of two, the finer loops'
# shortest row: shorter rows (a value repeated 2 or 4 times along its rows) keep the flat
# loop, whose reads at i // k run k elements a trip (divided_rows.py).
FINER_ROW_LEAST = 8


@dataclass(frozen=True)
class BufferSpec:
    """A named buffer: the node it holds, its shape and dtype, and where its memory comes from
    ("input", "variable", "constant", "output" or "temp")."""

    name: str
    node: Node
    shape: tuple[Dim, ...]
    dtype: DType
    role: str


@dataclass(frozen=True)
class KernelProgram:
    """Everything a backend needs: buffers, kernels in order, outputs and updates by name."""

    buffers: dict[str, BufferSpec]
    kernels: list[Kernel]
    outputs: list[str]
    updates: list[tuple[str, str]]
    symbols: tuple[str, ...]

    def buffer_lifetimes(self) -> dict[str, tuple[int, int]]:
        """Return, per buffer, the first and last kernel positions that touch it; the updates'
        buffers live until the end (position len(kernels)), where a backend copies them. A
        memory planner lets buffers whose lifetimes do not overlap share bytes."""
        spans: dict[str, list[int]] = {}
        for position, kernel in enumerate(self.kernels):
            for name in buffers_used(kernel):
                span = spans.setdefault(name, [position, position])
                span[0], span[1] = min(span[0], position), max(span[1], position)
        end = len(self.kernels)
        for target, source in self.updates:
            for name in (target, source):
                spans.setdefault(name, [end, end])[1] = end
        return {name: (lo, hi) for name, (lo, hi) in spans.items()}


def updates_from_kernels(graph: Graph) -> Graph:
    """Return graph with every update value and every variable output computed by a kernel:
    a copy taken before any variable changes, so `a <- b, b <- a` reads both old values and
    an output that is an updated variable shows its value from before the call. Every
    backend that builds a kernel program runs it first."""

    def copied(node: Node) -> Node:
        return make_node("stop_gradient", [node], location=node.location)

    updates = tuple(
        (variable, copied(value) if is_buffer_source(value) else value)
        for variable, value in graph.updates
    )
    outputs = tuple(copied(n) if n.op == "variable" else n for n in graph.outputs)
    return Graph(graph.inputs, outputs, updates)


# Builders of the kernels of group kinds defined elsewhere, by kind (`kernel/scan.py` adds a
# loop's): builder(graph, root, kernel name, buffer names) -> (the kernel, the buffers it adds).
GroupBuilder = Callable[[Graph, Node, str, Mapping[int, str]], tuple[Kernel, dict[str, BufferSpec]]]
GROUP_BUILDERS: dict[str, GroupBuilder] = {}


def _buffer_name(node: Node, position: int) -> str:
    """Return a buffer name from the node's position in the graph (not its global id), so
    structurally equal graphs give identical code and can share a compiled module."""
    if node.op == "input":
        return f"in_{node.name}"
    if node.op == "variable":
        return f"var{position}"
    return f"{node.op}{position}"


def _role(node: Node, outputs: set[int]) -> str:
    if node.op in ("input", "variable", "constant"):
        return node.op
    return "output" if node.id in outputs else "temp"


def build_program(
    graph: Graph, plan: Partition, prefix: str = "", fixed: Mapping[int, str] | None = None
) -> KernelProgram:
    """Return the kernel program computing graph with the given partition. `prefix` starts
    every buffer and kernel name, and `fixed` names the buffers of some nodes: a loop's body
    is built so (`kernel/scan.py`), its names distinct from the program around it."""
    nodes = {n.id: n for n in graph.nodes}
    positions = {n.id: position for position, n in enumerate(graph.nodes)}
    output_ids = {n.id for n in graph.outputs}
    buffers = {}
    names = dict(fixed or {})
    for node_id in sorted(plan.buffers):
        node = nodes[node_id]
        if isinstance(node.type, TupleType):
            continue  # a loop's results are the buffers of its tuple_get nodes
        name = names.setdefault(node_id, prefix + _buffer_name(node, positions[node_id]))
        buffers[name] = BufferSpec(
            name, node, node.type.shape, node.type.dtype, _role(node, output_ids)
        )
    ctx = LoweringContext(names)
    kernels: list[Kernel] = []
    for position, group in enumerate(plan.groups):
        name = f"{prefix}{group.name}_{position}"
        builder = GROUP_BUILDERS.get(group.kind)
        if builder is None:
            kernels.append(_build_group(ctx, group, name, names))
        else:
            kernel, inner = builder(graph, group.roots[0], name, names)
            buffers.update(inner)
            kernels.append(kernel)
    symbols = sorted(
        {s for n in graph.inputs for d in n.type.shape for s in getattr(d, "symbols", ())}
    )
    return KernelProgram(
        buffers,
        coalesce_kernels(kernels),
        [names[n.id] for n in graph.outputs],
        [(names[v.id], names[value.id]) for v, value in graph.updates],
        tuple(symbols),
    )


def _domain(shape: tuple[Dim, ...]) -> tuple[tuple[IntExpr, ...], tuple[Var, ...]]:
    return tuple(dim_expr(d) for d in shape), tuple(Var(f"i{k}") for k in range(len(shape)))


def _domain_shape(root: Node) -> tuple[Dim, ...]:
    """Return the shape a loop kernel storing root loops over: root's own, or where root
    flattens dims of a value (a reshape to fewer dims) whose sizes a read would divide the
    flattened index by, that value's, whose elements lie in the same order. Its reads then
    index each of those dims with a loop variable of its own, and coalescing merges back the
    dims they walk together. Flattening a (N, 7, 7, 32) pool to a Linear's rows of 1568 took
    242 us with its divisions by 49 and 7, 50 us without (64 images, one Zen 4 core); even
    divisions by powers of two (shifts) cost more than the finer loops' shorter rows, unless
    those rows are shorter than FINER_ROW_LEAST: attention's heads merged back, (16, 4, 128,
    32) to (16, 128, 128), 148 -> 41 us, to (2048, 128) 427 -> 41 us, and a transpose
    flattened, `x.T.reshape(-1)` of 1024^2, 5.0 -> 0.51 ms, which then runs in tiles (Zen 3,
    one thread)."""
    if root.op != "reshape" or root.inputs[0].type.ndim <= root.type.ndim:
        return tuple(root.type.shape)
    source = tuple(root.inputs[0].type.shape)
    kept = [dim_prod(root.type.shape[i:]) for i in range(1, root.type.ndim)]
    divisors = [
        size
        for size in (dim_prod(source[i:]) for i in range(1, len(source)))
        if not any(dims_equal(size, boundary) for boundary in kept)
    ]
    shifts = all(isinstance(size, int) and not size & (size - 1) for size in divisors)
    short = isinstance(source[-1], int) and source[-1] < FINER_ROW_LEAST
    return tuple(root.type.shape) if not divisors or (shifts and short) else source


def _loop_kernel(
    ctx, name: str, roots: list[Node], names, covers, written: tuple[str, ...] = ()
) -> LoopKernel:
    """Return the loop kernel storing roots in order; `written` names buffers the kernel's
    host (a matmul) has stored before the loop runs."""
    shape = _domain_shape(roots[0])
    domain, variables = _domain(shape)
    element = Index(shape, dims=variables)
    stores = []
    for root in roots:
        rule = kernel_rule(get_op(root.op))
        # A root of another shape with the same elements (a reduction kernel's sibling with
        # keepdims) sees the element through a reshape.
        same = len(root.type.shape) == len(shape) and all(map(dims_equal, root.type.shape, shape))
        at = element if same else element.reshaped(root.type.shape)
        stores.append(Store(names[root.id], rule(ctx, root, at)))
    # A loop over a dim of size 1 only ever sees index 0, so such variables are 0 when offsets
    # are compared: a transpose of two size-1 dims reads the element being computed.
    unit = {v for v, extent in zip(variables, domain, strict=True) if extent == IConst(1)}
    _check_reads_of_own_stores(name, stores, written, _at_zero(element.linear(), unit), unit)
    return LoopKernel(name, domain, variables, tuple(stores), covers)


def _at_zero(offset: IntExpr, variables: set[Var]) -> IntExpr:
    """Return offset with the given loop variables replaced by 0, folded."""
    if isinstance(offset, Var):
        return IConst(0) if offset in variables else offset
    if isinstance(offset, IBin):
        return ibin(offset.op, _at_zero(offset.a, variables), _at_zero(offset.b, variables))
    return offset


def _check_reads_of_own_stores(
    name: str, stores: list[Store], written: tuple[str, ...], element: IntExpr, unit: set[Var]
) -> None:
    """Raise CompileError if a store reads a buffer of the same kernel at an element other
    than the one being computed, or before it is stored: such an element may not be written
    yet. Fusion never builds such a kernel; this keeps a fusion bug from becoming a wrong
    answer."""
    stored = list(written)
    own = set(written) | {store.buffer for store in stores}
    for store in stores:
        for load in loads(store.value):
            if load.buffer in own and (
                load.buffer not in stored or _at_zero(load.offset, unit) != element
            ):
                raise CompileError(
                    f"internal error: kernel {name} reads {load.buffer} at an element it may "
                    "not have written yet; please report this graph"
                )
        stored.append(store.buffer)


def _build_group(ctx: LoweringContext, group: Group, name: str, names) -> Kernel:
    covers = tuple(n.id for n in group.members)
    root = group.roots[0]
    if group.kind == "matmul":
        epilogue = None
        if len(group.roots) > 1:
            epilogue = _loop_kernel(
                ctx, f"{name}_epilogue", group.roots[1:], names, covers, (names[root.id],)
            )
        return _matmul_kernel(name, root, names, epilogue, covers)
    if group.kind == "scatter_add":
        return _scatter_kernel(ctx, name, root, names, covers)
    return _loop_kernel(ctx, name, group.roots, names, covers)


def _operand(node: Node, names, batch_rank: int, vector_role: str) -> Operand:
    view = strided_view(node, lambda n: n.id in names)
    assert view is not None, f"matmul operand {node!r} is not a strided view of a buffer"
    shape, strides = list(view.shape), list(view.strides)
    if len(shape) == 1:  # a vector operand: a row on the left, a column on the right
        if vector_role == "left":
            shape, strides = [1, shape[0]], [0, strides[0]]
        else:
            shape, strides = [shape[0], 1], [strides[0], 0]
    batch_shape, batch_strides = shape[:-2], strides[:-2]
    missing = batch_rank - len(batch_shape)
    batch_strides = [0] * missing + [
        0 if (isinstance(d, int) and d == 1) else s
        for d, s in zip(batch_shape, batch_strides, strict=True)
    ]
    full_strides = batch_strides + strides[-2:]
    full_shape = [1] * missing + batch_shape + shape[-2:]
    return Operand(
        names[view.base.id],
        tuple(dim_expr(d) for d in full_shape),
        tuple(dim_expr(s) for s in full_strides),
    )


def _matmul_kernel(name, node: Node, names, epilogue, covers) -> MatmulKernel:
    if node.op == "window_matmul":
        return _window_matmul_kernel(name, node, names, epilogue, covers)
    a_node, b_node = node.inputs
    a_shape = a_node.type.shape if a_node.type.ndim > 1 else (1, a_node.type.shape[0])
    b_shape = b_node.type.shape if b_node.type.ndim > 1 else (b_node.type.shape[0], 1)
    out_rank = max(len(a_shape), len(b_shape))
    batch_rank = out_rank - 2
    a = _operand(a_node, names, batch_rank, "left")
    b = _operand(b_node, names, batch_rank, "right")
    batch = tuple(
        b_dim if (isinstance(a_dim, IConst) and a_dim.value == 1) else a_dim
        for a_dim, b_dim in zip(a.shape[:-2], b.shape[:-2], strict=True)
    )
    return MatmulKernel(
        name,
        a,
        b,
        names[node.id],
        batch,
        a.shape[-2],
        b.shape[-1],
        a.shape[-1],
        node.type.dtype,
        epilogue,
        covers,
    )


def _window_matmul_kernel(name, node: Node, names, epilogue, covers) -> MatmulKernel:
    """Return a window_matmul as a batched GEMM over the images whose A reads the padded
    image (a buffer, contiguous) in place: pixel p's row starts at p * C, and the kW * C taps
    of kernel row i at i * dh * Wp * C more (the depth's runs); with fewer columns than Wp,
    each output row's windows are a run of A's rows, Wp * C apart."""
    image, weight = node.inputs
    # window_matmul's type rule leaves only the batch dim symbolic.
    height, width, channels = static_shape(image.type.shape[1:])
    (kh, kw), (dh, _) = node.attrs["kernel"], node.attrs["dilation"]
    columns = node.attrs["columns"]
    batch, positions, out_channels = (dim_expr(d) for d in node.type.shape)
    depth = IConst(kh * kw * channels)
    # Fusion keeps the image a buffer, or a view laid out as one (a reshape of a buffer).
    view = strided_view(image, lambda n: n.id in names)
    assert view is not None, f"window_matmul image {image!r} is not a view of a buffer"
    a = Operand(
        names[view.base.id],
        (batch, positions, depth),
        (IConst(height * width * channels), IConst(channels), IConst(1)),
    )
    b = _operand(weight, names, 1, "right")
    depth_runs = Runs(IConst(kw * channels), IConst(dh * width * channels))
    row_runs = None if columns == width else Runs(IConst(columns), IConst(width * channels))
    return MatmulKernel(
        name,
        a,
        b,
        names[node.id],
        (batch,),
        positions,
        out_channels,
        depth,
        node.type.dtype,
        epilogue,
        covers,
        a_depth_runs=depth_runs,
        a_row_runs=row_runs,
    )


def _scatter_kernel(ctx, name, node: Node, names, covers) -> ScatterAddKernel:
    idx, src = node.inputs
    axis = node.attrs["axis"]
    out_shape = node.type.shape
    domain, variables = _domain(src.type.shape)
    index = Index(src.type.shape, dims=variables)
    position = ctx.value(idx, index.broadcast_from(idx.type.shape))
    checked = ValueIndex(IndexCheck(position, dim_expr(out_shape[axis]), axis, int64))
    target_dims = tuple(checked if d == axis else variables[d] for d in range(len(variables)))
    target = Index(out_shape, dims=target_dims).linear()
    size: IntExpr = IConst(1)
    for d in out_shape:
        size = imul(size, dim_expr(d))
    return ScatterAddKernel(
        name,
        names[node.id],
        size,
        domain,
        variables,
        target,
        ctx.value(src, index),
        node.type.dtype,
        covers,
    )
