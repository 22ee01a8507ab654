"""``NegativeBinomial(total_count, probs | logits)``: the number of successes (each with
probability ``probs``) before ``total_count`` failures, as PyTorch's."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints, discrete_sampling
from dtrain._tensor.distributions.distribution import Distribution, expand_params
from dtrain._tensor.distributions.gamma import standard_gamma
from dtrain._tensor.distributions.utils import (
    BinaryProbsLogits,
    broadcast_all,
    check_probs_or_logits,
)
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor, wrap

_EXACT = float("inf")  # softplus without its linear threshold: log-sigmoid to rounding


def _log_sigmoid(x: Tensor) -> Tensor:
    return -fn.softplus(-x, threshold=_EXACT)


class NegativeBinomial(BinaryProbsLogits, Distribution):
    """Mass ``C(k + r - 1, k) p^k (1 - p)^r`` on ``k = 0, 1, ...`` (``r = total_count``, a
    positive real; ``p = probs``). ``sample`` is ``Poisson(Gamma(r, (1 - p) / p))``, drawn
    from dtrain's streams (see ``discrete_sampling``)."""

    arg_constraints: ClassVar[dict] = {
        "total_count": constraints.greater_than_eq(0),
        "probs": constraints.half_open_interval(0.0, 1.0),
        "logits": constraints.real,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        total_count: Any,
        probs: Any = None,
        logits: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        check_probs_or_logits("NegativeBinomial", probs, logits)
        self._param_name = "probs" if probs is not None else "logits"
        count, param = broadcast_all(total_count, probs if probs is not None else logits)
        self.total_count = count.type_as(param)
        setattr(self, self._param_name, param)
        super().__init__(param.shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> NegativeBinomial:
        names = ("total_count", "probs", "logits")
        new = expand_params(self, NegativeBinomial, batch_shape, _instance, names)
        new._param_name = self._param_name
        return new

    @property
    def mean(self) -> Tensor:
        return self.total_count * self.logits.exp()

    @property
    def mode(self) -> Tensor:
        return ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0.0)

    @property
    def variance(self) -> Tensor:
        return self.mean / fn.sigmoid(-self.logits)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        with no_grad():
            shape = self._extended_shape(sample_shape)
            count = self.total_count.expand(shape)
            rate = standard_gamma(count) * self.logits.exp().expand(shape)
            array = rate._array.astype("float64")
            draws = discrete_sampling.poisson(array, count.device)
            return wrap(draws.astype(count._array.dtype))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        r, logits = self.total_count, self.logits
        unnormalised = r * _log_sigmoid(-logits) + value * _log_sigmoid(logits)
        normalisation = -lgamma(r + value) + lgamma(1.0 + value) + lgamma(r)
        normalisation = fn.where(r + value == 0.0, 0.0, normalisation)
        return unnormalised - normalisation


__all__ = ["NegativeBinomial"]
