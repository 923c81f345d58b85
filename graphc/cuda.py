"""gc.cuda: whether the CUDA backend can run here, and on what.

The backend runs on an NVIDIA GPU through the driver's libcuda, or, with the environment
variable GRAPHC_CUDA_DRIVER=emulate, on the CPU emulator that runs the same kernels (slowly),
which is how it is tested without a GPU.
"""

from __future__ import annotations

from graphc.errors import CompileError


def is_available() -> bool:
    """Return whether compile(..., backend="cuda") can run here (on a GPU or the emulator)."""
    try:
        _driver()
    except CompileError:
        return False
    return True


def device_name() -> str:
    """Return the name of the device the CUDA backend runs on; raises CompileError, saying
    why, if there is none."""
    return _driver().device_name()


def _driver():
    # Loaded on first use, like every backend: `import graphc` does not touch libcuda.
    from graphc.backends.cuda.driver import selected_driver

    return selected_driver()
