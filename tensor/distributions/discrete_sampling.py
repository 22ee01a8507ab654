"""Vectorised Poisson and binomial samplers for numpy and cupy arrays (float64 in, float64
out), drawn from dtrain's uniform stream.

- Small means (``rate < 10``, ``n min(p, 1 - p) < 10``): inversion of the CDF, the pmf
  built by its recurrence in at most ``_INVERSION_STEPS`` vectorised steps (the mass beyond
  them is below 1e-20), fewer once every draw is settled.
- Each method runs only on the elements that take it (the two groups are gathered by
  index: two host reads on CUDA).
- Large means: Hörmann's transformed rejection with squeeze, PTRS for the Poisson
  ("The transformed rejection method for generating Poisson random variables", 1993) and
  BTRS for the binomial ("The generation of binomial random variates", 1993), with the
  exact log-pmf ratio (``lgamma``) as the acceptance bound. Every element gets
  ``_FIRST_ROUND`` proposals at once and keeps its first accepted one (each is accepted
  with probability > 0.85); the elements left over get ``_ROUNDS`` more per round, which
  costs a host read per round on CUDA, as the gamma sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor import functions as fn
from dtrain.runtime import gamma_functions
from dtrain.runtime.backend import get_array_module

_FIRST_ROUND = 2  # proposals per element in round 1
_ROUNDS = 8  # proposals per leftover element in later rounds
_INVERSION_STEPS = 64
_INVERSION_BELOW = 10.0
_CHECK_EVERY = 8


def _uniform(shape: tuple, device: Any) -> Any:
    return fn.rand(shape, dtype=np.float64, device=device)._array


def _first_accepted(propose: Callable[..., tuple[Any, Any]], *params: Any) -> Any:
    """Rejection sampling for flat parameter arrays ``params``: ``propose(rounds, *params)``
    gives ``(values, accepted)`` of shape ``(rounds, m)``, the first accepted value wins.
    Round 1 makes ``_FIRST_ROUND`` proposals per element; later rounds ``_ROUNDS`` for the
    elements left over only (one host read per round, plus the leftovers' indices)."""
    xp = get_array_module(params[0])

    def first_of(values: Any, accepted: Any) -> Any:
        return xp.take_along_axis(values, xp.argmax(accepted, axis=0)[None], axis=0)[0]

    values, accepted = propose(_FIRST_ROUND, *params)
    value = first_of(values, accepted)
    done = accepted.any(axis=0)
    while not bool(done.all()):  # at most 0.15^2 of the elements after round 1
        left = xp.flatnonzero(~done)
        values, accepted = propose(_ROUNDS, *(p[left] for p in params))
        value[left] = first_of(values, accepted)  # still-rejected ones: redrawn next round
        done[left] = accepted.any(axis=0)
    return value


def _inversion(first_pmf: Any, ratio: Callable[[int], Any], device: Any) -> Any:
    """The smallest ``k`` with ``u < F(k)``, ``pmf(k + 1) = pmf(k) * ratio(k)``; stops
    early once every ``u`` is below ``F`` (checked every ``_CHECK_EVERY`` steps, one host
    read each: no count can change after that)."""
    xp = get_array_module(first_pmf)
    u = _uniform(first_pmf.shape, device)
    pmf = first_pmf
    cdf = pmf
    count = xp.zeros_like(pmf)
    for k in range(_INVERSION_STEPS):
        count = count + (cdf <= u)
        if k % _CHECK_EVERY == _CHECK_EVERY - 1 and bool((cdf > u).all()):
            break
        pmf = pmf * ratio(k)
        cdf = cdf + pmf
    return count


def _by_branch(small: Any, by_small: Callable, by_large: Callable, *arrays: Any) -> Any:
    """``by_small`` on the elements where ``small`` holds, ``by_large`` on the others, each
    given only its own elements of ``arrays`` (flat): neither method runs on elements that
    take the other (on CUDA, the two index arrays are two host reads)."""
    xp = get_array_module(small)
    flags = small.reshape(-1)
    flat = [xp.broadcast_to(a, small.shape).reshape(-1) for a in arrays]
    out = xp.empty(flags.shape, dtype=np.float64)
    for index, method in ((xp.flatnonzero(flags), by_small), (xp.flatnonzero(~flags), by_large)):
        if index.size:
            out[index] = method(*(a[index] for a in flat))
    return out.reshape(small.shape)


def _poisson_inversion(lam: Any, device: Any) -> Any:
    xp = get_array_module(lam)
    return _inversion(xp.exp(-lam), lambda k: lam / (k + 1), device)


def _ptrs_propose(rounds: int, lam: Any, device: Any) -> tuple[Any, Any]:
    """``rounds`` PTRS proposals per element of ``lam`` (flat, ``lam >= 10``)."""
    xp = get_array_module(lam)
    slam, loglam = xp.sqrt(lam), xp.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_inv_alpha = xp.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)
    shape = (rounds,) + lam.shape
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


def poisson(rate: Any, device: Any) -> Any:
    """Poisson draws of mean ``rate`` (a float64 array, ``rate >= 0``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _by_branch(
            rate < _INVERSION_BELOW,
            lambda lam: _poisson_inversion(lam, device),
            lambda lam: _first_accepted(lambda r, x: _ptrs_propose(r, x, device), lam),
            rate,
        )


def _binomial_inversion(n: Any, q: Any, device: Any) -> Any:
    xp = get_array_module(q)
    odds = q / (1.0 - q)
    first = xp.exp(n * xp.log1p(-q))
    draws = _inversion(first, lambda k: (n - k) / (k + 1) * odds, device)
    return xp.minimum(draws, n)  # F rounded below u near 1


def _btrs_propose(rounds: int, n: Any, p: Any, device: Any) -> tuple[Any, Any]:
    """``rounds`` BTRS proposals per element (flat ``n``, ``p <= 0.5``, ``n p >= 10``)."""
    xp = get_array_module(p)
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
    shape = (rounds,) + n.shape
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


def binomial(count: Any, probs: Any, device: Any) -> Any:
    """Binomial draws of ``count`` trials (float64 array of integers) with success
    probability ``probs`` (float64, in ``[0, 1]``)."""
    xp = get_array_module(probs)
    flip = probs > 0.5
    q = xp.where(flip, 1.0 - probs, probs)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        draws = _by_branch(
            count * q < _INVERSION_BELOW,
            lambda n, p: _binomial_inversion(n, p, device),
            lambda n, p: _first_accepted(lambda r, *x: _btrs_propose(r, *x, device), n, p),
            count,
            q,
        )
    return xp.where(flip, count - draws, draws)


__all__ = ["binomial", "poisson"]
