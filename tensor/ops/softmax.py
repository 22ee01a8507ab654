"""softmax and log_softmax along one dim, numerically stable."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


class Softmax(Op):
    reads_output = True

    def forward(self, x: Any, axis: int) -> Any:
        xp = get_array_module(x)
        self.axis = axis
        shifted = xp.exp(x - x.max(axis=axis, keepdims=True))
        shifted /= shifted.sum(axis=axis, keepdims=True)
        self.out = shifted
        return shifted

    def backward(self, grad: Any) -> tuple:
        out = self.out
        return (out * (grad - (grad * out).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Op):
    reads_output = True

    def forward(self, x: Any, axis: int) -> Any:
        xp = get_array_module(x)
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.out = shifted
        return shifted

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return (grad - xp.exp(self.out) * grad.sum(axis=self.axis, keepdims=True),)


def softmax(input: Tensor, dim: int) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``."""
    (input,) = autocast_inputs("float32", input)
    axis = normalize_dim(dim, input.ndim) if input.ndim else None  # 0-d: the one element
    return Softmax.apply(_float(input), axis=axis)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``."""
    (input,) = autocast_inputs("float32", input)
    axis = normalize_dim(dim, input.ndim) if input.ndim else None  # 0-d: the one element
    return LogSoftmax.apply(_float(input), axis=axis)
