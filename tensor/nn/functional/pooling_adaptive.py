"""Adaptive max pooling (2-D and 1-D) and adaptive average pooling in 1-D.

When the output size divides the input size the bins are the windows of an ordinary
``max_pool2d``; otherwise (bins of unequal sizes, possibly overlapping) each output position
reduces its bin in one vectorised pass over the batch and channels, a Python loop over the
output positions only (a handful: adaptive pools shrink to small outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv import _pair
from dtrain._tensor.nn.functional.conv_pool1d import single
from dtrain._tensor.nn.functional.pooling import adaptive_avg_pool2d, max_pool2d
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _bin(i: int, size: int, out: int) -> tuple[int, int]:
    """PyTorch's adaptive bin ``[floor(i · size / out), ceil((i + 1) · size / out))``."""
    return (i * size) // out, -((-(i + 1) * size) // out)


class AdaptiveMaxPool2d(Op):
    """Max over each bin; ``forward`` receives the maxima and their flat in-plane indices."""

    def forward(self, x: Any, out: Any, indices: Any) -> Any:
        self.shape, self.indices = x.shape, indices
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        n, c, h, w = self.shape
        planes = xp.arange(n * c).reshape(n, c, 1, 1) * (h * w)
        flat = xp.zeros(n * c * h * w, dtype=grad.dtype)
        add_at(
            flat,
            (self.indices + planes).reshape(-1),
            grad.reshape(-1),
            "adaptive_max_pool2d backward",
        )  # bins overlap
        return (flat.reshape(self.shape),)


def _check(where: str, input: Tensor, dims: int) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{where}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"{where}: expected a {dims + 2}-D input (batch, channels, ...) or a {dims + 1}-D "
            f"unbatched one, got shape {tuple(input.shape)}"
        )
    if min(input.shape[-dims:]) < 1:
        raise ValueError(f"{where}: input's spatial size {input.shape[-dims:]} must be non-empty")


def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling to a fixed output size, whatever the input size.

    Args:
        input: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
        output_size: an int or ``(oh, ow)``; a None entry keeps that input size.
        return_indices: also return the flat in-plane index ``h · W + w`` of each maximum.

    Returns:
        ``(N, C, oh, ow)``, or ``(pooled, indices)`` with ``return_indices``.
    """
    where = "adaptive_max_pool2d"
    _check(where, input, 2)
    size = tuple(input.shape[-2:])
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if o is None else o for o, s in zip(output_size, size))
    out = _pair(output_size, "output_size", where, 1)
    if size[0] % out[0] == 0 and size[1] % out[1] == 0:
        kernel = (size[0] // out[0], size[1] // out[1])
        return max_pool2d(input, kernel, kernel, return_indices=return_indices)
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    x = input._array
    xp = get_array_module(x)
    n, c, h, w = x.shape
    values = xp.empty((n, c, *out), dtype=x.dtype)
    indices = xp.empty((n, c, *out), dtype=np.int64)
    for i in range(out[0]):
        top, bottom = _bin(i, h, out[0])
        for j in range(out[1]):
            left, right = _bin(j, w, out[1])
            span = right - left
            window = x[:, :, top:bottom, left:right].reshape(n, c, (bottom - top) * span)
            best = window.argmax(axis=-1)  # the first maximum, or the first NaN, as PyTorch
            values[:, :, i, j] = xp.take_along_axis(window, best[..., None], axis=-1)[..., 0]
            indices[:, :, i, j] = (top + best // span) * w + left + best % span
    result = AdaptiveMaxPool2d.apply(input, out=values, indices=indices)
    if unbatched:
        result, indices = result.squeeze(0), indices[0]
    return (result, wrap(indices)) if return_indices else result


def adaptive_max_pool1d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """1-D adaptive max pooling of ``(N, C, L)`` (or ``(C, L)``) input to ``output_size``
    positions; with ``return_indices``, the position of each maximum."""
    where = "adaptive_max_pool1d"
    _check(where, input, 1)
    out = adaptive_max_pool2d(
        input.unsqueeze(-2), (1, single(output_size, "output_size", where)), return_indices
    )
    if return_indices:  # one row high: the flat index is the position
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """1-D adaptive average pooling of ``(N, C, L)`` (or ``(C, L)``) input to
    ``output_size`` positions."""
    where = "adaptive_avg_pool1d"
    _check(where, input, 1)
    out = adaptive_avg_pool2d(input.unsqueeze(-2), (1, single(output_size, "output_size", where)))
    return out.squeeze(-2)


__all__ = ["adaptive_avg_pool1d", "adaptive_max_pool1d", "adaptive_max_pool2d"]
