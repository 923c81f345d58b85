"""The CPU that generated code is compiled for: LLVM's name, features and triple for it, and
what the code generators plan with (ISA family, vector width and registers, cache sizes).

`selected_target()` is the host's CPU unless `GRAPHC_CPU` names another one (an LLVM CPU name
such as `haswell`, `x86-64-v3`, `znver3` or `skylake-avx512`, or one of the ISA aliases
`avx512`, `avx2`, `sse2`), with `GRAPHC_CPU_FEATURES` (an LLVM feature string, `+fma,-avx512f`)
added to its features. A target the host cannot run is refused there; `cpu_target(name)` builds
any known one, e.g. to emit assembly for another machine.

LLVM accepts an unknown CPU name with only a warning on stderr and compiles for a generic CPU,
so names are checked against `KNOWN_CPUS`, which also says which instruction-set extensions
each CPU has. That list holds the extensions LLVM can select for ordinary IR (vector widths,
FMA, bit manipulation, AVX-512 subsets, GFNI); it decides the ISA family and `can_execute`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm

from graphc.backends.llvm.codegen import MachineSpec, arch
from graphc.errors import CompileError

ISA_FAMILIES = ("avx512", "avx2", "sse2", "neon", "generic")
# Vector register width in bits and count of each family. AArch64's SVE is not used: code is
# emitted for fixed-width vectors, which NEON's 32 128-bit registers hold.
_VECTOR_REGISTERS = {
    "avx512": (512, 32),
    "avx2": (256, 16),
    "sse2": (128, 16),
    "neon": (128, 32),
    "generic": (128, 16),
}
# Used where /sys does not say (another OS, or a target for another machine).
FALLBACK_CACHES = (32 * 1024, 512 * 1024, 8 * 1024 * 1024)
_CACHE_FOLDER = Path("/sys/devices/system/cpu/cpu0/cache")

# x86-64 micro-architecture levels (the psABI's), then the extensions CPUs add to them.
_X86_64 = ("cmov", "cx8", "fxsr", "mmx", "sse", "sse2")
_X86_64_V2 = (*_X86_64, "cx16", "popcnt", "sahf", "sse3", "sse4.1", "sse4.2", "ssse3")
_X86_64_V3 = (*_X86_64_V2, "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
_X86_64_V4 = (*_X86_64_V3, "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl")
_ICELAKE = (
    *_X86_64_V4,
    *("avx512bitalg", "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512vnni"),
    *("avx512vpopcntdq", "gfni", "prfchw"),
)
_ZEN = (*_X86_64_V3, "prfchw", "sse4a")
_ARMV8 = ("neon", "fp-armv8", "crc")
_ARMV82 = (*_ARMV8, "lse", "rdm", "dotprod", "fullfp16", "rcpc")

# LLVM CPU name -> (architecture, instruction-set extensions).
KNOWN_CPUS: dict[str, tuple[str, tuple[str, ...]]] = {
    "x86-64": ("x86_64", _X86_64),
    "x86-64-v2": ("x86_64", _X86_64_V2),
    "x86-64-v3": ("x86_64", _X86_64_V3),
    "x86-64-v4": ("x86_64", _X86_64_V4),
    "nehalem": ("x86_64", _X86_64_V2),
    "westmere": ("x86_64", _X86_64_V2),
    "sandybridge": ("x86_64", (*_X86_64_V2, "avx")),
    "ivybridge": ("x86_64", (*_X86_64_V2, "avx", "f16c")),
    "haswell": ("x86_64", _X86_64_V3),
    "broadwell": ("x86_64", (*_X86_64_V3, "prfchw")),
    "skylake": ("x86_64", (*_X86_64_V3, "prfchw")),
    "alderlake": ("x86_64", (*_X86_64_V3, "prfchw", "gfni", "avxvnni")),
    "raptorlake": ("x86_64", (*_X86_64_V3, "prfchw", "gfni", "avxvnni")),
    "skylake-avx512": ("x86_64", (*_X86_64_V4, "prfchw")),
    "cascadelake": ("x86_64", (*_X86_64_V4, "prfchw", "avx512vnni")),
    "cooperlake": ("x86_64", (*_X86_64_V4, "prfchw", "avx512vnni", "avx512bf16")),
    "icelake-client": ("x86_64", _ICELAKE),
    "icelake-server": ("x86_64", _ICELAKE),
    "tigerlake": ("x86_64", _ICELAKE),
    "sapphirerapids": ("x86_64", (*_ICELAKE, "avx512bf16", "avx512fp16", "avxvnni")),
    "znver1": ("x86_64", _ZEN),
    "znver2": ("x86_64", _ZEN),
    "znver3": ("x86_64", _ZEN),
    "znver4": ("x86_64", (*_ICELAKE, "sse4a", "avx512bf16")),
    "znver5": ("x86_64", (*_ICELAKE, "sse4a", "avx512bf16", "avxvnni")),
    "cortex-a53": ("aarch64", _ARMV8),
    "cortex-a72": ("aarch64", _ARMV8),
    "cortex-a76": ("aarch64", _ARMV82),
    "neoverse-n1": ("aarch64", _ARMV82),
    "neoverse-v1": ("aarch64", (*_ARMV82, "sve", "i8mm", "bf16")),
    "neoverse-n2": ("aarch64", (*_ARMV82, "sve", "sve2", "i8mm", "bf16")),
    "neoverse-v2": ("aarch64", (*_ARMV82, "sve", "sve2", "i8mm", "bf16")),
    "apple-m1": ("aarch64", _ARMV82),
}
# GRAPHC_CPU aliases named after an ISA: (LLVM CPU name, features added to its list).
ISA_ALIASES: dict[str, tuple[str, str]] = {
    "avx512": ("skylake-avx512", ""),
    "avx2": ("haswell", "+avx2,+fma"),
    "sse2": ("x86-64", ""),
}
_TRIPLES = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu"}


@dataclass(frozen=True, slots=True)
class CpuTarget:
    """One CPU to compile for: what LLVM needs (cpu, features, triple) and what plans need."""

    cpu: str  # LLVM's CPU name, e.g. "znver4"
    features: str  # LLVM feature string, e.g. "+avx2,+fma"
    triple: str
    isa: str  # one of ISA_FAMILIES
    vector_bits: int
    vector_registers: int
    l1d_bytes: int
    l2_bytes: int
    l3_bytes: int

    @property
    def arch(self) -> str:
        """Return the architecture part of the triple, e.g. 'x86_64'."""
        return arch(self.triple)

    def machine_spec(self, opt: int = 3, codemodel: str = "jitdefault") -> MachineSpec:
        """Return what an LLVM target machine for this CPU is made from."""
        return MachineSpec(self.triple, self.cpu, self.features, opt, codemodel)

    def target_machine(self, opt: int = 3, codemodel: str = "jitdefault") -> llvm.TargetMachine:
        """Return a new LLVM target machine for this CPU (an execution engine takes it over)."""
        return self.machine_spec(opt, codemodel).create()

    def describe(self) -> str:
        """Return a one-line summary, e.g. 'znver4 (avx512: 32 x 512-bit; L1d 32 KiB, ...)'."""
        caches = ", ".join(
            f"{name} {_kib(size)}"
            for name, size in (
                ("L1d", self.l1d_bytes),
                ("L2", self.l2_bytes),
                ("L3", self.l3_bytes),
            )
        )
        registers = f"{self.vector_registers} x {self.vector_bits}-bit"
        return f"{self.cpu} ({self.isa}: {registers} vector registers; {caches})"


def selected_target() -> CpuTarget:
    """Return the target compiled code is for: GRAPHC_CPU's (and GRAPHC_CPU_FEATURES'), else
    the host's. Raises CompileError for an unknown name or a target this host cannot run."""
    return _selected(os.environ.get("GRAPHC_CPU", ""), os.environ.get("GRAPHC_CPU_FEATURES", ""))


@functools.cache
def _selected(name: str, features: str) -> CpuTarget:
    host = host_target()
    if name not in ("", "host", "native"):
        target = cpu_target(name, features)
    elif features:
        enabled = _merge(_enabled(host.features), features)
        target = _target(host.cpu, f"{host.features},{features}", host.triple, enabled)
    else:
        return host
    if not can_execute(target):
        missing = sorted(_executed(target.features) - _enabled(host.features))
        lacks = f"lacks {', '.join(missing)}" if target.arch == host.arch else f"is {host.arch}"
        chosen = ", ".join(
            f"{variable}={value}"
            for variable, value in (("GRAPHC_CPU", name), ("GRAPHC_CPU_FEATURES", features))
            if value
        )
        raise CompileError(
            f"{chosen}: code for {target.cpu} ({target.arch}) cannot run on this CPU, which "
            f"{lacks} ({host.cpu}); unset GRAPHC_CPU or choose a CPU it can run"
        )
    return target


@functools.cache
def host_target() -> CpuTarget:
    """Return the CPU this process runs on, with every feature LLVM detects on it."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features().flatten()
    triple = llvm.get_process_triple()
    return _target(llvm.get_host_cpu_name(), features, triple, _enabled(features))


def cpu_target(name: str, features: str = "") -> CpuTarget:
    """Return the target for an LLVM CPU name in KNOWN_CPUS or an ISA alias, with an LLVM
    feature string added to its features; raises CompileError for an unknown name."""
    cpu, alias_features = ISA_ALIASES.get(name, (name, ""))
    if cpu not in KNOWN_CPUS:
        raise CompileError(
            f"unknown CPU {name!r} (GRAPHC_CPU): expected one of the ISA aliases "
            f"{', '.join(ISA_ALIASES)} or an LLVM CPU name: {', '.join(KNOWN_CPUS)}"
        )
    arch, extensions = KNOWN_CPUS[cpu]
    feature_string = ",".join(
        part for part in (",".join(f"+{f}" for f in extensions), alias_features, features) if part
    )
    host = host_target()
    triple = host.triple if arch == host.arch else _TRIPLES[arch]
    return _target(cpu, feature_string, triple, _merge(set(), feature_string))


def can_execute(target: CpuTarget) -> bool:
    """Return whether this host can run code compiled for target: the same architecture, and
    every feature the target enables is one the host has."""
    host = host_target()
    if target.arch != host.arch:
        return False
    return _executed(target.features) <= _enabled(host.features)


def clear_target_caches() -> None:
    """Forget the host's detected target and every selection made from GRAPHC_CPU (tests)."""
    _selected.cache_clear()
    host_target.cache_clear()
    _read_caches.cache_clear()


def isa_family(arch: str, enabled: set[str]) -> str:
    """Return the ISA family code is planned for, from the architecture and enabled features."""
    if arch == "x86_64":
        if "avx512f" in enabled:
            return "avx512"
        if {"avx2", "fma"} <= enabled:
            return "avx2"
        return "sse2"  # every x86-64 CPU has SSE2
    if arch == "aarch64":
        return "neon"
    return "generic"


def _target(cpu: str, features: str, triple: str, enabled: set[str]) -> CpuTarget:
    isa = isa_family(arch(triple), enabled)
    if isa == "avx512" and "prefer-256-bit" not in features:
        # LLVM tunes Intel AVX-512 CPUs to vectorise loops 256 bits wide, against the clock
        # drop of early AVX-512 cores; the GEMM's 512-bit tiles pay that already, and 512-bit
        # loops made row softmax 1.3x faster here. GRAPHC_CPU_FEATURES=+prefer-256-bit
        # restores LLVM's choice.
        features = f"{features},-prefer-256-bit"
    bits, registers = _VECTOR_REGISTERS[isa]
    host_caches = arch(triple) == arch(llvm.get_process_triple())
    l1d, l2, l3 = _read_caches() if host_caches else FALLBACK_CACHES
    return CpuTarget(cpu, features, triple, isa, bits, registers, l1d, l2, l3)


def _executed(features: str) -> set[str]:
    """Return the features a feature string turns on that change which instructions code may
    use: not LLVM's tuning flags (prefer-256-bit, fast-*, slow-*), which any CPU can run."""
    return {f for f in _enabled(features) if not f.startswith(("prefer-", "fast-", "slow-"))}


def _enabled(features: str) -> set[str]:
    """Return the features an LLVM feature string turns on (later entries win)."""
    return _merge(set(), features)


def _merge(enabled: set[str], features: str) -> set[str]:
    enabled = set(enabled)
    for entry in features.split(","):
        entry = entry.strip()
        if entry.startswith("+"):
            enabled.add(entry[1:])
        elif entry.startswith("-"):
            enabled.discard(entry[1:])
        elif entry:
            raise CompileError(
                f"GRAPHC_CPU_FEATURES: {entry!r} should start with + or - (LLVM feature string)"
            )
    return enabled


@functools.cache
def _read_caches() -> tuple[int, int, int]:
    """Return the host's L1 data, L2 and L3 cache sizes in bytes (fallbacks where unreadable)."""
    sizes = dict(zip((1, 2, 3), FALLBACK_CACHES, strict=True))
    for index in sorted(_CACHE_FOLDER.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if level in sizes and kind in ("Data", "Unified") and size > 0:
            sizes[level] = size
    return sizes[1], sizes[2], sizes[3]


def _parse_size(text: str) -> int:
    """Return bytes for a size as /sys writes it: '32K', '1024K', '32M'."""
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def _kib(size: int) -> str:
    return f"{size // 1024**2} MiB" if size % 1024**2 == 0 else f"{size // 1024} KiB"
