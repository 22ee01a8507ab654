"""``Categorical(probs | logits)``: one of ``K`` categories, as an integer index."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import Distribution, as_size, standard_uniform
from dtrain._tensor.distributions.utils import lazy_property, logits_to_probs, probs_to_logits
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import finfo


def _one_param(name: str, probs: Any, logits: Any) -> None:
    if (probs is None) == (logits is None):
        raise ValueError(
            f"{name}: pass either probs or logits, not both and not neither "
            f"(got probs={'None' if probs is None else 'a tensor'}, "
            f"logits={'None' if logits is None else 'a tensor'})"
        )
    param = probs if probs is not None else logits
    if not isinstance(param, Tensor):
        raise TypeError(
            f"{name}: {'probs' if probs is not None else 'logits'} must be a Tensor, got "
            f"{type(param).__name__}; wrap it with dt.tensor(...)"
        )
    if param.ndim < 1:
        raise ValueError(
            f"{name}: `{'probs' if probs is not None else 'logits'}` parameter must be at least "
            f"one-dimensional (the last dim lists the categories), got shape {tuple(param.shape)}"
        )


def draw_categories(probs: Tensor, sample_shape: Size) -> Tensor:
    """Category indices (int64) of shape ``sample_shape + probs.shape[:-1]``, drawn on
    ``probs``' device by inverting the cumulative sum with one uniform per draw."""
    with no_grad():
        cdf = probs.cumsum(-1)
        cdf = cdf / cdf[..., -1:]  # the last entry exactly 1, so every draw lands in a category
        u = standard_uniform(sample_shape + probs.shape[:-1], probs)
        index = (cdf <= u.unsqueeze(-1)).sum(-1)
        return index.clamp(max=probs.shape[-1] - 1)


class Categorical(Distribution):
    """Draws an index in ``{0, ..., K-1}`` with probabilities ``probs`` (normalised over the
    last dim) or ``softmax(logits)``; the other dims are batch dims."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.simplex,
        "logits": constraints.independent(constraints.real, 1),
    }
    has_enumerate_support = True

    def __init__(
        self,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        _one_param(type(self).__name__, probs, logits)
        if probs is not None:
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self._param = self.probs if probs is not None else self.logits
        self._num_events = self._param.shape[-1]
        batch_shape = self._param.shape[:-1]
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Categorical:
        new = self._get_checked_instance(Categorical, _instance)
        batch_shape = tuple(batch_shape)
        param_shape = batch_shape + (self._num_events,)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(param_shape)
            new._param = new.probs
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(param_shape)
            new._param = new.logits
        new._num_events = self._num_events
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self._num_events - 1)

    @lazy_property
    def logits(self) -> Tensor:
        """Normalised log probabilities (``log_softmax``-shaped; ``log p`` clamped)."""
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self) -> Tensor:
        """Probabilities, summing to 1 over the last dim."""
        return logits_to_probs(self.logits)

    @property
    def param_shape(self) -> Size:
        return Size(self._param.shape)

    @property
    def mean(self) -> Tensor:
        return fn.full(
            self._extended_shape(), float("nan"), dtype=self.probs.dtype, device=self.probs.device
        )

    @property
    def mode(self) -> Tensor:
        return self.probs.argmax(-1)

    @property
    def variance(self) -> Tensor:
        return fn.full(
            self._extended_shape(), float("nan"), dtype=self.probs.dtype, device=self.probs.device
        )

    def sample(self, sample_shape: Any = ()) -> Tensor:
        return draw_categories(self.probs, as_size(sample_shape, "sample_shape"))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        shape = np.broadcast_shapes(value.shape, self.logits.shape)
        value = value.expand(shape[:-1] + (1,))
        log_pmf = self.logits.expand(shape)
        return log_pmf.gather(-1, value).squeeze(-1)

    def entropy(self) -> Tensor:
        logits = self.logits.clamp(min=finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        values = fn.arange(self._num_events, device=self._param.device)
        values = values.reshape((-1,) + (1,) * len(self._batch_shape))
        if expand:
            values = values.expand((-1,) + tuple(self._batch_shape))
        return values


__all__ = ["Categorical"]
