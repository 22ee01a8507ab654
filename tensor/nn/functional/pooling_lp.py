"""Power-average pooling: ``lp_pool1d`` and ``lp_pool2d``, composed as PyTorch composes
them: ``(sum over the window of x^p)^(1/p)`` from an average pool of ``x^p``, and a max
pool of ``|x|`` for ``p = inf``."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.nn.functional.conv_pool1d import avg_pool1d, max_pool1d, single
from dtrain._tensor.nn.functional.pooling import avg_pool2d, max_pool2d
from dtrain._tensor.ops.select import where
from dtrain._tensor.tensor import Tensor


def _lp_pool(
    input: Tensor, norm_type: float, kernel_size: Any, stride: Any, ceil_mode: bool, dims: int
) -> Tensor:
    avg, mx = (avg_pool1d, max_pool1d) if dims == 1 else (avg_pool2d, max_pool2d)
    if norm_type == math.inf:
        return mx(input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -math.inf:
        return -mx(-input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == 0:
        raise ValueError("lp_pool: norm_type 0 is not a norm; use a positive power")
    if dims == 1:
        size = single(kernel_size, "kernel_size", "lp_pool1d")
    else:
        pair = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        size = pair[0] * pair[1]
    out = avg(input.pow(norm_type), kernel_size, stride, 0, ceil_mode)
    # A window of zeros (dead ReLUs): pow(1/p)'s gradient there is inf, and x^p's backward
    # would turn inf * 0 into NaN. A select stops it, as PyTorch's relu(|out|) does.
    out = where(out != 0, out, 0.0)
    return (out * size).pow(1.0 / norm_type)


def lp_pool1d(
    input: Tensor, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False
) -> Tensor:
    """``(Σ_window x^p)^(1/p)`` over windows of ``(N, C, L)`` input (``p = norm_type``;
    ``inf`` gives max pooling of ``|x|``). As PyTorch, no padding, and a window whose sum
    is negative (odd ``p``) gives NaN."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1)


def lp_pool2d(
    input: Tensor, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False
) -> Tensor:
    """``(Σ_window x^p)^(1/p)`` over the windows of ``(N, C, H, W)`` input."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2)
