"""The Concrete / Gumbel-softmax relaxations, as PyTorch's: ``LogitRelaxedBernoulli`` and
``RelaxedBernoulli`` (its sigmoid), ``ExpRelaxedCategorical`` and
``RelaxedOneHotCategorical`` (its exp) (Maddison et al. 2017; Jang et al. 2017)."""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, TypeVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.categorical import Categorical
from dtrain._tensor.distributions.distribution import (
    Distribution,
    as_size,
    batch_shape_of,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.transforms import (
    ExpTransform,
    SigmoidTransform,
    TransformedDistribution,
)
from dtrain._tensor.distributions.utils import (
    BinaryProbsLogits,
    broadcast_all,
    check_probs_or_logits,
    clamp_probs,
)
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor


def _as_temperature(temperature: Any, like: Tensor) -> Tensor:
    """``temperature`` as a tensor of ``like``'s dtype and device (PyTorch takes a tensor
    only; a number is accepted here too).

    Raises:
        ValueError: ``temperature`` is neither a tensor nor a number.
    """
    if isinstance(temperature, Tensor):
        return temperature
    if isinstance(temperature, numbers.Number):
        return fn.tensor(float(temperature), dtype=like.dtype, device=like.device)
    raise ValueError(f"temperature must be a Tensor or a number, got {type(temperature).__name__}")


class LogitRelaxedBernoulli(BinaryProbsLogits, Distribution):
    """The logit of a ``RelaxedBernoulli``: ``(logit(u) + logits) / temperature``.
    ``rsample`` is reparameterised; ``has_rsample`` is ``False`` as PyTorch's."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.real

    def __init__(
        self,
        temperature: Any,
        probs: Any = None,
        logits: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        check_probs_or_logits("LogitRelaxedBernoulli", probs, logits)
        self._param_name = "probs" if probs is not None else "logits"
        given = probs if probs is not None else logits
        setattr(self, self._param_name, broadcast_all(given)[0])
        self.temperature = _as_temperature(temperature, self._param)
        super().__init__(batch_shape_of((given,), self._param), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> LogitRelaxedBernoulli:
        names = ("probs", "logits")
        new = expand_params(self, LogitRelaxedBernoulli, batch_shape, _instance, names)
        new._param_name, new.temperature = self._param_name, self.temperature
        return new

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        probs = clamp_probs(self.probs.expand(shape))
        u = clamp_probs(standard_uniform(shape, probs))
        return (u.log() - (-u).log1p() + probs.log() - (-probs).log1p()) / self.temperature

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        diff = logits - value * self.temperature
        return self.temperature.log() + diff - 2 * diff.exp().log1p()


class ExpRelaxedCategorical(Distribution):
    """The log of a ``RelaxedOneHotCategorical``: ``log_softmax((logits + g) / temperature)``
    with Gumbel noise ``g``, event shape ``(K,)``; ``rsample`` is reparameterised."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    support = constraints.real_vector  # the true support is a submanifold of it
    has_rsample = True

    def __init__(
        self,
        temperature: Any,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        self.temperature = _as_temperature(temperature, self._categorical._param)
        batch_shape = self._categorical.batch_shape
        event_shape = self._categorical.param_shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> ExpRelaxedCategorical:
        new = self._get_checked_instance(ExpRelaxedCategorical, _instance)
        batch_shape = as_size(batch_shape, "batch_shape")
        new.temperature = self.temperature
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def param_shape(self) -> Size:
        """The shape of ``probs``/``logits``."""
        return self._categorical.param_shape

    @property
    def logits(self) -> Tensor:
        """Normalised log probabilities."""
        return self._categorical.logits

    @property
    def probs(self) -> Tensor:
        """Probabilities, summing to 1 over the last dim."""
        return self._categorical.probs

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        u = clamp_probs(standard_uniform(shape, self.logits))
        gumbels = -((-(u.log())).log())
        scores = (self.logits + gumbels) / self.temperature
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value: Tensor) -> Tensor:
        k = self._categorical._num_events
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        log_scale = math.lgamma(k) + (k - 1) * self.temperature.log()
        score = logits - value * self.temperature
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        return score + log_scale


_T = TypeVar("_T", bound=TransformedDistribution)


def _expand_transformed(
    dist: TransformedDistribution,
    cls: type[_T],
    batch_shape: Any,
    _instance: _T | None,
) -> _T:
    """``dist.expand(batch_shape)`` for a ``TransformedDistribution`` subclass ``cls`` whose
    ``__init__`` takes other arguments (the base is expanded, the transforms shared)."""
    new = dist._get_checked_instance(cls, _instance)
    batch_shape = as_size(batch_shape, "batch_shape")
    new.base_dist = dist.base_dist.expand(batch_shape)
    new.transforms = dist.transforms
    Distribution.__init__(new, batch_shape, dist.event_shape, validate_args=False)
    new._validate_args = dist._validate_args
    return new


class _RelaxedParameters:
    """The parameters of a relaxed distribution, read from the base distribution it
    transforms (``base_dist``)."""

    base_dist: Any

    @property
    def temperature(self) -> Tensor:
        """The relaxation temperature."""
        return self.base_dist.temperature

    @property
    def logits(self) -> Tensor:
        """The base distribution's logits."""
        return self.base_dist.logits

    @property
    def probs(self) -> Tensor:
        """The base distribution's probabilities."""
        return self.base_dist.probs


class RelaxedBernoulli(_RelaxedParameters, TransformedDistribution):
    """A relaxed Bernoulli on ``(0, 1)``: ``sigmoid`` of a ``LogitRelaxedBernoulli``
    (``temperature`` a tensor or number; lower is closer to 0/1); ``rsample`` is
    reparameterised."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self,
        temperature: Any,
        probs: Any = None,
        logits: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        base_dist = LogitRelaxedBernoulli(temperature, probs, logits, validate_args=validate_args)
        super().__init__(base_dist, SigmoidTransform(), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> RelaxedBernoulli:
        return _expand_transformed(self, RelaxedBernoulli, batch_shape, _instance)


class RelaxedOneHotCategorical(_RelaxedParameters, TransformedDistribution):
    """The Gumbel-softmax (Concrete) distribution on the simplex: ``exp`` of an
    ``ExpRelaxedCategorical``, i.e. ``softmax((logits + g) / temperature)``; ``rsample``
    is reparameterised."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    support = constraints.simplex
    has_rsample = True

    def __init__(
        self,
        temperature: Any,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        base_dist = ExpRelaxedCategorical(temperature, probs, logits, validate_args=validate_args)
        super().__init__(base_dist, ExpTransform(), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> RelaxedOneHotCategorical:
        return _expand_transformed(self, RelaxedOneHotCategorical, batch_shape, _instance)


__all__ = [
    "ExpRelaxedCategorical",
    "LogitRelaxedBernoulli",
    "RelaxedBernoulli",
    "RelaxedOneHotCategorical",
]
