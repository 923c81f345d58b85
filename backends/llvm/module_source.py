"""Describe a graph module by what determines its IR, so a cached one loads without building it.

Building and printing a training step's IR costs more than loading its object code from the
disk cache. A description is the text of every argument the module builder takes: the kernel
program (its buffers' names, dtypes, shapes and roles, its kernels, outputs, updates and
symbols; never the graph nodes, whose ids differ between processes), the builder's and the
callbacks' qualified names, and the other arguments' reprs. jit.module_key adds a fingerprint
of graphc's sources, so a changed code generator never matches an older description.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from graphc.backends.kernel import KernelProgram
from graphc.backends.llvm.jit import ModuleSource

# A repr that shows an object's address differs between processes: not a description.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def module_source(build: Callable[..., ir.Module], *args: Any) -> ModuleSource | ir.Module:
    """Return build(*args) as a ModuleSource, or the built module itself when some argument
    has no stable description (then the IR text is the cache key, as for any module)."""
    description = "\n".join([_qualified_name(build), *(_describe(arg) for arg in args)])
    if _ADDRESS.search(description):
        return build(*args)
    return ModuleSource(description, functools.partial(build, *args))


def _describe(value: Any) -> str:
    if isinstance(value, KernelProgram):
        return _describe_program(value)
    if callable(value):
        return _qualified_name(value)
    if isinstance(value, dict):
        return repr(sorted(value.items()))
    return repr(value)


def _describe_program(program: KernelProgram) -> str:
    buffers = [
        (name, spec.dtype.name, spec.shape, spec.role) for name, spec in program.buffers.items()
    ]
    return repr((buffers, program.kernels, program.outputs, program.updates, program.symbols))


def _qualified_name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"
