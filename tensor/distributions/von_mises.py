"""``VonMises(loc, concentration)``: the circular normal distribution on ``[-pi, pi)``, as
PyTorch's (``log I0`` by its polynomial fits; draws by Best & Fisher's rejection method;
no ``rsample``)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
)
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

_FIRST_ROUND = 2  # proposals per element in round 1 (each accepted with p >= 0.65)
_ROUNDS = 8  # proposals per leftover element in later rounds
_CHUNK = 1 << 17  # proposals evaluated at once: bounds the temporaries (~100 bytes each)
_I0_COEF_SMALL = (1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.360768e-1, 0.45813e-2)
_I0_COEF_LARGE = (
    0.39894228, 0.1328592e-1, 0.225319e-2, -0.157565e-2, 0.916281e-2,
    -0.2057706e-1, 0.2635537e-1, -0.1647633e-1, 0.392377e-2,
)  # fmt: skip
_I1_COEF_SMALL = (0.5, 0.87890594, 0.51498869, 0.15084934, 0.2658733e-1, 0.301532e-2, 0.32411e-3)
_I1_COEF_LARGE = (
    0.39894228, -0.3988024e-1, -0.362018e-2, 0.163801e-2, -0.1031555e-1,
    0.2282967e-1, -0.2895312e-1, 0.1787654e-1, -0.420059e-2,
)  # fmt: skip


def _eval_poly(y: Tensor, coef: tuple) -> Tensor:
    result: Any = coef[-1]
    for c in reversed(coef[:-1]):
        result = c + y * result
    return result


def log_modified_bessel(x: Tensor, order: int = 0) -> Tensor:
    """``log I_order(x)`` for ``x > 0`` (``order`` 0 or 1), by Abramowitz & Stegun's
    polynomial fits (9.8.1-9.8.4), as PyTorch's VonMises; differentiable.

    Raises:
        ValueError: ``order`` is not 0 or 1.
    """
    if order not in (0, 1):
        raise ValueError(f"log_modified_bessel: order must be 0 or 1, got {order!r}")
    small_coef = _I0_COEF_SMALL if order == 0 else _I1_COEF_SMALL
    large_coef = _I0_COEF_LARGE if order == 0 else _I1_COEF_LARGE
    y = (x / 3.75).pow(2)
    small = _eval_poly(y, small_coef)
    if order == 1:
        small = x.abs() * small
    small = small.log()
    large = x - 0.5 * x.log() + _eval_poly(3.75 / x, large_coef).log()
    return fn.where(x < 3.75, small, large)


def _propose(kappa: Any, proposal_r: Any, rounds: int, like: Tensor) -> tuple[Any, Any]:
    """``rounds`` Best & Fisher proposals for each of ``m`` elements (flat float64 parameter
    arrays of length ``m``): the first accepted draw (centred at 0) and whether any was."""
    xp = get_array_module(kappa)
    u = fn.rand((3, rounds) + kappa.shape, dtype=np.float64, device=like.device)._array
    u1, u2, u3 = u[0], u[1], u[2]
    z = xp.cos(math.pi * u1)
    f = (1 + proposal_r * z) / (proposal_r + z)
    c = kappa * (proposal_r - f)
    with np.errstate(divide="ignore", invalid="ignore"):
        accept = ((c * (2 - c) - u2) > 0) | (xp.log(c / u2) + 1 - c >= 0)
    draws = xp.sign(u3 - 0.5) * xp.arccos(xp.clip(f, -1.0, 1.0))
    first = xp.argmax(accept, axis=0)[None]
    return xp.take_along_axis(draws, first, axis=0)[0], accept.any(axis=0)


def _rejection_sample(kappa: Any, proposal_r: Any, n: int, like: Tensor) -> Any:
    """``n`` Best & Fisher (1979) draws centred at 0 (flat float64), element ``i`` with the
    parameters at ``i % kappa.size`` (flat arrays of the batch). Round 1 makes
    ``_FIRST_ROUND`` proposals for every element, later rounds ``_ROUNDS`` for the
    leftovers only, in chunks of ``_CHUNK`` proposals: memory is ``O(n)`` bytes plus
    ``O(_CHUNK)``, whatever ``n`` (host reads each round: a flag, then the leftovers)."""
    xp = get_array_module(kappa)
    nb = kappa.size
    value = xp.zeros(n, dtype=np.float64)
    done = xp.zeros(n, dtype=bool)
    pending = None  # round 1: every element (no index array)
    rounds = _FIRST_ROUND
    while True:
        m = n if pending is None else pending.size
        step = max(1, _CHUNK // rounds)
        for start in range(0, m, step):
            stop = min(start + step, m)
            if pending is None:
                where: Any = slice(start, stop)
                params = xp.arange(start, stop) % nb if nb > 1 else xp.zeros(stop - start, int)
            else:
                where = pending[start:stop]
                params = where % nb
            picked, accepted = _propose(kappa[params], proposal_r[params], rounds, like)
            value[where] = picked
            done[where] = accepted
        # host reads: the flag, then (cupy's nonzero syncs) the leftovers' indices
        if bool(done.all() if pending is None else done[pending].all()):
            return value
        pending = xp.flatnonzero(~done) if pending is None else pending[~done[pending]]
        rounds = _ROUNDS


class VonMises(Distribution):
    """Density ``exp(kappa cos(x - loc)) / (2 pi I0(kappa))`` (``kappa = concentration``);
    ``log_prob`` is not restricted to one period (as PyTorch's); draws lie in
    ``[-pi, pi)``. No ``rsample``."""

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real,
        "concentration": constraints.positive,
    }
    support = constraints.real
    has_rsample = False

    def __init__(self, loc: Any, concentration: Any, validate_args: bool | None = None) -> None:
        self.loc, self.concentration = broadcast_all(loc, concentration)
        batch_shape = batch_shape_of((loc, concentration), self.loc)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> VonMises:
        return expand_params(self, VonMises, batch_shape, _instance, ("loc", "concentration"))

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        """The circular variance ``1 - I1(kappa) / I0(kappa)``."""
        kappa = self.concentration
        return 1 - (log_modified_bessel(kappa, 1) - log_modified_bessel(kappa, 0)).exp()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_prob = self.concentration * (value - self.loc).cos()
        return log_prob - math.log(2 * math.pi) - log_modified_bessel(self.concentration, 0)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        shape = tuple(self._extended_shape(sample_shape))
        loc = self.loc.detach()
        xp = get_array_module(loc._array)
        batch = tuple(self.batch_shape)
        kappa = xp.broadcast_to(self.concentration.detach()._array, batch)
        kappa = kappa.astype(np.float64).reshape(-1)
        # rho from kappa >= 1e-5 only: where() evaluates both branches (no divide warning)
        safe = xp.maximum(kappa, 1e-5)
        tau = 1 + xp.sqrt(1 + 4 * safe**2)
        rho = (tau - xp.sqrt(2 * tau)) / (2 * safe)
        proposal_r = xp.where(kappa < 1e-5, 1 / kappa + kappa, (1 + rho**2) / (2 * rho))
        value = _rejection_sample(kappa, proposal_r, math.prod(shape), loc).reshape(shape)
        # in place: no further draw-sized temporaries
        value += math.pi
        value += loc._array.astype(np.float64)
        xp.remainder(value, 2 * math.pi, out=value)
        value -= math.pi
        return wrap(xp.asarray(value.astype(loc._array.dtype, copy=False)))


__all__ = ["VonMises", "log_modified_bessel"]
