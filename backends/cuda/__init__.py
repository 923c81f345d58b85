"""The CUDA backend: the kernel IR as PTX through LLVM's NVPTX target, run through the CUDA
driver API, or on the CPU by an emulator that runs the same kernel generators."""

from graphc.backends.cuda.executable import CudaExecutable

__all__ = ["CudaExecutable"]
