"""``Bernoulli(probs | logits)``: 1 with probability ``probs``, else 0."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    enumerate_values,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.utils import (
    BinaryProbsLogits,
    broadcast_all,
    check_probs_or_logits,
)
from dtrain._tensor.tensor import Tensor


def _bce_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """``-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))``
    = ``t softplus(-x) + (1 - t) softplus(x)``, differentiable in both ``x`` and ``t`` (the
    entropy needs the target's gradient). Without softplus's threshold, and with no
    ``softplus(x) - x t`` cancellation, it keeps ``-1.4e-11`` at ``x = 25``."""
    exact = float("inf")
    positive = fn.softplus(-logits, threshold=exact)
    negative = fn.softplus(logits, threshold=exact)
    return target * positive + (1 - target) * negative


class Bernoulli(BinaryProbsLogits, Distribution):
    """0/1 draws, 1 with probability ``probs`` (or ``sigmoid(logits)``); values come back in
    the parameter's float dtype, as PyTorch's."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.boolean
    has_enumerate_support = True
    _mean_carrier_measure = 0

    def __init__(
        self,
        probs: Any = None,
        logits: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        check_probs_or_logits("Bernoulli", probs, logits)
        self._param_name = "probs" if probs is not None else "logits"
        given = probs if probs is not None else logits
        setattr(self, self._param_name, broadcast_all(given)[0])
        batch_shape = batch_shape_of((given,), self._param)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Bernoulli:
        new = expand_params(self, Bernoulli, batch_shape, _instance, ("probs", "logits"))
        new._param_name = self._param_name
        return new

    @property
    def mean(self) -> Tensor:
        return self.probs

    @property
    def mode(self) -> Tensor:
        mode = (self.probs >= 0.5).type_as(self.probs)
        return fn.where(self.probs == 0.5, float("nan"), mode)

    @property
    def variance(self) -> Tensor:
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        # A comparison on the device: dt.bernoulli would check the probabilities on the host
        # (a sync per draw); validate_args checked them at construction.
        with no_grad():
            probs = self.probs
            draw_dtype = np.float64 if probs.dtype == np.float64 else np.float32
            u = standard_uniform(self._extended_shape(sample_shape), probs, dtype=draw_dtype)
            return (u < probs).type_as(probs)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return -_bce_with_logits(logits, value)

    def entropy(self) -> Tensor:
        return _bce_with_logits(self.logits, self.probs)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        values = fn.arange(2, dtype=self._param.dtype, device=self._param.device)
        return enumerate_values(values, self._batch_shape, expand)


__all__ = ["Bernoulli"]
