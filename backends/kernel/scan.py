"""Build a loop's kernel: its body graph becomes kernels inside the program around it.

The body is optimised, partitioned and built like any graph, with every buffer and kernel
name prefixed by the loop's kernel name, so the body's buffers join the outer program's
(planned in its arena, their constants in its table) and a backend emits the body's kernels
as it emits any. Its implicit inputs are not buffers of its own: the body reads the outer
buffers they stand for, by name. Its carry and step placeholders are buffers whose
addresses the loop moves (`ScanKernel`), and so are its outputs, which must therefore each
be a distinct buffer computed by a kernel: an output that is a placeholder, a constant or
another output is copied first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import GROUP_BUILDERS, BufferSpec, KernelProgram, build_program
from graphc.backends.kernel.index import dim_expr
from graphc.dims import Dim, dim_add, dim_prod
from graphc.dtypes import DType
from graphc.graph import Graph, Node
from graphc.ops.registry import make_node
from graphc.passes import optimize
from graphc.passes.fusion import is_buffer_source, partition


def _bytes(shape: tuple[Dim, ...], dtype: DType) -> k.IntExpr:
    return k.imul(dim_expr(dim_prod(shape)), k.IConst(max(1, dtype.itemsize)))


def _distinct_outputs(body: Graph) -> Graph:
    """Return body with every output a distinct node computed by a kernel."""
    seen: set[int] = set()
    outputs = []
    for node in body.outputs:
        if is_buffer_source(node) or node.id in seen:
            node = make_node("stop_gradient", [node], location=node.location)
        seen.add(node.id)
        outputs.append(node)
    return Graph(body.inputs, tuple(outputs))


def _pack_loop_invariant_operands(
    kernels: list[k.Kernel], implicit: set[str], body: Graph
) -> tuple[list[k.Kernel], dict[str, BufferSpec]]:
    """Return the body's kernels with each matmul whose B the loop reads from outside (the same
    at every step, as an RNN's recurrent weight) marked to read it packed once before the
    loop, and the buffers of those packed copies."""
    marked: list[k.Kernel] = []
    packed: dict[str, BufferSpec] = {}
    for kernel in kernels:
        if (
            isinstance(kernel, k.MatmulKernel)
            and kernel.b.buffer in implicit
            and k.packs_b_whole(kernel)
        ):
            (node,) = [n for n in body.nodes if n.id in kernel.covers and n.op == "matmul"]
            b_shape = node.inputs[1].type.shape
            depth, width = b_shape if len(b_shape) == 2 else (b_shape[0], 1)
            name = f"{kernel.name}.packed_b"
            shape = (depth, dim_add(width, k.PACKED_B_SLACK))
            packed[name] = BufferSpec(name, node, shape, kernel.dtype, "temp")
            kernel = dataclasses.replace(kernel, packed_b=name)
        marked.append(kernel)
    return marked, packed


def without_packed_operands(program: KernelProgram) -> KernelProgram:
    """Return program with no matmul reading a packed B, and without those buffers: for a
    backend whose GEMM reads B where it lies (CUDA), they would be device memory never used."""
    packed: set[str] = set()

    def unpack(kernel: k.Kernel) -> k.Kernel:
        if isinstance(kernel, k.MatmulKernel) and kernel.packed_b is not None:
            packed.add(kernel.packed_b)
            return dataclasses.replace(kernel, packed_b=None)
        if isinstance(kernel, k.ScanKernel):
            return dataclasses.replace(kernel, body=tuple(map(unpack, kernel.body)))
        return kernel

    kernels = [unpack(kernel) for kernel in program.kernels]
    buffers = {name: spec for name, spec in program.buffers.items() if name not in packed}
    return dataclasses.replace(program, kernels=kernels, buffers=buffers)


def scan_kernel(
    graph: Graph, node: Node, name: str, names: Mapping[int, str]
) -> tuple[k.ScanKernel, dict[str, BufferSpec]]:
    """Return the kernel of the scan node `node` of graph, and the body's buffers (roles as
    the outer program sees them: its constants, and temporaries for everything else)."""
    attrs = node.attrs
    carries, sequences = attrs["num_carry"], attrs["num_xs"]
    body = _distinct_outputs(optimize(attrs["body"]))
    prefix = f"{name}."
    fixed = {slot.id: f"{prefix}carry{i}" for i, slot in enumerate(body.inputs[:carries])}
    fixed |= {
        slot.id: f"{prefix}x{j}"
        for j, slot in enumerate(body.inputs[carries : carries + sequences])
    }
    outer = node.inputs[carries + sequences :]
    fixed |= {
        slot.id: names[source.id]
        for slot, source in zip(body.inputs[carries + sequences :], outer, strict=True)
    }
    program = build_program(body, partition(body), prefix, fixed)
    implicit = {names[source.id] for source in outer}
    kernels, packed = _pack_loop_invariant_operands(program.kernels, implicit, body)
    buffers = packed | {
        buffer: BufferSpec(
            buffer,
            spec.node,
            spec.shape,
            spec.dtype,
            "constant" if spec.role == "constant" else "temp",
        )
        for buffer, spec in program.buffers.items()
        if buffer not in implicit
    }
    readers = [user for user in graph.nodes if user.op == "tuple_get" and user.inputs[0] is node]
    results = {user.attrs["index"]: names[user.id] for user in readers}
    slots = body.inputs
    carry_types = [slot.type for slot in slots[:carries]]
    step_types = [slot.type for slot in slots[carries : carries + sequences]]
    y_types = [y.type for y in body.outputs[carries:]]
    kernel = k.ScanKernel(
        name,
        dim_expr(attrs["length"]),
        attrs["reverse"],
        tuple(kernels),
        init=tuple(names[source.id] for source in node.inputs[:carries]),
        carry_in=tuple(fixed[slot.id] for slot in slots[:carries]),
        carry_out=tuple(program.outputs[:carries]),
        final=tuple(results.get(i) for i in range(carries)),
        carry_bytes=tuple(_bytes(t.shape, t.dtype) for t in carry_types),
        xs=tuple(names[source.id] for source in node.inputs[carries : carries + sequences]),
        x_slots=tuple(fixed[slot.id] for slot in slots[carries : carries + sequences]),
        x_bytes=tuple(_bytes(t.shape, t.dtype) for t in step_types),
        ys=tuple(results.get(carries + j) for j in range(len(y_types))),
        y_slots=tuple(program.outputs[carries:]),
        y_bytes=tuple(_bytes(t.shape, t.dtype) for t in y_types),
        covers=(node.id, *(user.id for user in readers)),
    )
    return kernel, buffers


GROUP_BUILDERS["scan"] = scan_kernel
