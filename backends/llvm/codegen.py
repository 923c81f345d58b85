"""Optimise LLVM IR text and emit object code for a CPU: the part of compiling a module that
needs nothing but llvmlite.

llvmlite runs every call under one process-wide lock, so modules compile side by side only in
separate processes. This file therefore imports nothing of graphc's: a helper process loads it
alone (see compile_helpers.py) and `serve` answers requests on its standard streams. A request
is a JSON header line (the target machine, the pipeline, the IR's size) and the IR text; a reply
is a JSON header line (the sizes of the object code and optimised IR, or an error) and both.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import BinaryIO

import llvmlite.binding as llvm

OPT_LEVEL = 3
# LLVM command-line options for every module graphc compiles (process-wide in LLVM, so set once,
# before the first). Epilogue vectorisation adds a second, narrower vector copy of every
# vectorised loop for its remainder, besides the scalar one: a kernel's rows are whole vectors
# but for their edges, so that copy rarely runs, and it was a sixth of a module's compile time.
# Masked interleaved accesses let a loop with masked (predicated) iterations read a strided
# pattern, such as a 2x2 max pool's pairs of neighbours, as wide masked loads and shuffles
# rather than gathers (off by default on x86): that pool of a (64, 16, 28, 28) batch went from
# 0.376 to 0.082 ms, one Zen 4 core.
LLVM_OPTIONS = ("-enable-epilogue-vectorization=false", "-enable-masked-interleaved-mem-accesses")


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """What an LLVM target machine is made from, so a helper process makes the same one."""

    triple: str
    cpu: str
    features: str
    opt: int = OPT_LEVEL
    codemodel: str = "jitdefault"

    def create(self) -> llvm.TargetMachine:
        """Return a new target machine (an execution engine takes it over)."""
        _initialize(self.triple)
        target = llvm.Target.from_triple(self.triple)
        return target.create_target_machine(
            cpu=self.cpu, features=self.features, opt=self.opt, codemodel=self.codemodel
        )


def arch(triple: str) -> str:
    """Return the architecture part of a triple, with arm64 spelt aarch64."""
    name = triple.split("-", 1)[0]
    return "aarch64" if name == "arm64" else name


@functools.cache
def _initialize(triple: str) -> None:
    """Register LLVM's code generator for triple: the native one, or all of them once."""
    if arch(triple) == arch(llvm.get_process_triple()):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
    else:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()


def object_code(text: str, machine: llvm.TargetMachine, pipeline: str) -> tuple[bytes, str]:
    """Parse, verify and optimise IR text and return (object code, optimised IR)."""
    context = llvm.create_context()
    parsed = None
    try:
        parsed = llvm.parse_assembly(text, context)
        parsed.verify()
        optimise(parsed, machine, pipeline)
        return machine.emit_object(parsed), str(parsed)
    finally:
        if parsed is not None:
            parsed.close()
        context.close()


def optimise(module: llvm.ModuleRef, machine: llvm.TargetMachine, pipeline: str) -> None:
    """Run a pipeline on module: "standard" (the O3 pipeline, which vectorises plain loops) or
    "vectorised" (for IR already written in vectors, such as the GEMM). The short one skips the
    loop vectoriser, unroller and inliner, which find nothing in such code and took two thirds
    of the GEMM's compile time; it keeps what such code still needs (registers for locals,
    combined and deduplicated arithmetic, rotated loops with strength-reduced addresses)."""
    _set_llvm_options()
    builder = llvm.create_pass_builder(
        machine, llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    )
    if pipeline == "standard":
        builder.getModulePassManager().run(module, builder)
        return
    if pipeline != "vectorised":
        raise ValueError(f"unknown optimisation pipeline {pipeline!r}")
    passes = llvm.create_new_module_pass_manager()
    for add in (
        passes.add_sroa_pass,
        passes.add_instruction_combine_pass,
        passes.add_simplify_cfg_pass,
        passes.add_loop_simplify_pass,
        passes.add_loop_rotate_pass,
        passes.add_new_gvn_pass,
        passes.add_instruction_combine_pass,
        passes.add_loop_unroll_pass,
        passes.add_simplify_cfg_pass,
        passes.add_loop_strength_reduce_pass,
        passes.add_dead_code_elimination_pass,
    ):
        add()
    passes.run(module, builder)


@functools.cache
def _set_llvm_options() -> None:
    for option in LLVM_OPTIONS:
        llvm.set_option("graphc", option)


def request(spec: MachineSpec, pipeline: str, text: str) -> bytes:
    """Return the request that has a helper compile text for spec's machine."""
    body = text.encode()
    header = {"machine": asdict(spec), "pipeline": pipeline, "size": len(body)}
    return json.dumps(header).encode() + b"\n" + body


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer every request on the requests stream, in order, on the replies stream."""
    data = requests.read()
    offset = 0
    while offset < len(data):
        end = data.index(b"\n", offset)
        header = json.loads(data[offset:end])
        text = data[end + 1 : end + 1 + header["size"]].decode()
        offset = end + 1 + header["size"]
        try:
            machine = MachineSpec(**header["machine"]).create()
            obj, optimised = object_code(text, machine, header["pipeline"])
        except Exception as error:  # the caller compiles it again itself, and reports it
            replies.write(json.dumps({"error": str(error)}).encode() + b"\n")
            continue
        ir_bytes = optimised.encode()
        replies.write(json.dumps({"object": len(obj), "ir": len(ir_bytes)}).encode() + b"\n")
        replies.write(obj + ir_bytes)
    replies.flush()


def replies(data: bytes, count: int) -> list[tuple[bytes, str] | None]:
    """Return the (object code, optimised IR) of each of count replies in data; None for a
    request that failed or that a helper that stopped early never answered."""
    results: list[tuple[bytes, str] | None] = []
    offset = 0
    for _ in range(count):
        end = data.find(b"\n", offset)
        if end < 0:
            break
        try:
            header = json.loads(data[offset:end])
            if "error" in header:
                results.append(None)
                offset = end + 1
                continue
            object_end = end + 1 + int(header["object"])
            ir_end = object_end + int(header["ir"])
            if not end < object_end <= ir_end <= len(data):
                break
            results.append((data[end + 1 : object_end], data[object_end:ir_end].decode()))
        except (ValueError, TypeError, KeyError):
            break
        offset = ir_end
    return results + [None] * (count - len(results))
