"""``Kumaraswamy(concentration1, concentration0)``, computed directly (PyTorch builds it as a
``TransformedDistribution`` of a uniform: the same densities and draws)."""

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
from dtrain._tensor.distributions.gumbel import EULER_GAMMA
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import digamma, lgamma
from dtrain._tensor.tensor import Tensor


def _moments(a: Tensor, b: Tensor, n: int) -> Tensor:
    """``E[X^n] = b B(1 + n / a, b)``."""
    arg1 = 1 + n / a
    return b * (lgamma(arg1) + lgamma(b) - lgamma(arg1 + b)).exp()


class Kumaraswamy(Distribution):
    """Density ``a b x^(a - 1) (1 - x^a)^(b - 1)`` on ``[0, 1]`` (``a = concentration1``,
    ``b = concentration0``); ``rsample`` is ``(1 - u^(1 / b))^(1 / a)``, ``u`` uniform."""

    arg_constraints: ClassVar[dict] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self, concentration1: Any, concentration0: Any, validate_args: bool | None = None
    ) -> None:
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        batch_shape = batch_shape_of((concentration1, concentration0), self.concentration1)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Kumaraswamy:
        names = ("concentration1", "concentration0")
        return expand_params(self, Kumaraswamy, batch_shape, _instance, names)

    @property
    def mean(self) -> Tensor:
        return _moments(self.concentration1, self.concentration0, 1)

    @property
    def mode(self) -> Tensor:
        """The density's maximiser: ``((a - 1) / (a b - 1))^(1 / a)`` for ``a, b >= 1``, 0
        (``a < 1``) or 1 (``b < 1``) where the density is unbounded at one end, NaN for two
        modes (``a, b < 1``) or none (``a = b = 1``). PyTorch's formula is NaN throughout."""
        a, b = self.concentration1, self.concentration0
        a1, b1 = a.clamp(min=1.0), b.clamp(min=1.0)  # the interior branch's domain
        denominator = a1 * b1 - 1
        inside = ((a1 - 1) / fn.where(denominator > 0, denominator, 1.0)).pow(a1.reciprocal())
        mode = fn.where(a < 1, 0.0, fn.where(b < 1, 1.0, inside))
        undefined = ((a < 1) & (b < 1)) | ((a == 1) & (b == 1))
        return fn.where(undefined, float("nan"), mode)

    @property
    def variance(self) -> Tensor:
        return _moments(self.concentration1, self.concentration0, 2) - self.mean.pow(2)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        u = standard_uniform(self._extended_shape(sample_shape), self.concentration1)
        return (1 - u.pow(self.concentration0.reciprocal())).pow(self.concentration1.reciprocal())

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        x_a = value.pow(a)
        return (a * b).log() + fn.xlogy(a - 1, value) + fn.xlogy(b - 1, 1 - x_a)

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        # clamped, as PyTorch's uniform base: no value above 1 with validation off
        x = value.clamp(0.0, 1.0)
        return 1 - (1 - x.pow(self.concentration1)).pow(self.concentration0)

    def icdf(self, value: Tensor) -> Tensor:
        a, b = self.concentration1, self.concentration0
        return (1 - (1 - value).pow(b.reciprocal())).pow(a.reciprocal())

    def entropy(self) -> Tensor:
        a, b = self.concentration1, self.concentration0
        t1 = 1 - a.reciprocal()
        t0 = 1 - b.reciprocal()
        h0 = digamma(b + 1) + EULER_GAMMA
        return t0 + t1 * h0 - a.log() - b.log()


__all__ = ["Kumaraswamy"]
