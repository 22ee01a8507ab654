"""2-D pooling: max, average and adaptive average, over ``as_strided`` windows.

Forward views the (padded) input as ``(N, C, OH, OW, kh, kw)`` windows and reduces the last
two axes; backward adds the output gradient back with one strided add per kernel position
(``kh · kw`` of them, a handful), so no Python loop runs over pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv import _as_strided, _pair
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.linalg import matmul


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


def _geometry(
    where: str,
    input: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
) -> tuple:
    """Check a pooling call's arguments; return kernel, stride, padding, dilation, output
    size and the extra bottom/right padding ``ceil_mode`` needs, each an (h, w) pair."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{where}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{where}: expected a 4-D input (batch, channels, height, width) or a 3-D "
            f"unbatched one, got shape {tuple(input.shape)}"
        )
    kernel = _pair(kernel_size, "kernel_size", where, 1)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", where, 1)
    pads = _pair(padding, "padding", where, 0)
    dilation = _pair(dilation, "dilation", where, 1)
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise ValueError(
            f"{where}: padding {padding!r} must be at most half the kernel size {kernel}"
        )
    size = tuple(input.shape[-2:])
    out, extra = zip(
        *(
            _output_size(size[a], kernel[a], stride[a], pads[a], dilation[a], ceil_mode)
            for a in (0, 1)
        )
    )
    if min(out) < 1:
        raise ValueError(
            f"{where}: input of height x width {size} is too small for kernel {kernel} with "
            f"padding {pads}, dilation {dilation}; the output would be {out}"
        )
    return kernel, stride, pads, dilation, out, extra


def _pad(x: Any, pads: tuple, extra: tuple, value: float) -> Any:
    """``x`` padded by ``pads`` on each side plus ``extra`` at the bottom/right."""
    (ph, pw), (eh, ew) = pads, extra
    if not (ph or pw or eh or ew):
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    padded = xp.full((n, c, h + 2 * ph + eh, w + 2 * pw + ew), value, dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    return padded


def _windows(padded: Any, out: tuple, kernel: tuple, stride: tuple, dilation: tuple) -> Any:
    """The ``(N, C, OH, OW, kh, kw)`` windows of ``padded``, as a view."""
    n, c = padded.shape[:2]
    s_n, s_c, s_h, s_w = padded.strides
    return _as_strided(
        get_array_module(padded),
        padded,
        (n, c, out[0], out[1], kernel[0], kernel[1]),
        (s_n, s_c, stride[0] * s_h, stride[1] * s_w, dilation[0] * s_h, dilation[1] * s_w),
    )


def _kernel_slice(i: int, j: int, out: tuple, stride: tuple, dilation: tuple) -> tuple:
    """The strided slice of the padded input that kernel position (i, j) reads."""
    top, left = i * dilation[0], j * dilation[1]
    return (
        slice(None),
        slice(None),
        slice(top, top + stride[0] * (out[0] - 1) + 1, stride[0]),
        slice(left, left + stride[1] * (out[1] - 1) + 1, stride[1]),
    )


def _crop(padded: Any, pads: tuple, shape: tuple) -> Any:
    (ph, pw), (h, w) = pads, shape[-2:]
    if padded.shape[-2:] == (h, w):
        return padded
    return get_array_module(padded).ascontiguousarray(padded[:, :, ph : ph + h, pw : pw + w])


class MaxPool2d(Op):
    """Max pooling; ``forward`` receives the output and argmax that ``max_pool2d`` found."""

    def forward(self, x: Any, out: Any, argmax: Any, geometry: tuple) -> Any:
        self.shape, self.argmax, self.geometry = x.shape, argmax, geometry
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        kernel, stride, pads, dilation, out, extra = self.geometry
        n, c, h, w = self.shape
        padded = xp.zeros(
            (n, c, h + 2 * pads[0] + extra[0], w + 2 * pads[1] + extra[1]), dtype=grad.dtype
        )
        for position in range(kernel[0] * kernel[1]):
            i, j = divmod(position, kernel[1])
            padded[_kernel_slice(i, j, out, stride, dilation)] += grad * (self.argmax == position)
        return (_crop(padded, pads, self.shape),)


def max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """2-D max pooling.

    Args:
        input: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or pair; None (the default) means ``kernel_size``.
        padding: implicit ``-inf`` padding on each side, at most half the kernel.
        dilation: spacing between the elements of a window.
        ceil_mode: round the output size up, so the last partial window counts.
        return_indices: also return, for each output, the flat index ``h · W + w`` of the
            maximum within its input plane (an int64 tensor, as ``MaxUnpool2d`` takes).

    Returns:
        The pooled tensor, or ``(pooled, indices)`` with ``return_indices``.
    """
    where = "max_pool2d"
    geometry = _geometry(where, input, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, pads, dilation, out, extra = geometry
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    x = input._array
    xp = get_array_module(x)
    kind = x.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a number")
    lowest = -math.inf if kind == "f" else np.iinfo(x.dtype).min
    padded = _pad(x, pads, extra, lowest)
    windows = [
        padded[_kernel_slice(i, j, out, stride, dilation)]
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]
    # Strided passes over the kernel positions (a handful), no copy of the windows: the
    # maximum (xp.maximum propagates NaN), then the first position that holds it (or NaN).
    values = windows[0].copy()
    for window in windows[1:]:
        xp.maximum(values, window, out=values)
    argmax = xp.zeros(values.shape, dtype=np.uint8 if len(windows) < 256 else np.int64)
    # Padding holds the lowest value, so it ties a window of only that value (-inf, or the
    # integer minimum): it must never win, or the index points outside the input (PyTorch
    # takes the first position inside) and the gradient is lost.
    inside = None
    if any(pads) or any(extra):
        inside = _pad(xp.ones((1, 1) + x.shape[2:], dtype=bool), pads, extra, False)
    for position in range(len(windows) - 1, -1, -1):  # down to 0: the first maximum wins
        hit = windows[position] == values
        if kind == "f":
            hit |= xp.isnan(windows[position])
        if inside is not None:
            hit &= inside[_kernel_slice(*divmod(position, kernel[1]), out, stride, dilation)]
        argmax = xp.where(hit, argmax.dtype.type(position), argmax)
    result = MaxPool2d.apply(input, out=values, argmax=argmax, geometry=geometry)
    if unbatched:
        result = result.squeeze(0)
    if not return_indices:
        return result
    argmax = argmax.astype(np.int64)
    row = (
        xp.arange(out[0]).reshape(-1, 1) * stride[0] - pads[0] + (argmax // kernel[1]) * dilation[0]
    )
    column = xp.arange(out[1]) * stride[1] - pads[1] + (argmax % kernel[1]) * dilation[1]
    indices = (row * x.shape[-1] + column).astype(np.int64)
    return result, wrap(indices[0] if unbatched else indices)


def _window_counts(
    size: int, out: int, kernel: int, stride: int, pad: int, count_include_pad: bool
) -> np.ndarray:
    """How many elements each window along one axis averages (PyTorch's divisor)."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)  # padding counts, the ceil_mode overhang not
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


class AvgPool2d(Op):
    def forward(self, x: Any, geometry: tuple, divisor: Any) -> Any:
        kernel, stride, pads, dilation, out, extra = geometry
        self.shape, self.geometry, self.divisor = x.shape, geometry, divisor
        windows = _windows(_pad(x, pads, extra, 0), out, kernel, stride, dilation)
        sums = windows.sum(axis=(4, 5), dtype=accumulation_dtype(x.dtype))
        return (sums / divisor).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        kernel, stride, pads, dilation, out, extra = self.geometry
        n, c, h, w = self.shape
        share = (grad / self.divisor).astype(grad.dtype, copy=False)
        padded = xp.zeros(
            (n, c, h + 2 * pads[0] + extra[0], w + 2 * pads[1] + extra[1]), dtype=grad.dtype
        )
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                padded[_kernel_slice(i, j, out, stride, dilation)] += share
        return (_crop(padded, pads, self.shape),)


def avg_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling.

    Args:
        input: ``(N, C, H, W)`` or unbatched ``(C, H, W)``, floating point.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or pair; None (the default) means ``kernel_size``.
        padding: implicit zero padding on each side, at most half the kernel.
        ceil_mode: round the output size up, so the last partial window counts.
        count_include_pad: whether the padding zeros count in each window's average.
        divisor_override: divide every window's sum by this instead.

    Returns:
        The pooled tensor.
    """
    where = "avg_pool2d"
    geometry = _geometry(where, input, kernel_size, stride, padding, 1, ceil_mode)
    kernel, stride, pads, _, out, _ = geometry
    if input._array.dtype.kind != "f":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a float; call .float() first")
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or divisor_override == 0:
            raise ValueError(
                f"{where}: divisor_override must be a non-zero int, got {divisor_override!r}"
            )
        divisor: Any = divisor_override
    else:
        size = input.shape[-2:]
        counts = [
            _window_counts(size[a], out[a], kernel[a], stride[a], pads[a], count_include_pad)
            for a in (0, 1)
        ]
        table = np.outer(counts[0], counts[1])
        if (table == table.flat[0]).all():
            divisor = int(table.flat[0])  # a Python int keeps float32 float32
        else:
            xp = get_array_module(input._array)
            divisor = xp.asarray(table.astype(accumulation_dtype(input.dtype)))
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    result = AvgPool2d.apply(input, geometry=geometry, divisor=divisor)
    return result.squeeze(0) if unbatched else result


class AdaptiveAvgPool2d(Op):
    """``rows @ x @ columns.T``: each output averages a bin of input rows and columns.
    ``rows`` and ``columns`` are in the accumulation dtype (float32 for float16 input)."""

    def forward(self, x: Any, rows: Any, columns: Any) -> Any:
        self.rows, self.columns = rows, columns
        wide = x.astype(rows.dtype, copy=False)
        return matmul(matmul(rows, wide), columns.T).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        wide = grad.astype(self.rows.dtype, copy=False)
        return (matmul(matmul(self.rows.T, wide), self.columns).astype(grad.dtype, copy=False),)


def _bins(size: int, out: int, dtype: Any) -> np.ndarray:
    """``(out, size)`` averaging matrix of PyTorch's adaptive bins
    ``[floor(i · size / out), ceil((i + 1) · size / out))``."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Average pooling to a fixed output size, whatever the input size.

    Args:
        input: ``(N, C, H, W)`` or unbatched ``(C, H, W)``, floating point.
        output_size: an int or ``(oh, ow)``; a None entry keeps that input size.

    Returns:
        ``(N, C, oh, ow)``.
    """
    where = "adaptive_avg_pool2d"
    if not isinstance(input, Tensor):
        raise TypeError(f"{where}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{where}: expected a 4-D input (batch, channels, height, width) or a 3-D "
            f"unbatched one, got shape {tuple(input.shape)}"
        )
    if input._array.dtype.kind != "f":
        raise TypeError(f"{where}: input dtype {input.dtype} is not a float; call .float() first")
    size = tuple(input.shape[-2:])
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(s if o is None else o for o, s in zip(output_size, size))
    out = _pair(output_size, "output_size", where, 1)
    if min(size) < 1:
        raise ValueError(f"{where}: input height x width {size} must be non-empty")
    if size[0] % out[0] == 0 and size[1] % out[1] == 0:
        kernel = (size[0] // out[0], size[1] // out[1])
        return avg_pool2d(input, kernel, kernel)
    xp = get_array_module(input._array)
    wide = accumulation_dtype(input.dtype)
    rows = xp.asarray(_bins(size[0], out[0], wide))
    columns = xp.asarray(_bins(size[1], out[1], wide))
    return AdaptiveAvgPool2d.apply(input, rows=rows, columns=columns)
