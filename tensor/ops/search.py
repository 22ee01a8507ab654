"""Finding and counting: nonzero, argsort, unique, bincount, masked_select, isclose, any,
all. Only masked_select carries a gradient; the rest return indices, counts or bools."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.ops._util import normalize_dim, normalize_dims
from dtrain._tensor.ops.indexing import getitem, sort
from dtrain._tensor.ops.shape import expand
from dtrain._tensor.settings import check_deterministic
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def nonzero(input: Tensor, *, as_tuple: bool = False) -> Any:
    """The indices of the nonzero elements: an ``(n, ndim)`` int64 tensor, or with
    ``as_tuple`` one 1-D tensor per dim."""
    array = input._array
    xp = get_array_module(array)
    if as_tuple:
        if array.ndim == 0:
            return (wrap(xp.zeros(int(bool(array)), dtype=np.int64)),)
        return tuple(wrap(i.astype(np.int64, copy=False)) for i in xp.nonzero(array))
    return wrap(xp.argwhere(array).astype(np.int64, copy=False))


def argsort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    """The indices that sort ``input`` along ``dim`` (``sort(...).indices``)."""
    return sort(input, dim, descending, stable).indices


def unique(
    input: Tensor,
    sorted: bool = True,
    return_inverse: bool = False,
    return_counts: bool = False,
    dim: int | None = None,
) -> Any:
    """The distinct values (sorted; ``sorted=False`` sorts too, as PyTorch on the CPU), and
    optionally each element's position among them and each value's count. With ``dim``,
    the distinct slices along it. No gradient."""
    array = input._array
    xp = get_array_module(array)
    axis = None if dim is None else normalize_dim(dim, input.ndim)
    values, inverse, counts = xp.unique(array, return_inverse=True, return_counts=True, axis=axis)
    if axis is None:
        inverse = inverse.reshape(array.shape)  # numpy 2.0 and 2.1 differ here
    results = [wrap(values)]
    if return_inverse:
        results.append(wrap(inverse.reshape(-1) if axis is not None else inverse))
    if return_counts:
        results.append(wrap(counts.astype(np.int64, copy=False)))
    return results[0] if len(results) == 1 else tuple(results)


def bincount(input: Tensor, weights: Tensor | None = None, minlength: int = 0) -> Tensor:
    """How often each value ``0..max`` occurs in the 1-D non-negative integer ``input``
    (summing ``weights`` instead: float32 for float32 weights, else float64, as PyTorch's)."""
    array = input._array
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(
            f"bincount: expected a 1-D integer tensor, got dtype {array.dtype}, shape {array.shape}"
        )
    xp = get_array_module(array)
    if array.size and int(array.min()) < 0:
        raise ValueError("bincount: input must be non-negative")
    w = None
    out_dtype = np.int64
    if weights is not None:
        w = weights._array if isinstance(weights, Tensor) else xp.asarray(weights)
        out_dtype = np.float32 if w.dtype == np.float32 else np.float64  # as PyTorch's
        w = w.astype(np.float64)
        if xp is not np:  # cupy adds float weights with atomics; PyTorch raises here too
            check_deterministic("bincount with weights")
    out = xp.bincount(array, weights=w, minlength=minlength)
    return wrap(out.astype(out_dtype, copy=False))


def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    """The elements of ``input`` where the (broadcast) bool ``mask`` is true, as a 1-D
    tensor; differentiable."""
    if not isinstance(mask, Tensor) or mask._array.dtype.kind != "b":
        raise TypeError(f"masked_select: mask must be a bool tensor, got {mask!r}")
    shape = np.broadcast_shapes(input.shape, mask.shape)
    if input.shape != shape:
        input = expand(input, shape)
    mask_array = mask._array
    if mask.shape != shape:
        mask_array = get_array_module(mask_array).broadcast_to(mask_array, shape)
    return getitem(input, wrap(mask_array))


def isclose(
    input: Tensor, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> Tensor:
    """Elementwise ``|input - other| <= atol + rtol * |other|``."""
    a = input._array
    b = other._array if isinstance(other, Tensor) else other
    xp = get_array_module(a, b)
    return wrap(xp.asarray(xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)))


def _logical_reduce(name: str, input: Tensor, dim: Any, keepdim: bool) -> Tensor:
    array = input._array
    axes = normalize_dims(dim, input.ndim)
    out = getattr(array, name)(axis=axes, keepdims=keepdim)
    xp = get_array_module(array)
    out = xp.asarray(out)
    if array.dtype == np.uint8:  # PyTorch keeps uint8 here; every other dtype gives bool
        out = out.astype(np.uint8)
    return wrap(out)


def any(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Whether any element (over ``dim``) is nonzero."""
    return _logical_reduce("any", input, dim, keepdim)


def all(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Whether every element (over ``dim``) is nonzero."""
    return _logical_reduce("all", input, dim, keepdim)
