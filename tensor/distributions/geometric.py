"""``Geometric(probs | logits)``: the number of failures before the first success."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.bernoulli import _bce_with_logits
from dtrain._tensor.distributions.distribution import (
    Distribution,
    batch_shape_of,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.utils import (
    broadcast_all,
    check_probs_or_logits,
    lazy_property,
    logits_to_probs,
    probs_to_logits,
)
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import finfo


class Geometric(Distribution):
    """Mass ``(1 - p)^k p`` on ``k = 0, 1, ...`` (``p = probs`` or ``sigmoid(logits)``,
    ``0 < p <= 1``); draws ``floor(log u / log(1 - p))`` in the parameter's float dtype."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.nonnegative_integer

    def __init__(
        self, probs: Any = None, logits: Any = None, validate_args: bool | None = None
    ) -> None:
        check_probs_or_logits("Geometric", probs, logits)
        given = probs if probs is not None else logits
        (param,) = broadcast_all(given)
        setattr(self, "probs" if probs is not None else "logits", param)
        super().__init__(batch_shape_of((given,), param), validate_args=validate_args)
        if self._validate_args and probs is not None and not bool((self.probs > 0).all()):
            raise ValueError(
                f"Expected parameter probs (Tensor of shape {tuple(self.probs.shape)}) of "
                f"distribution {self!r} to be positive but found invalid values:\n"
                f"{self.probs}\nPass probs in (0, 1], or validate_args=False"
            )

    def expand(self, batch_shape: Any, _instance: Any = None) -> Geometric:
        return expand_params(self, Geometric, batch_shape, _instance, ("probs", "logits"))

    @lazy_property
    def logits(self) -> Tensor:
        """``log(p / (1 - p))`` (``p`` clamped away from 0 and 1)."""
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self) -> Tensor:
        """``sigmoid(logits)``."""
        return logits_to_probs(self.logits, is_binary=True)

    @property
    def mean(self) -> Tensor:
        return 1.0 / self.probs - 1.0

    @property
    def mode(self) -> Tensor:
        return fn.zeros_like(self.probs)

    @property
    def variance(self) -> Tensor:
        return (1.0 / self.probs - 1.0) / self.probs

    def sample(self, sample_shape: Any = ()) -> Tensor:
        with no_grad():
            probs = self.probs
            draw_dtype = np.float64 if probs.dtype == np.float64 else np.float32
            u = standard_uniform(self._extended_shape(sample_shape), probs, dtype=draw_dtype)
            u = u.clamp(min=finfo(u.dtype).tiny)
            return (u.log() / (-probs.to(draw_dtype)).log1p()).floor().to(probs.dtype)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value, probs = broadcast_all(value, self.probs)
        probs = fn.where((probs == 1) & (value == 0), 0.0, probs)  # 0 * log(0) is 0 here
        return value * (-probs).log1p() + self.probs.log()

    def entropy(self) -> Tensor:
        return _bce_with_logits(self.logits, self.probs) / self.probs


__all__ = ["Geometric"]
