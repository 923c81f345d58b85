"""CPU targets and the GEMM plans made for them: choosing a target (the host, GRAPHC_CPU and
its aliases), the plan formulas, assembly for targets this host cannot run (so instruction
selection failures show on any CI machine), and whole compiled programs under every target the
host can run, against the reference backend."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim
from graphc.backends.llvm import gemm, jit
from graphc.backends.llvm import target as targets
from graphc.backends.llvm.target import (
    KNOWN_CPUS,
    CpuTarget,
    can_execute,
    clear_target_caches,
    cpu_target,
    host_target,
    isa_family,
    selected_target,
)
from graphc.errors import CompileError

llvm = pytest.importorskip("llvmlite.binding")
ir = pytest.importorskip("llvmlite.ir")

# The host's own target and one per x86 ISA family; each test skips those the host cannot run.
RUNNABLE = ["host", "avx512", "avx2", "sse2"]
# Assembly only: every x86 family and two AArch64 cores.
ASSEMBLY = ["avx512", "avx2", "sse2", "cortex-a76", "neoverse-n1"]
KIB, MIB = 1024, 1024 * 1024
ZEN4_CACHES = (32 * KIB, 1 * MIB, 32 * MIB)
ZEN3_CACHES = (32 * KIB, 512 * KIB, 32 * MIB)


@pytest.fixture
def use_target(monkeypatch: pytest.MonkeyPatch):
    """Return use(name): select a target through GRAPHC_CPU for the rest of the test, or skip
    the test when the host cannot run it."""

    def use(name: str) -> CpuTarget:
        monkeypatch.delenv("GRAPHC_CPU_FEATURES", raising=False)
        if name == "host":
            monkeypatch.delenv("GRAPHC_CPU", raising=False)
        else:
            if not can_execute(cpu_target(name)):
                pytest.skip(f"this host cannot run {name} code")
            monkeypatch.setenv("GRAPHC_CPU", name)
        clear_target_caches()
        return selected_target()

    yield use
    clear_target_caches()


def with_caches(target: CpuTarget, caches: tuple[int, int, int]) -> CpuTarget:
    l1d, l2, l3 = caches
    return dataclasses.replace(target, l1d_bytes=l1d, l2_bytes=l2, l3_bytes=l3)


# -- choosing a target ------------------------------------------------------------------------


def test_host_target_is_this_cpu() -> None:
    host = host_target()
    assert host.cpu == llvm.get_host_cpu_name()
    assert host.triple == llvm.get_process_triple()
    assert can_execute(host)
    enabled = {f[1:] for f in host.features.split(",") if f.startswith("+")}
    assert host.isa == isa_family(host.arch, enabled)
    assert 0 < host.l1d_bytes <= host.l2_bytes <= host.l3_bytes


@pytest.mark.parametrize(
    "arch, features, family",
    [
        ("x86_64", {"avx512f", "avx2", "fma"}, "avx512"),
        ("x86_64", {"avx2", "fma"}, "avx2"),
        ("x86_64", {"avx", "avx2"}, "sse2"),  # AVX2 without FMA plans like SSE2
        ("x86_64", set(), "sse2"),
        ("aarch64", {"neon"}, "neon"),
        ("riscv64", {"v"}, "generic"),
    ],
)
def test_isa_family_comes_from_the_features(arch: str, features: set, family: str) -> None:
    assert isa_family(arch, features) == family


@pytest.mark.parametrize(
    "name, features, cpu, isa, bits, registers",
    [
        ("avx512", "", "skylake-avx512", "avx512", 512, 32),
        ("avx2", "", "haswell", "avx2", 256, 16),
        ("sse2", "", "x86-64", "sse2", 128, 16),
        ("x86-64-v3", "", "x86-64-v3", "avx2", 256, 16),
        ("znver3", "", "znver3", "avx2", 256, 16),
        ("skylake-avx512", "-avx512f", "skylake-avx512", "avx2", 256, 16),
        ("x86-64", "+avx2,+fma", "x86-64", "avx2", 256, 16),
        ("cortex-a76", "", "cortex-a76", "neon", 128, 32),
    ],
)
def test_aliases_names_and_features(
    name: str, features: str, cpu: str, isa: str, bits: int, registers: int
) -> None:
    target = cpu_target(name, features)
    assert (target.cpu, target.isa, target.vector_bits, target.vector_registers) == (
        cpu,
        isa,
        bits,
        registers,
    )
    assert target.features.endswith(features)


def test_unknown_cpu_and_bad_features_are_compile_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CompileError, match="unknown CPU 'pentium9'.*haswell"):
        cpu_target("pentium9")
    monkeypatch.setenv("GRAPHC_CPU", "pentium9")
    with pytest.raises(CompileError, match="pentium9"):
        selected_target()
    monkeypatch.setenv("GRAPHC_CPU", "haswell")
    monkeypatch.setenv("GRAPHC_CPU_FEATURES", "avx2")
    with pytest.raises(CompileError, match="should start with"):
        selected_target()


def test_graphc_cpu_selects_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHC_CPU_FEATURES", raising=False)
    monkeypatch.delenv("GRAPHC_CPU", raising=False)
    assert selected_target() == host_target()
    for name in ("host", "native"):
        monkeypatch.setenv("GRAPHC_CPU", name)
        assert selected_target() == host_target()
    if can_execute(cpu_target("sse2")):
        monkeypatch.setenv("GRAPHC_CPU", "sse2")
        assert selected_target() == cpu_target("sse2")
        monkeypatch.setenv("GRAPHC_CPU_FEATURES", "+fma")
        assert selected_target().features.endswith(",+fma")


def test_a_target_the_host_cannot_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    other = "cortex-a76" if host_target().arch != "aarch64" else "x86-64"
    assert not can_execute(cpu_target(other))
    monkeypatch.setenv("GRAPHC_CPU", other)
    with pytest.raises(CompileError, match=f"GRAPHC_CPU={other}: .* cannot run on this CPU"):
        selected_target()
    with pytest.raises(CompileError, match="cannot JIT-compile"):
        jit.compile_module(ir.Module(name="empty"), cpu_target(other))


def test_can_execute_needs_every_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    host = host_target()
    lacking = [f[1:] for f in host.features.split(",") if f.startswith("-")]
    if host.arch != "x86_64" or not lacking:
        pytest.skip("needs an x86-64 host lacking some feature LLVM knows")
    assert can_execute(cpu_target("x86-64"))
    assert not can_execute(cpu_target("x86-64", f"+{lacking[0]}"))
    # Features added to the host's own target are checked too.
    monkeypatch.delenv("GRAPHC_CPU", raising=False)
    monkeypatch.setenv("GRAPHC_CPU_FEATURES", f"+{lacking[0]}")
    with pytest.raises(CompileError, match=f"GRAPHC_CPU_FEATURES=\\+{lacking[0]}: .* lacks"):
        selected_target()
    monkeypatch.setenv("GRAPHC_CPU_FEATURES", "-avx2")
    assert selected_target().isa in ("avx512", "sse2")


def test_known_cpus_and_their_features_are_llvm_names(capfd: pytest.CaptureFixture) -> None:
    # LLVM only warns (on stderr) about a CPU or feature it does not know and compiles for a
    # generic CPU instead: the warning is what shows a wrong name in KNOWN_CPUS.
    cpu_target("x86-64", "+no-such-feature").target_machine()
    assert "not a recognized feature" in capfd.readouterr().err
    for name in KNOWN_CPUS:
        cpu_target(name).target_machine()
        assert "not a recognized" not in capfd.readouterr().err, name


def test_cache_sizes_come_from_sys_or_fallbacks(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index, (level, kind, size) in enumerate(
        [
            (1, "Data", "32K"),
            (1, "Instruction", "64K"),
            (2, "Unified", "512K"),
            (3, "Unified", "32M"),
        ]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    monkeypatch.setattr(targets, "_CACHE_FOLDER", tmp_path)
    clear_target_caches()
    try:
        assert targets._read_caches() == ZEN3_CACHES
        monkeypatch.setattr(targets, "_CACHE_FOLDER", tmp_path / "missing")
        targets._read_caches.cache_clear()
        assert targets._read_caches() == targets.FALLBACK_CACHES
    finally:
        monkeypatch.undo()
        clear_target_caches()


# -- plans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, caches, dtype, expected",
    [
        # Zen 4: the sizes tuned there.
        ("znver4", ZEN4_CACHES, "f32", ("graphc_gemm_f32_6x64", 512, 120, 2048)),
        ("znver4", ZEN4_CACHES, "f64", ("graphc_gemm_f64_6x32", 512, 60, 1024)),
        # Zen 3: 16 registers, half of Zen 4's L2.
        ("znver3", ZEN3_CACHES, "f32", ("graphc_gemm_f32_6x16", 512, 60, 2048)),
        ("znver3", ZEN3_CACHES, "f64", ("graphc_gemm_f64_6x8", 512, 24, 1024)),
        ("x86-64", ZEN3_CACHES, "f32", ("graphc_gemm_f32_6x8", 512, 60, 2048)),
        ("x86-64", ZEN3_CACHES, "f64", ("graphc_gemm_f64_6x4", 512, 24, 1024)),
        (
            "neoverse-n1",
            (64 * KIB, 1 * MIB, 32 * MIB),
            "f32",
            ("graphc_gemm_f32_6x16", 512, 120, 2048),
        ),
    ],
)
def test_plan_formulas(name: str, caches: tuple, dtype: str, expected: tuple) -> None:
    plan = gemm.gemm_plan(dtype, with_caches(cpu_target(name), caches))
    assert (plan.name, plan.kc, plan.mc, plan.nc) == expected


@pytest.mark.parametrize("name", list(KNOWN_CPUS))
@pytest.mark.parametrize(
    "caches",
    [ZEN4_CACHES, ZEN3_CACHES, (16 * KIB, 64 * KIB, 256 * KIB), (48 * KIB, 2 * MIB, 1024 * MIB)],
)
def test_every_plan_fits_its_registers_and_blocks(name: str, caches: tuple) -> None:
    target = with_caches(cpu_target(name), caches)
    for dtype in ("f32", "f64"):
        plan = gemm.gemm_plan(dtype, target)
        assert plan.lanes * plan.itemsize * 8 == target.vector_bits
        # The tile, one row of B and the broadcast A element stay in vector registers.
        assert plan.mr * plan.vectors + plan.vectors + 1 <= target.vector_registers
        assert plan.kc % plan.unroll == 0 and plan.kc <= gemm.KC_MAX
        assert plan.mc % plan.mr == 0 and plan.nc % plan.nr == 0
        assert gemm.workspace_bytes(dtype, target) % 64 == 0
        assert plan.fused == (target.isa != "sse2")


# -- code for every target ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ASSEMBLY)
def test_gemm_assembles_for_every_family(name: str) -> None:
    # Assembly only, so targets this host cannot run still go through instruction selection.
    target = cpu_target(name)
    module = ir.Module(name=f"gemm_{name}")
    module.triple = target.triple
    for dtype in ("f32", "f64"):
        gemm.gemm_function(module, dtype, target)
    machine = target.target_machine()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
    passes.getModulePassManager().run(parsed, passes)
    asm = machine.emit_assembly(parsed)
    for dtype in ("f32", "f64"):
        assert f"{gemm.gemm_plan(dtype, target).name}:" in asm
    assert not re.search(r"\b(call|bl)\s+\w*fma", asm), "an FMA became a library call"
    registers = {"avx512": "zmm", "avx2": "ymm", "sse2": "xmm", "neon": "v0."}[target.isa]
    assert registers in asm
    fused = {"avx512": "vfmadd", "avx2": "vfmadd", "sse2": "mulps", "neon": "fmla"}[target.isa]
    assert fused in asm
    if target.isa in ("avx2", "sse2"):
        assert "zmm" not in asm
    if target.isa == "sse2":
        assert "ymm" not in asm and "vfmadd" not in asm


def mlp_step(backend: str) -> tuple[gc.Function, nn.Module]:
    """Return the README's training step (2-layer MLP, cross-entropy, Adam) on backend and its
    model, with the same initial weights every time."""
    gc.manual_seed(0)
    x = gc.input("x", ("B", 37))
    y = gc.input("y", ("B",), gc.int64)
    model = nn.Sequential(nn.Linear(37, 70), nn.ReLU(), nn.Linear(70, 3))
    loss = nn.CrossEntropyLoss()(model(x), y)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = gc.compile(inputs=[x, y], outputs=[loss], updates=opt.minimize(loss), backend=backend)
    return step, model


@pytest.mark.parametrize("name", RUNNABLE)
def test_training_step_matches_reference(name: str, use_target) -> None:
    target = use_target(name)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((130, 37)).astype(np.float32)
    labels = (data[:, 0] > 0).astype(np.int64) + (data[:, 1] > 0)
    results = {}
    for backend in ("reference", "llvm"):
        step, model = mlp_step(backend)
        losses = [float(step(data[i::2], labels[i::2])) for i in (0, 1, 0)]
        results[backend] = losses, [p.numpy() for p in model.parameters()]
    (losses, weights), (want_losses, want_weights) = results["llvm"], results["reference"]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    # Adam divides by the gradient's RMS, so a weight with a tiny gradient moves by ~lr whatever
    # its rounding: compare weights to a small fraction of lr (1e-2).
    for got, want in zip(weights, want_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=5e-5)
    llvm_step, _ = mlp_step("llvm")
    assert gemm.gemm_plan("f32", target).name in llvm_step.llvm_ir()
    if target.isa in ("avx2", "sse2"):
        assert "zmm" not in llvm_step.asm()
    if target.isa == "sse2":
        assert "ymm" not in llvm_step.asm()


@pytest.mark.parametrize("name", RUNNABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_matmuls_match_numpy(name: str, dtype, use_target) -> None:
    use_target(name)
    rng = np.random.default_rng(5)
    element = gc.float32 if dtype == np.float32 else gc.float64
    a, b = gc.input("a", (37, 130), element), gc.input("b", (71, 130), element)
    function = gc.compile([a, b], [a @ b.T, (a.T @ a)[:5]])
    x = rng.standard_normal((37, 130)).astype(dtype)
    y = rng.standard_normal((71, 130)).astype(dtype)
    product, gram = function(x, y)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(product, x @ y.T, rtol=tolerance, atol=tolerance * 130)
    np.testing.assert_allclose(gram, (x.T @ x)[:5], rtol=tolerance, atol=tolerance * 130)


def _window_extremum(windows: np.ndarray, largest: bool) -> np.ndarray:
    """Return LLVM's maximum (minimum) over the last axis: NaN where a window holds one, and
    of a window's zeros +0 for the maximum (-0 for the minimum) if it holds that one."""
    with np.errstate(invalid="ignore"):
        found = windows.max(-1) if largest else windows.min(-1)
    zero = np.float32(0.0 if largest else -0.0)
    has_zero = (windows == 0) & (np.signbit(windows) == np.signbit(zero))
    found = np.where((found == 0) & has_zero.any(-1), zero, found)
    return np.where(np.isnan(windows).any(-1), np.nan, found)


@pytest.mark.parametrize("name", RUNNABLE)
def test_pooling_windows_keep_nan_and_signed_zeros_on_every_target(name: str, use_target) -> None:
    """A window's max and min (compares and selects on the AVX2 and SSE2 plans, LLVM's
    maximum and minimum elsewhere): NaN wherever a window holds one, +0 over -0 for the max
    and -0 over +0 for the min, in either order."""
    target = use_target(name)
    rng = np.random.default_rng(3)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0], np.float32)
    data = rng.choice(special, (4, 3, 8, 8)).astype(np.float32)
    data[0, 0, :2, :2] = [[0.0, -0.0], [-0.0, -0.0]]
    data[0, 1, :2, :2] = [[-0.0, -0.0], [-0.0, 0.0]]
    x = gc.input("x", ("B", 3, 8, 8))
    f = gc.compile([x], [gc.max_pool2d(x, 2), -gc.max_pool2d(-x, 2), x.amax(-1), x.amin(-1)])
    windows = data.reshape(4, 3, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(4, 3, 4, 4, 4)
    wants = [
        _window_extremum(windows, True),
        _window_extremum(windows, False),
        _window_extremum(data, True),
        _window_extremum(data, False),
    ]
    for got, want in zip(f(data), wants, strict=True):
        np.testing.assert_array_equal(got, want)
        numbers = ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))
    if target.isa in ("avx2", "sse2"):  # the max pool's row loop vectorises
        assert "<8 x float>" in f.llvm_ir() or "<4 x float>" in f.llvm_ir()


def test_compile_caches_key_on_the_target(use_target, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    module = ir.Module(name="keys")
    assert jit.module_key(str(module), cpu_target("avx2")) != jit.module_key(
        str(module), cpu_target("sse2")
    )
    entries = []
    for name in ("avx2", "sse2"):
        use_target(name)
        x = gc.input("x", (1000,))
        function = gc.compile([x], [x * 3.0 + 1.0])
        np.testing.assert_allclose(function(np.ones(1000, np.float32)), 4.0)
        entries.append(len(list(tmp_path.glob("*.o"))))
    assert entries[0] >= 1 and entries[1] > entries[0]


@pytest.mark.parametrize(
    ("features", "prefers_256"),
    [("", False), ("+prefer-256-bit", True), ("-prefer-256-bit", False)],
)
def test_avx512_targets_vectorise_loops_512_bits_wide_unless_asked(
    features: str, prefers_256: bool
) -> None:
    # LLVM's Intel tuning would pick 256-bit loops; graphc turns it off on AVX-512 targets,
    # and a feature string naming prefer-256-bit decides instead.
    enabled = targets._enabled(cpu_target("skylake-avx512", features).features)
    assert ("prefer-256-bit" in enabled) == prefers_256
    assert "prefer-256-bit" not in cpu_target("haswell").features
    assert can_execute(cpu_target("x86-64", "+prefer-256-bit"))  # tuning, not instructions
