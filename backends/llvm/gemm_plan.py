"""The GEMM's plan per dtype and CPU target: micro-tile and cache-block sizes, from the
target's vector registers and cache sizes, and the workspace one call needs."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm.target import CpuTarget, selected_target
from graphc.errors import DTypeError


@dataclass(frozen=True, slots=True)
class GemmPlan:
    """Micro-tile and cache-block sizes of one dtype's GEMM on one target, counted in elements."""

    short: str
    scalar: ir.Type
    itemsize: int
    lanes: int  # elements per vector register
    mr: int  # rows of the micro-tile
    vectors: int  # vectors per micro-tile row
    kc: int  # depth of a packed block (a multiple of unroll)
    mc: int  # rows of a packed A block (a multiple of mr)
    nc: int  # columns of a packed B block (a multiple of nr)
    unroll: int  # rank-1 updates per trip of the micro-kernel's loop
    fused: bool  # the target has FMA: llvm.fma, else llvm.fmuladd (fused only where cheap)

    @property
    def nr(self) -> int:
        """Return the columns of the micro-tile."""
        return self.lanes * self.vectors

    @property
    def name(self) -> str:
        """Return the exported function's name, e.g. graphc_gemm_f32_6x64: one per plan."""
        return f"graphc_gemm_{self.short}_{self.mr}x{self.nr}"

    @property
    def vector(self) -> ir.VectorType:
        """Return the LLVM vector type of one register of C."""
        return ir.VectorType(self.scalar, self.lanes)

    @property
    def vector_align(self) -> int:
        """Return the alignment of packed B's vectors: the workspace's 64, or one vector if less."""
        return min(64, self.lanes * self.itemsize)

    @property
    def packed_b_elements(self) -> int:
        """Return the size of the packed B block: KC x NC."""
        return self.kc * self.nc

    @property
    def packed_a_elements(self) -> int:
        """Return the size of the packed A block: MC x KC."""
        return self.mc * self.kc


# The micro-tile is MR x (vectors x lanes). MR = 6 rows give 6 x vectors independent FMA
# chains, enough to cover the FMA latency; vectors is the most of 4, 2, 1 for which the tile
# (MR x vectors accumulators), one row of B (vectors) and the broadcast A element fit in the
# vector registers: 24 + 4 + 1 of AVX-512's and NEON's 32, 12 + 2 + 1 of AVX2's and SSE2's 16.
MR = 6
UNROLL = 4
# Cache blocks, from the target's cache sizes (s = bytes per element, NR = vectors x lanes):
#   KC: a KC x NR micro-panel of packed B takes at most 1/8 of L2, and KC <= KC_MAX;
#   MC: the MC x KC packed A block takes at most 1/4 of L2 (MC a multiple of 2 x MR);
#   NC: the KC x NC packed B block takes at most 1/8 of L3 (its share on an 8-core CCX),
#       NC <= NC_MAX.
# On Zen 4 (L2 1 MiB, L3 32 MiB) this gives the sizes tuned there with benchmarks/gemm_kernel.py
# for the 6 x 64 f32 and 6 x 32 f64 tiles: KC 512, MC 120 (f32) / 60 (f64), NC 2048 / 1024, i.e.
# a 128 KiB B micro-panel, a 240 KiB A block and a 4 MiB B block; sizes near these (KC 384-768,
# MC 72-120) measured within ~2% there. KC_MAX and the 2 x MR step of MC are what make the
# formula land on the tuned sizes; the AVX2 6 x 16 tile on Zen 4 measured the same, within
# noise, with KC from 256 to 2048. NC_MAX keeps a large L3 from growing the workspace: packing
# B is amortised over the M rows, not over NC.
KC_MAX = 512
NC_MAX = 4096
_SCALARS = {"f32": (ir.FloatType(), 4), "f64": (ir.DoubleType(), 8)}
_ALIASES = {"float32": "f32", "float64": "f64", "float": "f32", "double": "f64"}


def gemm_plan(dtype: str, target: CpuTarget | None = None, narrow: bool = False) -> GemmPlan:
    """Return the tile and block sizes for 'f32'/'float32' or 'f64'/'float64' on target
    (default: the selected target, see target.selected_target); with narrow, those of the
    plan for products of at most its NR columns (see NARROW_ROWS)."""
    short = _ALIASES.get(dtype, dtype)
    if short not in _SCALARS:
        raise DTypeError(f"gemm: no CPU kernel for dtype {dtype!r}; expected float32 or float64")
    return _plan(short, target if target is not None else selected_target(), narrow)


# The narrow plan, for products with few columns (attention's heads of 32): its tile has
# NARROW_ROWS times the rows and as many times fewer vectors per row, the same registers.
# A 6 x 64 f32 tile on 32 columns computes half its lanes for nothing: 64 x (128 x 128 @
# 128 x 32) measured 53 GFLOP/s with it and 77-81 with 12 x 32 on AVX-512 (with A read in
# place, see gemm._emit_driver, 118-125).
NARROW_ROWS = 2


@functools.cache
def _plan(short: str, target: CpuTarget, narrow: bool) -> GemmPlan:
    scalar, itemsize = _SCALARS[short]
    lanes = max(1, target.vector_bits // (8 * itemsize))
    vectors = next((v for v in (4, 2) if MR * v + v + 1 <= target.vector_registers), 1)
    mr = MR
    if narrow and vectors >= NARROW_ROWS:
        mr, vectors = MR * NARROW_ROWS, vectors // NARROW_ROWS
    nr = lanes * vectors
    kc = _multiple_below(min(KC_MAX, target.l2_bytes // 8 // (nr * itemsize)), UNROLL)
    mc = _multiple_below(target.l2_bytes // 4 // (kc * itemsize), 2 * mr, least=mr)
    nc = _multiple_below(min(NC_MAX, target.l3_bytes // 8 // (kc * itemsize)), nr)
    fused = target.isa in ("avx512", "avx2", "neon")
    return GemmPlan(short, scalar, itemsize, lanes, mr, vectors, kc, mc, nc, UNROLL, fused)


def _multiple_below(value: int, step: int, least: int | None = None) -> int:
    """Return the largest multiple of step at most value, but at least `least` (default step)."""
    least = step if least is None else least
    return max(least, value // step * step)


def workspace_bytes(dtype: str, target: CpuTarget | None = None) -> int:
    """Return the scratch bytes one call of the dtype's GEMM (of either plan) needs on target
    (packed A and B blocks), rounded up to 64 so that consecutive workspaces stay 64-byte
    aligned."""
    plans = (gemm_plan(dtype, target, narrow) for narrow in (False, True))
    size = max((plan.packed_b_elements + plan.packed_a_elements) * plan.itemsize for plan in plans)
    return -(-size // 64) * 64
