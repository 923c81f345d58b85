"""The target-neutral kernel IR, the lowering of graph ops to it, and kernel building."""

from graphc.backends.kernel import lowering  # noqa: F401 - registers the kernel lowerings
from graphc.backends.kernel.build import BufferSpec, KernelProgram, build_program
