"""The LLVM CPU backend: fused kernels compiled through llvmlite into one native entry point
per Function, run over buffers planned in advance."""

from graphc.backends.llvm.executable import LLVMExecutable

__all__ = ["LLVMExecutable"]
