"""The kernel program of a graph as the CUDA backend runs it, and its PTX."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llvmlite import ir

from graphc.backends.cuda.dialect import DeviceDialect, KernelDialect
from graphc.backends.cuda.launches import Launches
from graphc.backends.cuda.module import build_module
from graphc.backends.cuda.ptx import PtxModule, compile_ptx
from graphc.backends.cuda.wide_reductions import split_wide_reductions
from graphc.backends.kernel import KernelProgram, build_program
from graphc.backends.kernel.build import updates_from_kernels
from graphc.backends.kernel.inplace import in_place_updates
from graphc.backends.kernel.scan import without_packed_operands
from graphc.errors import CompileError
from graphc.graph import Graph
from graphc.ops.collectives import world
from graphc.passes.fusion import Partition, partition


@dataclass(frozen=True)
class CudaProgram:
    """A graph's kernels: the graph (update values and variable outputs copied by kernels),
    its fusion partition, the kernel program without the updates computed in place, and
    those updates (value buffer -> variable buffer)."""

    graph: Graph
    partition: Partition
    program: KernelProgram
    in_place: dict[str, str]

    def module(
        self, dialect: type[KernelDialect], cublas_epilogues: bool = False
    ) -> tuple[ir.Module, Launches]:
        """Return the program's module in a dialect, and its launches (with each matmul's
        epilogue as a kernel of its own too if `cublas_epilogues`)."""
        return build_module(self.program, dialect, self.in_place, cublas_epilogues)

    def ptx(self, arch: str, cublas_epilogues: bool = False) -> PtxModule:
        """Return the program compiled to PTX for an architecture such as sm_80."""
        module, _ = self.module(DeviceDialect, cublas_epilogues)
        return compile_ptx(module, arch)


def cuda_program(graph: Graph) -> CudaProgram:
    """Return the kernels the CUDA backend runs for graph."""
    if world().size > 1 and any(node.op == "all_reduce" for node in graph.nodes):
        raise CompileError(
            f"all_reduce across {world().size} processes is not supported on the cuda backend "
            "yet; use llvm"
        )
    graph = updates_from_kernels(graph)
    plan = partition(graph)
    program = split_wide_reductions(without_packed_operands(build_program(graph, plan)))
    in_place = in_place_updates(program)
    copied = [(v, u) for v, u in program.updates if u not in in_place]
    return CudaProgram(graph, plan, replace(program, updates=copied), in_place)
