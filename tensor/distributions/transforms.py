"""Elementwise bijections and ``TransformedDistribution``, as ``torch.distributions``'
(``ExpTransform``, ``AffineTransform``, ``SigmoidTransform``, ``TanhTransform``,
``ComposeTransform``): enough for a SAC-style tanh-squashed Normal."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import Distribution
from dtrain._tensor.distributions.utils import sum_rightmost
from dtrain._tensor.tensor import Tensor


class Transform:
    """An invertible map ``y = t(x)`` with ``log |dy/dx|``. ``cache_size=1`` keeps the last
    ``(x, y)`` pair, so ``t.inv(t(x))`` returns ``x`` itself (no inverse to lose precision)."""

    bijective = True
    sign = 1
    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real

    def __init__(self, cache_size: int = 0) -> None:
        if cache_size not in (0, 1):
            raise ValueError(f"cache_size must be 0 or 1, got {cache_size!r}")
        self._cache_size = cache_size
        self._cached: tuple | None = None

    @property
    def event_dim(self) -> int:
        return self.domain.event_dim

    @property
    def inv(self) -> _InverseTransform:
        return _InverseTransform(self)

    def __call__(self, x: Tensor) -> Tensor:
        if self._cache_size and self._cached is not None and self._cached[0] is x:
            return self._cached[1]
        y = self._call(x)
        if self._cache_size:
            self._cached = (x, y)
        return y

    def _inverse_cached(self, y: Tensor) -> Tensor:
        if self._cache_size and self._cached is not None and self._cached[1] is y:
            return self._cached[0]
        x = self._inverse(y)
        if self._cache_size:
            self._cached = (x, y)
        return x

    def _call(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def _inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement inverse")

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``log |dy/dx|`` at ``x`` (``y = t(x)``), elementwise."""
        raise NotImplementedError(f"{type(self).__name__} does not implement the Jacobian")

    def forward_shape(self, shape: tuple) -> tuple:
        """The shape of ``t(x)`` for ``x`` of ``shape``."""
        return tuple(shape)

    def inverse_shape(self, shape: tuple) -> tuple:
        """The shape of ``t.inv(y)`` for ``y`` of ``shape``."""
        return tuple(shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _InverseTransform(Transform):
    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self._inv = transform
        self.sign = transform.sign
        self.domain, self.codomain = transform.codomain, transform.domain

    @property
    def inv(self) -> Transform:  # type: ignore[override]
        return self._inv

    def __call__(self, x: Tensor) -> Tensor:
        return self._inv._inverse_cached(x)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -self._inv.log_abs_det_jacobian(y, x)

    def forward_shape(self, shape: tuple) -> tuple:
        return self._inv.inverse_shape(shape)

    def inverse_shape(self, shape: tuple) -> tuple:
        return self._inv.forward_shape(shape)


class ExpTransform(Transform):
    """``y = exp(x)``."""

    codomain = constraints.positive

    def _call(self, x: Tensor) -> Tensor:
        return x.exp()

    def _inverse(self, y: Tensor) -> Tensor:
        return y.log()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x


class SigmoidTransform(Transform):
    """``y = sigmoid(x)``."""

    codomain = constraints.unit_interval

    def _call(self, x: Tensor) -> Tensor:
        return _inside_unit_interval(fn.sigmoid(x))

    def _inverse(self, y: Tensor) -> Tensor:
        y = _inside_unit_interval(y)
        return y.log() - (-y).log1p()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -fn.softplus(-x) - fn.softplus(x)


def _inside_unit_interval(y: Tensor) -> Tensor:
    """``y`` kept off 0 and 1 (as PyTorch's): a sigmoid rounded to either end would give
    an infinite inverse and a NaN ``log_prob`` for the distribution's own samples."""
    finfo = np.finfo(y.dtype)
    return y.clamp(min=float(finfo.tiny), max=1.0 - float(finfo.eps))


class TanhTransform(Transform):
    """``y = tanh(x)``; ``log |dy/dx| = 2 (log 2 - x - softplus(-2x))`` (stable, as
    PyTorch's). Use ``cache_size=1`` to score a sampled action without ``atanh``."""

    codomain = constraints.interval(-1.0, 1.0)

    def _call(self, x: Tensor) -> Tensor:
        return x.tanh()

    def _inverse(self, y: Tensor) -> Tensor:
        return fn.atanh(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return 2.0 * (math.log(2.0) - x - fn.softplus(-2.0 * x))


class AffineTransform(Transform):
    """``y = loc + scale * x`` (``loc``, ``scale`` tensors or numbers); ``event_dim`` dims
    of each event are summed in the Jacobian."""

    def __init__(self, loc: Any, scale: Any, event_dim: int = 0, cache_size: int = 0) -> None:
        super().__init__(cache_size)
        self.loc, self.scale, self._event_dim = loc, scale, event_dim
        if isinstance(scale, (int, float)):
            self.sign = 1 if scale > 0 else -1 if scale < 0 else 0

    @property
    def event_dim(self) -> int:
        return self._event_dim

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        real = constraints.real
        return constraints.independent(real, self._event_dim) if self._event_dim else real

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.domain

    def _call(self, x: Tensor) -> Tensor:
        return self.loc + self.scale * x

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        scale = self.scale
        if isinstance(scale, (int, float)):
            result = fn.full_like(x, math.log(abs(scale)) if scale else -math.inf)
        else:
            result = scale.abs().log()
            shape = np.broadcast_shapes(tuple(x.shape), tuple(scale.shape))
            result = result.expand(shape) if tuple(result.shape) != shape else result
        return sum_rightmost(result, self._event_dim)

    def forward_shape(self, shape: tuple) -> tuple:
        """``shape`` broadcast with the shapes of tensor ``loc`` and ``scale``, as PyTorch's."""
        params = [tuple(p.shape) for p in (self.loc, self.scale) if isinstance(p, Tensor)]
        return tuple(np.broadcast_shapes(tuple(shape), *params))

    def inverse_shape(self, shape: tuple) -> tuple:
        return self.forward_shape(shape)


class ComposeTransform(Transform):
    """``parts`` applied in order (the first one first)."""

    def __init__(self, parts: list[Transform], cache_size: int = 0) -> None:
        super().__init__(cache_size)
        self.parts = list(parts)

    @property
    def event_dim(self) -> int:
        return max((p.event_dim for p in self.parts), default=0)

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.parts[0].domain if self.parts else constraints.real

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.parts[-1].codomain if self.parts else constraints.real

    def _call(self, x: Tensor) -> Tensor:
        for part in self.parts:
            x = part(x)
        return x

    def _inverse(self, y: Tensor) -> Tensor:
        for part in reversed(self.parts):
            y = part.inv(y)
        return y

    def forward_shape(self, shape: tuple) -> tuple:
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape: tuple) -> tuple:
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return tuple(shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        total: Any = 0.0
        event_dim = self.event_dim
        for part in self.parts:
            y_part = part(x)
            term = part.log_abs_det_jacobian(x, y_part)
            total = total + sum_rightmost(term, event_dim - part.event_dim)
            x = y_part
        return total


class TransformedDistribution(Distribution):
    """``transforms`` applied to draws of ``base_distribution``; ``log_prob`` inverts them
    and subtracts each ``log |dy/dx|``. Elementwise transforms (and ``AffineTransform``
    with ``event_dim``) only; an ``AffineTransform`` whose tensor ``loc``/``scale`` has
    more dims than the base broadcasts the shape (the base is expanded), as PyTorch's."""

    arg_constraints: ClassVar[dict] = {}

    def __init__(
        self,
        base_distribution: Distribution,
        transforms: Transform | list[Transform],
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(transforms, Transform):
            transforms = [transforms]
        if not all(isinstance(t, Transform) for t in transforms):
            raise ValueError(
                f"transforms must be a Transform or a list of Transforms, got {transforms!r}"
            )
        self.transforms = list(transforms)
        base_shape = tuple(base_distribution.batch_shape + base_distribution.event_shape)
        shape = base_shape
        for transform in self.transforms:
            shape = transform.forward_shape(shape)
        expanded = shape
        for transform in reversed(self.transforms):
            expanded = transform.inverse_shape(expanded)
        if expanded != base_shape:  # a parameter broadcasts the batch: expand the base
            base_event = len(base_distribution.event_shape)
            base_distribution = base_distribution.expand(expanded[: len(expanded) - base_event])
        self.base_dist = base_distribution
        event_dim = max([len(base_distribution.event_shape)] + [t.event_dim for t in transforms])
        super().__init__(
            shape[: len(shape) - event_dim], shape[len(shape) - event_dim :], validate_args
        )

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        if not self.transforms:
            return self.base_dist.support
        support = self.transforms[-1].codomain
        extra = len(self.event_shape) - support.event_dim
        return constraints.independent(support, extra) if extra > 0 else support

    def sample(self, sample_shape: Any = ()) -> Tensor:
        x = self.base_dist.sample(sample_shape)
        for transform in self.transforms:
            x = transform(x)
        return x

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        x = self.base_dist.rsample(sample_shape)
        for transform in self.transforms:
            x = transform(x)
        return x

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        event_dim = len(self.event_shape)
        log_prob: Any = 0.0
        y = value
        for transform in reversed(self.transforms):
            x = transform.inv(y)
            term = transform.log_abs_det_jacobian(x, y)
            log_prob = log_prob - sum_rightmost(term, event_dim - transform.event_dim)
            y = x
        base = self.base_dist.log_prob(y)
        return log_prob + sum_rightmost(base, event_dim - len(self.base_dist.event_shape))

    def __repr__(self) -> str:
        return f"TransformedDistribution({self.base_dist!r}, {self.transforms!r})"


__all__ = [
    "AffineTransform",
    "ComposeTransform",
    "ExpTransform",
    "SigmoidTransform",
    "TanhTransform",
    "Transform",
    "TransformedDistribution",
]
