"""``Poisson(rate)``: counts of events at rate ``rate``."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints, discrete_sampling
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
)
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor, wrap


class Poisson(Distribution):
    """Mass ``rate^k exp(-rate) / k!`` on ``k = 0, 1, ...``; ``sample`` only (no
    ``rsample``), draws in the rate's float dtype as PyTorch's (see
    ``discrete_sampling`` for the method)."""

    arg_constraints: ClassVar[dict] = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    def __init__(self, rate: Any, validate_args: bool | None = None) -> None:
        (self.rate,) = broadcast_all(rate)
        batch_shape = batch_shape_of((rate,), self.rate)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Poisson:
        return expand_params(self, Poisson, batch_shape, _instance, ("rate",))

    @property
    def mean(self) -> Tensor:
        return self.rate

    @property
    def mode(self) -> Tensor:
        return self.rate.floor()

    @property
    def variance(self) -> Tensor:
        return self.rate

    def sample(self, sample_shape: Any = ()) -> Tensor:
        shape = tuple(self._extended_shape(sample_shape))
        rate = self.rate.detach()
        array = rate.expand(shape)._array.astype("float64")
        draws = discrete_sampling.poisson(array, rate.device)
        return wrap(draws.astype(rate._array.dtype))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value, rate = broadcast_all(value, self.rate)
        return fn.xlogy(value, rate) - rate - lgamma(value + 1)


__all__ = ["Poisson"]
