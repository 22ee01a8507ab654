"""``max_unpool1d/2d/3d``: the partial inverse of max pooling, each value written back at
the flat in-plane index its pool returned (everything else zero), in one scatter."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv_nd import ntuple
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.value_checks import may_check_values


class MaxUnpool(Op):
    """``out[plane, index] = x``; backward gathers the gradient at the same indices."""

    def forward(self, x: Any, indices: Any, size: tuple) -> Any:
        xp = get_array_module(x)
        n, c = x.shape[:2]
        planes, volume = n * c, math.prod(size)
        self.rows = xp.arange(planes).reshape(planes, 1)
        inner = math.prod(x.shape[2:])  # planes may be 0: no -1
        self.flat, self.shape = indices.reshape(planes, inner), x.shape
        out = xp.zeros((planes, volume), dtype=x.dtype)
        out[self.rows, self.flat] = x.reshape(planes, inner)
        return out.reshape((n, c) + tuple(size))

    def backward(self, grad: Any) -> tuple:
        planes = self.rows.shape[0]
        volume = math.prod(grad.shape[2:])
        return (grad.reshape(planes, volume)[self.rows, self.flat].reshape(self.shape),)


def _output_size(
    where: str, input: Tensor, dims: int, kernel: tuple, stride: tuple, pads: tuple, size: Any
) -> tuple:
    default = tuple(
        (s - 1) * st - 2 * p + k for s, st, p, k in zip(input.shape[-dims:], stride, pads, kernel)
    )
    if size is None:
        return default
    requested = tuple(int(s) for s in size)
    if len(requested) == input.ndim:
        requested = requested[-dims:]
    if len(requested) != dims:
        raise ValueError(
            f"{where}: output_size {tuple(size)} must have {dims} entries (or {input.ndim} "
            "with the batch and channel dims)"
        )
    for a in range(dims):
        low, high = default[a] - stride[a], default[a] + stride[a]
        if not low < requested[a] < high:
            raise ValueError(
                f"{where}: output_size {requested} is not possible for input "
                f"{tuple(input.shape)}; dim {a} must be between {low + 1} and {high - 1}"
            )
    return requested


def _max_unpool(
    where: str,
    dims: int,
    input: Tensor,
    indices: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    output_size: Any,
) -> Tensor:
    for name, t in (("input", input), ("indices", indices)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"{where}: expected a {dims + 2}-D input (batch, channels, *spatial) or a "
            f"{dims + 1}-D unbatched one, got shape {tuple(input.shape)}"
        )
    if tuple(indices.shape) != tuple(input.shape):
        raise ValueError(
            f"{where}: indices of shape {tuple(indices.shape)} must match the input's "
            f"{tuple(input.shape)} (pass the indices the pool returned with it)"
        )
    index = indices._array
    if index.dtype.kind not in "iu":
        raise TypeError(f"{where}: indices must be integers, got dtype {indices.dtype}")
    kernel = ntuple(kernel_size, dims, "kernel_size", where, 1)
    stride = kernel if stride is None else ntuple(stride, dims, "stride", where, 1)
    pads = ntuple(padding, dims, "padding", where, 0)
    size = _output_size(where, input, dims, kernel, stride, pads, output_size)
    volume = math.prod(size)
    # On CUDA (unless DTRAIN_DEBUG=1) indices are not checked: cupy wraps them around.
    if index.size and may_check_values(index) and (index.min() < 0 or index.max() >= volume):
        bad = int(index.min() if index.min() < 0 else index.max())
        raise IndexError(
            f"{where}: index {bad} is outside the output of {volume} elements per plane "
            f"(output size {size}); pass the pool's indices and its kernel/stride/padding"
        )
    unbatched = input.ndim == dims + 1
    if unbatched:
        input, index = input.unsqueeze(0), index[None]
    out = MaxUnpool.apply(input, indices=index, size=size)
    return out.squeeze(0) if unbatched else out


def max_unpool1d(
    input: Tensor,
    indices: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
) -> Tensor:
    """Inverse of ``max_pool1d`` (``(N, C, L)`` or ``(C, L)``): each value at the position
    ``indices`` holds, zeros elsewhere; ``output_size`` resolves the ambiguous length."""
    return _max_unpool("max_unpool1d", 1, input, indices, kernel_size, stride, padding, output_size)


def max_unpool2d(
    input: Tensor,
    indices: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
) -> Tensor:
    """Inverse of ``max_pool2d`` (``(N, C, H, W)`` or ``(C, H, W)``): each value at the flat
    in-plane index ``h · W + w`` that ``indices`` holds, zeros elsewhere.

    Args:
        input: the pooled values.
        indices: the int64 indices ``max_pool2d(..., return_indices=True)`` returned.
        kernel_size, stride, padding: the pool's (stride defaults to the kernel).
        output_size: the size to produce, when the pool's rounding made it ambiguous.

    Returns:
        ``(N, C, (H - 1)·sh - 2·ph + kh, ...)`` or ``output_size``.
    """
    return _max_unpool("max_unpool2d", 2, input, indices, kernel_size, stride, padding, output_size)


def max_unpool3d(
    input: Tensor,
    indices: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
) -> Tensor:
    """Inverse of ``max_pool3d`` (``(N, C, D, H, W)`` or ``(C, D, H, W)``): each value at the
    flat in-volume index ``indices`` holds, zeros elsewhere; see ``max_unpool2d``."""
    return _max_unpool("max_unpool3d", 3, input, indices, kernel_size, stride, padding, output_size)


__all__ = ["max_unpool1d", "max_unpool2d", "max_unpool3d"]
