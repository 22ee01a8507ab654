"""Indexing: ``x[key]``, gather, index_select, split, chunk, sort, topk."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.autograd.slice_grads import SliceGrads
from dtrain._tensor.ops._util import add_at, normalize_dim, unbroadcast
from dtrain._tensor.ops.reduce import ValuesIndices
from dtrain._tensor.tensor import Tensor, mark_view, wrap
from dtrain.runtime.backend import get_array_module

_BASIC = (int, slice, type(None), type(Ellipsis))


def convert_key(key: Any) -> tuple[Any, bool]:
    """Tensors inside an index become arrays; also say whether any part is an integer array
    (whose repeated indices make the gradient a scatter-add rather than an assignment)."""
    parts = key if isinstance(key, tuple) else (key,)
    converted = []
    gathers = False
    for part in parts:
        if isinstance(part, Tensor):
            part = part._array
        if type(part) is bool:  # a mask of one dim (numpy's advanced indexing), not an int
            part = np.bool_(part)
        elif isinstance(part, _BASIC):
            converted.append(part)
            continue
        if isinstance(part, (list, tuple, range)):  # x[range(n), y]: a list of indices
            part = get_array_module().asarray(part)
        kind = getattr(getattr(part, "dtype", None), "kind", None)
        if kind == "b":
            pass
        elif kind == "u" and part.dtype.itemsize == 1:
            part = _uint8_mask(part)
        elif kind in ("i", "u"):
            gathers = True
        elif hasattr(part, "__index__"):
            part = part.__index__()
        else:
            raise IndexError(
                f"cannot index a tensor with {type(part).__name__} {part!r}; use ints, "
                "slices, None, ..., bool masks or integer tensors"
            )
        converted.append(part)
    return (tuple(converted) if isinstance(key, tuple) else converted[0]), gathers


def _uint8_mask(part: Any) -> Any:
    """A uint8 index is a mask, as in PyTorch, which deprecates it (and so warn)."""
    warnings.warn(
        "indexing with dtype uint8 is deprecated, as in PyTorch; index with a bool tensor "
        "instead (mask.bool())",
        UserWarning,
        stacklevel=5,  # the user's x[mask]: past convert_key, getitem and __getitem__
    )
    return part.astype(bool)


class GetItem(Op):
    def forward(self, x: Any, key: Any, gathers: bool) -> Any:
        self.shape, self.dtype, self.key, self.gathers = x.shape, x.dtype, key, gathers
        parts = key if isinstance(key, tuple) else (key,)
        self.basic = all(isinstance(part, _BASIC) for part in parts)
        out = x[key]
        if isinstance(out, np.generic):
            # An int per dim gives numpy a scalar copy; with "..." appended it gives a 0-d
            # view, so that x[0].add_(1) changes x, as in PyTorch.
            out = x[(*key, Ellipsis) if isinstance(key, tuple) else (key, Ellipsis)]
        return out

    def backward(self, grad: Any) -> tuple:
        if self.basic:  # placed in the input's gradient once all of its pieces are in
            return (SliceGrads(self.shape, self.key, grad),)
        xp = get_array_module(grad)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        if self.gathers:
            add_at(full, self.key, grad, "indexing's backward (with an integer tensor)")
        else:
            full[self.key] = grad
        return (full,)


class IndexPut(Op):
    """``x[key] = value`` recorded out of place (``__setitem__`` writes the result back)."""

    def forward(self, x: Any, value: Any, key: Any) -> Any:
        self.key = key
        self.value_shape = getattr(value, "shape", ())
        out = x.copy()
        out[key] = value
        return out

    def backward(self, grad: Any) -> tuple:
        need_x, need_value = self.needs_input_grad
        grad_x = grad_value = None
        if need_x:
            grad_x = grad.copy()
            grad_x[self.key] = 0
        if need_value:
            grad_value = unbroadcast(grad[self.key], self.value_shape)
        return grad_x, grad_value


class Gather(Op):
    def forward(self, x: Any, index: Any, axis: int) -> Any:
        xp = get_array_module(x)
        grids = list(xp.ix_(*[xp.arange(size) for size in index.shape]))
        grids[axis] = index
        self.key, self.shape = tuple(grids), x.shape
        return x[self.key]

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        add_at(full, self.key, grad, "gather's backward")
        return (full, None)


def getitem(input: Tensor, key: Any) -> Tensor:
    """``input[key]``; basic indexing returns a view, as in PyTorch."""
    key, gathers = convert_key(key)
    try:
        result = GetItem.apply(input, key=key, gathers=gathers)
    except IndexError as exc:
        raise IndexError(
            f"index {key!r} does not fit a tensor of shape {input.shape}: {exc}"
        ) from None
    return mark_view(result, input)


def gather(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """``out[i][j] = input[i][index[i][j]]`` for ``dim=1`` (and likewise for any dim)."""
    axis = normalize_dim(dim, input.ndim)
    index_array = index._array if isinstance(index, Tensor) else index
    if index_array.dtype.kind not in "iu" or index_array.ndim != input.ndim:
        raise ValueError(
            f"gather: index must be an integer tensor with {input.ndim} dims like the input, "
            f"got dtype {index_array.dtype} with {index_array.ndim} dims"
        )
    for d, (want, have) in enumerate(zip(index_array.shape, input.shape)):
        if d != axis and want > have:
            raise ValueError(
                f"gather: index shape {index_array.shape} exceeds input shape {input.shape} "
                f"in dim {d}"
            )
    return Gather.apply(input, index_array, axis=axis)


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """The slices of ``input`` along ``dim`` at the positions in the 1-D ``index``."""
    axis = normalize_dim(dim, input.ndim)
    index_array = index._array if isinstance(index, Tensor) else index
    if index_array.ndim != 1 or index_array.dtype not in (np.int32, np.int64):
        raise ValueError(  # (uint8 would read as a mask: PyTorch refuses it too)
            f"index_select: index must be a 1-D int64 or int32 tensor, got dtype "
            f"{index_array.dtype} with shape {index_array.shape}"
        )
    return getitem(input, (slice(None),) * axis + (wrap(index_array),))


def split(input: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple:
    """Cut into pieces of ``split_size`` (the last may be smaller) or of the listed sizes."""
    axis = normalize_dim(dim, input.ndim)
    length = input.shape[axis]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [split_size_or_sections] * (length // split_size_or_sections)
        if length % split_size_or_sections:
            sizes.append(length % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != length:
            raise ValueError(
                f"split: sections {sizes} add up to {sum(sizes)} but dim {dim} has size {length}"
            )
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(getitem(input, (slice(None),) * axis + (slice(start, start + size),)))
        start += size
    return tuple(pieces)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple:
    """Cut into ``chunks`` pieces of equal size (the last may be smaller), as PyTorch."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    length = input.shape[normalize_dim(dim, input.ndim)]
    return split(input, max(math.ceil(length / chunks), 1), dim)


def sort(input: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
    """``(values, indices)`` sorted along ``dim``; the values carry gradient."""
    axis = normalize_dim(dim, input.ndim)
    if input.ndim == 0:  # (value, index 0), 0-d as PyTorch gives them
        values, indices = sort(input.reshape(1), 0, descending, stable)
        return ValuesIndices(values.reshape(()), wrap(indices._array.reshape(())))
    array = input._array
    xp = get_array_module(array)
    if descending:
        # Sort the reversed array ascending and reverse the result: stable, and right for
        # every dtype (negating wraps unsigned ints and the most negative int, and is
        # undefined for bool). NaN comes first, as in PyTorch.
        flipped = xp.argsort(xp.flip(array, axis), axis=axis, kind="stable")
        indices = array.shape[axis] - 1 - xp.flip(flipped, axis)
    else:
        indices = xp.argsort(array, axis=axis, kind="stable")
    return ValuesIndices(gather(input, axis, indices), wrap(indices))


def topk(input: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
    """The ``k`` largest (or smallest) values along ``dim`` and their indices."""
    axis = normalize_dim(dim, input.ndim)
    size = input.shape[axis] if input.ndim else 1
    if not 0 <= k <= size:
        raise ValueError(f"topk: k={k} is out of range for dim {dim} of size {size}")
    if input.ndim == 0:
        values, indices = topk(input.reshape(1), k, 0, largest, sorted)
        return ValuesIndices(values.reshape(()), wrap(indices._array.reshape(())))
    _, indices = sort(input, dim=axis, descending=largest)
    xp = get_array_module(input._array)
    indices = xp.take(indices._array, xp.arange(k), axis=axis)
    return ValuesIndices(gather(input, axis, indices), wrap(indices))
