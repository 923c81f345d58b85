"""Weights packed once for the GEMM, not at every call.

A matmul whose B is a Variable the program only reads (an inference function's weights, a
Linear's `x @ W.T`) packs the same B into the GEMM's panels at every call: 10% of an MLP's
batch-64 inference on Zen 3. Such a matmul reads B from a packed copy that lives as long as
the executable (a buffer of role "packed") instead. Before the kernel, the entry point packs
it again when the word after the symbol sizes that stands for it is nonzero, and clears the
word; the executable sets the word when the Variable's version (`VariableStorage.version`)
is not the one it last packed. A Variable the program updates keeps packing per call: its
value changes at every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from llvmlite import ir

from graphc.backends.kernel import KernelProgram
from graphc.backends.kernel import ir as k
from graphc.backends.kernel.build import BufferSpec
from graphc.backends.llvm.expressions import I64
from graphc.backends.llvm.gemm import gemm_plan
from graphc.backends.llvm.gemm_dot import DOT_MAX_SIDE
from graphc.backends.llvm.kernels import FunctionEmitter, KernelContext, emit_packing, narrow_gemm

ROLE = "packed"


def with_packed_weights(program: KernelProgram, updated: Collection[object]) -> KernelProgram:
    """Return program with each top-level matmul whose B is (a view of) a Variable it never
    updates (`updated`: the storages of the Variables it writes) reading B, packed, from a copy
    of its own: K x (N rounded up to the GEMM's panels) elements."""
    written = {id(storage) for storage in updated}
    kernels: list[k.Kernel] = []
    buffers = dict(program.buffers)
    for kernel in program.kernels:
        if _packable(kernel, program, written):
            assert isinstance(kernel, k.MatmulKernel)
            assert isinstance(kernel.k, k.IConst) and isinstance(kernel.n, k.IConst)
            nr = gemm_plan(kernel.dtype.short).nr
            name = f"{kernel.name}.packed_b"
            shape = (kernel.k.value, -(-kernel.n.value // nr) * nr)
            node = program.buffers[kernel.b.buffer].node
            buffers[name] = BufferSpec(name, node, shape, kernel.dtype, ROLE)
            kernel = dataclasses.replace(kernel, packed_b=name)
        kernels.append(kernel)
    return dataclasses.replace(program, kernels=kernels, buffers=buffers)


def _packable(kernel: k.Kernel, program: KernelProgram, written: set[int]) -> bool:
    if not isinstance(kernel, k.MatmulKernel) or kernel.packed_b is not None:
        return False
    spec = program.buffers.get(kernel.b.buffer)
    return (
        spec is not None
        and spec.role == "variable"
        and id(spec.node.attrs["storage"]) not in written
        and isinstance(kernel.k, k.IConst)
        and isinstance(kernel.n, k.IConst)
        and kernel.n.value > DOT_MAX_SIDE  # else always skinny: B is read where it lies
        and k.packs_b_whole(kernel)
        and not narrow_gemm(kernel)  # the narrow plan's GEMM reads B unpacked
    )


def packed_kernels(program: KernelProgram) -> list[tuple[k.MatmulKernel, str]]:
    """Return the top-level matmuls reading a packed weight and their packed copies' buffers,
    in the order of their words."""
    return [
        (kernel, kernel.packed_b)
        for kernel in program.kernels
        if isinstance(kernel, k.MatmulKernel)
        and kernel.packed_b is not None
        and program.buffers[kernel.packed_b].role == ROLE
    ]


def emit_packing_when_stale(
    ctx: KernelContext, entry: FunctionEmitter, kernel: k.MatmulKernel, word: int
) -> None:
    """Emit into the entry point: if sizes[word] is nonzero, pack kernel's B into its packed
    copy and clear the word."""
    b = entry.builder
    flag = b.gep(entry.sizes, [ir.Constant(I64, word)], name="pack_word")
    with b.if_then(b.icmp_signed("!=", b.load(flag), ir.Constant(I64, 0))):
        emit_packing(ctx, entry, kernel)
        b.store(ir.Constant(I64, 0), flag)
