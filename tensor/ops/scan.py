"""More scans along a dim: logcumsumexp, cummax, cummin, and diff.

The running ones are log-depth scans (each pass one elementwise op over the whole tensor),
so they run on the device without host reads or a Python loop over elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.indexing import gather
from dtrain._tensor.ops.reduce import ValuesIndices
from dtrain._tensor.ops.trig import _float
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _shifted(array: Any, step: int, fill: Any, xp: Any) -> Any:
    """``array`` moved ``step`` places along the last axis, the first ``step`` set to fill."""
    pad = xp.full(array.shape[:-1] + (step,), fill, dtype=array.dtype)
    return xp.concatenate([pad, array[..., :-step]], axis=-1)


def logcumsumexp_array(array: Any) -> Any:
    """Running ``log(sum(exp))`` along the last axis, exact at any range (a log-depth scan of
    ``logaddexp``: no overflow and no underflow of the early terms)."""
    xp = get_array_module(array)
    out = array
    step = 1
    with np.errstate(invalid="ignore"):  # -inf - -inf inside logaddexp
        while step < array.shape[-1]:
            out = xp.logaddexp(out, _shifted(out, step, -np.inf, xp))
            step *= 2
    return out


class LogCumSumExp(Op):
    """Its gradient ``grad_i = sum_{j >= i} g_j exp(x_i - out_j)`` is computed in log space,
    the positive and negative parts of ``g`` apart, as PyTorch does."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:  # the scanned axis is last
        self.x = x
        self.out = logcumsumexp_array(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, out = self.x, self.out

        def part(weights: Any) -> Any:  # sum_{j >= i} w_j exp(x_i - out_j), w >= 0
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = xp.flip(xp.log(weights) - out, -1)
                return xp.exp(xp.flip(logcumsumexp_array(logs), -1) + x)

        with np.errstate(invalid="ignore"):
            result = part(xp.maximum(grad, 0)) - part(xp.maximum(-grad, 0))
        return (xp.nan_to_num(result, nan=0.0, posinf=np.inf, neginf=-np.inf),)


def logcumsumexp(input: Tensor, dim: int) -> Tensor:
    """Running ``log(sum(exp(x)))`` along ``dim``, without overflow."""
    input = _float(input)
    if input.ndim == 0:
        return logcumsumexp(input.reshape(1), 0).reshape(())
    axis = normalize_dim(dim, input.ndim)
    if input.shape[axis] == 0:
        return input.clone()
    return LogCumSumExp.apply(input.movedim(axis, -1)).movedim(-1, axis)


def _running_extreme(input: Tensor, dim: int, largest: bool, name: str) -> ValuesIndices:
    if input.ndim == 0:
        values, indices = _running_extreme(input.reshape(1), 0, largest, name)
        return ValuesIndices(values.reshape(()), wrap(indices._array.reshape(())))
    axis = normalize_dim(dim, input.ndim)
    xp = get_array_module(input._array)
    values = xp.moveaxis(input._array, axis, -1)
    n = values.shape[-1]
    index = xp.broadcast_to(xp.arange(n), values.shape)
    floating = values.dtype.kind == "f"
    step = 1
    while step < n:
        # The earlier window's best against the later one's: the later wins ties (PyTorch
        # returns the last index of a repeated extreme), and a NaN beats everything.
        before = _shifted(values, step, values.flat[0] if values.size else 0, xp)
        before_index = _shifted(index, step, -1, xp)
        later = (values >= before) if largest else (values <= before)
        if floating:
            later = (later & ~xp.isnan(before)) | xp.isnan(values)
        later |= before_index < 0
        values = xp.where(later, values, before)
        index = xp.where(later, index, before_index)
        step *= 2
    indices = xp.moveaxis(xp.asarray(index, dtype=np.int64), -1, axis)
    return ValuesIndices(gather(input, axis, wrap(indices)), wrap(indices))


def cummax(input: Tensor, dim: int) -> ValuesIndices:
    """Running maximum along ``dim`` and the index where each was reached (the last of
    equal values; NaN propagates)."""
    return _running_extreme(input, dim, True, "cummax")


def cummin(input: Tensor, dim: int) -> ValuesIndices:
    """Running minimum along ``dim`` and the index where each was reached."""
    return _running_extreme(input, dim, False, "cummin")


def diff(
    input: Tensor,
    n: int = 1,
    dim: int = -1,
    prepend: Tensor | None = None,
    append: Tensor | None = None,
) -> Tensor:
    """The ``n``-th forward difference along ``dim`` (``prepend``/``append`` joined first);
    bool tensors give ``!=``, as PyTorch."""
    from dtrain._tensor.ops.compare import ne
    from dtrain._tensor.ops.shape import cat

    if input.ndim == 0:
        raise RuntimeError("diff: expected a tensor with at least one dimension, got a 0-d one")
    if n < 0:
        raise ValueError(f"diff: order n must be non-negative, got {n}")
    axis = normalize_dim(dim, input.ndim)
    parts = [p for p in (prepend, input, append) if p is not None]
    if len(parts) > 1:
        input = cat([_like(p, input, axis) for p in parts], dim=axis)
    for _ in range(n):
        length = input.shape[axis]
        if length == 0:
            break
        later, earlier = input.narrow(axis, 1, length - 1), input.narrow(axis, 0, length - 1)
        input = ne(later, earlier) if input._array.dtype.kind == "b" else later - earlier
    return input


def _like(part: Any, input: Tensor, axis: int) -> Tensor:
    """A tensor as given; a number as a slice of size 1 along ``axis``."""
    if isinstance(part, Tensor):
        return part
    from dtrain._tensor.creation import as_tensor

    shape = list(input.shape)
    shape[axis] = 1
    return as_tensor(part, dtype=input.dtype, device=input.device).expand(*shape)
