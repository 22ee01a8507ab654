"""``Binomial(total_count, probs | logits)``: successes in ``total_count`` trials."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints, discrete_sampling
from dtrain._tensor.distributions.distribution import (
    Distribution,
    enumerate_values,
    expand_params,
)
from dtrain._tensor.distributions.utils import (
    BinaryProbsLogits,
    broadcast_all,
    check_probs_or_logits,
)
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor, wrap


def _clamp_by_zero(x: Tensor) -> Tensor:
    """``max(x, 0)`` whose gradient at 0 is 1/2, as PyTorch's."""
    return (x.clamp(min=0) + x - x.clamp(max=0)) / 2


class Binomial(BinaryProbsLogits, Distribution):
    """Mass ``C(n, k) p^k (1 - p)^(n - k)`` on ``k = 0 .. n`` (``n = total_count``, a number
    or a tensor broadcast with ``probs``/``logits``, kept in their float dtype). ``sample``
    only (see ``discrete_sampling`` for the method); ``entropy`` and ``enumerate_support``
    need one ``total_count`` for the whole batch (read back from the device)."""

    arg_constraints: ClassVar[dict] = {
        "total_count": constraints.nonnegative_integer,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    has_enumerate_support = True

    def __init__(
        self,
        total_count: Any = 1,
        probs: Any = None,
        logits: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        check_probs_or_logits("Binomial", probs, logits)
        self._param_name = "probs" if probs is not None else "logits"
        given = probs if probs is not None else logits
        count, param = broadcast_all(total_count, given)
        self.total_count = count.type_as(param)
        setattr(self, self._param_name, param)
        super().__init__(param.shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Binomial:
        new = expand_params(
            self, Binomial, batch_shape, _instance, ("total_count", "probs", "logits")
        )
        new._param_name = self._param_name
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.total_count)

    @property
    def mean(self) -> Tensor:
        return self.total_count * self.probs

    @property
    def mode(self) -> Tensor:
        n = self.total_count
        return ((n + 1) * self.probs).floor().clamp(max=n)

    @property
    def variance(self) -> Tensor:
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        shape = tuple(self._extended_shape(sample_shape))
        probs = self.probs.detach()
        count = self.total_count.detach().expand(shape)._array.astype("float64")
        p = probs.expand(shape)._array.astype("float64")
        draws = discrete_sampling.binomial(count, p, probs.device)
        return wrap(draws.astype(probs._array.dtype))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        n, logits = self.total_count, self.logits
        log_factorial_n = lgamma(n + 1)
        log_factorial_k = lgamma(value + 1)
        log_factorial_nmk = lgamma(n - value + 1)
        # k log p + (n - k) log(1 - p) = k logit - n max(logit, 0) - n log1p(exp(-|logit|))
        normalise = n * _clamp_by_zero(logits) + n * (-logits.abs()).exp().log1p()
        return value * logits - log_factorial_k - log_factorial_nmk - normalise + log_factorial_n

    def _single_count(self, what: str) -> int:
        total = int(self.total_count.max())
        if int(self.total_count.min()) != total:
            raise NotImplementedError(
                f"Binomial.{what}: inhomogeneous total_count is not supported (got values "
                f"from {int(self.total_count.min())} to {total}); use one total_count"
            )
        return total

    def entropy(self) -> Tensor:
        log_prob = self.log_prob(self.enumerate_support(False))
        return -(log_prob.exp() * log_prob).sum(0)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        total = self._single_count("enumerate_support")
        values = fn.arange(1 + total, dtype=self._param.dtype, device=self._param.device)
        return enumerate_values(values, self._batch_shape, expand)


__all__ = ["Binomial"]
