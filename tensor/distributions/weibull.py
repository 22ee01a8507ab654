"""``Weibull(scale, concentration)``, computed directly (PyTorch builds it as a
``TransformedDistribution`` of ``Exponential(1)``: the same densities and draws)."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.gumbel import EULER_GAMMA
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor


def standard_exponential(shape: Any, like: Tensor) -> Tensor:
    """``Exponential(1)`` draws ``-log(1 - u)`` of ``shape`` (finite: ``u < 1``), outside the
    graph, in ``like``'s dtype and device."""
    with no_grad():
        return -(-standard_uniform(shape, like)).log1p()


class Weibull(Distribution):
    """Density ``(k / s) (x / s)^(k - 1) exp(-(x / s)^k)`` on ``x > 0`` (``s = scale``,
    ``k = concentration``); ``rsample`` is ``s E^(1 / k)``, ``E ~ Exponential(1)``."""

    arg_constraints: ClassVar[dict] = {
        "scale": constraints.positive,
        "concentration": constraints.positive,
    }
    support = constraints.positive
    has_rsample = True

    def __init__(self, scale: Any, concentration: Any, validate_args: bool | None = None) -> None:
        self.scale, self.concentration = broadcast_all(scale, concentration)
        batch_shape = batch_shape_of((scale, concentration), self.scale)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Weibull:
        return expand_params(self, Weibull, batch_shape, _instance, ("scale", "concentration"))

    @property
    def concentration_reciprocal(self) -> Tensor:
        """``1 / concentration``."""
        return self.concentration.reciprocal()

    @property
    def mean(self) -> Tensor:
        return self.scale * lgamma(1 + self.concentration_reciprocal).exp()

    @property
    def mode(self) -> Tensor:
        k = self.concentration
        return self.scale * ((k - 1) / k).pow(k.reciprocal())

    @property
    def variance(self) -> Tensor:
        r = self.concentration_reciprocal
        return self.scale.pow(2) * (lgamma(1 + 2 * r).exp() - (2 * lgamma(1 + r)).exp())

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        e = standard_exponential(self._extended_shape(sample_shape), self.scale)
        return self.scale * e.pow(self.concentration_reciprocal)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k, z = self.concentration, value / self.scale
        return (k / self.scale).log() + fn.xlogy(k - 1, z) - z.pow(k)

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:  # defined at 0 (PyTorch checks its Exponential base's support)
            self._validate_sample(value, constraints.nonnegative)
        return -(-(value / self.scale).pow(self.concentration)).expm1()

    def icdf(self, value: Tensor) -> Tensor:
        return self.scale * (-(-value).log1p()).pow(self.concentration_reciprocal)

    def entropy(self) -> Tensor:
        r = self.concentration_reciprocal
        return EULER_GAMMA * (1 - r) + (self.scale * r).log() + 1


__all__ = ["Weibull"]
