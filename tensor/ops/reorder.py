"""Ops that move or repeat elements: flip, roll, repeat_interleave, tile, narrow, select,
unbind, diag, broadcast_to, meshgrid."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.indexing import getitem
from dtrain._tensor.ops.shape import _sizes, expand, repeat, reshape
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class Flip(Op):
    def forward(self, x: Any, axes: tuple) -> Any:
        self.axes = axes
        # A copy, as PyTorch's flip (numpy's is a view with negative strides).
        return get_array_module(x).flip(x, axes).copy()

    def backward(self, grad: Any) -> tuple:
        return (get_array_module(grad).flip(grad, self.axes),)


class Roll(Op):
    def forward(self, x: Any, shifts: tuple, axes: tuple | None) -> Any:
        self.shifts, self.axes = shifts, axes
        return get_array_module(x).roll(x, shifts, axes)

    def backward(self, grad: Any) -> tuple:
        back = tuple(-s for s in self.shifts)
        return (get_array_module(grad).roll(grad, back, self.axes),)


class Diag(Op):
    """A vector to a matrix with it on diagonal ``k``, or a matrix's diagonal ``k``."""

    def forward(self, x: Any, k: int) -> Any:
        self.k, self.shape = k, x.shape
        xp = get_array_module(x)
        return xp.diag(x, k) if x.ndim == 1 else xp.diagonal(x, k).copy()

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        if len(self.shape) == 1:
            return (xp.diagonal(grad, self.k).copy(),)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        rows = xp.arange(grad.shape[0])
        if self.k >= 0:
            full[rows, rows + self.k] = grad
        else:
            full[rows - self.k, rows] = grad
        return (full,)


def _dims(dims: Sequence) -> tuple:
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return tuple(dims)


def flip(input: Tensor, *dims: Any) -> Tensor:
    """Reverse the order of elements along ``dims`` (a copy, as PyTorch)."""
    axes = tuple(normalize_dim(d, input.ndim) for d in _dims(dims))
    if len(set(axes)) != len(axes):
        raise ValueError(f"flip: dims {list(_dims(dims))} name an axis twice")
    if input.ndim == 0:
        return input.clone()
    return Flip.apply(input, axes=axes)


def roll(input: Tensor, shifts: Any, dims: Any = None) -> Tensor:
    """Shift elements cyclically by ``shifts`` along ``dims`` (the flattened tensor when
    ``dims`` is None)."""
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: {len(shifts)} shifts need as many dims; pass dims=")
        flat = Roll.apply(reshape(input, -1), shifts=shifts, axes=None)
        return reshape(flat, input.shape)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(dims) != len(shifts):
        raise ValueError(f"roll: shifts {list(shifts)} and dims {list(dims)} differ in length")
    axes = tuple(normalize_dim(d, input.ndim) for d in dims)
    return Roll.apply(input, shifts=shifts, axes=axes)


def narrow(input: Tensor, dim: int, start: Any, length: int) -> Tensor:
    """The view ``input[..., start:start + length, ...]`` along ``dim``."""
    axis = normalize_dim(dim, input.ndim)
    size = input.shape[axis]
    start = int(start)
    if start < 0:
        start += size
    if not 0 <= start <= size or length < 0 or start + length > size:
        raise IndexError(
            f"narrow: start {start} and length {length} do not fit dim {dim} of size {size}"
        )
    return getitem(input, (slice(None),) * axis + (slice(start, start + length),))


def select(input: Tensor, dim: int, index: int) -> Tensor:
    """The view ``input[..., index, ...]`` along ``dim`` (that dim removed)."""
    axis = normalize_dim(dim, input.ndim)
    size = input.shape[axis]
    if not -size <= index < size:
        raise IndexError(f"select: index {index} is out of range for dim {dim} of size {size}")
    return getitem(input, (slice(None),) * axis + (int(index),))


def unbind(input: Tensor, dim: int = 0) -> tuple:
    """The slices along ``dim``, as a tuple of views."""
    axis = normalize_dim(dim, input.ndim)
    return tuple(select(input, axis, i) for i in range(input.shape[axis]))


def repeat_interleave(
    input: Tensor, repeats: Any = None, dim: int | None = None, *, output_size: int | None = None
) -> Tensor:
    """Repeat each element ``repeats`` times (an int, or a tensor with one count per
    element) along ``dim`` (the flattened tensor when None). ``repeat_interleave(counts)``
    alone gives ``0, 0, ..., 1, ...`` repeated by ``counts``."""
    if repeats is None:  # repeat_interleave(counts): the indices, each repeated
        counts = input._array
        xp = get_array_module(counts)
        return wrap(xp.repeat(xp.arange(counts.shape[0]), _host_counts(counts, xp)))
    if dim is None:
        input, axis = reshape(input, -1), 0
    else:
        axis = normalize_dim(dim, input.ndim)
    array = input._array
    xp = get_array_module(array)
    counts = repeats._array if isinstance(repeats, Tensor) else repeats
    size = array.shape[axis] if array.ndim else 1
    if getattr(counts, "ndim", 0) == 1 and counts.shape[0] not in (1, size):
        raise ValueError(
            f"repeat_interleave: {counts.shape[0]} repeats for a dim of size {size}; give "
            "one count per element, or one for all"
        )
    if getattr(counts, "ndim", None) == 0 or (
        getattr(counts, "ndim", 0) == 1 and counts.shape[0] == 1
    ):
        counts = int(counts.reshape(()))
    index = xp.repeat(xp.arange(size), _host_counts(counts, xp))
    if output_size is not None and index.shape[0] != output_size:
        raise ValueError(f"repeat_interleave: output_size {output_size} != {index.shape[0]}")
    if array.ndim == 0:
        input = reshape(input, 1)
    return getitem(input, (slice(None),) * axis + (wrap(index),))


def _host_counts(counts: Any, xp: Any) -> Any:
    # cupy's repeat takes an int or a list of counts, not an array of them.
    return counts.tolist() if hasattr(counts, "tolist") and xp is not np else counts


def tile(input: Tensor, *dims: Any) -> Tensor:
    """``repeat``, with missing leading repeats taken as 1 (as PyTorch's tile)."""
    reps = _sizes(dims)
    reps = (1,) * (input.ndim - len(reps)) + reps
    return repeat(input, *reps)


def diag(input: Tensor, diagonal: int = 0) -> Tensor:
    """A 1-D tensor as the ``diagonal``-th diagonal of a square matrix, or a matrix's
    ``diagonal``-th diagonal as a 1-D tensor."""
    if input.ndim not in (1, 2):
        raise ValueError(f"diag: expected a 1-D or 2-D tensor, got shape {tuple(input.shape)}")
    return Diag.apply(input, k=int(diagonal))


def broadcast_to(input: Tensor, size: Any) -> Tensor:
    """``input`` expanded to ``size`` (a view), by broadcasting."""
    return expand(input, tuple(size))


def meshgrid(*tensors: Any, indexing: str | None = None) -> tuple:
    """Coordinate grids from 1-D tensors: ``indexing='ij'`` (the default, as PyTorch's)
    puts tensor i along dim i; ``'xy'`` swaps the first two dims."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing is None:
        warnings.warn(
            "meshgrid: pass indexing='ij' (the default used here) or 'xy' explicitly, as "
            "PyTorch will require",
            UserWarning,
            stacklevel=2,
        )
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor) or t.ndim > 1:
            raise ValueError(f"meshgrid: argument {i} must be a 0-d or 1-D tensor")
    tensors = [reshape(t, -1) for t in tensors]
    sizes = [t.shape[0] for t in tensors]
    if indexing == "xy" and len(tensors) >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    grids = []
    for i, t in enumerate(tensors):
        position = i
        if indexing == "xy" and len(tensors) >= 2 and i < 2:
            position = 1 - i
        shape = [1] * len(tensors)
        shape[position] = t.shape[0]
        grids.append(expand(reshape(t, *shape), *sizes))
    return tuple(grids)
