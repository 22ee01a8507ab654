"""softmax and log_softmax along one dim, numerically stable."""

from __future__ import annotations

import warnings
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


def _prepare(input: Tensor, dim: Any, dtype: Any, name: str) -> tuple[Tensor, int | None]:
    if dtype is not None:
        input = input.to(dtype)  # cast first, as PyTorch: the op then runs in that dtype
    else:
        (input,) = autocast_inputs("float32", input)
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1
        warnings.warn(
            f"Implicit dimension choice for {name} has been deprecated. Change the call to "
            "include dim=X as an argument.",
            UserWarning,
            stacklevel=3,
        )
    axis = normalize_dim(dim, input.ndim) if input.ndim else None  # 0-d: the one element
    return _float(input), axis


def softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``; ``dtype`` casts the input first. Without
    ``dim``, PyTorch's implicit (deprecated) choice with its warning: 0 for 0-, 1- and 3-d
    input, else 1."""
    input, axis = _prepare(input, dim, dtype, "softmax")
    return Softmax.apply(input, axis=axis)


def log_softmax(input: Tensor, dim: int | None = None, dtype: Any = None) -> Tensor:
    """``x - logsumexp(x)`` along ``dim``; ``dtype`` casts the input first."""
    input, axis = _prepare(input, dim, dtype, "log_softmax")
    return LogSoftmax.apply(input, axis=axis)
