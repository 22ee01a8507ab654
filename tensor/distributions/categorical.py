"""``Categorical(probs | logits)``: one of ``K`` categories, as an integer index."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import (
    Distribution,
    as_size,
    enumerate_values,
    expand_params,
    standard_uniform,
)
from dtrain._tensor.distributions.utils import (
    check_probs_or_logits,
    lazy_property,
    logits_to_probs,
    probs_to_logits,
)
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import finfo


def _check_param(name: str, probs: Any, logits: Any) -> None:
    check_probs_or_logits(name, probs, logits)
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
    ``probs``' device by inverting the cumulative probabilities: one uniform per draw,
    found by one binary search over every row's CDF (row ``r`` shifted to ``[r, r + 1]``),
    so ``O(n log K)`` time and no ``n x K`` temporary.

    Raises:
        RuntimeError: on the CPU, a row's probabilities are negative, NaN or all zero (on
            CUDA the check would sync; such a row draws an arbitrary category there).
    """
    p = probs.detach()._array
    xp = get_array_module(p)
    k = p.shape[-1]
    batch = p.shape[:-1]
    rows = math.prod(batch)
    cdf = xp.cumsum(p.reshape(rows, k), axis=1, dtype=np.float64)
    total = cdf[:, -1:].copy()  # a copy: cupy's in-place divide below must not read cdf
    if xp is np:  # a host check costs nothing on the CPU
        bad = ~((total[:, 0] > 0) & np.isfinite(total[:, 0])) | (p.reshape(rows, k) < 0).any(1)
        if bad.any():
            raise RuntimeError(
                "Categorical.sample: every row of probs needs finite, non-negative entries "
                f"with a positive sum; row {int(bad.argmax())} is {p.reshape(rows, k)[bad][0]} "
                "(validate_args=True names the bad parameter at construction)"
            )
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf /= total  # each row's last entry is exactly 1
    offsets = xp.arange(rows, dtype=np.float64)
    cdf += offsets[:, None]
    # float32 draws for float16 (and float32) probs: a float16 grid would bias the draws
    draw_dtype = np.float64 if p.dtype == np.float64 else np.float32
    u = standard_uniform(tuple(sample_shape) + (rows,), probs, dtype=draw_dtype)._array
    u = u.astype(np.float64) + offsets
    # r + u can round up to r + 1 (the next row); below it, a zero-probability last
    # category is never found
    u = xp.minimum(u, xp.nextafter(offsets + 1, offsets))
    index = xp.searchsorted(cdf.reshape(-1), u.reshape(-1), side="right")
    index = index.reshape(u.shape) - offsets.astype(np.int64) * k
    index = xp.clip(index, 0, k - 1).astype(np.int64, copy=False)
    return wrap(index.reshape(tuple(sample_shape) + tuple(batch)))


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
        _check_param(type(self).__name__, probs, logits)
        if probs is not None:
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self._param_name = "probs" if probs is not None else "logits"
        self._num_events = self._param.shape[-1]
        batch_shape = self._param.shape[:-1]
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> Categorical:
        names = ("probs", "logits")
        new = expand_params(self, Categorical, batch_shape, _instance, names, (self._num_events,))
        new._param_name, new._num_events = self._param_name, self._num_events
        return new

    @property
    def _param(self) -> Tensor:
        """The parameter the distribution was built from (``probs`` or ``logits``)."""
        return self.__dict__[self._param_name]

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
        """The shape of ``probs``/``logits``: ``batch_shape + (K,)``."""
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
        if self._validate_args:  # the values were checked: none out of range
            return log_pmf.gather(-1, value).squeeze(-1)
        return _gather_in_range(log_pmf, value, self._num_events)

    def entropy(self) -> Tensor:
        logits = self.logits.clamp(min=finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        values = fn.arange(self._num_events, device=self._param.device)
        return enumerate_values(values, self._batch_shape, expand)


def _gather_in_range(log_pmf: Tensor, value: Tensor, k: int) -> Tensor:
    """``log_pmf`` at the category ``value`` without letting an index outside ``[0, k)``
    wrap around to another category (numpy wraps negatives, cupy wraps every index): on the
    CPU it raises as PyTorch's gather; on CUDA, where a check would sync, it gives NaN."""
    index = value._array
    xp = get_array_module(index)
    if xp is np:
        if index.size and (index.min() < 0 or index.max() >= k):
            bad = index[(index < 0) | (index >= k)].reshape(-1)[0]
            raise RuntimeError(
                f"Categorical.log_prob: index {bad} is out of bounds for the {k} categories; "
                f"pass values in [0, {k - 1}] (validate_args=True names them with a ValueError)"
            )
        return log_pmf.gather(-1, value).squeeze(-1)
    inside = (value >= 0) & (value < k)
    picked = log_pmf.gather(-1, value.clamp(0, k - 1))
    return fn.where(inside, picked, float("nan")).squeeze(-1)


__all__ = ["Categorical"]
