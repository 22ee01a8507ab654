"""The normal distribution's special functions: ``erfcx``, ``log_ndtr``, ``ndtri``.

Computed in float64 whatever the float dtype, then rounded to it; numpy and cupy alike.

- ``erfcx(x) = exp(x^2) erfc(x)``: for 0 <= x < 1 its power series ``sum (-x)^n /
  Gamma(n/2 + 1)`` (Faddeeva's ``w(ix)``; its alternating terms stay below 1.2 there),
  from 1 up ``1 / (sqrt(pi) F(x))`` with F erfc's continued fraction (no exponential, so
  no overflow), and ``2 exp(x^2) - erfcx(-x)`` for x < 0.
- ``log_ndtr``: as PyTorch (and scipy), ``log(erfcx(-t) / 2) - t^2`` with ``t = x / sqrt(2)``
  for x < -1, ``log1p(-erfc(t) / 2)`` above.
- ``ndtri``: Cephes' rational approximations (as PyTorch's ``calc_ndtri``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special_cupyx import unary

_SERIES_UNTIL = 1.0
_SERIES_TERMS = 50  # 1 / Gamma(26) < 1e-24
_FRACTION_DEPTH = 200  # erfc's continued fraction has converged to ~1e-16 from x = 1
_INVERSE_SQRT_PI = 1 / math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2 * math.pi)

# Cephes ndtri: P0/Q0 for |y - 1/2| <= 3/8; P1/Q1 for z = sqrt(-2 log y) in [2, 8); P2/Q2
# for z in [8, 64]. Highest power first.
_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)  # fmt: skip
_Q0 = (1.0, 1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)  # fmt: skip
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2,
       -8.57456785154685413611e-4)  # fmt: skip
_Q1 = (1.0, 1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)  # fmt: skip
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)  # fmt: skip
_Q2 = (1.0, 6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)  # fmt: skip
_EXP_MINUS_2 = 0.13533528323661269189


def polynomial(coefficients: tuple, x: Any) -> Any:
    """Horner's rule, highest power first."""
    result = coefficients[0] + 0 * x
    for c in coefficients[1:]:
        result = result * x + c
    return result


def _erfcx_nonnegative(a: Any) -> Any:
    """erfcx for a >= 0 (float64; NaN passes through)."""
    xp = get_array_module(a)
    small = xp.minimum(a, _SERIES_UNTIL)
    square = small * small
    even = xp.ones_like(small)  # x^2k / k!
    odd = (2 * _INVERSE_SQRT_PI) * small  # x^(2k+1) / Gamma(k + 3/2)
    total = even - odd
    for k in range(1, _SERIES_TERMS // 2):
        even = even * square / k
        odd = odd * square / (k + 0.5)
        total += even - odd
    large = xp.maximum(a, _SERIES_UNTIL)
    fraction = large.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        fraction = large + (k / 2) / fraction
    return xp.where(a < _SERIES_UNTIL, total, _INVERSE_SQRT_PI / fraction)


def erfcx_float64(x: Any) -> Any:
    """``exp(x^2) erfc(x)`` of a float64 array (+inf below about -26.6, 0 at +inf)."""
    xp = get_array_module(x)
    positive = _erfcx_nonnegative(xp.abs(x))
    return xp.where(x >= 0, positive, 2 * xp.exp(x * x) - positive)


def _log_ndtr(x: Any) -> Any:
    xp = get_array_module(x)
    t = x / math.sqrt(2)
    scaled = erfcx_float64(xp.abs(t))  # erfc(|t|) = scaled * exp(-t^2)
    lower = xp.log(scaled / 2) - t * t  # used for t < -1/sqrt(2)
    tail = scaled * xp.exp(-(t * t))
    upper = xp.log1p(-xp.where(t >= 0, tail, 2 - tail) / 2)
    return xp.where(t < -1 / math.sqrt(2), lower, upper)


def _ndtri(p: Any) -> Any:
    xp = get_array_module(p)
    upper = p > 1 - _EXP_MINUS_2
    q = xp.where(upper, 1.0 - p, p)
    c = xp.clip(q, _EXP_MINUS_2, 1.0) - 0.5  # central: |p - 1/2| <= 1/2 - exp(-2)
    c2 = c * c
    central = (c + c * (c2 * polynomial(_P0, c2) / polynomial(_Q0, c2))) * _SQRT_2PI
    z = xp.sqrt(-2.0 * xp.log(xp.clip(q, 0.0, _EXP_MINUS_2)))  # tails: z = sqrt(-2 log q)
    inverse = 1.0 / z
    near = inverse * polynomial(_P1, inverse) / polynomial(_Q1, inverse)
    far = inverse * polynomial(_P2, inverse) / polynomial(_Q2, inverse)
    tail = z - xp.log(z) / z - xp.where(z < 8.0, near, far)
    out = xp.where(q > _EXP_MINUS_2, central, xp.where(upper, tail, -tail))
    out = xp.where(p == 0, -np.inf, xp.where(p == 1, np.inf, out))
    return xp.where((p < 0) | (p > 1) | xp.isnan(p), np.nan, out)


def erfcx(x: Any) -> Any:
    """The scaled complementary error function of a float array (a new array of its dtype)."""
    return unary("erfcx", x, erfcx_float64)


def log_ndtr(x: Any) -> Any:
    """``log`` of the standard normal CDF of a float array, accurate in both tails."""
    return unary("log_ndtr", x, _log_ndtr)


def ndtri(p: Any) -> Any:
    """The standard normal quantile of a float array: -inf at 0, +inf at 1, NaN outside."""
    return unary("ndtri", p, _ndtri)


__all__ = ["erfcx", "erfcx_float64", "log_ndtr", "ndtri", "polynomial"]
