"""``dropout``: zero elements with probability p in training, scale the rest by 1/(1-p)."""

from __future__ import annotations

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
