"""The regularised incomplete gamma functions ``gammainc`` (P) and ``gammaincc`` (Q), and
the Hurwitz zeta function, which numpy lacks.

Both in float64 whatever the float dtype, rounded to it; numpy and cupy alike (cupy arrays
go to ``cupyx.scipy.special``, which PyTorch's code follows, where cupy has it).

- P and Q follow scipy's (and PyTorch's) choice of method and edge values: the power
  series of P (DLMF 8.11.4), Legendre's continued fraction for Q (8.9.2), and for small x
  the series of Q (8.7.3); the other function is one minus the one computed. For ``a > 20``
  with ``|x - a| < 0.3 a``, Temme's uniform asymptotic expansion (``special_temme``; scipy
  narrows it to ``4.5 / sqrt(a)`` above ``a = 200``, where its 2000-step series then stops
  short). The prefactor ``x^a e^-x / Gamma(a)`` is Boost's Lanczos form, accurate for large
  ``a`` too; where it is 0, so is the series' or fraction's result (as Cephes).
- Each element runs only its own method, and the series and the fraction only until that
  element has converged: the arrays are compressed every 16 steps, one host read each on a
  GPU. An element that has not converged in 2000 steps (none is known) gives NaN.
- ``zeta(x, q)``: Cephes' Euler–Maclaurin summation (as PyTorch): terms ``(q + k)^-x``
  until ``q + k > 9`` (and at least 9 of them), then 12 Bernoulli correction terms.
  +inf at x = 1, NaN for x < 1; for q <= 0, +inf at the integers and NaN unless x is an
  integer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime import special_temme as temme
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.gamma_functions import lgamma
from dtrain.runtime.special_cupyx import cupyx_function

_EPS = 1.11022302462515654042e-16
_CHECK_EVERY = 16  # iterations between convergence checks (each one a host read on a GPU)
_MAX_ITERATIONS = 2_000  # as Cephes; outside Temme's region, a few hundred at most
_LANCZOS_G = 6.024680040776729583740234375
_LANCZOS_NUM = (
    0.006061842346248906525783753964555936883222, 0.5098416655656676188125178644804694509993,
    19.51992788247617482847860966235652136208, 449.9445569063168119446858607650988409623,
    6955.999602515376140356310115515198987526, 75999.29304014542649875303443598909137092,
    601859.6171681098786670226533699352302507, 3481712.15498064590882071018964774556468,
    14605578.08768506808414169982791359218571, 43338889.32467613834773723740590533316085,
    86363131.28813859145546927288977868422342, 103794043.1163445451906271053616070238554,
    56906521.91347156388090791033559122686859,
)  # fmt: skip
_LANCZOS_DENOM = (
    1.0, 66.0, 1925.0, 32670.0, 357423.0, 2637558.0, 13339535.0, 45995730.0, 105258076.0,
    150917976.0, 120543840.0, 39916800.0, 0.0,
)  # fmt: skip
_ZETA_MAX_TERMS = 1_000_000
# Euler–Maclaurin: (2j)! / B_2j, j = 1 .. 12.
_ZETA_A = (
    12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9, 7.47242496e10,
    -2.950130727918164224e12, 1.1646782814350067249e14, -4.5979787224074726105e15,
    1.8152105401943546773e17, -7.1661652561756670113e18,
)  # fmt: skip


def _lanczos_sum_expg_scaled(a: Any) -> Any:
    """Boost's rational Lanczos sum for a > 0 (in 1/a above 1, so nothing overflows)."""
    xp = get_array_module(a)
    big = a > 1
    y = xp.where(big, 1.0 / xp.where(big, a, 1.0), a)
    # the coefficients are highest power first: in 1/a that is lowest first
    num = xp.where(big, _horner(_LANCZOS_NUM, y), _horner(_LANCZOS_NUM[::-1], y))
    den = xp.where(big, _horner(_LANCZOS_DENOM, y), _horner(_LANCZOS_DENOM[::-1], y))
    return num / den


def _horner(coefficients: tuple, y: Any) -> Any:
    """``c0 + c1 y + c2 y^2 ...``: Horner's rule from the last coefficient."""
    result = coefficients[-1] + 0 * y
    for c in coefficients[-2::-1]:
        result = result * y + c
    return result


def _prefactor(a: Any, x: Any) -> Any:
    """``x^a e^-x / Gamma(a)`` for a, x > 0: directly for small ``a``, else in Boost's
    Lanczos form (scipy's ``igam_fac``; here for every larger ``a``, where scipy goes back
    to ``exp(a log x - x - lgamma(a))`` far from ``a = x`` and loses ~``1e-16 lgamma(a)``)."""
    xp = get_array_module(a, x)
    direct = xp.exp(a * xp.log(x) - x - lgamma(a))
    fac = a + _LANCZOS_G - 0.5
    scaled = xp.sqrt(fac / math.e) / _lanczos_sum_expg_scaled(a)
    moderate = scaled * xp.exp(a - x) * (x / fac) ** a
    ratio = (x - a - _LANCZOS_G + 0.5) / fac  # x / fac - 1
    log_x_fac = xp.where(xp.abs(ratio) < 0.5, xp.log1p(ratio), xp.log(x / fac))
    large = scaled * xp.exp(a * (log_x_fac - ratio) + x * (0.5 - _LANCZOS_G) / fac)
    far = xp.abs(a - x) > 0.4 * a  # (x / fac)^a and e^(a - x) could under/overflow there
    lanczos = xp.where((a < 200) & (x < 200) & ~far, moderate, large)
    return xp.where((a < 20) & far, direct, lanczos)


def _lower_series(a: Any, x: Any) -> Any:
    """``P`` by its power series, for 1-D float64 arrays: each element runs until its own term
    is below round-off (the converged ones leave the arrays every ``_CHECK_EVERY`` steps); NaN
    for one that has not converged in ``_MAX_ITERATIONS``, and 0 where the prefactor is 0."""
    xp = get_array_module(a, x)
    prefactor = _prefactor(a, x)
    out = xp.zeros_like(a)
    live = xp.nonzero(prefactor != 0)[0]
    r, x_live = a[live], x[live]
    term, total = xp.ones_like(r), xp.ones_like(r)
    for i in range(1, _MAX_ITERATIONS + 1):
        if live.size == 0:
            break
        r = r + 1.0
        term = term * (x_live / r)
        total = total + term
        if i % _CHECK_EVERY == 0:
            done = term <= _EPS * total
            out[live[done]] = total[done]
            keep = ~done
            live, r, x_live, term, total = (
                live[keep],
                r[keep],
                x_live[keep],
                term[keep],
                total[keep],
            )
    out[live] = np.nan  # not converged: no number rather than a wrong one
    return out * prefactor / a


def _upper_series(a: Any, x: Any) -> Any:
    """``Q`` for small x by DLMF 8.7.3 (x <= 1.1, so a few dozen terms)."""
    xp = get_array_module(a, x)
    factor, total = xp.ones_like(a), xp.zeros_like(a)
    for n in range(1, 80):
        factor = factor * (-x / n)
        total = total + factor / (a + n)
    log_x = xp.log(x)
    return -xp.expm1(a * log_x - lgamma(1 + a)) - xp.exp(a * log_x - lgamma(a)) * total


def _upper_fraction(a: Any, x: Any) -> Any:
    """``Q`` by Legendre's continued fraction (scipy's ``igamc_continued_fraction``) for 1-D
    float64 arrays: per element until converged, as ``_lower_series``; 0 where the prefactor
    is 0 (as Cephes: there, for x > 2^52, p and q would overflow before converging)."""
    xp = get_array_module(a, x)
    prefactor = _prefactor(a, x)
    out = xp.zeros_like(a)
    live = xp.nonzero(prefactor != 0)[0]
    a_live, x_live = a[live], x[live]
    y = 1.0 - a_live
    z = x_live + y + 1.0
    c = xp.zeros_like(a_live)
    p2, q2 = xp.ones_like(a_live), x_live.copy()
    p1, q1 = x_live + 1.0, z * x_live
    answer = p1 / q1
    done = xp.zeros(answer.shape, dtype=bool)
    for i in range(1, _MAX_ITERATIONS + 1):
        if live.size == 0:
            break
        c = c + 1.0
        y = y + 1.0
        z = z + 2.0
        yc = y * c
        p, q = p1 * z - p2 * yc, q1 * z - q2 * yc
        usable = (q != 0) & ~done  # converged elements keep their value until they leave
        ratio = p / xp.where(usable, q, 1.0)
        done = done | (usable & (xp.abs(answer - ratio) <= _EPS * xp.abs(ratio)))
        answer = xp.where(usable, ratio, answer)
        big = xp.maximum(xp.abs(p), xp.abs(q)) > 4.503599627370496e15
        scale = xp.where(big, 2.22044604925031308085e-16, 1.0)
        p2, p1, q2, q1 = p1 * scale, p * scale, q1 * scale, q * scale
        if i % _CHECK_EVERY == 0:
            out[live[done]] = answer[done]
            k = ~done
            live, answer, done = live[k], answer[k], done[k]
            c, y, z, p1, p2, q1, q2 = c[k], y[k], z[k], p1[k], p2[k], q1[k], q2[k]
    out[live] = np.nan  # not converged: no number rather than a wrong one
    return out * prefactor


def _incomplete(a: Any, x: Any, upper: bool) -> Any:
    """P (``upper=False``) or Q of float64 arrays of one shape. Each element is computed by
    one method only, Cephes' (scipy's, PyTorch's) choice, on the elements that take it."""
    xp = get_array_module(a, x)
    flat_a, flat_x = a.reshape(-1), x.reshape(-1)
    inside = (flat_a > 0) & (flat_x > 0) & xp.isfinite(flat_a) & xp.isfinite(flat_x)
    where = xp.nonzero(inside)[0]
    a_in, x_in = flat_a[where], flat_x[where]
    asymptotic = (a_in > 20) & (xp.abs(x_in - a_in) < 0.3 * a_in)
    # Cephes' igamc: Q from 1 - P's series, or from the fraction (x > 1.1), or its series
    with np.errstate(divide="ignore"):
        small_x = xp.where(x_in <= 0.5, -0.4 / xp.log(x_in) < a_in, x_in * 1.1 < a_in)
    q_by_p = xp.where(x_in > 1.1, x_in < a_in, small_x)
    if upper:
        by_p, by_q = ~asymptotic & q_by_p, ~asymptotic & ~q_by_p
    else:  # Cephes' igam: 1 - Q where x > 1 and x > a (Q there never goes back to P)
        by_q = ~asymptotic & (x_in > 1.0) & (x_in > a_in)
        by_p = ~asymptotic & ~by_q
    fraction, q_series = by_q & (x_in > 1.1), by_q & (x_in <= 1.1)
    values = xp.zeros_like(a_in)
    values[asymptotic] = temme.asymptotic(a_in[asymptotic], x_in[asymptotic], upper)
    p = _lower_series(a_in[by_p], x_in[by_p])
    values[by_p] = 1.0 - p if upper else p
    q = _upper_fraction(a_in[fraction], x_in[fraction])
    values[fraction] = q if upper else 1.0 - q
    q = _upper_series(a_in[q_series], x_in[q_series])
    values[q_series] = q if upper else 1.0 - q
    out = xp.zeros_like(flat_a)
    out[where] = values
    return _with_edges(a, x, out.reshape(a.shape), upper)


def _with_edges(a: Any, x: Any, out: Any, upper: bool) -> Any:
    """``out`` where a, x > 0 are finite; elsewhere PyTorch's values, in its order of tests
    (scipy's differ at a = NaN: P(NaN, 0) is NaN there, 0 in PyTorch)."""
    xp = get_array_module(a, x)
    edge = xp.where(xp.isinf(x), 1.0, np.nan)  # P's values; Q's are one minus them
    edge = xp.where(xp.isinf(a), xp.where(xp.isinf(x), np.nan, 0.0), edge)
    edge = xp.where(x == 0, 0.0, edge)
    edge = xp.where(a == 0, xp.where(x > 0, 1.0, np.nan), edge)
    edge = xp.where((x < 0) | (a < 0), np.nan, edge)
    if upper:
        edge = 1.0 - edge
    inside = (a > 0) & (x > 0) & xp.isfinite(a) & xp.isfinite(x)
    return xp.where(inside, out, edge)


def _binary(name: str, a: Any, x: Any, upper: bool) -> Any:
    xp = get_array_module(a, x)
    dtype = np.result_type(a.dtype, x.dtype)
    a64, x64 = xp.broadcast_arrays(a.astype(np.float64), x.astype(np.float64))
    function = cupyx_function(name, a64, x64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if function is not None:
            out = _with_edges(a64, x64, function(a64, x64), upper)
        else:
            out = _incomplete(a64, x64, upper)
    return out.astype(dtype, copy=False)


def gammainc(a: Any, x: Any) -> Any:
    """The regularised lower incomplete gamma function ``P(a, x)`` of float arrays
    (broadcast): NaN for negative arguments, 0 at x = 0, 1 at x = inf or a = 0."""
    return _binary("gammainc", a, x, upper=False)


def gammaincc(a: Any, x: Any) -> Any:
    """The regularised upper incomplete gamma function ``Q(a, x) = 1 - P(a, x)``."""
    return _binary("gammaincc", a, x, upper=True)


def _zeta(x: Any, q: Any) -> Any:
    """Cephes' summation, step for step as PyTorch, early stop included (so that
    ``zeta(inf, 1)`` is 1 and ``zeta(2, inf)`` NaN, as there)."""
    xp = get_array_module(x, q)
    pole = (q <= 0) & (q == xp.floor(q))
    q_safe = xp.where(pole, 1.0, q)
    lowest = float(xp.min(xp.where(xp.isnan(q), 1.0, q_safe))) if q_safe.size else 1.0
    if lowest < -_ZETA_MAX_TERMS + 10:
        raise ValueError(
            f"zeta: q = {lowest} needs about {int(-lowest) + 9} terms, more than dtrain sums "
            f"({_ZETA_MAX_TERMS}); keep q >= {-_ZETA_MAX_TERMS + 10} (or q > 0)"
        )
    steps = max(9, math.floor(9.0 - lowest) + 1)  # terms (q + k)^-x until q + k > 9
    total = q_safe**-x
    early, early_total = xp.zeros(total.shape, dtype=bool), total
    for k in range(1, steps):
        b = (q_safe + k) ** -x
        total = total + b
        in_loop = (k <= 9) | (q_safe + k - 1 <= 9)  # PyTorch's loop is still running
        stop = in_loop & ~early & (xp.abs(b) < _EPS * total)
        early_total = xp.where(stop, total, early_total)
        early = early | stop
    w = q_safe + steps
    b = w**-x
    total = total + b * w / (x - 1.0) + 0.5 * b  # the integral, and half the first term
    a, k = xp.ones_like(x), 0.0
    for coefficient in _ZETA_A:
        a = a * (x + k)
        b = b / w
        total = total + a * b / coefficient
        k += 1.0
        a = a * (x + k)
        b = b / w
        k += 1.0
    out = xp.where(early, early_total, total)
    out = xp.where((q <= 0) & ~pole & (x != xp.floor(x)), np.nan, out)
    out = xp.where(pole, np.inf, out)
    return xp.where(x == 1, np.inf, xp.where(x < 1, np.nan, out))


def zeta(x: Any, q: Any) -> Any:
    """The Hurwitz zeta function ``sum_k (q + k)^-x`` of float arrays (broadcast)."""
    xp = get_array_module(x, q)
    dtype = np.result_type(x.dtype, q.dtype)
    x64, q64 = xp.broadcast_arrays(x.astype(np.float64), q.astype(np.float64))
    function = cupyx_function("zeta", x64, q64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if function is not None:  # scipy's zeta(x, inf) is 0, PyTorch's NaN; and zeta(inf,
            # q > 1e8) too (its asymptotic branch there), PyTorch's NaN as for every q > 1
            nan = (q64 == np.inf) | ((x64 == np.inf) & (q64 > 1e8))
            out = xp.where(nan, np.nan, function(x64, q64))
        else:
            out = _zeta(x64, q64)
    return out.astype(dtype, copy=False)


__all__ = ["gammainc", "gammaincc", "zeta"]
