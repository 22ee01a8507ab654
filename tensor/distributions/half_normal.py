"""``HalfNormal(scale)``: ``|X|`` of a ``Normal(0, scale)``."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import Distribution, expand_params
from dtrain._tensor.distributions.normal import Normal
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.tensor import Tensor


class HalfNormal(Distribution):
    """``|X|`` with ``X ~ Normal(0, scale)``; ``base_dist`` is that Normal (PyTorch builds it
    as a ``TransformedDistribution``; dtrain computes it directly). ``log_prob`` is
    ``-inf`` below 0 when validation is off."""

    arg_constraints: ClassVar[dict] = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, scale: Any, validate_args: bool | None = None) -> None:
        self.base_dist = Normal(0, scale, validate_args=False)
        super().__init__(self.base_dist.batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> HalfNormal:
        new = expand_params(self, HalfNormal, batch_shape, _instance, ())
        new.base_dist = self.base_dist.expand(batch_shape)
        return new

    @property
    def scale(self) -> Tensor:
        return self.base_dist.scale

    @property
    def mean(self) -> Tensor:
        return self.scale * math.sqrt(2 / math.pi)

    @property
    def mode(self) -> Tensor:
        return fn.zeros_like(self.scale)

    @property
    def variance(self) -> Tensor:
        return self.scale.pow(2) * (1 - 2 / math.pi)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.base_dist.rsample(sample_shape).abs()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = broadcast_all(value, self.scale)[0]
        log_prob = self.base_dist.log_prob(value) + math.log(2)
        return fn.where(value >= 0, log_prob, float("-inf"))

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return 2 * self.base_dist.cdf(value) - 1

    def icdf(self, prob: Tensor) -> Tensor:
        return self.base_dist.icdf((prob + 1) / 2)

    def entropy(self) -> Tensor:
        return self.base_dist.entropy() - math.log(2)


__all__ = ["HalfNormal"]
