"""``LogNormal(loc, scale)``: ``exp`` of a ``Normal(loc, scale)`` draw."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import Distribution, expand_params
from dtrain._tensor.distributions.normal import Normal
from dtrain._tensor.tensor import Tensor


class LogNormal(Distribution):
    """``Y = exp(X)`` with ``X ~ Normal(loc, scale)``; ``base_dist`` is that Normal.
    (PyTorch builds it as a ``TransformedDistribution``; dtrain computes it directly, with
    the same values.)"""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None) -> None:
        self.base_dist = Normal(loc, scale, validate_args=validate_args)
        super().__init__(self.base_dist.batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> LogNormal:
        new = expand_params(self, LogNormal, batch_shape, _instance, ())
        new.base_dist = self.base_dist.expand(batch_shape)
        return new

    @property
    def loc(self) -> Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> Tensor:
        return self.base_dist.scale

    @property
    def mean(self) -> Tensor:
        return (self.loc + self.scale.pow(2) / 2).exp()

    @property
    def mode(self) -> Tensor:
        return (self.loc - self.scale.square()).exp()

    @property
    def variance(self) -> Tensor:
        scale_sq = self.scale.pow(2)
        # expm1: in float32, exp(scale**2) - 1 is 0 for scale 1e-4 (PyTorch uses expm1 too)
        return scale_sq.expm1() * (2 * self.loc + scale_sq).exp()

    def sample(self, sample_shape: Any = ()) -> Tensor:
        return self.base_dist.sample(sample_shape).exp()

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.base_dist.rsample(sample_shape).exp()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_value = value.log()
        return self.base_dist.log_prob(log_value) - log_value

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.base_dist.cdf(value.log())

    def icdf(self, value: Tensor) -> Tensor:
        return self.base_dist.icdf(value).exp()

    def entropy(self) -> Tensor:
        return self.base_dist.entropy() + self.loc


__all__ = ["LogNormal"]
