"""Backends: each compiles a Graph into an executable. `BACKENDS` names the built-in ones;
compile()'s registry (graphc.compiler) loads them from here when it is first asked for one."""

from collections.abc import Callable

from graphc.backends.cuda import CudaExecutable
from graphc.backends.llvm import LLVMExecutable
from graphc.backends.reference import ReferenceExecutable
from graphc.errors import register_internal_root
from graphc.graph import Graph

# name -> factory: Graph -> an executable with run(feeds, bindings, out=None).
BACKENDS: dict[str, Callable[[Graph], ReferenceExecutable | LLVMExecutable | CudaExecutable]] = {
    "reference": ReferenceExecutable,
    "llvm": LLVMExecutable,
    "cuda": CudaExecutable,
}

__all__ = ["BACKENDS", "CudaExecutable", "LLVMExecutable", "ReferenceExecutable"]

register_internal_root(__file__)
