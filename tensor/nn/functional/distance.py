"""``normalize``, ``cosine_similarity`` and ``pairwise_distance``, over one vector norm op
whose gradient is 0 (not NaN) at a zero vector, as PyTorch's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


class VectorNorm(Op):
    """The ``p``-norm along ``axis``, kept as a size-1 axis."""

    reads_inputs = True

    def forward(self, x: Any, axis: int, p: float) -> Any:
        xp = get_array_module(x)
        self.x, self.axis, self.p = x, axis, p
        if p == 2:
            norm = xp.sqrt((x * x).sum(axis=axis, keepdims=True))
        elif p == math.inf:
            norm = xp.abs(x).max(axis=axis, keepdims=True)
        elif p == 1:
            norm = xp.abs(x).sum(axis=axis, keepdims=True)
        else:
            norm = (xp.abs(x) ** p).sum(axis=axis, keepdims=True) ** (1.0 / p)
        self.norm = norm
        return norm

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, norm, p = self.x, self.norm, self.p
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == 2:
                local = x / norm
            elif p == 1:
                local = xp.sign(x)
            elif p == math.inf:  # shared evenly among the elements at the maximum
                at_max = xp.abs(x) == norm
                local = xp.sign(x) * at_max / at_max.sum(axis=self.axis, keepdims=True)
            else:
                local = xp.sign(x) * (xp.abs(x) / norm) ** (p - 1)
        local = xp.where(norm == 0, 0, local)
        return ((grad * local).astype(x.dtype, copy=False),)


def _vector_norm(x: Tensor, dim: int, p: float) -> Tensor:
    p = float(p)
    if not p > 0:
        raise ValueError(f"vector norm: p={p} is not supported; use p > 0 or math.inf")
    return VectorNorm.apply(x, axis=normalize_dim(dim, x.ndim), p=p)


def normalize(
    input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None
) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``.

    Raises:
        ValueError: ``p <= 0``. TypeError: ``out=`` (not supported; use the result).
    """
    if out is not None:
        raise TypeError("normalize: out= is not supported; use the returned tensor")
    input = _float(input)
    if input.dtype == np.float16:  # squares overflow past 256 in float16: norm in float32
        return normalize(input.float(), p, dim, eps).half()
    return input / _vector_norm(input, dim, p).clamp(min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim`` (they broadcast); each
    norm is clamped to at least ``eps``, as PyTorch (the gradient passes the clamp)."""
    x1, x2 = _float(x1), _float(x2)
    if np.float16 in (x1.dtype, x2.dtype):  # as normalize: the norms in float32
        result = cosine_similarity(x1.float(), x2.float(), dim, eps)
        return result.half() if x1.dtype == x2.dtype else result
    shape = np.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    if tuple(x1.shape) != shape:
        x1 = x1.expand(*shape)
    if tuple(x2.shape) != shape:
        x2 = x2.expand(*shape)
    axis = normalize_dim(dim, len(shape))

    def unit(x: Tensor) -> Tensor:
        norm = _vector_norm(x, axis, 2.0)
        floor = norm.detach()  # PyTorch clamps under no_grad: the gradient ignores the clamp
        return x / (norm + (floor.clamp(min=eps) - floor))

    return (unit(x1) * unit(x2)).sum(axis)


def pairwise_distance(
    x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False
) -> Tensor:
    """The ``p``-norm of ``x1 - x2 + eps`` along the last dim (they broadcast), as PyTorch.

    Raises:
        ValueError: ``p <= 0``.
    """
    x1, x2 = _float(x1), _float(x2)
    diff = x1 - x2 + eps
    norm = _vector_norm(diff, -1, p)
    return norm if keepdim else norm.squeeze(-1)
