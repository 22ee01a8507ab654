"""``OneHotCategorical(probs | logits)``: a ``Categorical`` whose draws are one-hot vectors."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.categorical import Categorical
from dtrain._tensor.distributions.distribution import (
    Distribution,
    enumerate_values,
    expand_params,
)
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor


def _one_hot(indices: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """One-hot vectors of ``indices`` in ``like``'s float dtype, on its device."""
    classes = fn.arange(num_classes, device=like.device)
    return (indices.unsqueeze(-1) == classes).type_as(like)


class OneHotCategorical(Distribution):
    """Draws one-hot vectors of length ``K`` (the event shape is ``(K,)``) with
    probabilities ``probs`` or ``softmax(logits)`` over the last dim."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(
        self,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        batch_shape = self._categorical.batch_shape
        event_shape = self._categorical.param_shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> OneHotCategorical:
        new = expand_params(self, OneHotCategorical, batch_shape, _instance, ())
        new._categorical = self._categorical.expand(batch_shape)
        return new

    @property
    def _param(self) -> Tensor:
        return self._categorical._param

    @property
    def probs(self) -> Tensor:
        """Probabilities, summing to 1 over the last dim."""
        return self._categorical.probs

    @property
    def logits(self) -> Tensor:
        """Normalised log probabilities."""
        return self._categorical.logits

    @property
    def mean(self) -> Tensor:
        return self._categorical.probs

    @property
    def mode(self) -> Tensor:
        probs = self._categorical.probs
        return _one_hot(probs.argmax(-1), probs.shape[-1], probs)

    @property
    def variance(self) -> Tensor:
        probs = self._categorical.probs
        return probs * (1 - probs)

    @property
    def param_shape(self) -> Size:
        """The shape of ``probs``/``logits``: ``batch_shape + (K,)``."""
        return self._categorical.param_shape

    def sample(self, sample_shape: Any = ()) -> Tensor:
        probs = self._categorical.probs
        indices = self._categorical.sample(sample_shape)
        return _one_hot(indices, probs.shape[-1], probs.detach())

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self) -> Tensor:
        return self._categorical.entropy()

    def enumerate_support(self, expand: bool = True) -> Tensor:
        n = self.event_shape[0]
        values = fn.eye(n, dtype=self._param.dtype, device=self._param.device)
        return enumerate_values(values, self.batch_shape, expand)


__all__ = ["OneHotCategorical"]
