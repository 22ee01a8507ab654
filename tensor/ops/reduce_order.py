"""Order statistics: median, nanmedian, kthvalue, mode, quantile, nanquantile.

Everything sorts on the tensor's device (no host reads). With a ``dim`` the values are
gathered from the input at the returned indices, so the gradient goes to the selected
element; the global ``median``/``nanmedian`` share it among the elements equal to the
result, as PyTorch does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.indexing import gather
from dtrain._tensor.ops.reduce import ValuesIndices
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


class SharedSelection(Op):
    """A value picked from ``x`` (the global median): the gradient is shared evenly among the
    elements equal to it (the NaNs, when it is NaN)."""

    reads_inputs = True

    def forward(self, x: Any, value: Any) -> Any:
        self.x, self.value = x, value
        return value

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, value = self.x, self.value
        hit = (x == value) | (xp.isnan(x) & xp.isnan(value)) if x.dtype.kind == "f" else x == value
        count = hit.sum().astype(grad.dtype)
        return (grad * hit / count, None)


def _nan_count(array: Any, xp: Any) -> Any:
    """NaNs along the last axis (kept), zeros for integer and bool arrays."""
    if array.dtype.kind != "f":
        return xp.zeros(array.shape[:-1] + (1,), dtype=np.int64)
    return xp.isnan(array).sum(axis=-1, keepdims=True)


def _pick(input: Tensor, dim: int, keepdim: bool, rank: Any, name: str) -> ValuesIndices:
    """Values and indices of the element of sorted rank ``rank(n, nan_count, xp)`` (an array
    with one rank per slice, kept last axis) along ``dim``."""
    if input.ndim == 0:
        values, indices = _pick(input.reshape(1), 0, False, rank, name)
        return ValuesIndices(values.reshape(()), wrap(indices._array.reshape(())))
    axis = normalize_dim(dim, input.ndim)
    n = input.shape[axis]
    if n == 0:
        raise IndexError(
            f"{name}: dim {dim} has size 0 (shape {tuple(input.shape)}); there is nothing to "
            "select from"
        )
    xp = get_array_module(input._array)
    last = xp.moveaxis(input._array, axis, -1)
    order = xp.argsort(last, axis=-1, kind="stable")  # NaN sorts last, as in PyTorch
    chosen = xp.take_along_axis(order, rank(n, _nan_count(last, xp), xp), axis=-1)
    indices = xp.moveaxis(chosen, -1, axis)
    values = gather(input, axis, wrap(indices))
    if not keepdim:
        values, indices = values.squeeze(axis), xp.squeeze(indices, axis)
    return ValuesIndices(values, wrap(indices))


def _median_rank(n: int, nans: Any, xp: Any) -> Any:
    # The lower of the two middle values; a slice with a NaN gives its first NaN.
    return xp.where(nans > 0, n - nans, (n - 1) // 2)


def _nanmedian_rank(n: int, nans: Any, xp: Any) -> Any:
    valid = n - nans
    return xp.where(valid > 0, (valid - 1) // 2, 0)


def _global(input: Tensor, rank: Any, name: str) -> Tensor:
    if input.numel() == 0:
        if input._array.dtype.kind != "f":
            raise RuntimeError(f"{name}: an empty {input.dtype} tensor has no median")
        xp = get_array_module(input._array)
        return wrap(xp.full((), xp.nan, dtype=input._array.dtype))
    values, _ = _pick(input.reshape(-1), 0, False, rank, name)
    return SharedSelection.apply(input, values.detach())


def median(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """The median (the lower of the two middle values for an even count; NaN if any is NaN);
    with ``dim``, ``(values, indices)`` along it."""
    if dim is None:
        return _global(input, _median_rank, "median")
    return _pick(input, dim, keepdim, _median_rank, "median")


def nanmedian(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """``median`` ignoring NaN (NaN only where every value is NaN)."""
    if dim is None:
        return _global(input, _nanmedian_rank, "nanmedian")
    return _pick(input, dim, keepdim, _nanmedian_rank, "nanmedian")


def kthvalue(input: Tensor, k: int, dim: int = -1, keepdim: bool = False) -> ValuesIndices:
    """The ``k``-th smallest value (1-based) along ``dim`` and its index."""
    size = input.shape[normalize_dim(dim, input.ndim)] if input.ndim else 1
    if not 1 <= k <= size:
        raise IndexError(f"kthvalue: k={k} is out of range for dim {dim} of size {size}")
    return _pick(input, dim, keepdim, lambda n, nans, xp: xp.full_like(nans, k - 1), "kthvalue")


def mode(input: Tensor, dim: int = -1, keepdim: bool = False) -> ValuesIndices:
    """The most frequent value along ``dim`` (the smallest of equally frequent ones) and the
    index of its last occurrence, as PyTorch."""
    if input.ndim == 0:
        normalize_dim(dim, 0)  # dim 0 or -1 only, as PyTorch
        values, indices = mode(input.reshape(1), 0)
        return ValuesIndices(values.reshape(()), wrap(indices._array.reshape(())))
    axis = normalize_dim(dim, input.ndim)
    n = input.shape[axis]
    if n == 0:
        raise IndexError(f"mode: dim {dim} has size 0 (shape {tuple(input.shape)})")
    xp = get_array_module(input._array)
    last = xp.moveaxis(input._array, axis, -1)
    order = xp.argsort(last, axis=-1, kind="stable")
    ranked = xp.take_along_axis(last, order, axis=-1).reshape(-1, n)
    rows = ranked.shape[0]
    changed = ranked[:, 1:] != ranked[:, :-1]
    if ranked.dtype.kind == "f":  # NaN != NaN, yet all NaNs are one value (as PyTorch)
        changed &= ~(xp.isnan(ranked[:, 1:]) & xp.isnan(ranked[:, :-1]))
    starts = xp.concatenate([xp.ones((rows, 1), bool), changed], axis=1)
    run = xp.cumsum(starts, axis=1) - 1  # each element's run number within its row
    key = (xp.arange(rows)[:, None] * n + run).reshape(-1)
    counts = xp.bincount(key, minlength=rows * n).reshape(rows, n)
    frequency = xp.take_along_axis(counts, run, axis=1)
    # The first element with the top count starts the smallest most frequent value; its
    # run's last element is the value's last occurrence (the sort is stable).
    first = xp.argmax(frequency, axis=1)[:, None]
    end = first + xp.take_along_axis(frequency, first, axis=1) - 1
    chosen = xp.take_along_axis(order.reshape(rows, n), end, axis=1)
    indices = xp.moveaxis(chosen.reshape(last.shape[:-1] + (1,)), -1, axis)
    values = gather(input, axis, wrap(indices))
    if not keepdim:
        values, indices = values.squeeze(axis), xp.squeeze(indices, axis)
    return ValuesIndices(values, wrap(indices))


def _quantile(
    input: Tensor, q: Any, dim: int | None, keepdim: bool, interpolation: str, ignore_nan: bool
) -> Tensor:
    from dtrain._tensor.ops.indexing import sort
    from dtrain._tensor.ops.select import where

    name = "nanquantile" if ignore_nan else "quantile"
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{name}: interpolation={interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}"
        )
    if input._array.dtype.kind != "f":
        raise TypeError(f"{name}: needs a float tensor, got {input.dtype}; call .float() first")
    xp = get_array_module(input._array)
    scalar_q = not isinstance(q, Tensor) or q.ndim == 0
    if isinstance(q, Tensor):
        if q.ndim > 1:
            raise ValueError(f"{name}: q must be a number or a 0-d/1-D tensor, got {q.shape}")
        q_array = xp.asarray(q._array, dtype=np.float64).reshape(-1)
    else:
        if not 0 <= q <= 1:
            raise ValueError(f"{name}: q={q} must be in [0, 1]")
        q_array = xp.asarray([q], dtype=np.float64)
    if isinstance(q, Tensor) and q.numel() and bool(((q_array < 0) | (q_array > 1)).any()):
        raise ValueError(f"{name}: every q must be in [0, 1]")  # one host read, on q alone
    shape = tuple(input.shape)
    if dim is None:
        flat, axis = input.reshape(-1), 0
    else:
        axis = normalize_dim(dim, input.ndim)
        flat = input.reshape(1) if input.ndim == 0 else input
    n = flat.shape[axis]
    if n == 0:
        raise IndexError(f"{name}: cannot take a quantile over an empty dim (shape {shape})")
    ordered = sort(flat, dim=axis).values.movedim(axis, -1)  # NaN last
    nans = xp.isnan(ordered._array).sum(axis=-1, keepdims=True)
    count = (n - nans) if ignore_nan else xp.full_like(nans, n)
    rank = q_array * (count - 1).astype(np.float64)  # (..., Q), in float64 at any dtype
    below = xp.floor(rank).astype(np.int64)
    above = xp.ceil(rank).astype(np.int64)
    low, high = ordered.gather(-1, wrap(below)), ordered.gather(-1, wrap(above))
    if interpolation == "lower":
        out = low
    elif interpolation == "higher":
        out = high
    elif interpolation == "nearest":
        out = ordered.gather(-1, wrap(xp.round(rank).astype(np.int64)))  # halves to even
    elif interpolation == "midpoint":
        out = low + (high - low) * 0.5
    else:
        out = low + (high - low) * wrap((rank - below).astype(input._array.dtype))
    empty = (count == 0) if ignore_nan else (nans > 0)
    out = where(wrap(xp.broadcast_to(empty, out.shape)), math.nan, out)
    out = out.movedim(-1, 0)  # (Q, ...reduced)
    if keepdim:
        kept = (1,) * len(shape) if dim is None else shape[:axis] + (1,) + shape[axis + 1 :]
        out = out.reshape((out.shape[0], *kept))
    elif input.ndim == 0 and dim is not None:
        out = out.reshape(out.shape[0])
    return out[0] if scalar_q else out


def quantile(
    input: Tensor,
    q: Any,
    dim: int | None = None,
    keepdim: bool = False,
    *,
    interpolation: str = "linear",
) -> Tensor:
    """The ``q``-th quantiles (``q`` a number or a 1-D tensor in [0, 1]; a 1-D ``q`` adds a
    first dim) over ``dim`` (every element when None), between the two nearest ranks by
    ``interpolation``: linear, lower, higher, midpoint or nearest. NaN where a slice has a
    NaN."""
    return _quantile(input, q, dim, keepdim, interpolation, ignore_nan=False)


def nanquantile(
    input: Tensor,
    q: Any,
    dim: int | None = None,
    keepdim: bool = False,
    *,
    interpolation: str = "linear",
) -> Tensor:
    """``quantile`` ignoring NaN (NaN only where a slice is all NaN)."""
    return _quantile(input, q, dim, keepdim, interpolation, ignore_nan=True)
