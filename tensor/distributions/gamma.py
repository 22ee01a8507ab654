"""``Gamma(concentration, rate)`` and ``Chi2(df)``, and the gamma sampler Beta and Dirichlet
draw from.

``rsample`` differentiates the draws implicitly, as PyTorch's: ``dx/dconcentration`` of a
standard gamma draw comes from ``gamma_grad.standard_gamma_grad`` (PyTorch's piecewise
approximation of ``-(dF/dalpha) / (dF/dx)``), ``dx/drate = -x / rate``.

The sampler is Marsaglia & Tsang's (2000) rejection method, vectorised: every element gets
``_ROUNDS`` proposals at once and keeps its first accepted one (each is accepted with
probability >= 0.95, so all fail with probability < 1e-10); the rare elements left over
get further rounds, which costs one host read per draw on CUDA. ``concentration < 1``
boosts: ``Gamma(a) = Gamma(a + 1) * U ** (1 / a)``. Draws are clamped to the dtype's
smallest normal number, as PyTorch's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
)
from dtrain._tensor.distributions.gamma_grad import standard_gamma_grad
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import digamma, lgamma
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import finfo

_ROUNDS = 8


def _draws(kind: str, shape: tuple, like: Tensor) -> Any:
    if kind == "normal":
        return fn.randn(shape, dtype=np.float64, device=like.device)._array
    return fn.rand(shape, dtype=np.float64, device=like.device)._array


def _marsaglia_tsang(boosted: Any, like: Tensor) -> tuple[Any, Any]:
    """One vectorised batch of ``_ROUNDS`` proposals: (value, accepted) per element."""
    xp = get_array_module(boosted)
    d = boosted - 1.0 / 3.0
    c = 1.0 / xp.sqrt(9.0 * d)
    x = _draws("normal", (_ROUNDS,) + boosted.shape, like)
    u = _draws("uniform", (_ROUNDS,) + boosted.shape, like)
    v = 1.0 + c * x
    v = v * v * v
    positive = v > 0
    log_v = xp.log(xp.where(positive, v, 1.0))
    accept = positive & (xp.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    first = xp.argmax(accept, axis=0)[None]
    value = xp.take_along_axis(d * v, first, axis=0)[0]
    return value, accept.any(axis=0)


def _standard_gamma_array(concentration: Any, like: Tensor) -> Any:
    """``Gamma(concentration, 1)`` draws (an array of ``concentration``'s shape and dtype)."""
    alpha = concentration.astype(np.float64)
    xp = get_array_module(alpha)
    boosted = xp.where(alpha < 1, alpha + 1.0, alpha)
    value, done = _marsaglia_tsang(boosted, like)
    while not bool(done.all()):  # probability < 1e-10 per element: almost never runs
        more, accepted = _marsaglia_tsang(boosted, like)
        value = xp.where(done, value, more)
        done = done | accepted
    u = _draws("uniform", alpha.shape, like)
    with np.errstate(divide="ignore"):
        log_value = xp.log(value) + xp.where(alpha < 1, xp.log(u) / alpha, 0.0)
    out = xp.exp(log_value).astype(concentration.dtype)
    return xp.asarray(xp.maximum(out, out.dtype.type(finfo(out.dtype).tiny)))  # 0-d: an array


def standard_gamma(concentration: Tensor) -> Tensor:
    """``Gamma(concentration, 1)`` draws of ``concentration``'s shape, dtype and device
    (outside the graph)."""
    return wrap(_standard_gamma_array(concentration.detach()._array, concentration))


class GammaDraw(Op):
    """``Gamma(alpha, rate)`` draws ``g / rate`` (``g`` standard gamma, the result clamped
    to the smallest normal number), differentiated implicitly: ``d/dalpha`` is
    ``standard_gamma_grad(alpha, g) / rate`` and ``d/drate`` is ``-value / rate``."""

    reads_inputs = True

    def forward(self, alpha: Any, rate: Any, like: Tensor) -> Any:
        xp = get_array_module(alpha)
        g = _standard_gamma_array(alpha, like)
        value = g / rate
        self.alpha, self.rate, self.g, self.value = alpha, rate, g, value
        return xp.maximum(value, value.dtype.type(finfo(value.dtype).tiny))

    def backward(self, grad: Any) -> tuple:
        grad_alpha = grad_rate = None
        if self.needs_input_grad[0]:
            grad_alpha = grad * standard_gamma_grad(self.alpha, self.g) / self.rate
        if self.needs_input_grad[1]:
            grad_rate = -grad * self.value / self.rate
        return grad_alpha, grad_rate


def gamma_rsample(concentration: Tensor, rate: Any = 1.0) -> Tensor:
    """Reparameterised ``Gamma(concentration, rate)`` draws of ``concentration``'s shape
    (``rate`` a tensor of that shape, or a number)."""
    return GammaDraw.apply(concentration, rate, like=concentration)


class Gamma(Distribution):
    """Density ``rate^a x^(a-1) exp(-rate x) / Gamma(a)`` on ``x > 0``, ``a`` the
    ``concentration``; ``rsample`` differentiates the draws implicitly, as PyTorch's."""

    arg_constraints: ClassVar[dict] = {
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = constraints.nonnegative
    has_rsample = True
    _mean_carrier_measure = 0

    def __init__(self, concentration: Any, rate: Any, validate_args: bool | None = None) -> None:
        self.concentration, self.rate = broadcast_all(concentration, rate)
        batch_shape = batch_shape_of((concentration, rate), self.concentration)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Gamma:
        return expand_params(self, Gamma, batch_shape, _instance, ("concentration", "rate"))

    @property
    def mean(self) -> Tensor:
        return self.concentration / self.rate

    @property
    def mode(self) -> Tensor:
        return ((self.concentration - 1) / self.rate).clamp(min=0)

    @property
    def variance(self) -> Tensor:
        return self.concentration / self.rate.pow(2)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return gamma_rsample(self.concentration.expand(shape), self.rate.expand(shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration, self.rate
        return fn.xlogy(a, b) + fn.xlogy(a - 1, value) - b * value - lgamma(a)

    def entropy(self) -> Tensor:
        a = self.concentration
        return a - self.rate.log() + lgamma(a) + (1.0 - a) * digamma(a)


class Chi2(Gamma):
    """The chi-squared distribution with ``df`` degrees of freedom:
    ``Gamma(df / 2, 1 / 2)``."""

    arg_constraints: ClassVar[dict] = {"df": constraints.positive}

    def __init__(self, df: Any, validate_args: bool | None = None) -> None:
        (df_tensor,) = broadcast_all(df)
        self.df = df_tensor
        super().__init__(0.5 * df_tensor, 0.5 * fn.ones_like(df_tensor), validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Chi2:
        return expand_params(self, Chi2, batch_shape, _instance, ("df", "concentration", "rate"))


__all__ = ["Chi2", "Gamma", "gamma_rsample", "standard_gamma"]
