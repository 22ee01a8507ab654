"""The Bessel functions ``J0, J1, Y0, Y1`` and the spherical ``j0``, which numpy lacks.

Computed in float64 for every float dtype, then rounded to it; numpy and cupy alike (cupy
arrays go to ``cupyx.scipy.special``'s Cephes kernels, as scipy's). Not the Cephes fits
PyTorch ports (whose coefficients have slips: its ``bessel_j0`` is off by up to ~2e-5
relative beyond x = 5), but:

- ``|x| < 1e-5``: the leading terms of the power series;
- ``|x| < 25``: Miller's backward recurrence ``J(n-1) = (2n / x) J(n) - J(n+1)`` from
  n = 80, normalised by ``J0 + 2 (J2 + J4 + ...) = 1``; Y0 by Neumann's series
  ``(2/pi) (log(x/2) + gamma) J0 - (4/pi) sum (-1)^k J(2k) / k``, Y1 by its derivative;
- ``|x| >= 25``: Hankel's asymptotic expansion (its terms fall below 1e-19 there).

float64 is good to ~1e-15 (absolute near the zeros; for large x, ~1e-16 x absolute, as
``x`` itself is rounded). J0 is even, J1 odd; Y0, Y1 are NaN for x < 0 and -inf at 0; all
four are NaN at ±inf (as scipy and PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module
from dtrain.runtime.special_cupyx import unary

_EULER = 0.57721566490153286061
_TINY = 1e-5
_ASYMPTOTIC_FROM = 25.0
_MILLER_START = 80  # ample for x < 25
_ASYMPTOTIC_TERMS = 40
_RESCALE = 1e150


def _miller(x: Any) -> tuple[Any, Any, Any, Any]:
    """``(J0, J1, S0, S1)`` for 1e-5 <= x < 25 (float64), with the Neumann sums
    ``S0 = sum_k (-1)^k J(2k) / k`` and ``S1 = sum_k (-1)^k (J(2k-1) - J(2k+1)) / k``."""
    xp = get_array_module(x)
    upper, current = xp.zeros_like(x), xp.full_like(x, 1e-300)  # J(n+1), J(n), unnormalised
    norm, s0, s1, j1 = (xp.zeros_like(x) for _ in range(4))
    for n in range(_MILLER_START, 0, -1):
        upper, current = current, (2 * n / x) * current - upper
        m = n - 1  # ``current`` is J(m)
        if m == 1:
            j1 = current
        if m % 2 == 0 and m > 0:
            k = m // 2
            norm = norm + 2 * current
            s0 = s0 + ((-1) ** k / k) * current
        elif m % 2 == 1:  # J(2k-1) appears in S1's terms k and k - 1
            k = (m + 1) // 2
            s1 = s1 + ((-1) ** k * (1 / k + (1 / (k - 1) if k > 1 else 0.0))) * current
        scale = xp.where(xp.abs(current) > _RESCALE, 1 / _RESCALE, 1.0)
        upper, current = upper * scale, current * scale
        norm, s0, s1, j1 = norm * scale, s0 * scale, s1 * scale, j1 * scale
    norm = norm + current
    return current / norm, j1 / norm, s0 / norm, s1 / norm


def _hankel(order: int, x: Any) -> tuple[Any, Any]:
    """``(J, Y)`` of the order 0 or 1 for x >= 25 by Hankel's expansion."""
    xp = get_array_module(x)
    mu = 4.0 * order * order
    p, q = xp.ones_like(x), xp.zeros_like(x)
    term = xp.ones_like(x)
    for k in range(1, 2 * _ASYMPTOTIC_TERMS):
        term = term * ((mu - (2 * k - 1) ** 2) / (8.0 * k)) / x
        sign = -1.0 if (k // 2) % 2 else 1.0
        if k % 2:
            q = q + sign * term
        else:
            p = p + sign * term
    sine, cosine = xp.sin(x), xp.cos(x)
    if order == 0:  # chi = x - pi/4
        cos_chi, sin_chi = (cosine + sine) / math.sqrt(2), (sine - cosine) / math.sqrt(2)
    else:  # chi = x - 3 pi/4
        cos_chi, sin_chi = (sine - cosine) / math.sqrt(2), -(sine + cosine) / math.sqrt(2)
    amplitude = xp.sqrt(2 / (math.pi * x))
    return amplitude * (p * cos_chi - q * sin_chi), amplitude * (p * sin_chi + q * cos_chi)


def _bessel(order: int, kind: str, x: Any) -> Any:
    """J or Y of the order 0 or 1 of a float64 array. Each element runs one method only:
    the series below 1e-5, Miller's recurrence below 25, Hankel's expansion above."""
    xp = get_array_module(x)
    a = xp.abs(x).reshape(-1)
    out = xp.empty_like(a)
    tiny = a < _TINY
    far = a >= _ASYMPTOTIC_FROM  # NaN falls to the middle, and stays NaN
    middle = ~(tiny | far)
    t = a[tiny]  # the series
    log_tiny = xp.log(t) - math.log(2) + _EULER  # t / 2 may underflow
    if kind == "j" and order == 0:
        out[tiny] = 1 - t * t / 4
    elif kind == "j":
        out[tiny] = t / 2 * (1 - t * t / 8)
    elif order == 0:
        out[tiny] = (2 / math.pi) * (log_tiny * (1 - t * t / 4) + t * t / 4)
    else:
        out[tiny] = -2 / (math.pi * t) + t * (log_tiny - 0.5) / math.pi
    m = a[middle]
    j0, j1, s0, s1 = _miller(m)
    if kind == "j":
        out[middle] = j0 if order == 0 else j1
    else:
        log_term = xp.log(m / 2) + _EULER
        if order == 0:
            out[middle] = (2 / math.pi) * (log_term * j0 - 2 * s0)
        else:
            out[middle] = (2 / math.pi) * (log_term * j1 - j0 / m + s1)
    j_far, y_far = _hankel(order, a[far])
    out[far] = j_far if kind == "j" else y_far
    out = out.reshape(x.shape)
    if kind == "j":
        out = xp.where(x < 0, -out, out) if order == 1 else out
        out = xp.where(x == 0, 1.0 if order == 0 else x, out)  # J1(-0) = -0
    else:
        out = xp.where(x == 0, -np.inf, xp.where(x < 0, np.nan, out))
    return xp.where(xp.isinf(x), np.nan, out)


def j0(x: Any) -> Any:
    """``J0(x)`` of a float array."""
    return unary("bessel_j0", x, lambda z: _bessel(0, "j", z))


def j1(x: Any) -> Any:
    """``J1(x)`` of a float array."""
    return unary("bessel_j1", x, lambda z: _bessel(1, "j", z))


def y0(x: Any) -> Any:
    """``Y0(x)`` of a float array (NaN for x < 0, -inf at 0)."""
    return unary("bessel_y0", x, lambda z: _bessel(0, "y", z))


def y1(x: Any) -> Any:
    """``Y1(x)`` of a float array (NaN for x < 0, -inf at 0)."""
    return unary("bessel_y1", x, lambda z: _bessel(1, "y", z))


def _spherical_j0(x: Any) -> Any:
    xp = get_array_module(x)
    square = x * x
    series = 0 * x
    for k in range(6, 0, -1):  # 1 - x^2/3! + x^4/5! ... to x^12, as PyTorch below 0.5
        series = (series + (-1) ** k / math.factorial(2 * k + 1)) * square
    safe = xp.where(xp.abs(x) < 0.5, 1.0, x)
    out = xp.where(xp.abs(x) < 0.5, 1 + series, xp.sin(safe) / safe)
    return xp.where(xp.isinf(x), 0.0, out)


def spherical_j0(x: Any) -> Any:
    """The spherical Bessel function ``j0(x) = sin(x) / x`` of a float array (0 at ±inf)."""
    with np.errstate(invalid="ignore"):
        return _spherical_j0(x.astype(np.float64, copy=False)).astype(x.dtype, copy=False)


__all__ = ["j0", "j1", "spherical_j0", "y0", "y1"]
