"""The implicit reparameterisation gradient of a standard gamma draw, ``dx / dalpha``.

For ``x ~ Gamma(alpha, 1)`` with CDF ``F(x; alpha)``, holding the uniform quantile fixed
gives ``dx/dalpha = -(dF/dalpha) / (dF/dx)``. PyTorch's ``_standard_gamma_grad``
approximates it piecewise (Jankowiak & Obermeyer, "Pathwise derivatives beyond the
reparameterization trick", 2018); this is the same method, vectorised with ``where``
(every branch is evaluated, then one is picked), so it matches PyTorch's values to
rounding. The approximation is good to ~4e-4 relative against the exact derivative:

- ``x < 0.8``: the series ``F = x^a sum_k (-x)^k / (k! (a + k))`` (6 terms) and its
  ``alpha`` derivative.
- ``alpha > 8``: Rice's saddle-point expansion (a polynomial form within 10% of the mean).
- otherwise: a rational function of ``log(x / alpha)`` and ``log(alpha)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime import gamma_functions
from dtrain.runtime.backend import get_array_module

_SERIES_TERMS = 5
_SERIES_BELOW = 0.8
_SADDLE_ABOVE = 8.0
# Rows: the constant, linear and quadratic coefficients in u = log(x / alpha); columns: the
# numerator's then the denominator's cubic in v = log(alpha), lowest power first.
_RATIONAL = (
    (0.16009398, -0.094634809, 0.025146376, -0.0030648343,
     1.0, 0.32668115, 0.10406089, 0.0014179084),
    (0.53487893, 0.1298071, 0.065735949, -0.0015649758,
     0.16639465, 0.020070113, -0.0035938915, -0.00058392623),
    (0.040121004, -0.0065914022, -0.0026286047, -0.0013441777,
     0.017050642, -0.0021309326, 0.00085092367, -1.5247877e-07),
)  # fmt: skip


def _small_x(alpha: Any, x: Any) -> Any:
    xp = get_array_module(x)
    term = xp.ones_like(x)
    denom = alpha
    series1 = term / denom
    series2 = term / (denom * denom)
    for i in range(1, _SERIES_TERMS + 1):
        term = term * (-x / i)
        denom = denom + 1.0
        series1 = series1 + term / denom
        series2 = series2 + term / (denom * denom)
    pow_x_alpha = x**alpha
    pdf = x ** (alpha - 1.0) * xp.exp(-x)
    cdf = pow_x_alpha * series1
    cdf_alpha = (xp.log(x) - gamma_functions.digamma(alpha)) * cdf - pow_x_alpha * series2
    result = -cdf_alpha / pdf
    return xp.where(xp.isnan(result), 0.0, result)


def _large_alpha(alpha: Any, x: Any) -> Any:
    xp = get_array_module(x)
    numer_1 = 1.0 + 24.0 * alpha * (1.0 + 12.0 * alpha)
    numer_2 = (
        1440.0 * alpha * alpha
        + 6.0 * x * (53.0 - 120.0 * x)
        - 65.0 * x * x / alpha
        + alpha * (107.0 + 3600.0 * x)
    )
    near_mean = numer_1 * numer_2 / (1244160.0 * alpha**4)
    denom = xp.sqrt(8.0 * alpha)
    term2 = denom / (alpha - x)
    term3 = (x - alpha - alpha * xp.log(x / alpha)) ** -1.5
    term23 = xp.where(x < alpha, term2 - term3, term2 + term3)
    term1 = xp.log(x / alpha) * term23 - xp.sqrt(2.0 / alpha) * (alpha + x) / (alpha - x) ** 2
    stirling = 1.0 + 1.0 / (12.0 * alpha) * (1.0 + 1.0 / (24.0 * alpha))
    far = -stirling * x * term1 / denom
    return xp.where((0.9 * alpha <= x) & (x <= 1.1 * alpha), near_mean, far)


def _rational(alpha: Any, x: Any) -> Any:
    xp = get_array_module(x)
    u = xp.log(x / alpha)
    v = xp.log(alpha)
    c = [_RATIONAL[0][i] + u * (_RATIONAL[1][i] + u * _RATIONAL[2][i]) for i in range(8)]
    p = c[0] + v * (c[1] + v * (c[2] + v * c[3]))
    q = c[4] + v * (c[5] + v * (c[6] + v * c[7]))
    return xp.exp(p / q)


def standard_gamma_grad(alpha: Any, x: Any) -> Any:
    """``dx/dalpha`` at standard gamma draws ``x`` of concentration ``alpha`` (arrays of
    one shape, numpy or cupy), in ``x``'s dtype; computed in float64, no host reads."""
    xp = get_array_module(x)
    a = alpha.astype(np.float64, copy=False)
    z = x.astype(np.float64, copy=False)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        out = xp.where(
            z < _SERIES_BELOW,
            _small_x(a, z),
            xp.where(a > _SADDLE_ABOVE, _large_alpha(a, z), _rational(a, z)),
        )
    return out.astype(x.dtype, copy=False)


__all__ = ["standard_gamma_grad"]
