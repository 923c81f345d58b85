"""The target-neutral kernel IR, the lowering of graph ops to it, and kernel building."""

from graphc.backends.kernel import (
    lowering,  # noqa: F401 - registers the kernel lowerings
    windows,  # noqa: F401 - registers convolution and pooling
)
from graphc.backends.kernel.build import BufferSpec, KernelProgram, build_program

# isort: split
from graphc.backends.kernel import (
    collectives,  # noqa: F401 - registers all_reduce's builder
    scan,  # noqa: F401 - registers the loop's kernel builder
)
