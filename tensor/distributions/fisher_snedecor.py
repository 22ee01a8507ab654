"""``FisherSnedecor(df1, df2)``: the F distribution, as PyTorch's (a ratio of gamma draws,
reparameterised through them)."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
)
from dtrain._tensor.distributions.gamma import gamma_rsample
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import finfo

_NAN = float("nan")


class FisherSnedecor(Distribution):
    """The F distribution with ``df1`` and ``df2`` degrees of freedom; ``rsample`` is
    ``X1 / X2``, ``Xi ~ Gamma(dfi / 2, dfi)``, differentiated implicitly as ``Gamma``."""

    arg_constraints: ClassVar[dict] = {"df1": constraints.positive, "df2": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, df1: Any, df2: Any, validate_args: bool | None = None) -> None:
        self.df1, self.df2 = broadcast_all(df1, df2)
        batch_shape = batch_shape_of((df1, df2), self.df1)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> FisherSnedecor:
        return expand_params(self, FisherSnedecor, batch_shape, _instance, ("df1", "df2"))

    @property
    def mean(self) -> Tensor:
        df2 = self.df2
        return fn.where(df2 <= 2, _NAN, df2 / (df2 - 2))

    @property
    def mode(self) -> Tensor:
        mode = (self.df1 - 2) / self.df1 * self.df2 / (self.df2 + 2)
        return fn.where(self.df1 <= 2, _NAN, mode)

    @property
    def variance(self) -> Tensor:
        df1, df2 = self.df1, self.df2
        var = 2 * df2.pow(2) * (df1 + df2 - 2) / (df1 * (df2 - 2).pow(2) * (df2 - 4))
        return fn.where(df2 <= 4, _NAN, var)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        df1, df2 = self.df1.expand(shape), self.df2.expand(shape)
        x1 = gamma_rsample(0.5 * df1, df1)
        x2 = gamma_rsample(0.5 * df2, df2)
        tiny = finfo(x2.dtype).tiny
        return (x1 / x2.clamp(min=tiny)).clamp(min=tiny)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        ct1, ct2 = self.df1 * 0.5, self.df2 * 0.5
        ct3 = self.df1 / self.df2
        t1 = lgamma(ct1 + ct2) - lgamma(ct1) - lgamma(ct2)
        t2 = ct1 * ct3.log() + (ct1 - 1) * value.log()
        t3 = (ct1 + ct2) * (ct3 * value).log1p()
        return t1 + t2 - t3


__all__ = ["FisherSnedecor"]
