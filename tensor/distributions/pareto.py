"""``Pareto(scale, alpha)``, computed directly (PyTorch builds it as a
``TransformedDistribution`` of ``Exponential(alpha)``: the same densities and draws)."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
)
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.distributions.weibull import standard_exponential
from dtrain._tensor.tensor import Tensor


class Pareto(Distribution):
    """Density ``alpha scale^alpha / x^(alpha + 1)`` on ``x >= scale``; ``rsample`` is
    ``scale exp(E / alpha)``, ``E ~ Exponential(1)``."""

    arg_constraints: ClassVar[dict] = {
        "alpha": constraints.positive,
        "scale": constraints.positive,
    }
    has_rsample = True

    def __init__(self, scale: Any, alpha: Any, validate_args: bool | None = None) -> None:
        self.scale, self.alpha = broadcast_all(scale, alpha)
        batch_shape = batch_shape_of((scale, alpha), self.scale)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Pareto:
        return expand_params(self, Pareto, batch_shape, _instance, ("scale", "alpha"))

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.greater_than_eq(self.scale)

    @property
    def mean(self) -> Tensor:
        a = self.alpha.clamp(min=1)
        return a * self.scale / (a - 1)

    @property
    def mode(self) -> Tensor:
        return self.scale

    @property
    def variance(self) -> Tensor:
        a = self.alpha.clamp(min=2)
        return self.scale.pow(2) * a / ((a - 1).pow(2) * (a - 2))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        e = standard_exponential(self._extended_shape(sample_shape), self.scale)
        return self.scale * (e / self.alpha).exp()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a = self.alpha
        return a.log() + a * self.scale.log() - (a + 1) * value.log()

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -(-self.alpha * (value / self.scale).log()).expm1()

    def icdf(self, value: Tensor) -> Tensor:
        return self.scale * (-(-value).log1p() / self.alpha).exp()

    def entropy(self) -> Tensor:
        return (self.scale / self.alpha).log() + (1 + self.alpha.reciprocal())


__all__ = ["Pareto"]
