"""Max and average pooling over any number of spatial dims, shared by the 1-D, 2-D and 3-D
functions (``conv_pool1d.py``, ``pooling.py``, ``pooling3d.py``).

Each makes one strided pass over the padded input per kernel position (``kh · kw`` or
``kd · kh · kw`` of them, a handful), never a Python loop over pixels; backward adds the
output gradient back the same way. (Summing the taps this way took a third of the time of
reducing an ``as_strided`` window view for 2-D average pooling here.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv_nd import ntuple
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype

_ALL = (slice(None), slice(None))


def _output_size(
    size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool
) -> tuple[int, int]:
    """PyTorch's pooling output size along one axis, and the padding the last window needs
    past ``size + pad`` (non-zero only with ``ceil_mode``)."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    extra = max(0, (out - 1) * stride + span - (size + 2 * pad))
    return out, extra


def _window_counts(
    size: int, out: int, kernel: int, stride: int, pad: int, count_include_pad: bool
) -> np.ndarray:
    """How many elements each window along one axis averages (PyTorch's divisor)."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)  # padding counts, the ceil_mode overhang not
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def check_input(where: str, input: Any, dims: int) -> None:
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
    check_input(where, input, dims)
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


class MaxPool2d(MaxPoolNd):
    """2-D max pooling (its own class for PyTorch's node name, ``MaxPool2DWithIndices``)."""


class MaxPool3d(MaxPoolNd):
    """3-D max pooling (its own class for PyTorch's node name)."""


_MAX_POOL_OPS = {2: MaxPool2d, 3: MaxPool3d}


def max_pool(
    where: str,
    dims: int,
    input: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
    return_indices: bool,
) -> Any:
    """``dims``-D max pooling (the public functions document the arguments); with
    ``return_indices`` also each maximum's flat index within its input plane or volume."""
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
    result = _MAX_POOL_OPS[dims].apply(input, out=values, argmax=argmax, geometry=geometry)
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


class AvgPool2d(AvgPoolNd):
    """2-D average pooling (its own class for PyTorch's node name, ``AvgPool2D``)."""


class AvgPool3d(AvgPoolNd):
    """3-D average pooling (its own class for PyTorch's node name)."""


_AVG_POOL_OPS = {2: AvgPool2d, 3: AvgPool3d}


def avg_pool(
    where: str,
    dims: int,
    input: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """``dims``-D average pooling of float input (the public functions document the
    arguments)."""
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
    result = _AVG_POOL_OPS[dims].apply(input, geometry=geometry, divisor=divisor)
    return result.squeeze(0) if unbatched else result
