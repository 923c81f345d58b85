"""PTX from a device-dialect module, and ptxas.

LLVM's NVPTX back end aborts the whole process on a call it cannot select (`llvm.exp`,
`llvm.tanh`, `llvm.sin`: no libcall exists on the device), so every function the module calls
is checked against an allow-list before LLVM sees it; an unknown `llvm.nvvm.*` name would pass
LLVM and leave an `.extern .func` in the PTX, which is checked after.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.errors import CompileError

TRIPLE = "nvptx64-nvidia-cuda"
# `.extern .func (return parameters) name(parameters)`: the name of an undefined function.
_EXTERN = re.compile(r"\.extern\s+\.func\s*(?:\([^)]*\))?\s*([\w$]+)")
DEFAULT_ARCH = "sm_80"
OPT_LEVEL = 3
_FLOAT_INTRINSICS = (
    "fma",
    "fabs",
    "floor",
    "ceil",
    "rint",
    "roundeven",
    "trunc",
    "sqrt",
    "copysign",
    "maximum",
    "minimum",
    "maxnum",
    "minnum",
)
# Every function a kernel module may call and leave undefined: the float intrinsics NVPTX
# selects as instructions, thread and block indices, the barrier and the warp shuffle.
ALLOWED_CALLS = frozenset(
    {f"llvm.{name}.{t}" for name in _FLOAT_INTRINSICS for t in ("f32", "f64")}
    | {f"llvm.nvvm.read.ptx.sreg.{r}" for r in ("tid.x", "ctaid.x", "nctaid.x", "ntid.x")}
    | {"llvm.nvvm.barrier0", "llvm.nvvm.shfl.sync.down.i32"}
)


@dataclass(frozen=True)
class PtxModule:
    """A module compiled for one architecture: its optimised IR and its PTX."""

    arch: str
    optimized_ir: str
    ptx: str

    def assembly(self) -> str:
        """Return the PTX (what Function.asm() shows)."""
        return self.ptx


def check_calls(module: ir.Module) -> None:
    """Raise CompileError if the module declares a function the device cannot provide."""
    for value in module.globals.values():
        declared = isinstance(value, ir.Function) and value.is_declaration
        if declared and value.name not in ALLOWED_CALLS:
            raise CompileError(
                f"the CUDA backend cannot call {value.name!r} on the device (not among the "
                "intrinsics NVPTX selects); this is a code generator bug, please report it"
            )


@functools.cache
def _nvptx_target() -> llvm.Target:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    return llvm.Target.from_triple(TRIPLE)


def target_machine(arch: str) -> llvm.TargetMachine:
    """Return an NVPTX target machine for an architecture such as sm_80."""
    return _nvptx_target().create_target_machine(cpu=arch, opt=OPT_LEVEL)


def compile_ptx(module: ir.Module, arch: str = DEFAULT_ARCH) -> PtxModule:
    """Return module optimised and assembled to PTX for arch, after checking what it calls."""
    check_calls(module)
    machine = target_machine(arch)
    module.triple = TRIPLE
    module.data_layout = str(machine.target_data)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(parsed, builder)
    ptx = machine.emit_assembly(parsed)
    check_ptx(ptx)
    return PtxModule(arch, str(parsed), ptx)


def check_ptx(ptx: str) -> None:
    """Raise CompileError if the PTX calls a function it does not define (`.extern .func`:
    an intrinsic LLVM did not know, which only ptxas or the driver would reject)."""
    undefined = _EXTERN.search(ptx)
    if undefined is not None:
        raise CompileError(f"the PTX calls {undefined[1]}, which no device library provides")


def find_ptxas() -> str | None:
    """Return the path of ptxas: the nvidia-cuda-nvcc wheel's, else the one on PATH."""
    try:
        import nvidia.cuda_nvcc as wheel  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        wheel = None
    if wheel is not None:
        for folder in getattr(wheel, "__path__", []):
            candidate = os.path.join(folder, "bin", "ptxas")
            if os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("ptxas")


def assemble(ptx: str, arch: str, ptxas: str) -> str:
    """Assemble PTX with ptxas for arch; return its resource report, or raise CompileError
    with ptxas's messages."""
    with tempfile.TemporaryDirectory(prefix="graphc-ptxas-") as folder:
        source = os.path.join(folder, "module.ptx")
        with open(source, "w") as stream:
            stream.write(ptx)
        done = subprocess.run(
            [ptxas, f"-arch={arch}", "-v", "-o", os.path.join(folder, "module.cubin"), source],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise CompileError(f"ptxas -arch={arch} rejected the PTX:\n{done.stderr}")
    return done.stderr
