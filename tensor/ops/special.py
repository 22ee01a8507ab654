"""Special functions: erf, erfinv, nan_to_num (numpy has no erf or erfinv)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special import erf as _erf

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011): a starting point
# good to ~4e-7 relative, which two Newton steps take to round-off.
_GILES_CENTRAL = (
    2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
    -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
)  # fmt: skip
_GILES_TAIL = (
    -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
    -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
)  # fmt: skip
_NEWTON_STEPS = 2
_TAIL_FROM = 3.0
_FRACTION_DEPTH = 40  # erfc's continued fraction, converged to round-off for a >= 3
_SQRT_PI = math.sqrt(math.pi)


def _polynomial(coefficients: tuple, w: Any) -> Any:
    result = coefficients[0] + 0 * w
    for c in coefficients[1:]:
        result = result * w + c
    return result


def erfinv_array(x: Any) -> Any:
    """The inverse error function of a float array, computed in float64 (±inf at ±1, NaN
    beyond; to ~1e-14); the result has ``x``'s dtype."""
    xp = get_array_module(x)
    y64 = x.astype(np.float64)
    inside = xp.abs(y64) < 1
    safe = xp.where(inside, y64, 0.0)
    w = -xp.log((1.0 - safe) * (1.0 + safe))
    central = _polynomial(_GILES_CENTRAL, w - 2.5)
    tail = _polynomial(_GILES_TAIL, xp.sqrt(xp.maximum(w, 5.0)) - 3.0)
    y = xp.where(w < 5.0, central, tail) * safe
    # Newton steps on erf where its slope is large enough for float64 erf's ~1e-16 absolute
    # error to pin y down; beyond |y| = 3, on log(erfc) (1 - |x| is exact there).
    a = xp.abs(y)
    central = a < _TAIL_FROM
    for _ in range(_NEWTON_STEPS):
        step = (_erf(y) - safe) / (_TWO_OVER_SQRT_PI * xp.exp(-y * y))
        y = xp.where(central, y - step, y)
    a = xp.maximum(a, _TAIL_FROM)
    log_c = xp.log(1.0 - xp.abs(safe))
    for _ in range(_NEWTON_STEPS + 1):
        fraction = a.copy()  # erfc(a) = exp(-a^2) / (sqrt(pi) * fraction)
        for k in range(_FRACTION_DEPTH, 0, -1):
            fraction = a + (k / 2) / fraction
        a = a + (-(a * a) - xp.log(_SQRT_PI * fraction) - log_c) / (2 * fraction)
    y = xp.where(central, y, xp.copysign(a, safe))
    edge = xp.where(xp.abs(y64) == 1, xp.copysign(np.inf, y64), np.nan)
    return xp.where(inside, y, edge).astype(x.dtype, copy=False)


class Erf(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return _erf(x)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return (grad * (_TWO_OVER_SQRT_PI * xp.exp(-self.x * self.x)).astype(grad.dtype),)


class Erfinv(Op):
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.out = erfinv_array(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        slope = (math.sqrt(math.pi) / 2) * xp.exp(self.out * self.out)
        return (grad * slope.astype(grad.dtype),)


class NanToNum(Op):
    reads_inputs = True

    def forward(self, x: Any, nan: float, posinf: float | None, neginf: float | None) -> Any:
        self.x = x
        xp = get_array_module(x)
        return xp.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    def backward(self, grad: Any) -> tuple:
        # Replaced elements are constants: their gradient is zero, as in PyTorch.
        return (grad * get_array_module(grad).isfinite(self.x),)


def _float(x: Tensor) -> Tensor:
    return x if x._array.dtype.kind == "f" else x.float()


def erf(input: Tensor) -> Tensor:
    """The error function, elementwise (float64 to ~2e-15, float32 to ~5e-7 absolute)."""
    return Erf.apply(_float(input))


def erfinv(input: Tensor) -> Tensor:
    """The inverse error function, elementwise: ±inf at ±1, NaN outside [-1, 1]."""
    return Erfinv.apply(_float(input))


def nan_to_num(
    input: Tensor, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
) -> Tensor:
    """NaN → ``nan``, +inf → ``posinf``, -inf → ``neginf`` (the dtype's largest and
    lowest finite values by default); the gradient is zero at the replaced elements."""
    if input._array.dtype.kind != "f":
        return input.clone()
    return NanToNum.apply(input, nan=nan, posinf=posinf, neginf=neginf)


__all__ = ["erf", "erfinv", "erfinv_array", "nan_to_num"]
