"""``ContinuousBernoulli(probs | logits)``: the continuous Bernoulli on ``[0, 1]`` (Loaiza-Ganem
& Cunningham, 2019), the VAE likelihood for pixel intensities, as PyTorch's."""

from __future__ import annotations

import math
from typing import Any, ClassVar

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
    BinaryProbsLogits,
    broadcast_all,
    check_probs_or_logits,
    clamp_probs,
    lazy_property,
    logits_to_probs,
)
from dtrain._tensor.tensor import Tensor


class ContinuousBernoulli(BinaryProbsLogits, Distribution):
    """Density ``C(p) p^x (1 - p)^(1 - x)`` on ``[0, 1]``; ``probs`` (clamped into
    ``(0, 1)``) or ``logits``. Near ``p = 1/2`` (inside ``lims``) the normaliser, mean and
    variance use PyTorch's Taylor expansions. ``rsample`` is ``icdf(u)``, reparameterised."""

    arg_constraints: ClassVar[dict] = {
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self,
        probs: Any = None,
        logits: Any = None,
        lims: tuple[float, float] = (0.499, 0.501),
        validate_args: bool | None = None,
    ) -> None:
        check_probs_or_logits("ContinuousBernoulli", probs, logits)
        self._param_name = "probs" if probs is not None else "logits"
        given = probs if probs is not None else logits
        setattr(self, self._param_name, broadcast_all(given)[0])
        self._lims = lims
        super().__init__(batch_shape_of((given,), self._param), validate_args=validate_args)
        if probs is not None:  # checked unclamped above; clamped as PyTorch's
            self.probs = clamp_probs(self.probs)

    def expand(self, batch_shape: Any, _instance: Any = None) -> ContinuousBernoulli:
        new = expand_params(self, ContinuousBernoulli, batch_shape, _instance, ("probs", "logits"))
        new._param_name, new._lims = self._param_name, self._lims
        return new

    @lazy_property
    def probs(self) -> Tensor:
        """``sigmoid(logits)``, clamped into ``(0, 1)``."""
        return clamp_probs(logits_to_probs(self.logits, is_binary=True))

    def _outside_unstable_region(self) -> Tensor:
        return (self.probs <= self._lims[0]) | (self.probs > self._lims[1])

    def _cut_probs(self) -> Tensor:
        return fn.where(self._outside_unstable_region(), self.probs, self._lims[0])

    def _cont_bern_log_norm(self) -> Tensor:
        """The log normalising constant ``log C(p)``."""
        cut = self._cut_probs()
        below = fn.where(cut <= 0.5, cut, 0.0)
        above = fn.where(cut >= 0.5, cut, 1.0)
        log_norm = ((-cut).log1p() - cut.log()).abs().log() - fn.where(
            cut <= 0.5, (-2.0 * below).log1p(), (2.0 * above - 1.0).log()
        )
        x = (self.probs - 0.5).pow(2)
        taylor = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * x) * x
        return fn.where(self._outside_unstable_region(), log_norm, taylor)

    @property
    def mean(self) -> Tensor:
        cut = self._cut_probs()
        mus = cut / (2.0 * cut - 1.0) + 1.0 / ((-cut).log1p() - cut.log())
        x = self.probs - 0.5
        taylor = 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * x.pow(2)) * x
        return fn.where(self._outside_unstable_region(), mus, taylor)

    @property
    def variance(self) -> Tensor:
        cut = self._cut_probs()
        var = cut * (cut - 1.0) / (1.0 - 2.0 * cut).pow(2) + 1.0 / ((-cut).log1p() - cut.log()).pow(
            2
        )
        x = (self.probs - 0.5).pow(2)
        taylor = 1.0 / 12.0 - (1.0 / 15.0 - 128.0 / 945.0 * x) * x
        return fn.where(self._outside_unstable_region(), var, taylor)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        with no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        u = standard_uniform(self._extended_shape(sample_shape), self.probs)
        return self.icdf(u)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return -_bce_with_logits(logits, value) + self._cont_bern_log_norm()

    def cdf(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cut = self._cut_probs()
        cdfs = (cut.pow(value) * (1.0 - cut).pow(1.0 - value) + cut - 1.0) / (2.0 * cut - 1.0)
        unbounded = fn.where(self._outside_unstable_region(), cdfs, value)
        return fn.where(value <= 0.0, 0.0, fn.where(value >= 1.0, 1.0, unbounded))

    def icdf(self, value: Tensor) -> Tensor:
        cut = self._cut_probs()
        inverse = ((-cut + value * (2.0 * cut - 1.0)).log1p() - (-cut).log1p()) / (
            cut.log() - (-cut).log1p()
        )
        return fn.where(self._outside_unstable_region(), inverse, value)

    def entropy(self) -> Tensor:
        log_probs0 = (-self.probs).log1p()
        log_probs1 = self.probs.log()
        return self.mean * (log_probs0 - log_probs1) - self._cont_bern_log_norm() - log_probs0


__all__ = ["ContinuousBernoulli"]
