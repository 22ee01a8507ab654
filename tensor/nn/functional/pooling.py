"""2-D pooling: max and average (``pooling_nd.py``, shared with 1-D and 3-D) and adaptive
average (two small matrix products)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv import _pair
from dtrain._tensor.nn.functional.pooling_nd import avg_pool, max_pool
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.linalg import matmul


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
    return max_pool(
        "max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


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
    return avg_pool(
        "avg_pool2d",
        2,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


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
