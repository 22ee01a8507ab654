"""Special functions: erf, erfc, erfinv, nan_to_num, lgamma, digamma, polygamma, mvlgamma,
entr (numpy has none of the gamma or error functions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import gamma_functions as _gamma
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special import erf as _erf

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_SQRT_PI = math.sqrt(math.pi)
# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011): a starting point
# good to ~4e-7 relative (less far beyond |x| = 1 - 6e-8, where it extrapolates).
_GILES_CENTRAL = (
    2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
    -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
)  # fmt: skip
_GILES_TAIL = (
    -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
    -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
)  # fmt: skip
# Below |y| = 1.5 one Halley step on erf (cubic: 4e-7 -> round-off) refines the start; erf's
# slope there is at least 0.12, so float64 erf's round-off moves y by ~1e-15 relative.
# Beyond it, Newton on log(erfc(y)) = log(1 - |x|) (exact there), to convergence.
_HALLEY_UNTIL = 1.5
# erf(y) = 2/sqrt(pi) * y * sum_n c_n y^(2n), c_n = (-1)^n / (n! (2n + 1)): at |y| <= 1.5
# the 28th term is below 1e-20.
_ERF_TAYLOR = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(28))
_FRACTION_DEPTH = 80  # erfc's continued fraction, converged to round-off for y >= 1.5
_TAIL_STEPS = 12  # Newton's quadratic convergence needs ~5 from the worst start


def _polynomial(coefficients: tuple, w: Any) -> Any:
    result = coefficients[0] + 0 * w
    for c in coefficients[1:]:
        result = result * w + c
    return result


def _erf_central(y: Any) -> Any:
    """float64 erf for |y| <= 1.5 by its Taylor series, in Horner form (in place)."""
    square = y * y
    total = _ERF_TAYLOR[-1] + 0 * square
    for c in _ERF_TAYLOR[-2::-1]:
        total *= square
        total += c
    total *= y
    total *= _TWO_OVER_SQRT_PI
    return total


def _erfinv_tail(x: Any, start: Any) -> Any:
    """erfinv for the few ``x`` with |erfinv(x)| >= 1.5: Newton on log(erfc), whose slope is
    ``-2F`` with ``erfc(a) = exp(-a^2) / (sqrt(pi) F(a))`` (F by its continued fraction)."""
    xp = get_array_module(x)
    log_c = xp.log(1.0 - xp.abs(x))  # 1 - |x| is exact: |x| > 0.96
    a = xp.maximum(xp.abs(start), _HALLEY_UNTIL)
    for _ in range(_TAIL_STEPS):
        fraction = a.copy()
        for k in range(_FRACTION_DEPTH, 0, -1):
            fraction = a + (k / 2) / fraction
        step = (-(a * a) - xp.log(_SQRT_PI * fraction) - log_c) / (2 * fraction)
        a = a + step
        if not bool((xp.abs(step) > 1e-16 * a).any()):  # one host sync a step, on few values
            break
    return xp.copysign(a, x)


def erfinv_array(x: Any) -> Any:
    """The inverse error function of a float array, computed in float64 (±inf at ±1, NaN
    beyond; float64 to a few ulp, ~1e-15 relative, float32 to half an ulp); the result has
    ``x``'s dtype."""
    xp = get_array_module(x)
    y64 = x.astype(np.float64).reshape(-1)
    inside = xp.abs(y64) < 1
    safe = xp.where(inside, y64, 0.0)
    w = -xp.log((1.0 - safe) * (1.0 + safe))
    central = _polynomial(_GILES_CENTRAL, w - 2.5)
    tail = _polynomial(_GILES_TAIL, xp.sqrt(xp.maximum(w, 5.0)) - 3.0)
    start = xp.where(w < 5.0, central, tail) * safe
    # Halley: u = f / f' with f = erf(y) - x; y -= u / (1 - u f'' / (2 f')) = u / (1 + y u).
    y = xp.clip(start, -_HALLEY_UNTIL, _HALLEY_UNTIL)
    u = (_erf_central(y) - safe) / (_TWO_OVER_SQRT_PI * xp.exp(-y * y))
    y = y - u / (1.0 + y * u)
    far = xp.flatnonzero(xp.abs(start) >= _HALLEY_UNTIL)  # 1 - |x| < 0.034: few elements
    if far.size:
        y[far] = _erfinv_tail(safe[far], start[far])
    edge = xp.where(xp.abs(y64) == 1, xp.copysign(np.inf, y64), np.nan)
    return xp.where(inside, y, edge).astype(x.dtype, copy=False).reshape(x.shape)


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


# ---- the gamma family and torch.special's elementwise functions -------------------------
class Lgamma(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return _gamma.lgamma(x)

    def backward(self, grad: Any) -> tuple:
        return (grad * _gamma.digamma(self.x).astype(grad.dtype, copy=False),)


class Digamma(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return _gamma.digamma(x)

    def backward(self, grad: Any) -> tuple:
        return (grad * _gamma.polygamma(1, self.x).astype(grad.dtype, copy=False),)


class Polygamma(Op):
    reads_inputs = True

    def forward(self, x: Any, n: int) -> Any:
        self.x, self.n = x, n
        return _gamma.polygamma(n, x)

    def backward(self, grad: Any) -> tuple:
        return (grad * _gamma.polygamma(self.n + 1, self.x).astype(grad.dtype, copy=False),)


class Entr(Op):
    reads_inputs = True

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        self.x = x
        with np.errstate(divide="ignore", invalid="ignore"):
            out = xp.where(x > 0, -x * xp.log(x), 0).astype(x.dtype, copy=False)
        return xp.where(x < 0, x.dtype.type(-np.inf), xp.where(xp.isnan(x), x, out))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = xp.where(self.x > 0, -xp.log(self.x) - 1, np.inf)  # -inf at 0: -(log 0)
            slope = xp.where(self.x < 0, np.nan, xp.where(self.x == 0, -np.inf, slope))
        return (grad * slope.astype(grad.dtype),)


def lgamma(input: Tensor) -> Tensor:
    """``log|Gamma(x)|``, elementwise (+inf at 0, -1, -2, ...); float64 to ~1e-15."""
    return Lgamma.apply(_float(input))


def digamma(input: Tensor) -> Tensor:
    """``d/dx lgamma(x)``, elementwise: -inf at 0, NaN at the negative integers."""
    return Digamma.apply(_float(input))


def polygamma(n: int, input: Tensor) -> Tensor:
    """The ``n``-th derivative of digamma (``n >= 1``; ``n = 0`` is digamma).

    Raises:
        ValueError: ``n`` is negative or not an int.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"polygamma: n must be a non-negative int, got {n!r}")
    if n == 0:
        return digamma(input)
    return Polygamma.apply(_float(input), n=int(n))


def mvlgamma(input: Tensor, p: int) -> Tensor:
    """The multivariate log-gamma of dimension ``p``:
    ``p (p - 1) / 4 log(pi) + sum_i lgamma(x - i / 2)``, i = 0 .. p-1.

    Raises:
        ValueError: ``p < 1`` or some element is at most ``(p - 1) / 2``.
    """
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"mvlgamma: p must be an int >= 1, got {p!r}")
    input = _float(input)
    if not bool((input > (p - 1) / 2).all()):
        raise ValueError(f"mvlgamma: all elements must be greater than (p-1)/2 = {(p - 1) / 2}")
    total = lgamma(input)
    for i in range(1, p):
        total = total + lgamma(input - i / 2)
    return total + p * (p - 1) / 4 * math.log(math.pi)


def entr(input: Tensor) -> Tensor:
    """``-x log(x)`` elementwise: 0 at 0, -inf for x < 0."""
    return Entr.apply(_float(input))


__all__ += ["digamma", "entr", "lgamma", "mvlgamma", "polygamma"]
