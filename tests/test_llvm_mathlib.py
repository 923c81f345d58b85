"""The LLVM backend's math library: vectorised loops, accuracy in ulps, and IEEE specials.

Every function is compiled into a loop `out[i] = f(in[i])`, optimised for the host like the
backend does, checked to be vector code without calls, then run on numpy arrays and compared with
numpy (float64 references for f32, longdouble for f64).
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import re
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

_PATH = Path(__file__).resolve().parents[1] / "backends" / "llvm" / "mathlib.py"


def _load_mathlib():
    """Import backends/llvm/mathlib.py by path, so the test does not need the package."""
    spec = importlib.util.spec_from_file_location("graphc_llvm_mathlib_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


mathlib = _load_mathlib()
_NUMPY_NAMES = {"pow": "power", "atan2": "arctan2"}

NAMES = mathlib.UNARY_FUNCTIONS + mathlib.BINARY_FUNCTIONS
CASES = [(name, dtype) for name in NAMES for dtype in mathlib.DTYPES]
_NP = {"f32": np.float32, "f64": np.float64}

# Max ulps allowed (measured maxima are in mathlib's docstring; these leave a little margin).
TOLERANCE = {
    "exp": {"f32": 1.5, "f64": 1.5},
    "expm1": {"f32": 1.5, "f64": 2.0},
    "log": {"f32": 1.0, "f64": 1.5},
    "log1p": {"f32": 2.0, "f64": 2.0},
    "tanh": {"f32": 2.0, "f64": 2.0},
    "sigmoid": {"f32": 2.0, "f64": 2.0},
    "erf": {"f32": 2.0, "f64": 2.0},
    "sin": {"f32": 1.0, "f64": 2.0},
    "cos": {"f32": 1.0, "f64": 2.0},
    "pow": {"f32": 1.0, "f64": 2.0},
    "atan2": {"f32": 1.0, "f64": 1.8},
}

# ---------------------------------------------------------------------------------------------
# Building, optimising and running the loops


def _define_loop(module: ir.Module, name: str, dtype: str) -> None:
    """Define kern_<name>_<dtype>(in..., out, n): out[i] = f(in[i]) for i < n."""
    fn = mathlib.math_function(module, name, dtype)
    arity = len(fn.args)
    fty = fn.function_type.return_type
    ptr = fty.as_pointer()
    kern = ir.Function(
        module,
        ir.FunctionType(ir.VoidType(), [ptr] * (arity + 1) + [ir.IntType(64)]),
        f"kern_{name}_{dtype}",
    )
    for arg in kern.args[:-1]:
        arg.add_attribute("noalias")
    n = kern.args[-1]
    entry, loop, done = (kern.append_basic_block(b) for b in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, n.type(0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(n.type, "i")
    i.add_incoming(n.type(0), entry)
    args = [b.load(b.gep(kern.args[k], [i])) for k in range(arity)]
    b.store(b.call(fn, args), b.gep(kern.args[arity], [i]))
    step = b.add(i, n.type(1))
    i.add_incoming(step, loop)
    b.cbranch(b.icmp_signed("<", step, n), loop, done)
    b.position_at_end(done)
    b.ret_void()


def _host_target_machine() -> llvm.TargetMachine:
    """Return a target machine for this CPU with all its features."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
    )


class Compiled:
    """All loops in one optimised, JIT-compiled module; keeps the engine alive."""

    def __init__(self, cases: list[tuple[str, str]]):
        module = ir.Module("mathlib_test")
        for name, dtype in cases:
            _define_loop(module, name, dtype)
        tm = _host_target_machine()
        parsed = llvm.parse_assembly(str(module))
        parsed.triple = llvm.get_process_triple()
        parsed.data_layout = str(tm.target_data)
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(parsed, pb)
        parsed.verify()
        self.optimised = str(parsed)
        self.engine = llvm.create_mcjit_compiler(parsed, tm)
        self.engine.finalize_object()
        self.cases = cases

    def function_ir(self, name: str, dtype: str) -> str:
        """Return the optimised IR text of one loop function."""
        match = re.search(
            rf"define [^\n]*@kern_{name}_{dtype}\(.*?\n}}\n", self.optimised, re.DOTALL
        )
        assert match, f"kern_{name}_{dtype} missing from the optimised module"
        return match.group(0)

    def run(self, name: str, dtype: str, *inputs: np.ndarray) -> np.ndarray:
        """Return f(inputs) computed by the JIT-compiled loop."""
        arrays = [np.ascontiguousarray(a, dtype=_NP[dtype]) for a in inputs]
        out = np.empty_like(arrays[0])
        address = self.engine.get_function_address(f"kern_{name}_{dtype}")
        proto = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (len(arrays) + 1), ctypes.c_int64)
        proto(address)(*[a.ctypes.data for a in arrays], out.ctypes.data, out.size)
        return out


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    """Return every math function on every dtype, compiled once for this module's tests."""
    return Compiled(CASES)


# ---------------------------------------------------------------------------------------------
# Error measurement


def ulp_error(got: np.ndarray, ref: np.ndarray, dtype: str) -> np.ndarray:
    """Return |got - ref| in ulps of ref rounded to dtype; 0 or inf where either is not finite.

    ref is float64 for f32 results and longdouble for f64 results.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        expected = ref.astype(_NP[dtype])
        wide = ref.dtype.type
        spacing = np.spacing(np.abs(expected)).astype(wide)
        err = np.abs(got.astype(wide) - ref) / spacing
    special = ~np.isfinite(expected) | ~np.isfinite(got)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    err[special] = np.where(same[special], 0.0, np.inf)
    return err


def max_ulp(got: np.ndarray, ref: np.ndarray, dtype: str, inputs: tuple[np.ndarray, ...]) -> float:
    """Return the largest ulp error; the assertion message names the worst input."""
    err = ulp_error(got, ref, dtype)
    worst = int(np.argmax(err))
    where = ", ".join(repr(a[worst]) for a in inputs)
    print(f"max {err[worst]:.3f} ulp at f({where}) = {got[worst]!r}, reference {ref[worst]!r}")
    return float(err[worst])


def _erf_reference(x: np.ndarray, dtype: str) -> np.ndarray:
    """Return erf(x) in float64 (f32) or, through mpmath, in longdouble (f64)."""
    if dtype == "f32":
        return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 80
    values = [mpmath.erf(mpmath.mpf(float(v))) for v in x]
    hi = np.array([float(v) for v in values], dtype=np.float64)
    lo = np.array([float(v - mpmath.mpf(h)) for v, h in zip(values, hi, strict=True)])
    return hi.astype(np.longdouble) + lo.astype(np.longdouble)


def reference(name: str, dtype: str, *inputs: np.ndarray) -> np.ndarray:
    """Return the numpy reference for f(inputs), in float64 for f32 and longdouble for f64."""
    if name == "erf":
        return _erf_reference(inputs[0], dtype)
    wide = np.float64 if dtype == "f32" else np.longdouble
    args = [a.astype(wide) for a in inputs]
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return 1 / (1 + np.exp(-args[0]))
        return getattr(np, _NUMPY_NAMES.get(name, name))(*args)


# ---------------------------------------------------------------------------------------------
# Inputs


def _positive_bit_patterns(rng: np.random.Generator, dtype: str, size: int) -> np.ndarray:
    """Return positive finite numbers with uniformly random bit patterns (denormals to max)."""
    if dtype == "f32":
        bits = rng.integers(1, 0x7F800000, size, dtype=np.uint32)
        return bits.view(np.float32)
    bits = rng.integers(1, 0x7FF0000000000000, size, dtype=np.uint64)
    return bits.view(np.float64)


def _log_uniform(rng: np.random.Generator, low: float, high: float, size: int) -> np.ndarray:
    """Return numbers of both signs whose magnitudes are spread evenly over 10**low .. 10**high."""
    return rng.choice([-1.0, 1.0], size) * 10.0 ** rng.uniform(low, high, size)


# Where each function's accuracy is measured: a uniform range per dtype, and the largest
# magnitude (log-uniformly sampled) of the rest; beyond it results saturate or lose accuracy.
RANGES = {
    "exp": {"f32": (-104, 89), "f64": (-746, 710), "largest": 1e30},
    "expm1": {"f32": (-20, 89), "f64": (-40, 710), "largest": 1e30},
    "tanh": {"f32": (-20, 20), "f64": (-20, 20), "largest": 1e30},
    "sigmoid": {"f32": (-120, 120), "f64": (-750, 750), "largest": 1e30},
    "erf": {"f32": (-8, 8), "f64": (-8, 8), "largest": 1e30},
    "sin": {"f32": (-1e5, 1e5), "f64": (-1e5, 1e5), "largest": 1e13},
    "cos": {"f32": (-1e5, 1e5), "f64": (-1e5, 1e5), "largest": 1e13},
}


def _pow_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return bases and exponents: positive bases, negative bases with integer exponents, and
    bases near 1 with exponents so large that |y log x| nears overflow."""
    base = 10.0 ** rng.uniform(-30, 30, size)
    exponent = rng.uniform(-60, 60, size)
    integral = rng.random(size) < 0.2
    base[integral] *= -1
    exponent[integral] = np.round(exponent[integral])
    near_one = rng.random(size) < 0.2
    base[near_one] = rng.uniform(0.5, 2.0, near_one.sum())
    exponent[near_one] = rng.uniform(-1000, 1000, near_one.sum())
    return base, exponent


def _log1p_sample(rng: np.random.Generator, dtype: str, size: int) -> np.ndarray:
    """Return x > -1: near 0 of both signs down to denormals, across (-1, 1), and bit patterns
    up to the largest number."""
    tiniest = -45 if dtype == "f32" else -320
    parts = [
        _log_uniform(rng, tiniest, 0, size // 4) * 0.999,
        rng.uniform(-1, 1, size // 4),
        -1 + 10.0 ** rng.uniform(-7 if dtype == "f32" else -15, 0, size // 8),
    ]
    rest = size - sum(len(part) for part in parts)
    parts.append(_positive_bit_patterns(rng, dtype, rest).astype(np.float64))
    return np.concatenate(parts).astype(_NP[dtype])


def _atan2_sample(rng: np.random.Generator, dtype: str, size: int) -> tuple[np.ndarray, ...]:
    """Return points in every quadrant: both coordinates over many magnitudes, ratios near
    tan(pi/8) and 1 (the reduction's edges), and coordinates with ratios beyond the range."""
    biggest = 38 if dtype == "f32" else 300
    y = _log_uniform(rng, -biggest, biggest, size)
    x = _log_uniform(rng, -biggest, biggest, size)
    near = rng.random(size) < 0.5
    ratio = rng.choice([math.tan(math.pi / 8), 1.0], size) * rng.uniform(0.9, 1.1, size)
    x[near] = rng.choice([-1.0, 1.0], near.sum()) * 10.0 ** rng.uniform(-5, 5, near.sum())
    y[near] = x[near] * ratio[near] * rng.choice([-1.0, 1.0], near.sum())
    swapped = rng.random(size) < 0.5
    x[swapped], y[swapped] = y[swapped], x[swapped].copy()
    return y.astype(_NP[dtype]), x.astype(_NP[dtype])


def sample(name: str, dtype: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Return inputs spanning the range where name's accuracy is documented."""
    if name == "log":
        return (_positive_bit_patterns(rng, dtype, size),)
    if name == "log1p":
        return (_log1p_sample(rng, dtype, size),)
    if name == "atan2":
        return _atan2_sample(rng, dtype, size)
    if name == "pow":
        return tuple(a.astype(_NP[dtype]) for a in _pow_sample(rng, size))
    lo, hi = RANGES[name][dtype]
    largest = math.log10(RANGES[name]["largest"])
    tiniest = -38 if dtype == "f32" else -300
    parts = [
        rng.uniform(lo, hi, size // 2),
        rng.uniform(-2, 2, size // 4),
        _log_uniform(rng, tiniest, 0, size // 8),
        _log_uniform(rng, 0, largest, size - size // 2 - size // 4 - size // 8),
    ]
    return (np.concatenate(parts).astype(_NP[dtype]),)


# ---------------------------------------------------------------------------------------------
# Tests


def test_math_function_is_defined_once_per_module() -> None:
    module = ir.Module("m")
    first = mathlib.math_function(module, "exp", "f32")
    assert mathlib.math_function(module, "exp", "f32") is first
    assert first.name == "graphc_exp_f32"
    assert "alwaysinline" in first.attributes
    assert len(mathlib.math_function(module, "pow", "f64").args) == 2


@pytest.mark.parametrize("name, dtype", [("lgamma", "f32"), ("exp", "f16")])
def test_unknown_function_or_dtype_is_rejected(name: str, dtype: str) -> None:
    with pytest.raises(ValueError, match=name if name == "lgamma" else dtype):
        mathlib.math_function(ir.Module("m"), name, dtype)


@pytest.mark.parametrize("name, dtype", CASES)
def test_loop_is_vectorised_without_calls(compiled: Compiled, name: str, dtype: str) -> None:
    text = compiled.function_ir(name, dtype)
    element = "float" if dtype == "f32" else "double"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {element}>", text)}
    assert widths and max(widths) >= 4, f"{name} {dtype}: no vector {element} code"
    callees = set(re.findall(r"call [^@]*@([\w.]+)", text))
    assert all(c.startswith("llvm.") for c in callees), f"{name} {dtype} calls {callees}"
    assert not {c for c in callees if re.match(r"llvm\.(exp|log|pow|sin|cos)", c)}
    assert "graphc_" not in text  # inlined


def test_math_functions_leave_no_definitions_behind(compiled: Compiled) -> None:
    assert not re.search(r"define [^\n]*@graphc_", compiled.optimised)


@pytest.mark.parametrize("name, dtype", CASES)
def test_accuracy_in_ulps(
    compiled: Compiled, rng: np.random.Generator, name: str, dtype: str
) -> None:
    size = {"f32": 1_000_000, "f64": 200_000}[dtype]
    if name == "erf" and dtype == "f64":
        size = 20_000  # mpmath references are slow
    elif name == "erf":
        size = 200_000
    inputs = sample(name, dtype, size, rng)
    got = compiled.run(name, dtype, *inputs)
    ref = reference(name, dtype, *inputs)
    assert max_ulp(got, ref, dtype, inputs) <= TOLERANCE[name][dtype]


# Inputs whose results numpy gets exactly (NaN, infinities, zeros) or near the range limits.
SPECIALS = {
    "exp": "nan inf -inf 0 -0 1e-45 88.72 88.73 89 -87.4 -103.9 -104 709.78 709.79 -745.1 -745.2"
    " 1e30 -1e30",
    "expm1": "nan inf -inf 0 -0 1e-45 -1e-45 5e-324 1e-30 -1e-30 0.3466 -0.3466 88 88.72 88.73"
    " -87.4 -88 709.78 709.79 -745 1e30 -1e30",
    "log1p": "nan inf -inf 0 -0 1e-45 -1e-45 5e-324 1e-30 -1e-30 -1 -1.5 -0.5 1 3.4e38 1e308"
    " -0.9999999 1e-8",
    "log": "nan inf -inf 0 -0 -1 1 1e-45 1.2e-38 5e-324 3.4e38 1e308",
    "tanh": "nan inf -inf 0 -0 1e-40 -1e-40 9 9.1 19 1e30 -1e30",
    "sigmoid": "nan inf -inf 0 -0 88 -88 104 -104 1e30 -1e30",
    "erf": "nan inf -inf 0 -0 1e-40 -1e-40 3.9 4 5.9 6 1e30 -1e30",
    "sin": "nan inf -inf 0 -0 1e-40 -1e-40 3.141592653589793 1e4 -1e4",
    "cos": "nan inf -inf 0 -0 1e-40 -1e-40 3.141592653589793 1e4 -1e4",
}
POW_SPECIALS = "0 -0 1 -1 0.5 -0.5 2 -2 3 -3 2.5 -2.5 1e30 -1e30 inf -inf nan"
ATAN2_SPECIALS = "0 -0 1 -1 0.41 -2.5 1e-40 -1e-40 5e-324 1e30 -1e30 3.4e38 -1e308 inf -inf nan"


def _numbers(text: str, dtype: str) -> np.ndarray:
    """Return the whitespace-separated numbers in text as an array of dtype."""
    with np.errstate(over="ignore"):  # 1e308 becomes inf in f32
        return np.array(text.split(), dtype=np.float64).astype(_NP[dtype])


def _same(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Return where got equals expected exactly: same value and sign, or both NaN."""
    same = (got == expected) & (np.signbit(got) == np.signbit(expected))
    return same | (np.isnan(got) & np.isnan(expected))


def _numpy_in_dtype(name: str, *inputs: np.ndarray) -> np.ndarray:
    """Return numpy's own f(inputs) in the inputs' dtype (math.erf for erf)."""
    with np.errstate(all="ignore"):
        if name == "erf":
            return np.vectorize(math.erf, otypes=[inputs[0].dtype])(inputs[0])
        if name == "sigmoid":
            return 1 / (1 + np.exp(-inputs[0]))
        return getattr(np, _NUMPY_NAMES.get(name, name))(*inputs)


def _check_specials(compiled: Compiled, name: str, dtype: str, *inputs: np.ndarray) -> None:
    """Assert NaN, infinite and zero results equal numpy's, and the rest are within tolerance."""
    got = compiled.run(name, dtype, *inputs)
    expected = _numpy_in_dtype(name, *inputs)
    exact = ~np.isfinite(expected) | (expected == 0) | ~np.isfinite(got) | (got == 0)
    within = ulp_error(got, reference(name, dtype, *inputs), dtype) <= TOLERANCE[name][dtype]
    ok = np.where(exact, _same(got, expected), within)
    bad = [tuple(a[~ok]) for a in (*inputs, got, expected)]
    assert ok.all(), list(zip(*bad, strict=True))


@pytest.mark.parametrize("name, dtype", [c for c in CASES if c[0] in SPECIALS])
def test_specials_match_numpy(compiled: Compiled, name: str, dtype: str) -> None:
    _check_specials(compiled, name, dtype, _numbers(SPECIALS[name], dtype))


@pytest.mark.parametrize("dtype", mathlib.DTYPES)
def test_pow_specials_match_numpy(compiled: Compiled, dtype: str) -> None:
    # array exponents: numpy follows C99 (a scalar 0.5 would take its sqrt path)
    values = _numbers(POW_SPECIALS, dtype)
    x, y = (a.ravel() for a in np.meshgrid(values, values))
    _check_specials(compiled, "pow", dtype, x, y)


@pytest.mark.parametrize("dtype", mathlib.DTYPES)
def test_atan2_specials_match_numpy(compiled: Compiled, dtype: str) -> None:
    # every pair: signed zeros and infinities pick C99's quadrant (atan2(+-0, -0) = +-pi, ...)
    values = _numbers(ATAN2_SPECIALS, dtype)
    y, x = (a.ravel() for a in np.meshgrid(values, values))
    _check_specials(compiled, "atan2", dtype, y, x)


@pytest.mark.parametrize("name, dtype", [(n, d) for n in ("sin", "cos") for d in mathlib.DTYPES])
def test_sin_cos_stay_within_one_beyond_their_range(compiled: Compiled, name: str, dtype: str):
    huge = _numbers("1e16 -3e17 1e20 -7e25 1e30 3e38", dtype)
    got = compiled.run(name, dtype, huge)
    assert np.all(np.abs(got) <= 1), got
