"""More elementwise math of two inputs: hypot, logaddexp, logaddexp2, copysign, fmax, fmin,
xlogy, float_power, ldexp, heaviside, nextafter, gcd, lcm, the bitwise functions, and the
NumPy-style aliases PyTorch also has (multiply, subtract, greater ...)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet, unbroadcast
from dtrain._tensor.ops.arithmetic import _promote, binary, div, mul, neg, pow, sub
from dtrain._tensor.ops.compare import bitwise, ge, gt, le, lt, ne
from dtrain._tensor.ops.trig import float_binary
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import DEFAULT_FLOAT

_LN2 = math.log(2)


def _shape(value: Any) -> tuple:
    return getattr(value, "shape", ())


class Hypot(Op):
    reads_inputs = True
    reads_output = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        self.out = get_array_module(a, b).hypot(a, b)
        return self.out

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        with quiet(get_array_module(grad)):  # 0/0 = NaN at the origin, as PyTorch
            scale = grad / self.out
        return (
            unbroadcast(scale * self.a, _shape(self.a)) if need_a else None,
            unbroadcast(scale * self.b, _shape(self.b)) if need_b else None,
        )


class LogAddExp(Op):
    """``log(e**a + e**b)`` without overflow."""

    reads_inputs = True
    base2 = False

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a, self.b = a, b
        return (xp.logaddexp2 if self.base2 else xp.logaddexp)(a, b)

    def backward(self, grad: Any) -> tuple:
        # PyTorch's form grad / (1 + e**(b - a)): no inf - inf where an input is +inf.
        need_a, need_b = self.needs_input_grad
        xp = get_array_module(grad)
        power = xp.exp2 if self.base2 else xp.exp
        with quiet(xp):  # e**(b - a) may overflow to inf: the share is then 0
            return (
                unbroadcast(grad / (1 + power(self.b - self.a)), _shape(self.a))
                if need_a
                else None,
                unbroadcast(grad / (1 + power(self.a - self.b)), _shape(self.b))
                if need_b
                else None,
            )


class LogAddExp2(LogAddExp):
    """``log2(2**a + 2**b)`` without overflow."""

    base2 = True


class Copysign(Op):
    """``|a|`` with the sign of ``b``; the gradient goes to ``a`` only (0 at a == 0), as
    PyTorch."""

    reads_inputs = True
    reads_output = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        self.out = get_array_module(a, b).copysign(a, b)
        return self.out

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        xp = get_array_module(grad)
        grad_a = grad_b = None
        if need_a:  # ``a`` is a tensor here (a Python number needs no gradient)
            a = self.a
            flip = xp.where(a == 0, 0, self.out / xp.where(a == 0, 1, a)).astype(grad.dtype)
            grad_a = unbroadcast(grad * flip, _shape(a))
        if need_b:  # zeros, as PyTorch (not None)
            grad_b = xp.zeros(_shape(self.b), dtype=grad.dtype)
        return grad_a, grad_b


class FMax(Op):
    """The larger value, the non-NaN one when one is NaN. The gradient goes to ``a`` where
    it wins or ties or ``b`` is NaN, else to ``b`` (PyTorch's rule)."""

    reads_inputs = True
    largest = True

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a, self.b = a, b
        return (xp.fmax if self.largest else xp.fmin)(a, b)

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        xp = get_array_module(grad)
        a, b = self.a, self.b
        a_wins = ((a >= b) if self.largest else (a <= b)) | xp.isnan(b)
        zero = xp.zeros((), dtype=grad.dtype)
        return (
            unbroadcast(xp.where(a_wins, grad, zero), _shape(a)) if need_a else None,
            unbroadcast(xp.where(a_wins, zero, grad), _shape(b)) if need_b else None,
        )


class FMin(FMax):
    """The smaller value, the non-NaN one when one is NaN (gradient as ``FMax``)."""

    largest = False


class Xlogy(Op):
    """``a * log(b)``, 0 where ``a == 0`` (unless ``b`` is NaN)."""

    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a, b)
        self.a, self.b = a, b
        with quiet(xp):
            out = a * _log(xp, b)
            return xp.where((a == 0) & ~xp.isnan(b), 0, out).astype(out.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        need_a, need_b = self.needs_input_grad
        xp = get_array_module(grad)
        a, b = self.a, self.b
        grad_a = grad_b = None
        with quiet(xp):
            if need_a:
                # PyTorch: xlogy(grad, b), with 0 where a == 0 and b <= 0.
                value = xp.where((grad == 0) & ~xp.isnan(b), 0, grad * _log(xp, b))
                value = xp.where((a == 0) & (b <= 0), 0, value).astype(grad.dtype, copy=False)
                grad_a = unbroadcast(value, _shape(a))
            if need_b:
                grad_b = unbroadcast(grad * a / b, _shape(b))
        return grad_a, grad_b


def _log(xp: Any, b: Any) -> Any:
    """``log(b)``; of a Python number, a Python float, so that it stays weak in promotion
    (``xp.log(2.0)`` is a float64 scalar, which would widen a float32 result)."""
    if isinstance(b, (int, float)):
        b = float(b)
        return math.log(b) if b > 0 else (-math.inf if b == 0 else math.nan)
    return xp.log(b)


def hypot(input: Tensor, other: Any) -> Tensor:
    """Elementwise ``sqrt(input**2 + other**2)`` without overflow, broadcasting."""
    return float_binary(Hypot, input, other)


def logaddexp(input: Tensor, other: Any) -> Tensor:
    """Elementwise ``log(exp(input) + exp(other))`` without overflow."""
    return float_binary(LogAddExp, input, other)


def logaddexp2(input: Tensor, other: Any) -> Tensor:
    """Elementwise ``log2(2**input + 2**other)`` without overflow."""
    return float_binary(LogAddExp2, input, other)


def copysign(input: Tensor, other: Any) -> Tensor:
    """``|input|`` with the sign of ``other`` (-0.0 counts as negative)."""
    return float_binary(Copysign, input, other)


def fmax(input: Tensor, other: Any) -> Tensor:
    """Elementwise maximum that ignores NaN (NaN only where both are NaN)."""
    return binary(FMax, input, other)


def fmin(input: Tensor, other: Any) -> Tensor:
    """Elementwise minimum that ignores NaN (NaN only where both are NaN)."""
    return binary(FMin, input, other)


def xlogy(input: Any, other: Any) -> Tensor:
    """Elementwise ``input * log(other)``, 0 where ``input`` is 0 (unless ``other`` is NaN)."""
    return float_binary(Xlogy, input, other)


def float_power(input: Any, exponent: Any) -> Tensor:
    """``input ** exponent`` computed in float64 (the result is float64), as PyTorch."""
    if isinstance(input, Tensor):
        input = input.to(np.float64)
    if isinstance(exponent, Tensor):
        exponent = exponent.to(np.float64)
    elif isinstance(exponent, (int, np.integer)) and not isinstance(exponent, bool):
        exponent = float(exponent)
    if not isinstance(input, Tensor):
        input = float(input)
    return pow(input, exponent)


def ldexp(input: Tensor, other: Any) -> Tensor:
    """``input * 2**other`` in the dtype both promote to (float32 when both are integers)."""
    if isinstance(other, Tensor):
        input, other = _promote(input, other)
        if input._array.dtype != other._array.dtype:  # two dimensioned (or two 0-d) dtypes
            common = np.result_type(input._array.dtype, other._array.dtype)
            input, other = input.to(common), other.to(common)
        if input._array.dtype.kind != "f":
            input, other = input.to(DEFAULT_FLOAT), other.to(DEFAULT_FLOAT)
    elif input._array.dtype.kind != "f":
        input = input.to(DEFAULT_FLOAT)
    return mul(input, pow(2.0, other))


def heaviside(input: Tensor, values: Any) -> Tensor:
    """The step function: 0 where ``input < 0``, ``values`` where it is 0, 1 where it is
    positive (also 0 at NaN, as PyTorch); no gradient."""
    if isinstance(values, Tensor) and values._array.dtype != input._array.dtype:
        raise TypeError(
            f"heaviside: input is {input.dtype} but values is {values.dtype}; give them the "
            "same dtype (e.g. values.to(input.dtype))"
        )
    x = input._array
    xp = get_array_module(x)
    v = values._array if isinstance(values, Tensor) else xp.asarray(values, dtype=x.dtype)
    return wrap(xp.asarray(xp.where(x == 0, v, (x > 0).astype(x.dtype))))


def nextafter(input: Tensor, other: Any) -> Tensor:
    """The next float after ``input`` toward ``other``; no gradient."""
    result = float_binary(_NextAfter, input, other)
    return result.detach()


class _NextAfter(Op):
    """Not differentiable: applied only to broadcast and promote like the other binary ops."""

    def forward(self, a: Any, b: Any) -> Any:
        return get_array_module(a, b).nextafter(a, b)

    def backward(self, grad: Any) -> tuple:
        raise RuntimeError("nextafter has no gradient")


def _integers(name: str, ufunc: str, input: Tensor, other: Any) -> Tensor:
    for value in (input, other):
        dtype = value._array.dtype if isinstance(value, Tensor) else np.dtype(type(value))
        if dtype.kind not in "biu":
            raise TypeError(f"{name}: needs integer (or bool) tensors, got {dtype!r}")
    if isinstance(other, Tensor):
        input, other = _promote(input, other)  # a 0-d tensor does not widen a vector
        a, b = input._array, other._array
        dtype = np.result_type(a.dtype, b.dtype)
    else:
        a, b = input._array, other
        dtype = a.dtype
    if dtype.kind == "b":
        dtype = np.dtype(np.int64)  # gcd(True, True) is 1, an integer, as PyTorch
    xp = get_array_module(a, b)
    a = a.astype(dtype, copy=False)
    if isinstance(b, bool):
        b = int(b)
    elif not isinstance(b, int):
        b = b.astype(dtype, copy=False)
    return wrap(xp.asarray(getattr(xp, ufunc)(a, b)).astype(dtype, copy=False))


def gcd(input: Tensor, other: Any) -> Tensor:
    """Elementwise greatest common divisor of integers (non-negative)."""
    return _integers("gcd", "gcd", input, other)


def lcm(input: Tensor, other: Any) -> Tensor:
    """Elementwise least common multiple of integers (non-negative)."""
    return _integers("lcm", "lcm", input, other)


def bitwise_and(input: Any, other: Any) -> Tensor:
    """Elementwise ``&`` of bool or integer tensors."""
    return bitwise("bitwise_and", input, other)


def bitwise_or(input: Any, other: Any) -> Tensor:
    """Elementwise ``|`` of bool or integer tensors."""
    return bitwise("bitwise_or", input, other)


def bitwise_xor(input: Any, other: Any) -> Tensor:
    """Elementwise ``^`` of bool or integer tensors."""
    return bitwise("bitwise_xor", input, other)


def bitwise_not(input: Tensor) -> Tensor:
    """Elementwise ``~`` of a bool or integer tensor."""
    return bitwise("invert", input)


def bitwise_left_shift(input: Any, other: Any) -> Tensor:
    """Elementwise ``<<`` of integer tensors."""
    return bitwise("left_shift", input, other)


def bitwise_right_shift(input: Any, other: Any) -> Tensor:
    """Elementwise ``>>`` (arithmetic) of integer tensors."""
    return bitwise("right_shift", input, other)


def positive(input: Tensor) -> Tensor:
    """``input`` itself (``+x``); a bool tensor is a TypeError, as PyTorch."""
    if input._array.dtype.kind == "b":
        raise TypeError("positive: not defined for bool tensors; use an integer or float dtype")
    return input


def true_divide(input: Any, other: Any) -> Tensor:
    """``div`` without a rounding mode."""
    return div(input, other)


def divide_(tensor: Tensor, other: Any, *, rounding_mode: str | None = None) -> Tensor:
    """In place: ``div`` (with ``rounding_mode``)."""
    from dtrain._tensor.ops.inplace_math import _inplace

    return _inplace(tensor, lambda t: div(t, other, rounding_mode=rounding_mode), "divide_", other)


def sgn(input: Tensor) -> Tensor:
    """The sign of each element (``sign`` for real tensors)."""
    from dtrain._tensor.ops.unary import sign

    return sign(input)


def absolute(input: Tensor) -> Tensor:
    """``abs``."""
    from dtrain._tensor.ops.unary import abs

    return abs(input)


def fix(input: Tensor) -> Tensor:
    """``trunc``: round toward zero."""
    from dtrain._tensor.ops.unary import trunc

    return trunc(input)


negative = neg
multiply = mul
divide = div
subtract = sub
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne
