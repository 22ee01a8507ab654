"""More elementwise math of one input: log2, log10, exp2, erfc, sinc, logit, frac,
deg2rad, rad2deg, and the gradient-free tests signbit, isposinf, isneginf, isreal."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import quiet
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special import erf as _erf

_LN2 = math.log(2)
_LN10 = math.log(10)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_CONTINUED_FROM = 2.0  # erfc by its continued fraction from here (1 - erf loses digits)
_FRACTION_DEPTH = 60  # converged to float64 round-off at x = 2


class Log2(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.log2(x)

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
            return (grad / (self.x * _LN2),)


class Log10(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):
            return xp.log10(x)

    def backward(self, grad: Any) -> tuple:
        with quiet(get_array_module(grad)):
            return (grad / (self.x * _LN10),)


class Exp2(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        with quiet(xp):  # overflow to inf, silently
            self.out = xp.exp2(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return (grad * self.out * _LN2,)


# Numerical Recipes' erfcc (Chebyshev fit of erfc(z) = t exp(-z² + P(t)), t = 1 / (1 + z/2)):
# relative error below 1.2e-7 for every z >= 0, so tiny tails keep their digits in float32.
_ERFC_FIT = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def erfc_array(x: Any) -> Any:
    """``1 - erf(x)`` without its cancellation, in ``x``'s dtype. float64: 1 - erf (runtime's
    float64 erf) below 2 and the continued fraction ``exp(-x²) / sqrt(pi) / (x + (1/2) /
    (x + 1 / (x + (3/2) / ...)))`` from there. float32 and float16: the Chebyshev fit above,
    in float32 (about twenty elementwise passes)."""
    xp = get_array_module(x)
    if x.dtype != np.float64:
        z = xp.abs(x.astype(np.float32))
        t = 1 / (1 + np.float32(0.5) * z)
        poly = xp.full_like(t, _ERFC_FIT[-1])
        for coefficient in reversed(_ERFC_FIT[:-1]):
            poly = poly * t + np.float32(coefficient)
        # z² = h² + (z - h)(z + h) with h = z to 1/16: h² is exact in float32, so exp(-z²)
        # keeps its digits where z² is large (a rounded z² would cost 4e-6 at z = 8).
        h = xp.floor(z * 16) / 16
        with quiet(xp):  # exp underflows to 0 far out, as erfc does
            tail = t * xp.exp(-(h * h)) * xp.exp(poly - (z - h) * (z + h))
        tail = xp.where(xp.isinf(z), np.float32(0), tail)  # z - h is NaN at z = inf
        return xp.where(x < 0, 2 - tail, tail).astype(x.dtype, copy=False)
    with quiet(xp):
        near = 1.0 - _erf(x)
        large = xp.maximum(x, _CONTINUED_FROM)
        fraction = large.copy()
        for k in range(_FRACTION_DEPTH, 0, -1):
            fraction = large + (k / 2) / fraction
        far = xp.exp(-(large * large)) / (math.sqrt(math.pi) * fraction)
    return xp.where(x < _CONTINUED_FROM, near, far)


class Erfc(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return erfc_array(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return (grad * (-_TWO_OVER_SQRT_PI) * xp.exp(-(self.x * self.x)),)


class Sinc(Op):
    """``sin(pi x) / (pi x)``, 1 at 0; its derivative ``(cos(pi x) - sinc(x)) / x`` is 0
    there."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        xp = get_array_module(x)
        with quiet(xp):  # sinc(inf) is NaN, silently (numpy's sinc is Python: its own warning)
            self.out = xp.sinc(_wide(x)).astype(x.dtype, copy=False)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x = _wide(self.x)
        zero = x == 0
        safe = xp.where(zero, 1, x)
        with quiet(xp):
            slope = (xp.cos(math.pi * safe) - xp.sinc(safe)) / safe
        return (grad * xp.where(zero, 0, slope).astype(grad.dtype, copy=False),)


def _wide(x: Any) -> Any:
    """float16 computes in float32: ``pi * x`` in float16 loses the argument's digits."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


class Logit(Op):
    """``log(x / (1 - x))``, with ``x`` clamped to ``[eps, 1 - eps]`` when ``eps`` is given
    (its gradient is then 0 outside that range; without it NaN outside [0, 1], as PyTorch)."""

    reads_inputs = True

    def forward(self, x: Any, eps: float | None) -> Any:
        xp = get_array_module(x)
        self.x, self.eps = x, eps
        if eps is not None:
            x = xp.clip(x, eps, 1 - eps)
        with quiet(xp):
            return xp.log(x / (1 - x))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, eps = self.x, self.eps
        with quiet(xp):
            slope = grad / (x * (1 - x))
        if eps is None:
            outside = (x < 0) | (x > 1)
            return (xp.where(outside, xp.nan, slope).astype(grad.dtype, copy=False),)
        outside = (x < eps) | (x > 1 - eps)
        return (xp.where(outside, 0, slope).astype(grad.dtype, copy=False),)


def log2(input: Tensor) -> Tensor:
    """Elementwise base-2 logarithm."""
    return Log2.apply(_float(input))


def log10(input: Tensor) -> Tensor:
    """Elementwise base-10 logarithm."""
    return Log10.apply(_float(input))


def exp2(input: Tensor) -> Tensor:
    """Elementwise ``2**x``."""
    return Exp2.apply(_float(input))


def erfc(input: Tensor) -> Tensor:
    """Complementary error function ``1 - erf(x)``, accurate where it is tiny."""
    return Erfc.apply(_float(input))


def sinc(input: Tensor) -> Tensor:
    """Normalised sinc: ``sin(pi x) / (pi x)``, 1 at 0."""
    return Sinc.apply(_float(input))


def logit(input: Tensor, eps: float | None = None) -> Tensor:
    """``log(p / (1 - p))``; with ``eps``, ``p`` is first clamped to ``[eps, 1 - eps]``."""
    return Logit.apply(_float(input), eps=eps)


def frac(input: Tensor) -> Tensor:
    """The fractional part ``x - trunc(x)`` (sign of ``x``); the gradient passes through."""
    from dtrain._tensor.ops.unary import trunc

    if input._array.dtype.kind != "f":
        raise TypeError(
            f"frac: needs a floating-point tensor, got {input.dtype} (integers have no "
            "fractional part; use x.float() first)"
        )
    return input - trunc(input)


def deg2rad(input: Tensor) -> Tensor:
    """Degrees to radians."""
    return _float(input) * (math.pi / 180)


def rad2deg(input: Tensor) -> Tensor:
    """Radians to degrees."""
    return _float(input) * (180 / math.pi)


def signbit(input: Tensor) -> Tensor:
    """True where the sign bit is set (negative numbers and -0.0); no gradient."""
    return _bool(get_array_module(input._array).signbit(input._array), input._array)


def isposinf(input: Tensor) -> Tensor:
    """True where the element is +inf."""
    return _bool(input._array == math.inf, input._array)


def isneginf(input: Tensor) -> Tensor:
    """True where the element is -inf."""
    return _bool(input._array == -math.inf, input._array)


def isreal(input: Tensor) -> Tensor:
    """True everywhere: dtrain has no complex tensors."""
    return wrap(get_array_module(input._array).ones(input._array.shape, dtype=bool))


def _bool(result: Any, like: Any) -> Tensor:
    return wrap(get_array_module(like).asarray(result))  # a 0-d input gives a numpy scalar
