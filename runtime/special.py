"""The error function, which numpy lacks (and the core depends on numpy alone).

float64 is computed to about 2e-15: a Taylor series below |x| = 2, and above it 1 - erfc with
erfc from its continued fraction. float32 takes Abramowitz & Stegun 7.1.26, several times
cheaper (GELU runs erf on every hidden activation of a transformer): the formula is good to
1.5e-7, and evaluated in float32 to about 5e-7 (absolute; near 0 its ``1 - p(t) exp(-x^2)``
cancels). float16 is evaluated in float32 and rounded: in its own precision that
cancellation would cost 3e-3. Both work on numpy and cupy arrays alike
(no boolean indexing, so nothing waits for a GPU).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module

_TAYLOR_UNTIL = 2.0
_TAYLOR_TERMS = 40  # at |x| = 2 the 40th term is below 1e-26
_FRACTION_DEPTH = 60  # erfc's continued fraction at x = 2 has converged to 1e-16 by then
_SATURATES = 6.5  # erfc(6.5) < 1e-19: erf is +-1 in float64 beyond


def erf(x: Any) -> Any:
    """The error function of a float array (a new array of its dtype)."""
    if x.dtype == np.float64:
        return _erf_float64(x)
    if x.dtype == np.float16:
        return _erf_abramowitz_stegun(x.astype(np.float32)).astype(np.float16)
    return _erf_abramowitz_stegun(x)


def _erf_float64(x: Any) -> Any:
    xp = get_array_module(x)
    a = xp.abs(x)
    # Below 2: erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)).
    small = xp.minimum(a, _TAYLOR_UNTIL)
    minus_square = -(small * small)
    term = small.copy()
    total = small.copy()
    for n in range(1, _TAYLOR_TERMS):
        term *= minus_square / n
        total += term / (2 * n + 1)
    total *= 2 / math.sqrt(math.pi)
    # Above 2: erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))).
    large = xp.clip(a, _TAYLOR_UNTIL, _SATURATES)
    fraction = large.copy()
    for k in range(_FRACTION_DEPTH, 0, -1):
        fraction = large + (k / 2) / fraction
    erfc = xp.exp(-(large * large)) / (math.sqrt(math.pi) * fraction)
    return xp.copysign(xp.where(a <= _TAYLOR_UNTIL, total, 1.0 - erfc), x)


def _erf_abramowitz_stegun(x: Any) -> Any:
    """Evaluated in place in two work arrays."""
    if x.ndim == 0:  # numpy makes 0-d results scalars, which ``out=`` cannot take
        return _erf_abramowitz_stegun(x.reshape(1)).reshape(())
    xp = get_array_module(x)
    a = xp.abs(x)
    t = a * x.dtype.type(0.3275911)
    t += 1
    xp.reciprocal(t, out=t)
    poly = t * x.dtype.type(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += x.dtype.type(coefficient)
        poly *= t
    xp.square(a, out=a)
    xp.negative(a, out=a)
    xp.exp(a, out=a)
    poly *= a
    xp.subtract(1, poly, out=poly)
    return xp.copysign(poly, x, out=poly)
