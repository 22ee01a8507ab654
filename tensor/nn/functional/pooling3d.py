"""3-D pooling: max, average, and their adaptive forms, written for any number of spatial
dims (``pooling.py`` holds the tuned 2-D forms).

Max and average pooling make one strided pass over the padded input per kernel position
(``kd · kh · kw`` of them, a handful), never a Python loop over voxels; backward adds the
output gradient back the same way. Adaptive average pooling contracts each spatial axis
with its ``(out, size)`` averaging matrix; adaptive max pooling reduces each bin in one
vectorised pass over batch and channels (a loop over the few output positions only).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv_nd import ntuple
from dtrain._tensor.nn.functional.pooling import _bins, _output_size, _window_counts
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.linalg import matmul

_ALL = (slice(None), slice(None))


def _check_input(where: str, input: Any, dims: int) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{where}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"{where}: expected a {dims + 2}-D input (batch, channels, *spatial) or a "
            f"{dims + 1}-D unbatched one, got shape {tuple(input.shape)}"
        )


def _geometry(
    where: str,
    input: Tensor,
    dims: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
) -> tuple:
    """Check a pooling call's arguments; return kernel, stride, padding, dilation, output
    size and the extra end padding ``ceil_mode`` needs, each a ``dims``-tuple."""
    _check_input(where, input, dims)
    kernel = ntuple(kernel_size, dims, "kernel_size", where, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = ntuple(stride, dims, "stride", where, 1)
    pads = ntuple(padding, dims, "padding", where, 0)
    dilation = ntuple(dilation, dims, "dilation", where, 1)
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(
            f"{where}: padding {padding!r} must be at most half the kernel size {kernel}"
        )
    size = tuple(input.shape[-dims:])
    out, extra = zip(
        *(
            _output_size(size[a], kernel[a], stride[a], pads[a], dilation[a], ceil_mode)
            for a in range(dims)
        )
    )
    if min(out) < 1:
        raise ValueError(
            f"{where}: input of spatial size {size} is too small for kernel {kernel} with "
            f"padding {pads}, dilation {dilation}; the output would be {out}"
        )
    return kernel, stride, pads, dilation, tuple(out), tuple(extra)


def _pad(x: Any, pads: tuple, extra: tuple, value: float) -> Any:
    if not any(pads) and not any(extra):
        return x
    shape = x.shape[:2] + tuple(s + 2 * p + e for s, p, e in zip(x.shape[2:], pads, extra))
    padded = get_array_module(x).full(shape, value, dtype=x.dtype)
    padded[_ALL + tuple(slice(p, p + s) for s, p in zip(x.shape[2:], pads))] = x
    return padded


def _slice(position: tuple, out: tuple, stride: tuple, dilation: tuple) -> tuple:
    """The strided slice of the padded input that a kernel position reads."""
    return _ALL + tuple(
        slice(i * d, i * d + s * (o - 1) + 1, s)
        for i, d, s, o in zip(position, dilation, stride, out)
    )


def _unpad(padded: Any, pads: tuple, shape: tuple) -> Any:
    if tuple(padded.shape) == tuple(shape):
        return padded
    inner = tuple(slice(p, p + s) for s, p in zip(shape[2:], pads))
    return get_array_module(padded).ascontiguousarray(padded[_ALL + inner])


def _zeros_padded(grad: Any, shape: tuple, pads: tuple, extra: tuple) -> Any:
    size = tuple(s + 2 * p + e for s, p, e in zip(shape[2:], pads, extra))
    return get_array_module(grad).zeros(tuple(shape[:2]) + size, dtype=grad.dtype)


class MaxPoolNd(Op):
    """Max pooling; ``forward`` receives the maxima and the kernel position of each."""

    def forward(self, x: Any, out: Any, argmax: Any, geometry: tuple) -> Any:
        self.shape, self.argmax, self.geometry = x.shape, argmax, geometry
        return out

    def backward(self, grad: Any) -> tuple:
        kernel, stride, pads, dilation, out, extra = self.geometry
        padded = _zeros_padded(grad, self.shape, pads, extra)
        for flat, position in enumerate(np.ndindex(*kernel)):
            padded[_slice(position, out, stride, dilation)] += grad * (self.argmax == flat)
        return (_unpad(padded, pads, self.shape),)


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
    where, dims = "max_pool3d", 3
    geometry = _geometry(where, input, dims, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, pads, dilation, out, extra = geometry
    unbatched = input.ndim == dims + 1
    if unbatched:
        input = input.unsqueeze(0)
    x = input._array
    xp = get_array_module(x)
    kind = x.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a number")
    lowest = -math.inf if kind == "f" else np.iinfo(x.dtype).min
    padded = _pad(x, pads, extra, lowest)
    taps = list(np.ndindex(*kernel))
    windows = [padded[_slice(p, out, stride, dilation)] for p in taps]
    values = windows[0].copy()
    for window in windows[1:]:
        xp.maximum(values, window, out=values)  # propagates NaN, as PyTorch
    argmax = xp.zeros(values.shape, dtype=np.uint8 if len(windows) < 256 else np.int64)
    # Padding never wins, even where a window is all -inf (or the int minimum): each window
    # holds an input element, so its first in-bounds maximum does, as in PyTorch.
    inside = None
    if padded is not x:
        inside = _pad(xp.ones((1, 1) + x.shape[2:], dtype=bool), pads, extra, False)
    for position in range(len(windows) - 1, -1, -1):  # down to 0: the first maximum wins
        hit = windows[position] == values
        if kind == "f":
            hit |= xp.isnan(windows[position])
        if inside is not None:
            hit &= inside[_slice(taps[position], out, stride, dilation)]
        argmax = xp.where(hit, argmax.dtype.type(position), argmax)
    result = MaxPoolNd.apply(input, out=values, argmax=argmax, geometry=geometry)
    if unbatched:
        result = result.squeeze(0)
    if not return_indices:
        return result
    offsets = np.unravel_index(np.arange(math.prod(kernel)), kernel)
    flat = argmax.astype(np.int64)
    index = xp.zeros(values.shape, dtype=np.int64)
    for a in range(dims):
        # this axis's coordinate of each maximum: window start + kernel offset · dilation
        offset = xp.asarray(offsets[a] * dilation[a])[flat]
        start = (xp.arange(out[a]) * stride[a] - pads[a]).reshape((-1,) + (1,) * (dims - 1 - a))
        index = index * x.shape[2 + a] + start + offset
    return result, wrap(index[0] if unbatched else index)


class AvgPoolNd(Op):
    def forward(self, x: Any, geometry: tuple, divisor: Any) -> Any:
        kernel, stride, pads, dilation, out, extra = geometry
        self.shape, self.geometry, self.divisor = x.shape, geometry, divisor
        padded = _pad(x, pads, extra, 0)
        sums = get_array_module(x).zeros(x.shape[:2] + out, dtype=accumulation_dtype(x.dtype))
        for position in np.ndindex(*kernel):
            sums += padded[_slice(position, out, stride, dilation)]
        return (sums / divisor).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        kernel, stride, pads, dilation, out, extra = self.geometry
        share = (grad / self.divisor).astype(grad.dtype, copy=False)
        padded = _zeros_padded(grad, self.shape, pads, extra)
        for position in np.ndindex(*kernel):
            padded[_slice(position, out, stride, dilation)] += share
        return (_unpad(padded, pads, self.shape),)


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
    where, dims = "avg_pool3d", 3
    geometry = _geometry(where, input, dims, kernel_size, stride, padding, 1, ceil_mode)
    kernel, stride, pads, _, out, _ = geometry
    if input._array.dtype.kind != "f":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a float; call .float() first")
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
            raise TypeError(  # bool too, as PyTorch
                f"{where}: divisor_override must be a non-zero int, got {divisor_override!r}"
            )
        if divisor_override == 0:
            raise ValueError(f"{where}: divisor_override must be a non-zero int, got 0")
        divisor: Any = divisor_override
    else:
        size = input.shape[-dims:]
        table = np.ones((), dtype=np.int64)
        for a in range(dims):
            counts = _window_counts(
                size[a], out[a], kernel[a], stride[a], pads[a], count_include_pad
            )
            table = np.multiply.outer(table, counts)
        if (table == table.flat[0]).all():
            divisor = int(table.flat[0])  # a Python int keeps float32 float32
        else:
            xp = get_array_module(input._array)
            divisor = xp.asarray(table.astype(accumulation_dtype(input.dtype)))
    unbatched = input.ndim == dims + 1
    if unbatched:
        input = input.unsqueeze(0)
    result = AvgPoolNd.apply(input, geometry=geometry, divisor=divisor)
    return result.squeeze(0) if unbatched else result


def _adaptive_size(where: str, input: Tensor, output_size: Any, dims: int) -> tuple:
    _check_input(where, input, dims)
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
