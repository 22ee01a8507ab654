"""``Multinomial(total_count, probs | logits)``: counts of ``total_count`` categorical
draws over ``K`` categories, as PyTorch's."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.binomial import Binomial
from dtrain._tensor.distributions.categorical import Categorical, draw_categories
from dtrain._tensor.distributions.constraints_more import multinomial
from dtrain._tensor.distributions.distribution import Distribution, as_size
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class Multinomial(Distribution):
    """Count vectors of event shape ``(K,)`` summing to ``total_count`` (one int for the
    whole batch, as PyTorch's). ``sample`` draws ``total_count`` categories per row and
    counts them (``O(total_count)`` work per row); ``log_prob`` takes any counts (only
    their sum is bounded by ``total_count``), as PyTorch's."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }

    def __init__(
        self,
        total_count: int = 1,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(total_count, int) or isinstance(total_count, bool):
            raise NotImplementedError(
                f"Multinomial: inhomogeneous total_count is not supported; pass one int, got "
                f"{total_count!r}"
            )
        if total_count < 0:
            raise ValueError(f"Multinomial: total_count must be >= 0, got {total_count}")
        self.total_count = total_count
        self._categorical = Categorical(probs=probs, logits=logits, validate_args=validate_args)
        batch_shape = self._categorical.batch_shape
        event_shape = self._categorical.param_shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Multinomial:
        new = self._get_checked_instance(Multinomial, _instance)
        batch_shape = as_size(batch_shape, "batch_shape")
        new.total_count = self.total_count
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return multinomial(self.total_count)

    @property
    def logits(self) -> Tensor:
        """Normalised log probabilities."""
        return self._categorical.logits

    @property
    def probs(self) -> Tensor:
        """Probabilities, summing to 1 over the last dim."""
        return self._categorical.probs

    @property
    def param_shape(self) -> Size:
        """The shape of ``probs``/``logits``."""
        return self._categorical.param_shape

    @property
    def mean(self) -> Tensor:
        return self.probs * self.total_count

    @property
    def variance(self) -> Tensor:
        return self.total_count * self.probs * (1 - self.probs)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        sample_shape = as_size(sample_shape, "sample_shape")
        probs = self.probs.detach()
        n, k = self.total_count, self._event_shape[0]
        lead = tuple(sample_shape) + tuple(self._batch_shape)
        rows = math.prod(lead)
        draws = draw_categories(probs, Size((n,)) + sample_shape)._array.reshape(n, rows)
        xp = get_array_module(draws)
        flat = (draws + xp.arange(rows, dtype=np.int64) * k).reshape(-1)
        counts = xp.bincount(flat, minlength=rows * k).reshape(lead + (k,))
        return wrap(counts.astype(probs._array.dtype))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = np.broadcast_shapes(tuple(self.logits.shape), tuple(value.shape))
        logits, value = self.logits.expand(shape), value.expand(shape)
        logits = fn.where((value == 0) & (logits == -float("inf")), 0.0, logits)
        log_factorial_n = lgamma(value.sum(-1) + 1)
        log_factorial_xs = lgamma(value + 1).sum(-1)
        return log_factorial_n - log_factorial_xs + (logits * value).sum(-1)

    def entropy(self) -> Tensor:
        n = self.total_count
        probs = self.probs
        term1 = n * self._categorical.entropy() - math.lgamma(n + 1)
        if n == 0:
            return term1
        support = fn.arange(1, n + 1, dtype=probs.dtype, device=probs.device)
        support = support.reshape((n,) + (1,) * probs.ndim)
        binomial = Binomial(float(n), probs=probs, validate_args=False)
        binomial_probs = binomial.log_prob(support).exp()
        term2 = (binomial_probs * lgamma(support + 1)).sum(0).sum(-1)
        return term1 + term2


__all__ = ["Multinomial"]
