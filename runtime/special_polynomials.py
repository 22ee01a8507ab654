"""The orthogonal polynomials of torch.special, by their three-term recurrences, with
PyTorch's closed forms and edge rules.

``n`` is an array (broadcast against ``x``) and is truncated to an integer; n < 0 (and a
non-finite n) gives 0. As in PyTorch, Chebyshev's polynomials use ``cos(n acos x)`` and its
kin inside (-1, 1) for n above 6 (T) or 8 (U, V, W), the Hermite polynomials are NaN for
n above 128 (float32) or 512 (float64), and values are computed in the result's dtype (so
overflow goes the same way: inf, then NaN). The shifted Chebyshev polynomials are the
plain ones at ``2x - 1``. The recurrence runs to the largest n that needs it (closed forms
cover the rest), stopping early once every element has gone to NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module

_MAX_STEPS = 1_000_000
_CHECK_EVERY = 64
_HERMITE_LIMIT = {np.dtype(np.float32): 128, np.dtype(np.float64): 512}


def _degree(n: Any) -> Any:
    """``n`` as int64, truncated; -1 where it is not finite (PyTorch gives 0 there)."""
    xp = get_array_module(n)
    if n.dtype.kind in "biu":
        return n.astype(np.int64)
    finite = xp.isfinite(n)
    clipped = xp.clip(xp.where(finite, n, -1), -1, 2**62)
    return xp.trunc(clipped).astype(np.int64)


def _recurrence(x: Any, n: Any, need: Any, first: Any, step: Any, where: str = "") -> Any:
    """``q_n`` from ``q_0 = 1``, ``q_1 = first`` and ``q_(k+1) = step(k, q_k, q_(k-1))``
    for the elements in ``need`` (others get q_0). ``where`` ends the error's advice (the
    Chebyshev polynomials have a closed form inside (-1, 1))."""
    xp = get_array_module(x)
    steps = int(xp.max(xp.where(need, n, 0))) if n.size else 0
    if steps > _MAX_STEPS:
        raise ValueError(
            f"polynomial of degree n = {steps} needs {steps} recurrence steps, more than "
            f"dtrain runs ({_MAX_STEPS}); keep n <= {_MAX_STEPS}{where}"
        )
    previous, current = xp.ones_like(x), first
    result = xp.where(n == 1, current, previous)
    with np.errstate(over="ignore", invalid="ignore"):  # inf, then NaN, as in PyTorch
        for k in range(1, steps):
            previous, current = current, step(k, current, previous)
            result = xp.where(n == k + 1, current, result)
            if k % _CHECK_EVERY == 0 and not xp.any(need & (n > k + 1) & ~xp.isnan(current)):
                result = xp.where(need & (n > k + 1), np.nan, result)
                break
    return result


def _prepare(x: Any, n: Any) -> tuple[Any, Any, Any]:
    xp = get_array_module(x, n)
    floats = [d for d in (x.dtype, n.dtype) if d.kind == "f"]  # an integer n does not widen x
    dtype = np.result_type(*floats) if floats else np.dtype(np.float32)
    x, n = xp.broadcast_arrays(x.astype(dtype), n)
    return xp, x, _degree(n)


def _chebyshev(kind: str, x: Any, n: Any) -> Any:
    xp, x, n = _prepare(x, n)
    one = x.dtype.type(1)
    start = {"t": x, "u": x + x, "v": x + x - one, "w": x + x + one}[kind]
    inside = xp.abs(x) < 1
    closed_from = 6 if kind == "t" else 8
    need = (n >= 2) & ~((n > closed_from) & inside) & (xp.abs(x) != 1)
    out = _recurrence(x, n, need, start, lambda k, q, p: (x + x) * q - p, " outside (-1, 1)")
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = xp.arccos(xp.where(inside, x, 0))
        m = n.astype(x.dtype)
        even = n % 2 == 0
        if kind == "t":
            closed = xp.cos(m * theta)
            at_one = xp.where((x > 0) | even, one, -one)
        elif kind == "u":
            sine = xp.sin(theta)
            closed = xp.where(
                sine != 0,
                xp.sin((m + 1) * theta) / xp.where(sine != 0, sine, 1),
                (m + 1) * xp.cos((m + 1) * theta) / x,
            )
            at_one = xp.where((x > 0) | even, m + 1, -(m + 1))
        elif kind == "v":
            half = xp.sin(theta / 2) != 1
            closed = xp.where(
                half,
                xp.cos((m + 0.5) * theta) / xp.cos(theta / 2),
                xp.where(even, 2 * m + 1, -(2 * m + 1)),
            )
            at_one = xp.where(x > 0, one, xp.where(even, 2 * m + 1, -(2 * m + 1)))
        else:
            half = xp.cos(theta / 2) != 1
            corner = xp.where(x > 0, 2 * m + 1, xp.where(even, one, -one))
            closed = xp.where(half, xp.sin((m + 0.5) * theta) / xp.sin(theta / 2), corner)
            at_one = corner
    out = xp.where((n > closed_from) & inside, closed.astype(x.dtype), out)
    out = xp.where(xp.abs(x) == 1, at_one.astype(x.dtype), out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def chebyshev_t(x: Any, n: Any) -> Any:
    """Chebyshev polynomials of the first kind ``T_n(x)``."""
    return _chebyshev("t", x, n)


def chebyshev_u(x: Any, n: Any) -> Any:
    """Chebyshev polynomials of the second kind ``U_n(x)``."""
    return _chebyshev("u", x, n)


def chebyshev_v(x: Any, n: Any) -> Any:
    """Chebyshev polynomials of the third kind ``V_n(x)``."""
    return _chebyshev("v", x, n)


def chebyshev_w(x: Any, n: Any) -> Any:
    """Chebyshev polynomials of the fourth kind ``W_n(x)``."""
    return _chebyshev("w", x, n)


def shifted(function: Any, x: Any, n: Any) -> Any:
    """A Chebyshev polynomial at ``2x - 1`` (the shifted polynomials, on [0, 1])."""
    x = _prepare(x, n)[1]
    return function(x + x - x.dtype.type(1), n)


def hermite_h(x: Any, n: Any) -> Any:
    """The physicists' Hermite polynomials ``H_n(x)``."""
    xp, x, n = _prepare(x, n)
    limit = _HERMITE_LIMIT.get(x.dtype, 1024)  # NaN above, as PyTorch: no steps run there
    need = (n >= 2) & (n <= limit)
    out = _recurrence(x, n, need, x + x, lambda k, q, p: (x + x) * q - (2 * k) * p)
    out = xp.where(n > limit, np.nan, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def hermite_he(x: Any, n: Any) -> Any:
    """The probabilists' Hermite polynomials ``He_n(x)``."""
    xp, x, n = _prepare(x, n)
    limit = _HERMITE_LIMIT.get(x.dtype, 1024)  # NaN above, as PyTorch: no steps run there
    need = (n >= 2) & (n <= limit)
    out = _recurrence(x, n, need, x, lambda k, q, p: x * q - k * p)
    out = xp.where(n > limit, np.nan, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def laguerre_l(x: Any, n: Any) -> Any:
    """The Laguerre polynomials ``L_n(x)`` (1 at x = 0)."""
    xp, x, n = _prepare(x, n)
    one = x.dtype.type(1)
    out = _recurrence(
        x,
        n,
        (n >= 2) & (x != 0),
        one - x,
        lambda k, q, p: ((2 * k + (one - x)) * q - k * p) / (k + 1),
    )
    out = xp.where(x == 0, one, out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


def legendre_p(x: Any, n: Any) -> Any:
    """The Legendre polynomials ``P_n(x)``."""
    xp, x, n = _prepare(x, n)
    one = x.dtype.type(1)
    need = (n >= 2) & (xp.abs(x) != 1)
    out = _recurrence(x, n, need, x, lambda k, q, p: ((2 * k + 1) * x * q - k * p) / (k + 1))
    out = xp.where(xp.abs(x) == 1, xp.where((x > 0) | (n % 2 == 0), one, -one), out)
    return xp.where(n < 0, 0, out).astype(x.dtype, copy=False)


__all__ = [
    "chebyshev_t",
    "chebyshev_u",
    "chebyshev_v",
    "chebyshev_w",
    "hermite_h",
    "hermite_he",
    "laguerre_l",
    "legendre_p",
    "shifted",
]
