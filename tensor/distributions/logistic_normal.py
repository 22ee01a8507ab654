"""``LogisticNormal(loc, scale)``: a Normal in ``R^K`` mapped onto the ``K + 1`` simplex by
stick breaking, computed directly (PyTorch: a ``TransformedDistribution`` with
``StickBreakingTransform``; the same map, densities and draws)."""

from __future__ import annotations

from typing import Any, ClassVar

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    expand_params,
    standard_normal,
)
from dtrain._tensor.distributions.normal import Normal
from dtrain._tensor.distributions.utils import broadcast_all
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import finfo


def _offset_log(x: Tensor) -> Tensor:
    """``log([K, K - 1, ..., 1])`` for the last dim ``K`` of ``x``."""
    k = x.shape[-1]
    return fn.arange(k, 0, -1, dtype=x.dtype, device=x.device).log()


def stick_breaking(x: Tensor) -> Tensor:
    """``R^K -> simplex in R^(K + 1)``: ``z = sigmoid(x - log(K - i))`` (clamped),
    ``y_i = z_i prod_{j<i} (1 - z_j)``, the last entry the remaining stick."""
    info = finfo(x.dtype)
    z = fn.sigmoid(x - _offset_log(x)).clamp(min=info.tiny, max=1.0 - info.eps)
    ones = fn.ones_like(x[..., :1])
    rest = (1 - z).cumprod(-1)
    return fn.cat([z, ones], -1) * fn.cat([ones, rest], -1)


def stick_breaking_inverse(y: Tensor) -> Tensor:
    """The inverse of ``stick_breaking``."""
    crop = y[..., :-1]
    remaining = (1 - crop.cumsum(-1)).clamp(min=finfo(y.dtype).tiny)
    return crop.log() - remaining.log() + _offset_log(crop)


def stick_breaking_log_det(x: Tensor, y: Tensor) -> Tensor:
    """``log |det dy/dx|`` of ``stick_breaking`` (over the first ``K`` outputs)."""
    shifted = x - _offset_log(x)
    return (-shifted - fn.softplus(-shifted) + y[..., :-1].log()).sum(-1)


class LogisticNormal(Distribution):
    """``stick_breaking(X)``, ``X ~ Normal(loc, scale)`` over the last dim (``K``): event
    shape ``(K + 1,)`` on the simplex; ``rsample`` is reparameterised."""

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None) -> None:
        loc, scale = broadcast_all(loc, scale)
        if loc.ndim == 0:  # one stick: a 2-simplex, as PyTorch's
            loc, scale = loc.expand((1,)), scale.expand((1,))
        self.loc, self.scale = loc, scale
        k = loc.shape[-1]
        super().__init__(loc.shape[:-1], (k + 1,), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> LogisticNormal:
        k = (self._event_shape[0] - 1,)
        return expand_params(self, LogisticNormal, batch_shape, _instance, ("loc", "scale"), k)

    @property
    def base_dist(self) -> Normal:
        """The Normal over ``R^K`` (batch shape ``batch_shape + (K,)``)."""
        return Normal(self.loc, self.scale, validate_args=False)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)[:-1] + (self._event_shape[0] - 1,)
        eps = standard_normal(shape, self.loc)
        return stick_breaking(self.loc + eps * self.scale)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x = stick_breaking_inverse(value)
        base = self.base_dist.log_prob(x).sum(-1)
        return base - stick_breaking_log_det(x, value)


__all__ = ["LogisticNormal", "stick_breaking", "stick_breaking_inverse"]
