"""Elementwise math for generated code: the vectorisable polynomials of mathlib where
available, else the C library (correct, but a call per element does not vectorise)."""

from __future__ import annotations

from llvmlite import ir

try:
    from graphc.backends.llvm.mathlib import math_function as _polynomial
except ImportError:  # pragma: no cover - mathlib ships with the package
    _polynomial = None


def math_function(module: ir.Module, name: str, dtype: str) -> ir.Function:
    """Return the function computing `name` (one of mathlib.UNARY_FUNCTIONS or
    BINARY_FUNCTIONS: exp, expm1, log, log1p, tanh, sigmoid, erf, sin, cos, pow, atan2)."""
    if _polynomial is not None:
        return _polynomial(module, name, dtype)
    return _libm_function(module, name, dtype)


def _libm_function(module: ir.Module, name: str, dtype: str) -> ir.Function:
    ty = ir.FloatType() if dtype == "f32" else ir.DoubleType()
    if name == "sigmoid":
        return _sigmoid(module, ty, dtype)
    symbol = name + ("f" if dtype == "f32" else "")  # the C library's names
    if symbol in module.globals:
        return module.globals[symbol]
    arity = 2 if name in ("pow", "atan2") else 1
    return ir.Function(module, ir.FunctionType(ty, [ty] * arity), symbol)


def _sigmoid(module: ir.Module, ty: ir.Type, dtype: str) -> ir.Function:
    name = f"graphc_sigmoid_{dtype}"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ty, [ty]), name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    exp = _libm_function(module, "exp", dtype)
    # 1 / (1 + exp(-x)): exp overflows to inf for very negative x, giving exactly 0, not NaN.
    denominator = b.fadd(ir.Constant(ty, 1.0), b.call(exp, [b.fneg(fn.args[0])]))
    b.ret(b.fdiv(ir.Constant(ty, 1.0), denominator))
    return fn
