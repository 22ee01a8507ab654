"""Reductions: sum, mean, prod, max, min, amax, amin, var, std, logsumexp, cumsum, argmax."""

from __future__ import annotations

import builtins
from collections import namedtuple
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import expand_reduced, normalize_dim, normalize_dims, quiet
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import to_dtype

#: What ``max``/``min``/``sort``/``topk`` with a ``dim`` return, as in PyTorch.
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


class Sum(Op):
    def forward(self, x: Any, axes: tuple | None, keepdim: bool) -> Any:
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        # An overflow is inf, silently as in PyTorch; numpy's reductions warn from numpy's
        # own frames, which the module filter of float_warnings.py does not reach.
        with quiet(get_array_module(x)):
            return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return (expand_reduced(grad, self.axes, self.keepdim, self.shape, xp),)


class Mean(Op):
    """One reduction (not a sum, then a division: two launches on CUDA). float16 is summed in
    float32 and divided before it is rounded back, as PyTorch does: a float16 sum of many
    elements overflows long before their mean does."""

    def forward(self, x: Any, axes: tuple | None, keepdim: bool, count: int) -> Any:
        self.shape, self.axes, self.keepdim, self.count = x.shape, axes, keepdim, count
        with quiet(get_array_module(x)):  # and the mean of nothing is NaN, silently
            if x.dtype == np.float16:
                return x.mean(axis=axes, keepdims=keepdim, dtype=np.float32).astype(np.float16)
            return x.mean(axis=axes, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        if not self.count:
            share = grad
        elif grad.dtype == np.float16:  # a count past 65504 is inf in float16
            share = (grad.astype(np.float32) / np.float32(self.count)).astype(np.float16)
        else:
            share = grad / grad.dtype.type(self.count)
        return (expand_reduced(share, self.axes, self.keepdim, self.shape, xp),)


class Prod(Op):
    reads_inputs = True

    def forward(self, x: Any, axis: int | None, keepdim: bool) -> Any:
        self.x, self.axis, self.keepdim = x, axis, keepdim
        with quiet(get_array_module(x)):
            return x.prod(axis=axis, keepdims=keepdim)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x = self.x
        if x.size == 0:
            return (xp.zeros_like(x),)
        flat = x.reshape(-1) if self.axis is None else x
        axis = 0 if self.axis is None else self.axis
        # Product of all the other elements, exact even where x has zeros: the exclusive
        # cumulative product from the left times the one from the right.
        ones = xp.ones_like(xp.take(flat, [0], axis=axis))
        left = xp.cumprod(xp.concatenate([ones, flat], axis=axis), axis=axis)
        left = xp.take(left, range(flat.shape[axis]), axis=axis)
        flipped = xp.flip(flat, axis=axis)
        right = xp.cumprod(xp.concatenate([ones, flipped], axis=axis), axis=axis)
        right = xp.flip(xp.take(right, range(flat.shape[axis]), axis=axis), axis=axis)
        others = (left * right).reshape(x.shape)
        axes = None if self.axis is None else (self.axis,)
        return (expand_reduced(grad, axes, self.keepdim, x.shape, xp) * others,)


class Extreme(Op):
    """max or min over axes; ties share the gradient evenly (PyTorch's amax/amin rule)."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any, axes: tuple | None, keepdim: bool, largest: bool) -> Any:
        self.x, self.axes, self.keepdim = x, axes, keepdim
        self.out = x.max(axis=axes, keepdims=True) if largest else x.min(axis=axes, keepdims=True)
        return self.out if keepdim else self.out.reshape(_reduced_shape(x.shape, axes))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        hit = self.x == self.out
        # In the gradient's dtype: dividing by an int64 count would widen float32 to float64.
        count = hit.sum(axis=self.axes, keepdims=True).astype(grad.dtype)
        spread = expand_reduced(grad, self.axes, self.keepdim, self.x.shape, xp)
        return (spread * hit / count,)


def _kept_shape(shape: tuple, axes: tuple | None) -> tuple:
    return tuple(1 if axes is None or i in axes else size for i, size in enumerate(shape))


def _reduced_shape(shape: tuple, axes: tuple | None) -> tuple:
    if axes is None:
        return ()
    return tuple(size for i, size in enumerate(shape) if i not in axes)


class Cumsum(Op):
    def forward(self, x: Any, axis: int) -> Any:
        self.axis = axis
        xp = get_array_module(x)
        with quiet(xp):
            return xp.cumsum(x, axis=axis)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return (xp.flip(xp.cumsum(xp.flip(grad, self.axis), axis=self.axis), self.axis),)


class Cumprod(Op):
    """Running product. Its gradient where the input has no zeros is
    ``reverse_cumsum(grad * out) / x``; with zeros, each position is summed out exactly."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any, axis: int) -> Any:
        self.x, self.axis = x, axis
        xp = get_array_module(x)
        with quiet(xp):
            self.out = xp.cumprod(x, axis=axis)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, out, axis = self.x, self.out, self.axis
        if not (x == 0).any():
            tail = xp.flip(xp.cumsum(xp.flip(grad * out, axis), axis=axis), axis)
            return (tail / x,)
        # d out[j] / d x[i] = prod(x[:i]) * prod(x[i+1 : j+1]) for j >= i.
        x_last, g_last = xp.moveaxis(x, axis, -1), xp.moveaxis(grad, axis, -1)
        out_last = xp.moveaxis(out, axis, -1)
        result = xp.empty_like(g_last)
        n = x_last.shape[-1]
        for i in range(n):
            left = out_last[..., i - 1 : i] if i else xp.ones_like(x_last[..., :1])
            right = xp.cumprod(x_last[..., i + 1 :], axis=-1)
            right = xp.concatenate([xp.ones_like(x_last[..., :1]), right], axis=-1)
            result[..., i] = (g_last[..., i:] * left * right).sum(axis=-1)
        return (xp.moveaxis(result, -1, axis),)


class LogSumExp(Op):
    reads_inputs = True
    reads_output = True

    def forward(self, x: Any, axes: tuple | None, keepdim: bool) -> Any:
        xp = get_array_module(x)
        self.x, self.axes, self.keepdim = x, axes, keepdim
        if x.size == 0:  # the log of an empty sum: -inf, as PyTorch gives
            self.out = xp.full(_kept_shape(x.shape, axes), -xp.inf, dtype=x.dtype)
            return self.out if keepdim else self.out.reshape(_reduced_shape(x.shape, axes))
        peak = x.max(axis=axes, keepdims=True)
        peak = xp.where(xp.isfinite(peak), peak, 0)
        self.out = xp.log(xp.exp(x - peak).sum(axis=axes, keepdims=True)) + peak
        return self.out if keepdim else self.out.reshape(_reduced_shape(x.shape, axes))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        spread = expand_reduced(grad, self.axes, self.keepdim, self.x.shape, xp)
        return (spread * xp.exp(self.x - self.out),)


def _axis(dim: Any, axis: Any) -> Any:
    """PyTorch's numpy-style alias: ``axis=`` for ``dim=``."""
    if axis is None:
        return dim
    if dim is not None:
        raise TypeError("give dim or its alias axis, not both")
    return axis


def _as_dtype(out: Tensor, dtype: Any) -> Tensor:
    # numpy accumulates small integers in int64 even when asked for int32: cast back.
    if dtype is None or out._array.dtype == to_dtype(dtype):
        return out
    return out.to(dtype)


def _integers_as_int64(input: Tensor) -> Tensor:
    # PyTorch sums and multiplies bool and integer tensors in int64 (numpy: uint8 → uint64).
    if input._array.dtype.kind in "biu" and input._array.dtype != np.int64:
        return input.to(np.int64)
    return input


def sum(
    input: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None, *, axis: Any = None
) -> Tensor:
    """Sum over ``dim`` (an int, a tuple, or None for every element); bool and integer
    tensors sum in int64 unless ``dtype`` says otherwise, as in PyTorch."""
    if axis is not None:
        dim = _axis(dim, axis)
    if dtype is not None:
        input = input.to(dtype)
    elif input._array.dtype.kind != "f":
        input = _integers_as_int64(input)
    out = Sum.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim)
    return out if dtype is None else _as_dtype(out, dtype)


def mean(
    input: Tensor, dim: Any = None, keepdim: bool = False, dtype: Any = None, *, axis: Any = None
) -> Tensor:
    """Mean over ``dim``; integer tensors are an error unless ``dtype`` (to cast to first)
    is a float, as in PyTorch."""
    if axis is not None:
        dim = _axis(dim, axis)
    if dtype is not None:
        input = input.to(dtype)
    if input._array.dtype.kind != "f":
        raise TypeError(f"mean: input dtype {input.dtype} is not a float; call .float() first")
    axes = normalize_dims(dim, input.ndim)
    count = input.numel() if axes is None else _count(input.shape, axes)
    return Mean.apply(input, axes=axes, keepdim=keepdim, count=count)


def _count(shape: tuple, axes: tuple) -> int:
    count = 1
    for axis in axes:
        count *= shape[axis]
    return count


def var(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
    axis: Any = None,
) -> Tensor:
    """Variance over ``dim`` with Bessel's ``correction`` (default 1; ``unbiased=False`` → 0)."""
    dim = _axis(dim, axis)
    if correction is None:
        correction = 0 if unbiased is False else 1
    if input._array.dtype == np.float16:  # squares of float16 overflow past 256
        return var(input.float(), dim, keepdim=keepdim, correction=correction).half()
    axes = normalize_dims(dim, input.ndim)
    count = input.numel() if axes is None else _count(input.shape, axes)
    centred = input - mean(input, dim=axes, keepdim=True)
    # builtins.max: this module's max() (the tensor reduction) shadows the builtin.
    divisor = builtins.max(count - correction, 0)
    return sum(centred * centred, dim=axes, keepdim=keepdim) / divisor


def std(
    input: Tensor,
    dim: Any = None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: float | None = None,
    axis: Any = None,
) -> Tensor:
    """Standard deviation: ``var(...).sqrt()``."""
    return var(input, _axis(dim, axis), unbiased, keepdim, correction=correction).sqrt()


def prod(
    input: Tensor,
    dim: int | None = None,
    keepdim: bool = False,
    dtype: Any = None,
    *,
    axis: Any = None,
) -> Tensor:
    """Product over one ``dim`` or every element (bool and integers in int64)."""
    dim = _axis(dim, axis)
    input = _integers_as_int64(input) if dtype is None else input.to(dtype)
    axis = None if dim is None else normalize_dim(dim, input.ndim)
    if input.ndim == 0:
        axis = None  # dim 0 of a 0-d tensor is all of it; numpy has no axis 0 there
    return _as_dtype(Prod.apply(input, axis=axis, keepdim=keepdim), dtype)


def _extreme(input: Tensor, dim: Any, keepdim: bool, largest: bool) -> Any:
    axis = None if dim is None else normalize_dim(dim, input.ndim)
    if input.numel() == 0 and (axis is None or input.ndim == 0 or input.shape[axis] == 0):
        raise RuntimeError(
            f"{'max' if largest else 'min'} of an empty tensor (shape {tuple(input.shape)}) "
            f"over {'every dim' if dim is None else f'dim {dim}'} has no value"
        )
    if dim is None:
        return Extreme.apply(input, axes=None, keepdim=False, largest=largest)
    if input.ndim == 0:  # (value, index 0), 0-d as PyTorch gives them
        return _extreme(input.reshape(1), 0, False, largest)
    array = input._array
    xp = get_array_module(array)
    indices = (array.argmax if largest else array.argmin)(axis=axis, keepdims=True)
    values = input.gather(axis, wrap(indices))
    if not keepdim:
        values, indices = values.squeeze(axis), xp.squeeze(indices, axis)
    return ValuesIndices(values, wrap(indices))


def max(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Any:
    """The largest element; with ``dim``, ``(values, indices)`` along that dim."""
    dim = _axis(dim, axis)
    if isinstance(dim, Tensor):
        from dtrain._tensor.ops.select import maximum

        return maximum(input, dim)
    return _extreme(input, dim, keepdim, largest=True)


def min(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Any:
    """The smallest element; with ``dim``, ``(values, indices)`` along that dim."""
    dim = _axis(dim, axis)
    if isinstance(dim, Tensor):
        from dtrain._tensor.ops.select import minimum

        return minimum(input, dim)
    return _extreme(input, dim, keepdim, largest=False)


def amax(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
    """Largest value over ``dim`` (int or tuple); ties share the gradient."""
    dim = _axis(dim, axis)
    return Extreme.apply(input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim, largest=True)


def amin(input: Tensor, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
    """Smallest value over ``dim`` (int or tuple); ties share the gradient."""
    dim = _axis(dim, axis)
    return Extreme.apply(
        input, axes=normalize_dims(dim, input.ndim), keepdim=keepdim, largest=False
    )


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``dim``, computed without overflow."""
    return LogSumExp.apply(_float(input), axes=normalize_dims(dim, input.ndim), keepdim=keepdim)


def cumsum(input: Tensor, dim: Any = None, *, dtype: Any = None, axis: Any = None) -> Tensor:
    """Running sum along ``dim`` (bool and integers in int64, unless ``dtype``)."""
    dim = _axis(dim, axis)
    if dim is None:
        raise TypeError("cumsum: missing the dim argument")
    input = _integers_as_int64(input) if dtype is None else input.to(dtype)
    axis = normalize_dim(dim, input.ndim)
    if input.ndim == 0:  # numpy's cumsum would return shape (1,)
        return _as_dtype(Cumsum.apply(input.reshape(1), axis=0).reshape(()), dtype)
    return _as_dtype(Cumsum.apply(input, axis=axis), dtype)


def cumprod(input: Tensor, dim: Any = None, *, dtype: Any = None, axis: Any = None) -> Tensor:
    """Running product along ``dim`` (bool and integers in int64, unless ``dtype``)."""
    dim = _axis(dim, axis)
    if dim is None:
        raise TypeError("cumprod: missing the dim argument")
    input = _integers_as_int64(input) if dtype is None else input.to(dtype)
    normalize_dim(dim, input.ndim)
    if input.ndim == 0:
        return _as_dtype(Cumprod.apply(input.reshape(1), axis=0).reshape(()), dtype)
    return _as_dtype(Cumprod.apply(input, axis=normalize_dim(dim, input.ndim)), dtype)


def argmax(
    input: Tensor, dim: int | None = None, keepdim: bool = False, *, axis: Any = None
) -> Tensor:
    """Index of the largest value (of the flattened tensor when ``dim`` is None)."""
    return _arg(input, _axis(dim, axis), keepdim, "argmax")


def argmin(
    input: Tensor, dim: int | None = None, keepdim: bool = False, *, axis: Any = None
) -> Tensor:
    """Index of the smallest value (of the flattened tensor when ``dim`` is None)."""
    return _arg(input, _axis(dim, axis), keepdim, "argmin")


def _arg(input: Tensor, dim: int | None, keepdim: bool, name: str) -> Tensor:
    array = input._array
    if dim is None:
        index = getattr(array.reshape(-1), name)()
        return wrap(
            get_array_module(array).asarray(index).reshape((1,) * array.ndim if keepdim else ())
        )
    axis = normalize_dim(dim, input.ndim)
    return wrap(getattr(array, name)(axis=axis, keepdims=keepdim))
