"""More reductions: nansum, nanmean, count_nonzero, aminmax, std_mean, var_mean, histc."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from dtrain._tensor.ops._util import normalize_dims
from dtrain._tensor.ops.reduce import amax, amin, mean, std, sum, var
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

#: What ``aminmax`` returns, as PyTorch's ``torch.return_types.aminmax``.
MinMax = namedtuple("MinMax", ["min", "max"])


def _without_nan(input: Tensor) -> Tensor:
    from dtrain._tensor.ops.select import where

    if input._array.dtype.kind != "f":
        return input
    xp = get_array_module(input._array)
    return where(wrap(xp.asarray(xp.isnan(input._array))), 0.0, input)  # numpy: 0-d → scalar


def nansum(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """``sum`` treating NaN as 0 (no gradient flows to the NaNs)."""
    return sum(_without_nan(input), dim, keepdim, dtype)


def nanmean(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    """``mean`` of the values that are not NaN (NaN where every value is NaN)."""
    if dtype is not None:
        input = input.to(dtype)
    if input._array.dtype.kind != "f":
        raise TypeError(f"nanmean: input dtype {input.dtype} is not a float; call .float() first")
    xp = get_array_module(input._array)
    axes = normalize_dims(dim, input.ndim)
    counted = ~xp.isnan(input._array)
    count = counted.sum(axis=axes, keepdims=keepdim).astype(input._array.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return nansum(input, axes, keepdim) / wrap(xp.asarray(count))


def count_nonzero(input: Tensor, dim: Any = None) -> Tensor:
    """The number of nonzero elements over ``dim`` (int or tuple; every element when None),
    as int64."""
    array = input._array
    xp = get_array_module(array)
    axes = normalize_dims(dim, input.ndim)
    return wrap(xp.asarray((array != 0).sum(axis=axes), dtype=np.int64))


def aminmax(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> MinMax:
    """``(min, max)`` over ``dim`` (every element when None), as ``amin`` and ``amax``."""
    if input.numel() == 0 and (dim is None or input.ndim == 0 or input.shape[dim] == 0):
        raise RuntimeError(
            f"aminmax: an empty tensor (shape {tuple(input.shape)}) has no minimum; give a "
            "dim of nonzero size"
        )
    if dim is not None and input.ndim == 0:
        normalize_dims(dim, 0)
        return MinMax(amin(input), amax(input))
    return MinMax(amin(input, dim, keepdim), amax(input, dim, keepdim))


def var_mean(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(var, mean)`` over ``dim``, as ``var`` and ``mean``."""
    return (
        var(input, dim, unbiased, keepdim, correction=correction),
        mean(input, dim, keepdim),
    )


def std_mean(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(std, mean)`` over ``dim``, as ``std`` and ``mean``."""
    return (
        std(input, dim, unbiased, keepdim, correction=correction),
        mean(input, dim, keepdim),
    )


def histc(input: Tensor, bins: int = 100, min: float = 0, max: float = 0) -> Tensor:
    """Counts of the elements in ``bins`` equal-width bins over ``[min, max]`` (the data's
    own range when both are 0; elements outside are not counted), in ``input``'s float
    dtype; no gradient."""
    if input._array.dtype.kind != "f":
        raise TypeError(f"histc: needs a float tensor, got {input.dtype}; call .float() first")
    if bins <= 0:
        raise ValueError(f"histc: bins must be positive, got {bins}")
    if min > max:
        raise ValueError(f"histc: min={min} is above max={max}")
    array = input._array.reshape(-1)
    xp = get_array_module(array)
    dtype = array.dtype
    if min == max and array.size:
        # The data's range, kept on the device; a constant tensor widens by 1 each way.
        low, high = array.min().astype(np.float64), array.max().astype(np.float64)
        same = low == high
        low, high = xp.where(same, low - 1, low), xp.where(same, high + 1, high)
    else:
        low = xp.asarray(min - 1 if min == max else min, dtype=np.float64)
        high = xp.asarray(max + 1 if min == max else max, dtype=np.float64)
    if min == max and array.size and not bool(xp.isfinite(low) & xp.isfinite(high)):
        raise ValueError(  # one host read (a sync on CUDA), only for the data's own range
            f"histc: the data's range [{float(low)}, {float(high)}] is not finite; pass a "
            "finite min and max, or remove the inf/NaN values"
        )
    # Positions in the input's dtype (float32 at least), as PyTorch: in float64, 0.7f
    # would fall in bin 6 of [0, 1] where PyTorch puts it in bin 7.
    work = np.promote_types(dtype, np.float32)
    low, high = low.astype(work), high.astype(work)
    values = array.astype(work)
    inside = (values >= low) & (values <= high)
    with np.errstate(invalid="ignore"):
        position = xp.floor((values - low) * work.type(bins) / (high - low))
    position = xp.where(inside, xp.clip(position, 0, bins - 1), bins).astype(np.int64)
    counts = xp.bincount(position, minlength=bins + 1)[:bins]
    return wrap(counts.astype(dtype))
