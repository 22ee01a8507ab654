"""``Exponential(rate)``: the waiting time of a Poisson process of rate ``rate``."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.tensor import Tensor


class Exponential(Distribution):
    """Density ``rate * exp(-rate * x)`` on ``x >= 0``; ``rsample`` is reparameterised
    (``-log(1 - u) / rate``)."""

    arg_constraints: ClassVar[dict] = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True
    _mean_carrier_measure = 0

    def __init__(self, rate: Any, validate_args: bool | None = None) -> None:
        (self.rate,) = broadcast_all(rate)
        batch_shape = batch_shape_of((rate,), self.rate)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Exponential:
        return expand_params(self, Exponential, batch_shape, _instance, ("rate",))

    @property
    def mean(self) -> Tensor:
        return self.rate.reciprocal()

    @property
    def mode(self) -> Tensor:
        return fn.zeros_like(self.rate)

    @property
    def stddev(self) -> Tensor:
        return self.rate.reciprocal()

    @property
    def variance(self) -> Tensor:
        return self.rate.pow(-2)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        u = standard_uniform(self._extended_shape(sample_shape), self.rate)
        return -(-u).log1p() / self.rate

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return 1 - (-self.rate * value).exp()

    def icdf(self, value: Tensor) -> Tensor:
        return -(-value).log1p() / self.rate

    def entropy(self) -> Tensor:
        return 1.0 - self.rate.log()


__all__ = ["Exponential"]
