"""``Dirichlet(concentration)`` and ``Beta(concentration1, concentration0)``, drawn as
normalised gamma variates; ``rsample`` differentiates through the gamma draws (PyTorch's
Dirichlet uses its own ``_dirichlet_grad`` instead: the same gradient in expectation, not
per draw)."""

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
from dtrain._tensor.ops.special import digamma, lgamma
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import finfo


def _dirichlet_draw(concentration: Tensor) -> Tensor:
    """Normalised gamma draws along the last dim, kept in ``[tiny, 1 - eps]`` as PyTorch's
    (the clamp moves values only, not the gradient)."""
    gammas = gamma_rsample(concentration)
    draw = gammas / gammas.sum(-1, keepdim=True)
    info = finfo(draw.dtype)
    clamped = draw.detach().clamp(min=info.tiny, max=1 - info.eps)
    if not draw.requires_grad:
        return clamped
    return draw + (clamped - draw.detach())


class Dirichlet(Distribution):
    """The Dirichlet distribution over the simplex, with ``concentration`` ``(..., K)``
    (the last dim is the event); ``rsample`` differentiates through the gamma draws."""

    arg_constraints: ClassVar[dict] = {
        "concentration": constraints.independent(constraints.positive, 1)
    }
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration: Tensor, validate_args: bool | None = None) -> None:
        if not isinstance(concentration, Tensor) or concentration.ndim < 1:
            raise ValueError(
                "`concentration` parameter must be at least one-dimensional, got "
                f"{concentration!r}; pass a tensor of shape (..., K)"
            )
        self.concentration = concentration
        shape = concentration.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Dirichlet:
        return expand_params(
            self, Dirichlet, batch_shape, _instance, ("concentration",), self.event_shape
        )

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return _dirichlet_draw(self.concentration.expand(shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c = self.concentration
        return fn.xlogy(c - 1.0, value).sum(-1) + lgamma(c.sum(-1)) - lgamma(c).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self) -> Tensor:
        above = (self.concentration - 1).clamp(min=0.0)
        mode = above / above.sum(-1, keepdim=True)
        # All concentrations below 1: every corner is a mode; PyTorch returns the first
        # (one_hot of the argmax of a NaN row), and so does dtrain.
        all_below = (self.concentration < 1).all(-1, keepdim=True)
        k = self.concentration.shape[-1]
        corner = fn.arange(k, device=self.concentration.device) == 0
        return fn.where(all_below, corner.to(mode.dtype), mode)

    @property
    def variance(self) -> Tensor:
        total = self.concentration.sum(-1, keepdim=True)
        return self.concentration * (total - self.concentration) / (total.pow(2) * (total + 1))

    def entropy(self) -> Tensor:
        c = self.concentration
        k = c.shape[-1]
        total = c.sum(-1)
        return (
            lgamma(c).sum(-1)
            - lgamma(total)
            - (k - total) * digamma(total)
            - ((c - 1.0) * digamma(c)).sum(-1)
        )


class Beta(Distribution):
    """The beta distribution on ``[0, 1]``: density ``x^(a-1) (1-x)^(b-1) / B(a, b)``,
    ``a = concentration1``, ``b = concentration0``; ``rsample`` is ``X / (X + Y)`` of
    gamma draws, differentiated through them."""

    arg_constraints: ClassVar[dict] = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
    }
    support = constraints.unit_interval
    has_rsample = True

    def __init__(
        self, concentration1: Any, concentration0: Any, validate_args: bool | None = None
    ) -> None:
        self.concentration1, self.concentration0 = broadcast_all(concentration1, concentration0)
        batch_shape = batch_shape_of((concentration1, concentration0), self.concentration1)
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Beta:
        return expand_params(
            self, Beta, batch_shape, _instance, ("concentration1", "concentration0")
        )

    @property
    def _dirichlet(self) -> Dirichlet:
        both = fn.stack([self.concentration1, self.concentration0], -1)
        return Dirichlet(both, validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def mode(self) -> Tensor:
        return self._dirichlet.mode[..., 0]

    @property
    def variance(self) -> Tensor:
        total = self.concentration1 + self.concentration0
        return self.concentration1 * self.concentration0 / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self._dirichlet.rsample(sample_shape)[..., 0]

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = self.concentration1, self.concentration0
        return (
            fn.xlogy(a - 1.0, value)
            + fn.xlogy(b - 1.0, 1.0 - value)
            + lgamma(a + b)
            - lgamma(a)
            - lgamma(b)
        )

    def entropy(self) -> Tensor:
        return self._dirichlet.entropy()


__all__ = ["Beta", "Dirichlet"]
