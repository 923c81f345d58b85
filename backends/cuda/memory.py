"""Device memory of a CUDA executable: one arena, grown as needed, where the CPU backend's
planner places inputs, outputs and intermediates for each call's sizes."""

from __future__ import annotations

from dataclasses import replace

from graphc.backends.cuda.driver import Driver
from graphc.backends.kernel import KernelProgram
from graphc.backends.llvm.memory import ArenaPlanner


def arena_planner(program: KernelProgram, exclude: set[str]) -> ArenaPlanner:
    """Return a planner placing intermediates by their lifetimes, and inputs and outputs for
    a whole call (they are copied in before the first kernel and out after the last); its
    place() gives offsets into the device arena."""
    lifetimes = program.buffer_lifetimes()
    whole_call = (0, len(program.kernels) + 1)
    io = {
        name: replace(spec, role="temp")
        for name, spec in program.buffers.items()
        if spec.role in ("input", "output")
    }
    spans = {**lifetimes, **dict.fromkeys(io, whole_call)}
    return ArenaPlanner(replace(program, buffers={**program.buffers, **io}), spans, exclude)


class DeviceArena:
    """One device allocation that only grows; `generation` counts its moves."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self.address = 0
        self.nbytes = 0
        self.generation = 0

    def reserve(self, nbytes: int) -> None:
        """Make the arena at least nbytes long (moving it, contents lost, if it grows)."""
        if nbytes <= self.nbytes and self.address:
            return
        if self.address:
            self._driver.free(self.address)
        self.address = self._driver.alloc(nbytes)
        self.nbytes = nbytes
        self.generation += 1

    def release(self) -> None:
        """Free the arena."""
        if self.address:
            self._driver.free(self.address)
            self.address = 0
