"""``dropout``: zero elements with probability p in training, scale the rest by 1/(1-p);
``dropout1d`` / ``dropout2d`` zero whole channels.

``inplace=True`` is accepted and computes out of place."""

from __future__ import annotations

import warnings
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.creation import sample
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import device_of


class Dropout(Op):
    def forward(self, x: Any, mask: Any) -> Any:
        self.mask = mask
        return x * mask

    def backward(self, grad: Any) -> tuple:
        return grad * self.mask, None


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Randomly zero elements (probability ``p``) while training; identity otherwise."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = sample("uniform", input.shape, input.dtype, device_of(input._array), low=0, high=1)
    mask = (keep >= p).astype(input.dtype) * input.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(input, mask)


def _feature_dropout(input: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole channels: one draw per (sample, channel), shared by its elements."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    keep = sample("uniform", shape, input.dtype, device_of(input._array), low=0, high=1)
    mask = (keep >= p).astype(input.dtype) * input.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(input, mask)


def dropout1d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of ``(N, C, L)`` (or unbatched ``(C, L)``) input with probability
    ``p`` while training, scaling the rest by ``1 / (1 - p)``."""
    if input.ndim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note "
            "that dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
            "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
            "inputs)."
        )
    if input.ndim == 2:
        return _feature_dropout(input.unsqueeze(0), p, training).squeeze(0)
    return _feature_dropout(input, p, training)


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of ``(N, C, H, W)`` input with probability ``p`` while training.
    As PyTorch, 3-D input is taken as ``(N, C, L)`` (with PyTorch's warning)."""
    if input.ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior and "
            "silence this warning, please use dropout instead.",
            stacklevel=2,
        )
    if input.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. To maintain the 1D channel-wise dropout behavior, please "
            "switch to using dropout1d instead.",
            stacklevel=2,
        )
    return _feature_dropout(input, p, training)
