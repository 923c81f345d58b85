"""Elementwise math functions emitted as call-free LLVM IR, so loops over them vectorise.

`math_function(module, name, dtype)` defines `graphc_<name>_<dtype>` once per module: a scalar
function marked `alwaysinline`, built from arithmetic, bit operations and intrinsics that lower to
instructions (fma, fabs, rint, floor, copysign). It never calls libm, so after
inlining LLVM's loop vectoriser turns a loop over it into `<16 x float>` / `<8 x double>` code.

Each function is a classic range reduction plus a polynomial. The polynomials were fitted for this
module by a weighted Remez exchange in mpmath (relative error, low-order coefficients rounded to
the target format first and the rest refitted); `math_constants.Params` states each polynomial's
form and interval, the comments in its tables their fitted error (atan's P by a plain Remez
exchange on its absolute error, which bounds atan's relative error). f32 pow, sin, cos and
atan2 work in f64 internally; f64 pow carries log|x| as a double-double. expm1 and log1p reuse
exp's and log's polynomials.

Measured max error in ulps of the exact result: f32 against numpy float64 (scipy for erf and
sigmoid), for every one of the 2^32 inputs unless noted; f64 against numpy longdouble (mpmath
for erf), 3e6 samples (erf 1e5) over the ranges noted. expm1, log1p and atan2: f32 1e7 and f64
3e6 samples of the ranges noted (tests/test_llvm_mathlib.py draws them):

    function  f32    f64    f64 sample ranges
    exp       1.01   0.98   [-746, 710] and |x| to 1e30 (inf, denormals and 0 included)
    expm1     1.21   1.52   [-40, 710], |x| from 1e-300 to 1e30
    log       0.90   1.12   random bit patterns: denormals to max
    log1p     1.44   1.44   |x| from 1e-320 to 1, (-1, 1), up to 1e-15 above -1, bit patterns
    tanh      1.51   1.51   [-20, 20], |x| from 1e-300 to 1e30
    sigmoid   1.48   1.42   [-750, 750], |x| from 1e-300 to 1e30
    erf       1.67   1.37   [-8, 8], |x| from 1e-300 to 1e30
    sin, cos  0.50   1.48   f32: every |x| <= 1e7, sampled to 1e15; f64: |x| to 1e13 (3.7 ulp
                            at 1e15). Beyond |x| = 2^51 pi/2 (3.5e15, f32 too) the reduction
                            (Cody-Waite, no Payne-Hanek) fails: results stay within [-1, 1]
                            but are meaningless (docs/semantics.md says so for users)
    pow       0.51   1.28   f32 sampled too: bit-pattern bases with exponents giving in-range
                            results, negative bases with integer exponents, bases near 1 with
                            |y log x| up to 700
    atan2     0.50   1.47   coordinates from 1e-300 to 1e300 in every quadrant, and ratios
                            near the reduction's edges

Specials follow numpy / C99: NaN in gives NaN out, exp(+-inf) = inf / 0, log(0) = -inf,
log(x < 0) = NaN, expm1(-inf) = -1, log1p(-1) = -inf, expm1(-0) = log1p(-0) = -0,
tanh(+-inf) = +-1, sigmoid(+-inf) = 1 / 0, erf(+-inf) = +-1, sin/cos(inf) = NaN,
pow(x, 0) = pow(1, y) = 1 even for NaN, pow(-x, odd) < 0, pow(-x, non-integer) = NaN,
pow(+-0, y) and pow(+-inf, y) as in C99 (numpy's scalar-exponent fast path for y = 0.5 uses sqrt
and differs on -inf and -0), atan2 of signed zeros and infinities as in C99 (atan2(+-0, -0) =
+-pi, atan2(+-inf, -inf) = +-3pi/4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from llvmlite import ir

from graphc.backends.llvm.math_constants import (
    ATAN_HALF,
    LN2_HI42,
    LN2_LO42,
    PARAMS,
    PI,
    PI_2,
    PI_4,
    TWO_THIRDS,
    Params,
)

UNARY_FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "erf", "sin", "cos")
BINARY_FUNCTIONS = ("pow", "atan2")
DTYPES = ("f32", "f64")

# llvmlite has no type information, so these name what the emitters pass around.
Value: TypeAlias = ir.Value
Operand: TypeAlias = ir.Value | float


@dataclass(frozen=True, slots=True)
class _Format:
    """Bit layout of one IEEE binary format and the integer type of the same width."""

    name: str
    float_type: ir.Type
    int_type: ir.IntType
    mantissa_bits: int
    bias: int
    sqrt_half_bits: int  # bit pattern of sqrt(1/2) rounded to this format

    @property
    def width(self) -> int:
        """Return the number of bits in one value."""
        return self.int_type.width

    @property
    def one_bits(self) -> int:
        """Return the bit pattern of 1.0."""
        return self.bias << self.mantissa_bits

    @property
    def min_normal(self) -> float:
        """Return the smallest positive normal number."""
        return 2.0 ** (1 - self.bias)


F32 = _Format("f32", ir.FloatType(), ir.IntType(32), 23, 127, 0x3F3504F3)
F64 = _Format("f64", ir.DoubleType(), ir.IntType(64), 52, 1023, 0x3FE6A09E667F3BCD)
_FORMATS = {"f32": F32, "f64": F64}


class _Emitter:
    """An IRBuilder bound to one float format, with the operations the kernels are written in.

    Arithmetic methods accept Python floats for constants; comparisons are ordered (false on NaN).
    """

    def __init__(self, builder: ir.IRBuilder, fmt: _Format):
        self.b = builder
        self.fmt = fmt
        self.module = builder.module

    # constants and intrinsics
    def const(self, v: Operand) -> Value:
        """Return v as an IR value of this format (Python floats become constants)."""
        return ir.Constant(self.fmt.float_type, v) if isinstance(v, (int, float)) else v

    def iconst(self, v: int) -> ir.Constant:
        """Return an integer constant of this format's width."""
        return ir.Constant(self.fmt.int_type, v)

    def intrinsic(self, name: str, nargs: int) -> ir.Function:
        """Return the declaration of a float intrinsic on this format, declaring it once."""
        fty = self.fmt.float_type
        full = f"{name}.{self.fmt.name}"
        if full in self.module.globals:
            return self.module.globals[full]
        return ir.Function(self.module, ir.FunctionType(fty, [fty] * nargs), name=full)

    def call(self, name: str, *args: Operand) -> Value:
        """Call a float intrinsic such as llvm.fma on this format."""
        return self.b.call(self.intrinsic(name, len(args)), [self.const(a) for a in args])

    # arithmetic
    def add(self, a: Operand, b: Operand) -> Value:
        """Return a + b."""
        return self.b.fadd(self.const(a), self.const(b))

    def sub(self, a: Operand, b: Operand) -> Value:
        """Return a - b."""
        return self.b.fsub(self.const(a), self.const(b))

    def mul(self, a: Operand, b: Operand) -> Value:
        """Return a * b."""
        return self.b.fmul(self.const(a), self.const(b))

    def div(self, a: Operand, b: Operand) -> Value:
        """Return a / b."""
        return self.b.fdiv(self.const(a), self.const(b))

    def neg(self, a: Value) -> Value:
        """Return -a."""
        return self.b.fneg(a)

    def fma(self, a: Operand, b: Operand, c: Operand) -> Value:
        """Return a * b + c with one rounding."""
        return self.call("llvm.fma", a, b, c)

    def poly(self, x: Value, coeffs: tuple[float, ...]) -> Value:
        """Return sum(c[k] * x**k) by Horner's rule with fused multiply-adds."""
        acc = self.const(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, c)
        return acc

    def fabs(self, a: Value) -> Value:
        """Return |a|."""
        return self.call("llvm.fabs", a)

    def copysign(self, mag: Value, sign: Value) -> Value:
        """Return |mag| with the sign of sign."""
        return self.call("llvm.copysign", mag, sign)

    def rint(self, a: Value) -> Value:
        """Return a rounded to the nearest integer, ties to even."""
        return self.call("llvm.rint", a)

    def floor(self, a: Value) -> Value:
        """Return floor(a)."""
        return self.call("llvm.floor", a)

    # comparisons and selection
    def lt(self, a: Operand, b: Operand) -> Value:
        """Return a < b (false if either is NaN)."""
        return self.b.fcmp_ordered("<", self.const(a), self.const(b))

    def gt(self, a: Operand, b: Operand) -> Value:
        """Return a > b (false if either is NaN)."""
        return self.b.fcmp_ordered(">", self.const(a), self.const(b))

    def eq(self, a: Operand, b: Operand) -> Value:
        """Return a == b (false if either is NaN)."""
        return self.b.fcmp_ordered("==", self.const(a), self.const(b))

    def is_nan(self, a: Value) -> Value:
        """Return whether a is NaN."""
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond: Value, a: Operand, b: Operand) -> Value:
        """Return cond ? a : b."""
        return self.b.select(cond, self.const(a), self.const(b))

    # bits
    def to_bits(self, a: Value) -> Value:
        """Return the bit pattern of a as an integer."""
        return self.b.bitcast(a, self.fmt.int_type)

    def from_bits(self, i: Value) -> Value:
        """Return the float whose bit pattern is i."""
        return self.b.bitcast(i, self.fmt.float_type)

    def to_int(self, a: Value) -> Value:
        """Return a (integral, within range) converted to an integer."""
        return self.b.fptosi(a, self.fmt.int_type)

    def pow2(self, n: Value) -> Value:
        """Return 2**n for an integer n within the normal exponent range."""
        biased = self.b.add(n, self.iconst(self.fmt.bias))
        return self.from_bits(self.b.shl(biased, self.iconst(self.fmt.mantissa_bits)))

    def ldexp(self, a: Value, n: Value) -> Value:
        """Return a * 2**n, rounding once, for |n| up to twice the exponent range."""
        half = self.b.ashr(n, self.iconst(1))
        rest = self.b.sub(n, half)
        return self.mul(self.mul(a, self.pow2(half)), self.pow2(rest))


# Kernels. Each takes an emitter and the format's parameters and returns the result value.


def _exp(
    e: _Emitter,
    p: Params,
    coeffs: tuple[float, ...],
    x: Value,
    x_lo: Value | None = None,
    flush: bool = False,
) -> Value:
    """Return exp(x + x_lo): x = n ln2 + r, exp(r) by polynomial, then scale by 2**n.

    With flush, x is clamped to where exp(x) is a normal number and the scaling is one multiply,
    for callers to which results below the smallest normal number make no difference.
    """
    lo, hi = p.exp_normal if flush else p.exp_clamp
    xc = e.select(e.lt(x, hi), x, hi)  # NaN becomes hi here and comes back at the end
    # Below lo exp is 0 (or, with flush, tiny): such lanes compute exp(lo), or exp(0) without
    # flush, since scaling into denormals costs x86 ~100x (a causal mask's -inf made a
    # masked softmax 7x slower), and come back as 0 at the end.
    under = e.lt(x, lo)
    xc = e.select(under, lo if flush else 0.0, xc)
    n = e.rint(e.mul(xc, 1.4426950408889634))
    r = e.fma(e.neg(n), p.ln2[0], xc)  # exact: n * ln2_hi is within a factor 2 of xc
    r = e.fma(e.neg(n), p.ln2[1], r)
    if x_lo is not None:
        r = e.add(r, x_lo)
    poly = e.add(e.fma(e.mul(r, r), e.poly(r, coeffs), r), 1.0)
    scale = e.mul(poly, e.pow2(e.to_int(n))) if flush else e.ldexp(poly, e.to_int(n))
    if not flush:
        scale = e.select(under, 0.0, scale)
    return e.select(e.is_nan(x), x, scale)


def _log_reduce(e: _Emitter, x: Value) -> tuple[Value, Value]:
    """Return (k, f) as floats with x = 2**k * (1 + f) and sqrt(1/2) <= 1 + f < sqrt(2)."""
    fmt = e.fmt
    tiny = e.lt(x, fmt.min_normal)
    scaled = e.select(tiny, e.mul(x, 2.0**fmt.mantissa_bits), x)
    # Offsetting the bits by 1 - sqrt(1/2) makes the exponent field step at sqrt(2), not 2.
    bits = e.b.add(e.to_bits(scaled), e.iconst(fmt.one_bits - fmt.sqrt_half_bits))
    k = e.b.sub(e.b.ashr(bits, e.iconst(fmt.mantissa_bits)), e.iconst(fmt.bias))
    k = e.b.sub(k, e.b.select(tiny, e.iconst(fmt.mantissa_bits), e.iconst(0)))
    mantissa = e.b.and_(bits, e.iconst((1 << fmt.mantissa_bits) - 1))
    m = e.from_bits(e.b.add(mantissa, e.iconst(fmt.sqrt_half_bits)))
    return e.b.sitofp(k, fmt.float_type), e.sub(m, 1.0)


def _log_specials(e: _Emitter, x: Value, y: Value) -> Value:
    """Return y patched with log's specials: log(inf) = inf, log(+-0) = -inf, log(x < 0) = NaN."""
    y = e.select(e.eq(x, math.inf), math.inf, y)
    y = e.select(e.eq(x, 0.0), -math.inf, y)
    return e.select(e.b.fcmp_unordered("<", x, e.const(0.0)), math.nan, y)


def _log_finite(e: _Emitter, p: Params, coeffs: tuple[float, ...], x: Value) -> Value:
    """Return log(x) for finite x > 0: k ln2 + log(1 + f), log(1 + f) = 2 atanh(f / (2 + f))."""
    k, f = _log_reduce(e, x)
    s = e.div(f, e.add(f, 2.0))
    z = e.mul(s, s)
    tail = e.mul(z, e.poly(z, coeffs))
    half_f2 = e.mul(e.mul(f, f), 0.5)
    log1p = e.sub(f, e.sub(half_f2, e.mul(s, e.add(half_f2, tail))))
    return e.fma(k, p.ln2[0], e.fma(k, p.ln2[1], log1p))


def _log(e: _Emitter, p: Params, coeffs: tuple[float, ...], x: Value) -> Value:
    """Return log(x) with its specials."""
    return _log_specials(e, x, _log_finite(e, p, coeffs, x))


def _log1p(e: _Emitter, p: Params, x: Value) -> Value:
    """Return log(1 + x): log(u) for u = 1 + x rounded, plus c / u for the rounding error
    c = (1 + x) - u (exact, by two-sum), which is all of the result when |x| is tiny."""
    u = e.add(x, 1.0)
    v = e.sub(u, 1.0)
    c = e.add(e.sub(1.0, e.sub(u, v)), e.sub(x, v))
    y = e.add(_log_finite(e, p, p.log, u), e.div(c, u))
    y = e.select(e.eq(x, 0.0), x, y)  # log1p(-0) = -0
    y = _log_specials(e, u, y)  # x = inf, x = -1, x < -1
    return e.select(e.is_nan(x), x, y)


def _expm1(e: _Emitter, p: Params, x: Value) -> Value:
    """Return exp(x) - 1 without cancellation: x = n ln2 + r, expm1(r) = r + r^2 P(r) (exp's
    polynomial without its 1), then expm1(x) = 2^n expm1(r) + (2^n - 1) summed exactly."""
    lo, hi = p.exp_normal
    xc = e.select(e.gt(x, lo), x, lo)  # below lo, -1 after rounding; NaN is patched at the end
    xc = e.select(e.lt(xc, p.exp_clamp[1]), xc, p.exp_clamp[1])
    n = e.rint(e.mul(xc, 1.4426950408889634))
    r = e.fma(e.neg(n), p.ln2[0], xc)  # exact: n * ln2_hi is within a factor 2 of xc
    r = e.fma(e.neg(n), p.ln2[1], r)
    # expm1(r) = em1 + em1_lo: the sum r + r^2 P(r) kept unrounded, since 2^n - 1 may cancel
    # most of 2^n expm1(r) (n = -1, 1)
    q = e.mul(e.mul(r, r), e.poly(r, p.exp))
    em1 = e.add(r, q)
    em1_lo = e.add(e.sub(r, em1), q)
    k = e.to_int(n)
    scale = e.pow2(k)  # a normal number while x <= hi
    # (2^n - 1) + 2^n em1 as a rounded sum and its exact error (two-sum), then the small terms
    a, b = e.sub(scale, 1.0), e.mul(scale, em1)
    total = e.add(a, b)
    b_part = e.sub(total, a)
    error = e.add(e.sub(a, e.sub(total, b_part)), e.sub(b, b_part))
    y = e.add(total, e.fma(scale, em1_lo, error))
    # beyond hi, 2^n may overflow alone and the -1 no longer shows: scale like exp does
    y = e.select(e.gt(x, hi), e.ldexp(e.add(em1, 1.0), k), y)
    y = e.select(e.eq(x, 0.0), x, y)  # expm1(-0) = -0
    return e.select(e.is_nan(x), x, y)


def _tanh(e: _Emitter, p: Params, x: Value) -> Value:
    """Return tanh(x): an odd polynomial near 0, (1 - t) / (1 + t) with t = exp(-2|x|) beyond."""
    ax = e.fabs(x)
    z = e.mul(ax, ax)
    small = e.fma(ax, e.mul(z, e.poly(z, p.tanh)), ax)
    t = _exp(e, p, p.exp, e.mul(ax, -2.0), flush=True)
    large = e.div(e.sub(1.0, t), e.add(1.0, t))
    return e.copysign(e.select(e.lt(ax, p.tanh_split), small, large), x)


def _sigmoid(e: _Emitter, p: Params, x: Value) -> Value:
    """Return 1 / (1 + exp(-x)) as 1 / (1 + t) or t / (1 + t), t = exp(-|x|) <= 1."""
    t = _exp(e, p, p.exp, e.neg(e.fabs(x)))
    num = e.select(e.lt(x, 0.0), t, 1.0)
    d = e.add(t, 1.0)
    d_lo = e.sub(t, e.sub(d, 1.0))  # 1 + t = d + d_lo exactly
    inv = e.div(1.0, d)
    y = e.mul(num, inv)
    # one Newton step on the exact denominator removes the rounding of d and of the quotient
    rem = e.fma(e.neg(y), d_lo, e.fma(e.neg(y), d, num))
    return e.fma(rem, inv, y)


def _erf(e: _Emitter, p: Params, x: Value) -> Value:
    """Return erf(x): an odd polynomial near 0, 1 - exp(-x^2) Q(1 / (1 + x)) beyond."""
    ax = e.fabs(x)
    small = e.fma(ax, e.poly(e.mul(ax, ax), p.erf_small), ax)
    xc = e.select(e.lt(ax, p.erf_clamp), ax, p.erf_clamp)
    q = e.poly(e.sub(e.div(1.0, e.add(xc, 1.0)), p.erf_center), p.erf_large)
    x2 = e.mul(xc, xc)
    x2_lo = e.fma(xc, xc, e.neg(x2))  # exp(-x2 - x2_lo) = exp(-x2) * (1 - x2_lo)
    ex = _exp(e, p, p.exp, e.neg(x2), flush=True)
    large = e.fma(e.neg(e.fma(e.neg(ex), x2_lo, ex)), q, 1.0)
    y = e.copysign(e.select(e.lt(ax, p.erf_split), small, large), x)
    return e.select(e.is_nan(x), x, y)


def _sin_cos(e: _Emitter, p: Params, x: Value, cosine: bool) -> Value:
    """Return sin(x) or cos(x); f32 computes in f64, for accuracy and a wider range."""
    if e.fmt is F32:
        wide = _Emitter(e.b, F64)
        pio2 = PARAMS["f64"].pio2
        y = _sin_cos_core(wide, pio2, p.sin, p.cos, e.b.fpext(x, F64.float_type), cosine)
        return e.b.fptrunc(y, F32.float_type)
    return _sin_cos_core(e, p.pio2, p.sin, p.cos, x, cosine)


def _sin_cos_core(
    e: _Emitter,
    pio2: tuple[float, ...],
    sin_coeffs: tuple[float, ...],
    cos_coeffs: tuple[float, ...],
    x: Value,
    cosine: bool,
) -> Value:
    """Return sin(x) or cos(x): |x| = n pi/2 + r, then +-sin(r) or +-cos(r) by quadrant."""
    ax = e.fabs(x)
    # Adding 2^mantissa_bits rounds |x| 2/pi to an integer n and leaves n's low bits in t's bits.
    shifter = 2.0**e.fmt.mantissa_bits
    t = e.fma(ax, 0.6366197723675814, shifter)
    n = e.sub(t, shifter)
    r = ax
    for part in pio2:  # the first step is exact, so r keeps its relative accuracy
        r = e.fma(e.neg(n), part, r)
    # Where n is no longer exact (|x| 2/pi > 2^51) r is meaningless: keep the result in [-1, 1].
    r = e.select(e.lt(e.fabs(r), 1.0), r, 0.0)
    z = e.mul(r, r)
    sin_r = e.fma(e.mul(r, z), e.poly(z, sin_coeffs), r)
    cos_r = e.fma(z, e.fma(z, e.poly(z, cos_coeffs), -0.5), 1.0)
    quadrant = e.to_bits(t)
    if cosine:
        quadrant = e.b.add(quadrant, e.iconst(1))
    odd = e.b.icmp_unsigned("!=", e.b.and_(quadrant, e.iconst(1)), e.iconst(0))
    v = e.select(odd, cos_r, sin_r)
    # quadrants 2 and 3 negate: move bit 1 of the quadrant into the sign bit
    sign = e.b.shl(e.b.and_(quadrant, e.iconst(2)), e.iconst(e.fmt.width - 2))
    if not cosine:  # sin is odd
        sign = e.b.xor(sign, e.b.and_(e.to_bits(x), e.iconst(1 << (e.fmt.width - 1))))
    v = e.from_bits(e.b.xor(e.to_bits(v), sign))
    return e.select(e.b.fcmp_unordered("==", ax, e.const(math.inf)), math.nan, v)


def _log_double_double(e: _Emitter, p: Params, x: Value) -> tuple[Value, Value]:
    """Return log(x) as hi + lo, accurate to about 2^-64 relative, for f64 pow."""
    k, f = _log_reduce(e, x)
    # s = f / (2 + f) as s + s_lo: d = 2 + f is d + d_lo exactly, the remainder by fma.
    d = e.add(f, 2.0)
    d_lo = e.sub(f, e.sub(d, 2.0))
    s = e.div(f, d)
    s_lo = e.div(e.fma(e.neg(s), d_lo, e.fma(e.neg(s), d, f)), d)
    # log(1 + f) = 2s + (2/3) s^3 + s^5 P(s^2), the s^3 term also as a double-double
    z = e.mul(s, s)
    z_lo = e.fma(s, s, e.neg(z))
    s3 = e.mul(s, z)
    s3_lo = e.fma(s, z_lo, e.fma(s, z, e.neg(s3)))
    lead = e.mul(s3, TWO_THIRDS[0])
    lead_lo = e.fma(s3, TWO_THIRDS[0], e.neg(lead))
    lead_lo = e.fma(s3_lo, TWO_THIRDS[0], e.fma(s3, TWO_THIRDS[1], lead_lo))
    rest = e.mul(e.mul(s3, z), e.poly(z, p.pow_log))
    # corrections of order s_lo: d(2s + (2/3)s^3) = (2 + 2 s^2) ds
    small = e.add(e.add(lead_lo, rest), e.fma(e.mul(z, 2.0), s_lo, e.add(s_lo, s_lo)))
    two_s = e.add(s, s)
    hi = e.add(two_s, lead)
    lo = e.add(e.add(e.sub(two_s, hi), lead), small)
    # add k ln2, whose high part is exact
    k_hi = e.mul(k, LN2_HI42)
    total = e.add(k_hi, hi)
    lo = e.add(e.add(e.sub(k_hi, total), hi), e.fma(k, LN2_LO42, lo))
    # renormalise, so that y * hi alone picks exp's reduction interval
    hi = e.add(total, lo)
    lo = e.sub(lo, e.sub(hi, total))
    return _log_specials(e, x, hi), lo


def _pow_specials(e: _Emitter, x: Value, y: Value, r: Value) -> Value:
    """Return r = |x|**y patched with the sign and the special cases of C99 pow."""
    y_int = e.eq(e.floor(y), y)  # true for +-inf
    half = e.mul(y, 0.5)
    y_odd = e.b.and_(y_int, e.b.fcmp_unordered("!=", e.floor(half), half))
    x_negative = e.b.icmp_signed("<", e.to_bits(x), e.iconst(0))  # also -0 and -inf
    r = e.select(e.b.and_(x_negative, y_odd), e.neg(r), r)
    finite_negative = e.b.and_(e.lt(x, 0.0), e.gt(x, -math.inf))
    r = e.select(e.b.and_(finite_negative, e.b.not_(y_int)), math.nan, r)
    unit = e.b.and_(e.eq(e.fabs(x), 1.0), e.eq(e.fabs(y), math.inf))  # (-1) ** inf = 1
    r = e.select(e.b.or_(unit, e.eq(x, 1.0)), 1.0, r)
    return e.select(e.eq(y, 0.0), 1.0, r)


def _pow(e: _Emitter, p: Params, x: Value, y: Value) -> Value:
    """Return x ** y = exp(y log|x|) with C99 specials; f32 computes in f64."""
    if e.fmt is F32:
        wide = _Emitter(e.b, F64)
        ax = e.b.fpext(e.fabs(x), F64.float_type)
        log_ax = _log(wide, PARAMS["f64"], p.pow_log, ax)
        prod = wide.mul(e.b.fpext(y, F64.float_type), log_ax)
        r = _exp(wide, PARAMS["f64"], p.pow_exp, prod, flush=True)  # f32 over/underflows first
        r = e.b.fptrunc(r, F32.float_type)
        return _pow_specials(e, x, y, r)
    hi, lo = _log_double_double(e, p, e.fabs(x))
    prod = e.mul(y, hi)
    prod_lo = e.fma(y, lo, e.fma(y, hi, e.neg(prod)))
    # beyond 1024 exp clamps prod, and prod_lo (maybe inf - inf) must not move it back
    prod_lo = e.select(e.lt(e.fabs(prod), 1024.0), prod_lo, 0.0)
    return _pow_specials(e, x, y, _exp(e, p, p.exp, prod, prod_lo))


def _atan2(e: _Emitter, p: Params, y: Value, x: Value) -> Value:
    """Return the angle of (x, y) in [-pi, pi] with C99's specials; f32 computes in f64."""
    if e.fmt is F32:
        wide = _Emitter(e.b, F64)
        widened = (e.b.fpext(v, F64.float_type) for v in (y, x))
        return e.b.fptrunc(_atan2_core(wide, p.atan, *widened), F32.float_type)
    return _atan2_core(e, p.atan, y, x)


def _atan2_core(e: _Emitter, coeffs: tuple[float, ...], y: Value, x: Value) -> Value:
    """Return atan2(y, x): atan(a) for a = min(|x|, |y|) / max(|x|, |y|) in [0, 1], then the
    octant and quadrant. Above a = 7/16, atan(a) = atan(b) + atan((a - b) / (1 + a b)) with
    b = 1/2 or 1 (above 11/16), so the reduced argument stays below 0.19 and nothing cancels."""
    ax, ay = e.fabs(x), e.fabs(y)
    swap = e.gt(ay, ax)
    num, den = e.select(swap, ax, ay), e.select(swap, ay, ax)
    a = e.div(num, den)
    upper, middle = e.gt(a, 0.6875), e.gt(a, 0.4375)
    b = e.select(upper, 1.0, e.select(middle, 0.5, 0.0))
    t = e.div(e.sub(a, b), e.fma(a, b, 1.0))  # t = a when b = 0; a - b is exact otherwise
    z = e.mul(t, t)
    r = e.fma(e.mul(t, z), e.poly(z, coeffs), t)
    base_hi = e.select(upper, PI_4[0], e.select(middle, ATAN_HALF[0], 0.0))
    base_lo = e.select(upper, PI_4[1], e.select(middle, ATAN_HALF[1], 0.0))
    r = e.add(e.add(r, base_lo), base_hi)
    r = e.select(e.eq(den, 0.0), 0.0, r)  # both zero: 0/0
    r = e.select(e.eq(num, math.inf), PI_4[0], r)  # both infinite: inf/inf
    r = e.select(swap, e.add(e.sub(PI_2[0], r), PI_2[1]), r)
    x_negative = e.b.icmp_signed("<", e.to_bits(x), e.iconst(0))  # also -0 and -inf
    r = e.select(x_negative, e.add(e.sub(PI[0], r), PI[1]), r)
    result = e.copysign(r, y)
    either_nan = e.b.or_(e.is_nan(x), e.is_nan(y))
    return e.select(either_nan, e.add(x, y), result)


_KERNELS: dict[str, Callable[..., Value]] = {
    "exp": lambda e, p, x: _exp(e, p, p.exp, x),
    "expm1": _expm1,
    "log": lambda e, p, x: _log(e, p, p.log, x),
    "log1p": _log1p,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "erf": _erf,
    "sin": lambda e, p, x: _sin_cos(e, p, x, cosine=False),
    "cos": lambda e, p, x: _sin_cos(e, p, x, cosine=True),
    "pow": _pow,
    "atan2": _atan2,
}


def function_name(name: str, dtype: str) -> str:
    """Return the IR symbol of a math function, e.g. graphc_exp_f32."""
    return f"graphc_{name}_{dtype}"


def math_function(module: ir.Module, name: str, dtype: str) -> ir.Function:
    """Return the call-free, always-inlined IR function for name on dtype, defining it once.

    name is one of UNARY_FUNCTIONS (one argument) or BINARY_FUNCTIONS (two); dtype is f32 or
    f64. The function has internal linkage: it disappears once inlined into its callers.
    """
    if name not in _KERNELS:
        raise ValueError(f"unknown math function {name!r}; expected one of {sorted(_KERNELS)}")
    if dtype not in _FORMATS:
        raise ValueError(f"unsupported dtype {dtype!r} for {name}; expected f32 or f64")
    symbol = function_name(name, dtype)
    if symbol in module.globals:
        return module.globals[symbol]
    fmt = _FORMATS[dtype]
    arity = 2 if name in BINARY_FUNCTIONS else 1
    fn = ir.Function(module, ir.FunctionType(fmt.float_type, [fmt.float_type] * arity), symbol)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    for arg, arg_name in zip(fn.args, ("x", "y"), strict=False):
        arg.name = arg_name
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(_KERNELS[name](_Emitter(builder, fmt), PARAMS[dtype], *fn.args))
    return fn
