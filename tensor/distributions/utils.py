"""Helpers shared by the distributions, as ``torch.distributions.utils``: ``broadcast_all``,
``probs_to_logits``, ``logits_to_probs``, ``clamp_probs`` and ``lazy_property``; and
``BinaryProbsLogits``, the ``probs``/``logits`` pair of the binary families."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.dtypes import DEFAULT_FLOAT, finfo


def broadcast_all(*values: Any) -> tuple[Tensor, ...]:
    """Broadcast tensors and numbers to one shape (without copying, gradients kept).

    Numbers become tensors of the first tensor's dtype and device (float32 on the CPU when
    every value is a number).

    Raises:
        ValueError: a value is neither a Tensor nor a number.
    """
    for value in values:
        if not isinstance(value, (Tensor, numbers.Number)):
            raise ValueError(
                f"broadcast_all: every input must be a Tensor or a number, got "
                f"{type(value).__name__} {value!r}; convert it with dt.tensor(...)"
            )
    first = next((v for v in values if isinstance(v, Tensor)), None)
    dtype = DEFAULT_FLOAT if first is None else first.dtype
    if first is not None and first.dtype.kind != "f":
        dtype = DEFAULT_FLOAT
    device = None if first is None else first.device
    tensors = [
        v if isinstance(v, Tensor) else fn.tensor(float(v), dtype=dtype, device=device)
        for v in values
    ]
    shape = np.broadcast_shapes(*(t.shape for t in tensors))
    return tuple(t if t.shape == shape else t.expand(shape) for t in tensors)


def check_probs_or_logits(name: str, probs: Any, logits: Any) -> None:
    """Raise unless exactly one of ``probs`` and ``logits`` is given.

    Raises:
        ValueError: both or neither were given.
    """
    if (probs is None) == (logits is None):

        def shown(value: Any) -> str:
            return "None" if value is None else f"a {type(value).__name__}"

        raise ValueError(
            f"{name}: pass either probs or logits, not both and not neither "
            f"(got probs={shown(probs)}, logits={shown(logits)})"
        )


def sum_rightmost(value: Tensor, dim: int) -> Tensor:
    """Sum out the ``dim`` rightmost dims of ``value`` (``dim == 0`` leaves it as is)."""
    if dim == 0:
        return value
    return value.reshape(value.shape[: value.ndim - dim] + (-1,)).sum(-1)


def clamp_probs(probs: Tensor) -> Tensor:
    """Clamp to ``[eps, 1 - eps]`` (``eps`` of the dtype), so logs stay finite."""
    eps = finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs: Tensor, is_binary: bool = False) -> Tensor:
    """Logits of ``probs``: ``log p`` (categorical) or ``log p - log(1 - p)`` (binary)."""
    clamped = clamp_probs(probs)
    if is_binary:
        return clamped.log() - (-clamped).log1p()
    return clamped.log()


def logits_to_probs(logits: Tensor, is_binary: bool = False) -> Tensor:
    """Probabilities of ``logits``: ``sigmoid`` (binary) or ``softmax`` over the last dim."""
    if is_binary:
        return fn.sigmoid(logits)
    return fn.softmax(logits, -1)


class lazy_property:  # noqa: N801 - PyTorch's name
    """A property computed on first access and then stored on the instance (so a
    distribution built from ``probs`` computes ``logits`` only if asked)."""

    def __init__(self, wrapped: Callable[[Any], Any]) -> None:
        self.wrapped = wrapped
        self.__doc__ = wrapped.__doc__
        self.__name__ = wrapped.__name__

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        with enable_grad():  # a parameter derived inside no_grad still tracks its source
            value = self.wrapped(instance)
        instance.__dict__[self.wrapped.__name__] = value
        return value


class BinaryProbsLogits:
    """``probs`` or ``logits`` of a binary event, whichever the distribution was built from
    (its name in ``_param_name``), the other computed on first access."""

    _param_name: str

    @property
    def _param(self) -> Tensor:
        """The parameter the distribution was built from (``probs`` or ``logits``)."""
        return self.__dict__[self._param_name]

    @property
    def param_shape(self) -> Size:
        """The shape of ``probs``/``logits``."""
        return Size(self._param.shape)

    @lazy_property
    def logits(self) -> Tensor:
        """``log(p / (1 - p))`` (``p`` clamped away from 0 and 1)."""
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self) -> Tensor:
        """``sigmoid(logits)``."""
        return logits_to_probs(self.logits, is_binary=True)


__all__ = [
    "BinaryProbsLogits",
    "broadcast_all",
    "check_probs_or_logits",
    "clamp_probs",
    "lazy_property",
    "logits_to_probs",
    "probs_to_logits",
    "sum_rightmost",
]
