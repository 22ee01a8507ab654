"""``StudentT(df, loc, scale)``: Student's t distribution."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
    standard_normal,
)
from dtrain._tensor.distributions.gamma import gamma_rsample
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import digamma, lgamma
from dtrain._tensor.tensor import Tensor


class StudentT(Distribution):
    """``loc + scale * T`` with ``T`` Student-t of ``df`` degrees of freedom; ``rsample`` is
    ``loc + scale * X / sqrt(Z / df)`` of a normal ``X`` and a reparameterised
    ``Z ~ Chi2(df)``, as PyTorch's. The mean is NaN for ``df <= 1``; the variance is inf
    for ``1 < df <= 2`` and NaN for ``df <= 1``."""

    arg_constraints: ClassVar[dict] = {
        "df": constraints.positive,
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = True

    def __init__(
        self, df: Any, loc: Any = 0.0, scale: Any = 1.0, validate_args: bool | None = None
    ) -> None:
        self.df, self.loc, self.scale = broadcast_all(df, loc, scale)
        batch_shape = batch_shape_of((df, loc, scale), self.df)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> StudentT:
        return expand_params(self, StudentT, batch_shape, _instance, ("df", "loc", "scale"))

    @property
    def mean(self) -> Tensor:
        return fn.where(self.df > 1, self.loc, float("nan"))

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        df = self.df
        finite = self.scale.pow(2) * df / (df - 2)
        return fn.where(df > 2, finite, fn.where(df > 1, float("inf"), float("nan")))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        x = standard_normal(shape, self.df)
        z = 2.0 * gamma_rsample(0.5 * self.df.expand(shape))  # Chi2(df) = 2 Gamma(df / 2)
        return self.loc + self.scale * x * (z / self.df).rsqrt()

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        df = self.df
        y = (value - self.loc) / self.scale
        normaliser = (
            self.scale.log()
            + 0.5 * df.log()
            + 0.5 * math.log(math.pi)
            + lgamma(0.5 * df)
            - lgamma(0.5 * (df + 1.0))
        )
        return -0.5 * (df + 1.0) * (y.pow(2) / df).log1p() - normaliser

    def entropy(self) -> Tensor:
        df = self.df
        lbeta = lgamma(0.5 * df) + math.lgamma(0.5) - lgamma(0.5 * (df + 1))
        return (
            self.scale.log()
            + 0.5 * (df + 1) * (digamma(0.5 * (df + 1)) - digamma(0.5 * df))
            + 0.5 * df.log()
            + lbeta
        )


__all__ = ["StudentT"]
