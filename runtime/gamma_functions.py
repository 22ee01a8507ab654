"""The log-gamma function and its derivatives (digamma, polygamma), which numpy lacks.

Computed in float64 whatever the input's float dtype, and rounded to it (float32/float16 to
half an ulp of the float64 value; these are not per-activation functions, so the cheaper
float32 forms erf has would not pay for themselves). float64 is good to ~1e-15 relative
where the function is well conditioned (away from the zeros of lgamma at 1 and 2 and of
digamma at 1.4616..., where the error is ~1e-16 absolute instead).

- ``lgamma``: Lanczos (g = 607/128, 15 terms; Numerical Recipes 3rd ed. ``gammln``) for
  x >= 0.5, the reflection ``log(pi / |sin(pi x)|) - lgamma(1 - x)`` below.
- ``digamma`` and ``polygamma(n, x)``: the recurrence ``psi(x) = psi(x + 1) - 1 / x``
  moves x to at least ``_ASYMPTOTIC_FROM`` in a fixed number of vectorised steps, then the
  asymptotic (Bernoulli) series; reflection for x < 0.

Everything runs on numpy and cupy arrays alike, without boolean indexing or host reads.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module

_LANCZOS_G_PLUS_HALF = 5.24218750000000000  # g + 1/2, g = 607/128
_LANCZOS_FIRST = 0.999999999999997092
_LANCZOS = (
    57.1562356658629235, -59.5979603554754912, 14.1360979747417471, -0.491913816097620199,
    0.339946499848118887e-4, 0.465236289270485756e-4, -0.983744753048795646e-4,
    0.158088703224912494e-3, -0.210264441724104883e-3, 0.217439618115212643e-3,
    -0.164318106536763890e-3, 0.844182239838527433e-4, -0.261908384015814087e-4,
    0.368991826595316234e-5,
)  # fmt: skip
_SQRT_2PI = 2.5066282746310005
_ASYMPTOTIC_FROM = 10.0  # the Bernoulli series below has converged to ~1e-16 from here


def _bernoulli_numbers(count: int) -> list[Fraction]:
    """B_2, B_4, ..., B_2count (Akiyama–Tanigawa)."""
    size = 2 * count + 1
    row = [Fraction(0)] * size
    numbers = []
    for m in range(size):
        row[m] = Fraction(1, m + 1)
        for j in range(m, 0, -1):
            row[j - 1] = j * (row[j - 1] - row[j])
        if m >= 2 and m % 2 == 0:
            numbers.append(row[0])
    return numbers


_BERNOULLI = _bernoulli_numbers(12)  # B_2 .. B_24


def _as_float64(x: Any) -> Any:
    return x.astype(np.float64, copy=False)


def _sin_pi(x: Any) -> Any:
    """``sin(pi x)`` with the argument reduced exactly first (``pi * x`` loses the
    fractional part of a large ``x``)."""
    xp = get_array_module(x)
    reduced = x - 2.0 * xp.floor(x / 2.0)  # in [0, 2), exact in binary floating point
    return xp.sin(math.pi * reduced)


def _lgamma_lanczos(x: Any) -> Any:
    """lgamma for x >= 0.5 (any x > 0 works)."""
    xp = get_array_module(x)
    t = x + _LANCZOS_G_PLUS_HALF
    series = _LANCZOS_FIRST + 0 * x
    for k, c in enumerate(_LANCZOS, start=1):
        series = series + c / (x + k)
    return (x + 0.5) * xp.log(t) - t + xp.log(_SQRT_2PI * series / x)


def lgamma(x: Any) -> Any:
    """``log|Gamma(x)|`` of a float array (+inf at the poles 0, -1, -2, ... and at ±inf)."""
    xp = get_array_module(x)
    z = _as_float64(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        upper = _lgamma_lanczos(xp.maximum(z, 0.5))
        lower_arg = xp.minimum(z, 0.5)
        sine = xp.abs(_sin_pi(lower_arg))
        reflected = xp.log(math.pi / sine) - _lgamma_lanczos(1.0 - lower_arg)
        out = xp.where(z >= 0.5, upper, reflected)
        out = xp.where(xp.isinf(z) | ((z <= 0) & (z == xp.floor(z))), np.inf, out)
    return out.astype(x.dtype, copy=False)


def _shift_up(z: Any, order: int) -> tuple[Any, Any]:
    """``(z', s)`` with ``z' = z + k >= _ASYMPTOTIC_FROM`` for z >= 0 and ``s`` the sum of
    ``1 / (z + j) ** (order + 1)`` over the ``k`` steps (fixed count, vectorised)."""
    xp = get_array_module(z)
    total = xp.zeros_like(z)
    for _ in range(int(_ASYMPTOTIC_FROM)):
        below = z < _ASYMPTOTIC_FROM
        total = total + xp.where(below, 1.0 / z ** (order + 1), 0.0)
        z = xp.where(below, z + 1.0, z)
    return z, total


def _digamma_nonnegative(z: Any) -> Any:
    xp = get_array_module(z)
    z, total = _shift_up(z, 0)
    inverse_square = 1.0 / (z * z)
    series = get_array_module(z).zeros_like(z)
    for k in range(len(_BERNOULLI) - 1, -1, -1):  # sum_k B_2k / (2k z^2k), in Horner form
        series = (series + float(_BERNOULLI[k] / (2 * k + 2))) * inverse_square
    return xp.log(z) - 0.5 / z - series - total


def digamma(x: Any) -> Any:
    """``d/dx lgamma(x)`` of a float array: -inf at +0 and +inf at -0 (as PyTorch), NaN at
    the negative integers and at -inf."""
    xp = get_array_module(x)
    z = _as_float64(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        positive = _digamma_nonnegative(xp.maximum(z, 0.0))
        negative = xp.minimum(z, 0.0)  # psi(x) = psi(1 - x) - pi / tan(pi x)
        tangent = _sin_pi(negative) / _sin_pi(negative + 0.5)
        reflected = _digamma_nonnegative(1.0 - negative) - math.pi / tangent
        out = xp.where(z >= 0, positive, reflected)
        out = xp.where(z == 0, xp.copysign(np.inf, -z), out)
        out = xp.where((z < 0) & (z == xp.floor(z)), np.nan, out)
    return out.astype(x.dtype, copy=False)


def _polygamma_nonnegative(n: int, z: Any) -> Any:
    """psi^(n)(z), n >= 1, for z >= 0: ``(-1)^(n+1) n! zeta(n + 1, z)``."""
    z, total = _shift_up(z, n)
    # zeta(n+1, z) ~ z^-n / n + z^-(n+1) / 2 + sum_k B_2k (2k+n-1)! / ((2k)! n!) z^-(2k+n)
    inverse_square = 1.0 / (z * z)
    series = get_array_module(z).zeros_like(z)
    for k in range(len(_BERNOULLI), 0, -1):
        coefficient = _BERNOULLI[k - 1] * Fraction(
            math.factorial(2 * k + n - 1), math.factorial(2 * k) * math.factorial(n)
        )
        series = (series + float(coefficient)) * inverse_square
    zeta = z**-n * (1.0 / n + 0.5 / z + series) + total
    return (-1.0) ** (n + 1) * math.factorial(n) * zeta


def _cot_derivative_polynomial(n: int) -> list[int]:
    """Coefficients (lowest power first) of ``P_n`` with ``d^n/dx^n cot(pi x) = pi^n
    P_n(cot(pi x))``: ``P_0(c) = c``, ``P_(k+1)(c) = -(1 + c^2) P_k'(c)``."""
    poly = [0, 1]
    for _ in range(n):
        derivative = [k * a for k, a in enumerate(poly)][1:] or [0]
        nxt = [0] * (len(derivative) + 2)
        for k, a in enumerate(derivative):
            nxt[k] -= a
            nxt[k + 2] -= a
        poly = nxt
    return poly


def polygamma(n: int, x: Any) -> Any:
    """The ``n``-th derivative of digamma (``n >= 1``) of a float array: +inf at the poles
    for odd ``n`` (-inf for even), PyTorch's values at +-inf (see below). Negative x by the
    reflection ``psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi^(n+1) P_n(cot(pi x))``."""
    xp = get_array_module(x)
    z = _as_float64(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        positive = _polygamma_nonnegative(n, xp.maximum(z, 0.0))
        negative = xp.minimum(z, 0.0)
        cotangent = _sin_pi(negative + 0.5) / _sin_pi(negative)
        poly = _cot_derivative_polynomial(n)
        value = float(poly[-1]) + 0 * cotangent
        for a in poly[-2::-1]:
            value = value * cotangent + float(a)
        reflected = (-1.0) ** n * _polygamma_nonnegative(n, 1.0 - negative)
        reflected = reflected - math.pi ** (n + 1) * value
        out = xp.where(z >= 0, positive, reflected)
        pole = (z <= 0) & (z == xp.floor(z))
        out = xp.where(pole, np.inf if n % 2 else -np.inf, out)
        # PyTorch's values at the infinities: n = 1 gives 0 at +inf and NaN at -inf; higher
        # n give NaN at +inf and (-1)^(n+1) inf at -inf.
        out = xp.where(z == np.inf, 0.0 if n == 1 else np.nan, out)
        out = xp.where(z == -np.inf, np.nan if n == 1 else (np.inf if n % 2 else -np.inf), out)
    return out.astype(x.dtype, copy=False)


__all__ = ["digamma", "lgamma", "polygamma"]
