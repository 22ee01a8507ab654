"""The Airy function ``Ai``, which numpy lacks.

In float64 for every float dtype, rounded to it; numpy and cupy alike. Not the Cephes fit
PyTorch ports (good to ~3e-6 absolute), but:

- ``|x| <= 1.5``: the Maclaurin series ``Ai(0) f(x) + Ai'(0) g(x)`` (its two parts are at
  most ~50 times Ai there, so ~1e-14 relative);
- ``x > 1.5``: ``Ai(x) = sqrt(x / 3) K_{1/3}(zeta) / pi`` with ``zeta = 2/3 x^{3/2}`` and K
  by Steed's continued fraction (Numerical Recipes' ``bessik``, CF2);
- ``-12 < x < -1.5``: ``Ai(-z) = sqrt(z) (J_{1/3}(zeta) + J_{-1/3}(zeta)) / 3`` with J by
  Miller's backward recurrence, normalised by ``sum (nu + 2k) Gamma(nu + k) / k!
  J_{nu+2k} = (zeta / 2)^nu``;
- ``x <= -12``: the asymptotic expansion (DLMF 9.7.9; its terms fall below 1e-21 there).

Good to ~1e-14 relative away from the zeros (absolute there, and for large |x| as zeta is
rounded); 0 at +inf and for large x, NaN at ±inf and NaN (as PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module

_AI0 = 0.355028053887817239260  # Ai(0)
_DAI0 = -0.258819403792806798405  # Ai'(0)
_SERIES_UNTIL = 1.5
_ASYMPTOTIC_BELOW = -12.0
_SERIES_TERMS = 30
_MILLER_START = 100
_ASYMPTOTIC_TERMS = 40
_FRACTION_STEPS = 160  # CF2 at zeta = 1.22 (x = 1.5) converges in fewer steps
_RESCALE = 1e150


def _series(x: Any) -> Any:
    xp = get_array_module(x)
    cube = x * x * x
    f_term, g_term = xp.ones_like(x), x.copy()
    f, g = f_term.copy(), g_term.copy()
    for k in range(_SERIES_TERMS):
        f_term = f_term * cube / ((3 * k + 2) * (3 * k + 3))
        g_term = g_term * cube / ((3 * k + 3) * (3 * k + 4))
        f, g = f + f_term, g + g_term
    return _AI0 * f + _DAI0 * g


def _k_third(zeta: Any) -> Any:
    """``exp(zeta) K_{1/3}(zeta)`` for zeta >= 1.2 by Steed's CF2 (fixed step count)."""
    xp = get_array_module(zeta)
    b = 2.0 * (1.0 + zeta)
    d = 1.0 / b
    h = delta_h = d
    q1, q2 = xp.zeros_like(zeta), xp.ones_like(zeta)
    a1 = 0.25 - 1.0 / 9.0
    q = c = a1 + 0 * zeta
    a = -a1 + 0 * zeta
    s = 1.0 + q * delta_h
    done = xp.zeros(zeta.shape, dtype=bool)
    for i in range(2, _FRACTION_STEPS):
        a = a - 2 * (i - 1)
        c = -a * c / i
        q_new = (q1 - b * q2) / a
        q1, q2 = q2, q_new
        q = q + c * q_new
        b = b + 2.0
        d = 1.0 / (b + a * d)
        delta_h = (b * d - 1.0) * delta_h
        h = h + delta_h
        step = q * delta_h
        s = xp.where(done, s, s + step)  # converged elements keep s (c, q overflow later)
        done = done | (xp.abs(step) < 1e-17 * xp.abs(s))
        if i % 16 == 0 and bool(xp.all(done)):
            break
    return xp.sqrt(math.pi / (2.0 * zeta)) / s


def _normalisation(nu: float, count: int) -> list[float]:
    return [(nu + 2 * k) * math.exp(math.lgamma(nu + k) - math.lgamma(k + 1)) for k in range(count)]


def _miller_fractional(nu: float, zeta: Any) -> tuple[Any, Any]:
    """``(J_nu, J_{nu+1})`` of 0 < nu < 1 for 1 <= zeta <= 30 by Miller's recurrence."""
    xp = get_array_module(zeta)
    weights = _normalisation(nu, _MILLER_START // 2 + 1)
    upper, current = xp.zeros_like(zeta), xp.full_like(zeta, 1e-300)  # J(m+1), J(m)
    total = xp.zeros_like(zeta)
    for m in range(_MILLER_START, 0, -1):  # current is J_{nu+m}; step down to J_{nu+m-1}
        if m % 2 == 0:
            total = total + weights[m // 2] * current
        upper, current = current, (2 * (nu + m) / zeta) * current - upper
        scale = xp.where(xp.abs(current) > _RESCALE, 1 / _RESCALE, 1.0)
        upper, current, total = upper * scale, current * scale, total * scale
    total = total + weights[0] * current
    norm = (zeta / 2) ** nu / total
    return current * norm, upper * norm


def _asymptotic_negative(z: Any) -> Any:
    """``Ai(-z)`` for z >= 12 (DLMF 9.7.9)."""
    xp = get_array_module(z)
    zeta = 2.0 / 3.0 * z * xp.sqrt(z)
    even, odd = xp.ones_like(z), xp.zeros_like(z)
    term = xp.ones_like(z)  # u_k / zeta^k
    for k in range(2 * _ASYMPTOTIC_TERMS):
        ratio = (3 * k + 2.5) * (3 * k + 1.5) * (3 * k + 0.5) / (54.0 * (k + 1) * (k + 0.5))
        term = term * ratio / zeta
        index = k + 1
        sign = -1.0 if (index // 2) % 2 else 1.0
        if index % 2:
            odd = odd + sign * term
        else:
            even = even + sign * term
    phase = zeta - math.pi / 4
    return (xp.cos(phase) * even + xp.sin(phase) * odd) / (math.sqrt(math.pi) * z**0.25)


def _airy(x: Any) -> Any:
    """Ai of a float64 array; each element runs its own method only."""
    xp = get_array_module(x)
    flat = x.reshape(-1)
    out = xp.empty_like(flat)
    right = (flat > _SERIES_UNTIL) & xp.isfinite(flat)
    far_left = (flat <= _ASYMPTOTIC_BELOW) & xp.isfinite(flat)
    left = (flat < -_SERIES_UNTIL) & ~far_left & xp.isfinite(flat)
    near = ~(right | left | far_left)  # NaN and +-inf too (NaN out)
    out[near] = _series(xp.clip(flat[near], -_SERIES_UNTIL, _SERIES_UNTIL))
    positive = flat[right]
    zeta = 2.0 / 3.0 * positive * xp.sqrt(positive)
    scaled_k = _k_third(xp.minimum(zeta, 1e300))
    out[right] = xp.sqrt(positive / 3.0) / math.pi * scaled_k * xp.exp(-zeta)
    z = -flat[left]
    zeta_left = 2.0 / 3.0 * z * xp.sqrt(z)
    j_third, _ = _miller_fractional(1 / 3, zeta_left)
    j_two_thirds, j_five_thirds = _miller_fractional(2 / 3, zeta_left)
    j_minus_third = (4.0 / 3.0) / zeta_left * j_two_thirds - j_five_thirds
    out[left] = xp.sqrt(z) / 3.0 * (j_third + j_minus_third)
    out[far_left] = _asymptotic_negative(-flat[far_left])
    out = out.reshape(x.shape)
    return xp.where(xp.isinf(x), np.nan, out)


def airy_ai(x: Any) -> Any:
    """The Airy function ``Ai(x)`` of a float array (a new array of its dtype)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _airy(x.astype(np.float64, copy=False)).astype(x.dtype, copy=False)


__all__ = ["airy_ai"]
