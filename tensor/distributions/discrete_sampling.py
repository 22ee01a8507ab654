"""Vectorised Poisson and binomial samplers for numpy and cupy arrays (float64 in, float64
out), drawn from dtrain's uniform stream.

- Small means (``rate < 10``, ``n min(p, 1 - p) < 10``): inversion of the CDF, the pmf
  built by its recurrence in ``_INVERSION_STEPS`` fixed vectorised steps (the mass beyond
  them is below 1e-20).
- Large means: Hörmann's transformed rejection with squeeze, PTRS for the Poisson
  ("The transformed rejection method for generating Poisson random variables", 1993) and
  BTRS for the binomial ("The generation of binomial random variates", 1993), with the
  exact log-pmf ratio (``lgamma``) as the acceptance bound. Every element gets
  ``_ROUNDS`` proposals at once and keeps its first accepted one (each is accepted with
  probability > 0.85); elements left over get further rounds, which costs one host read
  per draw on CUDA, as the gamma sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor import functions as fn
from dtrain.runtime import gamma_functions
from dtrain.runtime.backend import get_array_module

_ROUNDS = 8
_INVERSION_STEPS = 64
_INVERSION_BELOW = 10.0


def _uniform(shape: tuple, device: Any) -> Any:
    return fn.rand(shape, dtype=np.float64, device=device)._array


def _first_accepted(propose: Callable[[], tuple[Any, Any]]) -> Any:
    """Run ``propose()`` (``(values, accepted)`` of shape ``(_ROUNDS, *shape)``) until every
    element has an accepted value; the first one wins."""
    values, accepted = propose()
    xp = get_array_module(values)
    first = xp.argmax(accepted, axis=0)[None]
    value = xp.take_along_axis(values, first, axis=0)[0]
    done = accepted.any(axis=0)
    while not bool(done.all()):  # rare: at most (0.15)^8 per element
        more_values, more_accepted = propose()
        first = xp.argmax(more_accepted, axis=0)[None]
        more = xp.take_along_axis(more_values, first, axis=0)[0]
        value = xp.where(done, value, more)
        done = done | more_accepted.any(axis=0)
    return value


def _inversion(first_pmf: Any, ratio: Callable[[int], Any], device: Any) -> Any:
    """The smallest ``k`` with ``u < F(k)``, ``pmf(k + 1) = pmf(k) * ratio(k)``."""
    xp = get_array_module(first_pmf)
    u = _uniform(first_pmf.shape, device)
    pmf = first_pmf
    cdf = pmf
    count = xp.zeros_like(pmf)
    for k in range(_INVERSION_STEPS):
        count = count + (cdf <= u)
        pmf = pmf * ratio(k)
        cdf = cdf + pmf
    return count


def poisson(rate: Any, device: Any) -> Any:
    """Poisson draws of mean ``rate`` (a float64 array, ``rate >= 0``)."""
    xp = get_array_module(rate)
    small = rate < _INVERSION_BELOW
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lam_small = xp.where(small, rate, 0.0)
        by_inversion = _inversion(xp.exp(-lam_small), lambda k: lam_small / (k + 1), device)
        lam = xp.where(small, _INVERSION_BELOW, rate)
        slam, loglam = xp.sqrt(lam), xp.log(lam)
        b = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * b
        log_inv_alpha = xp.log(1.1239 + 1.1328 / (b - 3.4))
        vr = 0.9277 - 3.6224 / (b - 2.0)

        def propose() -> tuple[Any, Any]:
            shape = (_ROUNDS,) + lam.shape
            u = _uniform(shape, device) - 0.5
            v = _uniform(shape, device)
            us = 0.5 - xp.abs(u)
            k = xp.floor((2.0 * a / us + b) * u + lam + 0.43)
            quick = (us >= 0.07) & (v <= vr)
            reject = (k < 0) | ((us < 0.013) & (v > us))
            kk = xp.maximum(k, 0.0)
            bound = -lam + kk * loglam - gamma_functions.lgamma(kk + 1.0)
            full = xp.log(v) + log_inv_alpha - xp.log(a / (us * us) + b) <= bound
            return k, quick | (~reject & full)

        by_rejection = _first_accepted(propose)
    return xp.where(small, by_inversion, by_rejection)


def binomial(count: Any, probs: Any, device: Any) -> Any:
    """Binomial draws of ``count`` trials (float64 array of integers) with success
    probability ``probs`` (float64, in ``[0, 1]``)."""
    xp = get_array_module(probs)
    flip = probs > 0.5
    q = xp.where(flip, 1.0 - probs, probs)
    small = count * q < _INVERSION_BELOW
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_small = xp.where(small, count, 0.0)
        q_small = xp.where(small, q, 0.0)
        odds = q_small / (1.0 - q_small)
        first = xp.exp(n_small * xp.log1p(-q_small))
        by_inversion = _inversion(first, lambda k: (n_small - k) / (k + 1) * odds, device)
        by_inversion = xp.minimum(by_inversion, n_small)  # F rounded below u near 1
        n = xp.where(small, 40.0, count)
        p = xp.where(small, 0.5, q)
        spq = xp.sqrt(n * p * (1.0 - p))
        b = 1.15 + 2.53 * spq
        a = -0.0873 + 0.0248 * b + 0.01 * p
        c = n * p + 0.5
        vr = 0.92 - 4.2 / b
        alpha = (2.83 + 5.1 / b) * spq
        m = xp.floor((n + 1.0) * p)
        log_odds = xp.log(p / (1.0 - p))
        lgamma = gamma_functions.lgamma
        at_mode = lgamma(m + 1.0) + lgamma(n - m + 1.0)

        def propose() -> tuple[Any, Any]:
            shape = (_ROUNDS,) + n.shape
            u = _uniform(shape, device) - 0.5
            v = _uniform(shape, device)
            us = 0.5 - xp.abs(u)
            k = xp.floor((2.0 * a / us + b) * u + c)
            valid = (k >= 0) & (k <= n)
            quick = (us >= 0.07) & (v <= vr)
            kk = xp.clip(k, 0.0, n)
            bound = at_mode - lgamma(kk + 1.0) - lgamma(n - kk + 1.0) + (kk - m) * log_odds
            full = xp.log(v * alpha / (a / (us * us) + b)) <= bound
            return k, valid & (quick | full)

        by_rejection = _first_accepted(propose)
    draws = xp.where(small, by_inversion, by_rejection)
    return xp.where(flip, count - draws, draws)


__all__ = ["binomial", "poisson"]
