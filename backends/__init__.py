"""Backends: each compiles a Graph into an executable; importing this package registers them."""

from graphc.backends.llvm import LLVMExecutable
from graphc.backends.reference import ReferenceExecutable
from graphc.compiler import register_backend
from graphc.errors import register_internal_root

register_backend("reference", ReferenceExecutable)
register_backend("llvm", LLVMExecutable)

__all__ = ["LLVMExecutable", "ReferenceExecutable"]

register_internal_root(__file__)
