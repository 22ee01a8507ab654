"""3-D pooling: max, average (``pooling_nd.py``), and their adaptive forms, written for any
number of spatial dims. Adaptive average pooling contracts each spatial axis
with its ``(out, size)`` averaging matrix; adaptive max pooling reduces each bin in one
vectorised pass over batch and channels (a loop over the few output positions only).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv_nd import ntuple
from dtrain._tensor.nn.functional.pooling import _bins
from dtrain._tensor.nn.functional.pooling_nd import avg_pool, check_input, max_pool
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.linalg import matmul

_ALL = (slice(None), slice(None))


def max_pool3d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """3-D max pooling of ``(N, C, D, H, W)`` (or ``(C, D, H, W)``) input.

    Args:
        kernel_size: an int or a 3-tuple.
        stride: an int or 3-tuple; None (the default) means ``kernel_size``.
        padding: implicit ``-inf`` padding on each side, at most half the kernel.
        dilation: spacing between the elements of a window.
        ceil_mode: round the output size up, so the last partial window counts.
        return_indices: also return, for each output, the flat index ``(d·H + h)·W + w``
            of the maximum within its input volume (int64, as ``max_unpool3d`` takes).

    Returns:
        The pooled tensor, or ``(pooled, indices)`` with ``return_indices``.
    """
    return max_pool(
        "max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


def avg_pool3d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """3-D average pooling of ``(N, C, D, H, W)`` (or ``(C, D, H, W)``) float input.

    Args:
        kernel_size: an int or a 3-tuple.
        stride: an int or 3-tuple; None (the default) means ``kernel_size``.
        padding: implicit zero padding on each side, at most half the kernel.
        ceil_mode: round the output size up, so the last partial window counts.
        count_include_pad: whether the padding zeros count in each window's average.
        divisor_override: divide every window's sum by this instead.

    Returns:
        The pooled tensor.
    """
    return avg_pool(
        "avg_pool3d",
        3,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


def _adaptive_size(where: str, input: Tensor, output_size: Any, dims: int) -> tuple:
    check_input(where, input, dims)
    size = tuple(input.shape[-dims:])
    if min(size) < 1:
        raise ValueError(f"{where}: input's spatial size {size} must be non-empty")
    if isinstance(output_size, (tuple, list)) and len(output_size) == dims:
        output_size = tuple(s if o is None else o for o, s in zip(output_size, size))
    return size, ntuple(output_size, dims, "output_size", where, 1)


class AdaptiveAvgPoolNd(Op):
    """Each spatial axis contracted with its ``(out, size)`` averaging matrix (in the
    accumulation dtype: float32 for float16 input)."""

    def forward(self, x: Any, matrices: tuple) -> Any:
        self.matrices = matrices
        return _contract(x.astype(matrices[0].dtype, copy=False), matrices).astype(
            x.dtype, copy=False
        )

    def backward(self, grad: Any) -> tuple:
        transposed = tuple(m.T for m in self.matrices)
        wide = grad.astype(transposed[0].dtype, copy=False)
        return (_contract(wide, transposed).astype(grad.dtype, copy=False),)


def _contract(x: Any, matrices: tuple) -> Any:
    """``x`` with spatial axis ``a`` multiplied by ``matrices[a]`` (``(out, size)``)."""
    for a, m in enumerate(matrices):
        lead, rest = x.shape[: 2 + a], x.shape[3 + a :]
        folded = x.reshape(lead + (x.shape[2 + a], math.prod(rest)))
        x = matmul(m, folded).reshape(lead + (m.shape[0],) + rest)
    return x


def adaptive_avg_pool3d(input: Tensor, output_size: Any) -> Tensor:
    """Average pooling of ``(N, C, D, H, W)`` (or ``(C, D, H, W)``) float input to a fixed
    ``output_size`` (an int or a 3-tuple; a None entry keeps that input size)."""
    where, dims = "adaptive_avg_pool3d", 3
    size, out = _adaptive_size(where, input, output_size, dims)
    if input._array.dtype.kind != "f":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a float; call .float() first")
    if all(s % o == 0 for s, o in zip(size, out)):
        kernel = tuple(s // o for s, o in zip(size, out))
        return avg_pool3d(input, kernel, kernel)
    xp = get_array_module(input._array)
    wide = accumulation_dtype(input.dtype)
    matrices = tuple(xp.asarray(_bins(s, o, wide)) for s, o in zip(size, out))
    unbatched = input.ndim == dims + 1
    x = input.unsqueeze(0) if unbatched else input
    result = AdaptiveAvgPoolNd.apply(x, matrices=matrices)
    return result.squeeze(0) if unbatched else result


class AdaptiveMaxPoolNd(Op):
    """Max over each bin; ``forward`` receives the maxima and their flat in-volume indices
    (bins may overlap, so backward scatter-adds)."""

    def forward(self, x: Any, out: Any, indices: Any) -> Any:
        self.shape, self.indices = x.shape, indices
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        n, c = self.shape[:2]
        volume = math.prod(self.shape[2:])
        planes = xp.arange(n * c).reshape((n, c) + (1,) * (grad.ndim - 2)) * volume
        flat = xp.zeros(n * c * volume, dtype=grad.dtype)
        add_at(flat, (self.indices + planes).reshape(-1), grad.reshape(-1), "adaptive_max_pool")
        return (flat.reshape(self.shape),)


def adaptive_max_pool3d(input: Tensor, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling of ``(N, C, D, H, W)`` (or ``(C, D, H, W)``) input to a fixed
    ``output_size`` (an int or a 3-tuple; None keeps that size); with ``return_indices``
    also the flat in-volume index ``(d·H + h)·W + w`` of each maximum."""
    where, dims = "adaptive_max_pool3d", 3
    size, out = _adaptive_size(where, input, output_size, dims)
    if all(s % o == 0 for s, o in zip(size, out)):
        kernel = tuple(s // o for s, o in zip(size, out))
        return max_pool3d(input, kernel, kernel, return_indices=return_indices)
    unbatched = input.ndim == dims + 1
    if unbatched:
        input = input.unsqueeze(0)
    x = input._array
    xp = get_array_module(x)
    n, c = x.shape[:2]
    values = xp.empty((n, c) + out, dtype=x.dtype)
    indices = xp.empty((n, c) + out, dtype=np.int64)
    for position in np.ndindex(*out):
        bins = [((i * s) // o, -((-(i + 1) * s) // o)) for i, s, o in zip(position, size, out)]
        extent = tuple(hi - lo for lo, hi in bins)
        window = x[_ALL + tuple(slice(lo, hi) for lo, hi in bins)]
        window = window.reshape(n, c, math.prod(extent))  # n may be 0: no -1
        best = window.argmax(axis=-1)  # the first maximum, or the first NaN, as PyTorch
        values[_ALL + position] = xp.take_along_axis(window, best[..., None], axis=-1)[..., 0]
        flat = xp.zeros_like(best)
        rest = best
        for a in reversed(range(dims)):  # unravel within the bin, ravel within the volume
            coordinate = rest % extent[a] + bins[a][0]
            rest = rest // extent[a]
            flat = flat + coordinate * math.prod(size[a + 1 :])
        indices[_ALL + position] = flat
    result = AdaptiveMaxPoolNd.apply(input, out=values, indices=indices)
    if unbatched:
        result, indices = result.squeeze(0), indices[0]
    return (result, wrap(indices)) if return_indices else result


__all__ = ["adaptive_avg_pool3d", "adaptive_max_pool3d", "avg_pool3d", "max_pool3d"]
