"""More indexing and searching: take, take_along_dim, index_copy, scatter_reduce,
searchsorted, bucketize, isin, unique_consecutive, tril_indices, triu_indices."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import add_at, normalize_dim
from dtrain._tensor.ops.scatter import _index_array, _scatter_key
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

_REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


def take(input: Tensor, index: Tensor) -> Tensor:
    """The elements of the flattened ``input`` at ``index`` (any shape; negative counts from
    the end)."""
    return input.reshape(-1)[index]


def take_along_dim(input: Tensor, indices: Tensor, dim: int | None = None) -> Tensor:
    """``gather`` with broadcasting: the elements at ``indices`` along ``dim`` (of the
    flattened ``input`` when None)."""
    from dtrain._tensor.ops.indexing import gather

    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    axis = normalize_dim(dim, input.ndim)
    if indices.ndim != input.ndim:
        raise ValueError(
            f"take_along_dim: indices has {indices.ndim} dims but input has {input.ndim}"
        )
    shape_in, shape_ix = list(input.shape), list(indices.shape)
    shape_in[axis] = shape_ix[axis] = 1
    common = np.broadcast_shapes(tuple(shape_in), tuple(shape_ix))
    size_in = (*common[:axis], input.shape[axis], *common[axis + 1 :])
    size_ix = (*common[:axis], indices.shape[axis], *common[axis + 1 :])
    return gather(input.expand(*size_in), axis, indices.expand(*size_ix))


def index_copy(input: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """A copy of ``input`` with the slices at ``index`` along ``dim`` replaced by those of
    ``source`` (differentiable for both)."""
    from dtrain._tensor.ops.inplace_math import index_fill
    from dtrain._tensor.ops.scatter import index_add

    return index_add(index_fill(input, dim, index, 0), dim, index, source)


def index_copy_(tensor: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """In place: ``index_copy``."""
    from dtrain._tensor.ops.inplace_math import _inplace

    return _inplace(tensor, lambda t: index_copy(t, dim, index, source), "index_copy_", source)


class ScatterReduce(Op):
    """``out = x`` with each ``src`` element combined into ``out`` at its index along one
    dim by ``reduce`` (with the value already there when ``include_self``)."""

    def forward(
        self, x: Any, src: Any, index: Any, axis: int, reduce: str, include_self: bool
    ) -> Any:
        xp = get_array_module(x)
        key = _scatter_key(index, axis)
        self.part = tuple(slice(0, n) for n in index.shape)
        values = src[self.part]
        hit = xp.zeros(x.shape, dtype=bool)
        hit[key] = True
        out = x.copy()
        if not include_self:
            out[hit] = _identity(reduce, x.dtype)
        if reduce in ("sum", "mean"):
            add_at(out, key, values, "scatter_reduce")
        else:
            ufunc = {"prod": xp.multiply, "amax": xp.maximum, "amin": xp.minimum}[reduce]
            ufunc.at(out, key, values)
        count = None
        if reduce == "mean":
            count = xp.zeros(x.shape, dtype=x.dtype)
            xp.add.at(count, key, 1)
            count = count + 1 if include_self else xp.maximum(count, 1)
            out = out // count if x.dtype.kind in "iu" else out / count
        self.x, self.values, self.key, self.hit, self.count = x, values, key, hit, count
        self.src_shape, self.reduce, self.include_self, self.out = (
            src.shape,
            reduce,
            include_self,
            out,
        )
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_x, need_src = self.needs_input_grad
        x, values, key, out = self.x, self.values, self.key, self.out
        keep_self = self.include_self | ~self.hit  # where x's own value took part
        if self.reduce in ("sum", "mean"):
            share = grad if self.count is None else grad / self.count
            grad_x = xp.where(keep_self, share, 0)
            grad_values = share[key]
        elif self.reduce == "prod":
            if bool((x == 0).any()) or bool((values == 0).any()):  # one host sync
                raise RuntimeError(
                    "scatter_reduce: the gradient of reduce='prod' with zeros in the input "
                    "or src is not supported"
                )
            grad_x = xp.where(keep_self, grad * out / x, 0)
            grad_values = (grad * out)[key] / values
        else:  # amax / amin: shared evenly among the values equal to the result
            self_wins = keep_self & (x == out)
            count = self_wins.astype(grad.dtype)
            src_wins = values == out[key]
            xp.add.at(count, key, src_wins.astype(grad.dtype))
            share = grad / xp.maximum(count, 1)
            grad_x = xp.where(self_wins, share, 0)
            grad_values = xp.where(src_wins, share[key], 0)
        grad_src = None
        if need_src:
            grad_src = xp.zeros(self.src_shape, dtype=grad.dtype)
            grad_src[self.part] = grad_values
        return (grad_x.astype(grad.dtype, copy=False) if need_x else None), grad_src


def _identity(reduce: str, dtype: Any) -> Any:
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    if dtype.kind == "f":
        return -np.inf if reduce == "amax" else np.inf
    return info.min if reduce == "amax" else info.max


def scatter_reduce(
    input: Tensor,
    dim: int,
    index: Tensor,
    src: Tensor,
    reduce: str,
    *,
    include_self: bool = True,
) -> Tensor:
    """A copy of ``input`` with ``src`` combined in at ``index`` along ``dim`` by ``reduce``:
    sum, prod, mean (integers floor), amax or amin; ``include_self=False`` leaves the
    input's own values out where something is scattered."""
    if reduce not in _REDUCTIONS:
        raise ValueError(f"scatter_reduce: reduce={reduce!r} is not one of {_REDUCTIONS}")
    axis = normalize_dim(dim, input.ndim)
    index_array = _index_array(index, "scatter_reduce")
    if index_array.ndim != input.ndim or src.ndim != input.ndim:
        raise ValueError(
            f"scatter_reduce: index ({index_array.ndim} dims) and src ({src.ndim}) must have "
            f"as many dims as the input ({input.ndim})"
        )
    if src._array.dtype != input._array.dtype:
        src = src.to(input.dtype)
    return ScatterReduce.apply(
        input, src, index=index_array, axis=axis, reduce=reduce, include_self=include_self
    )


def scatter_reduce_(
    tensor: Tensor, dim: int, index: Tensor, src: Tensor, reduce: str, *, include_self: bool = True
) -> Tensor:
    """In place: ``scatter_reduce``."""
    from dtrain._tensor.ops.inplace_math import _inplace

    return _inplace(
        tensor,
        lambda t: scatter_reduce(t, dim, index, src, reduce, include_self=include_self),
        "scatter_reduce_",
        src,
    )


def searchsorted(
    sorted_sequence: Tensor,
    input: Any,
    *,
    out_int32: bool = False,
    right: bool = False,
    side: str | None = None,
    sorter: Tensor | None = None,
) -> Tensor:
    """Where each value of ``input`` would go in ``sorted_sequence`` (along its last dim,
    row by row when it has more than one) to keep it sorted: the first such place, or the
    last with ``right=True`` / ``side='right'``."""
    if side is not None:
        if side not in ("left", "right"):
            raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
        if right and side == "left":
            raise ValueError("searchsorted: right=True and side='left' contradict each other")
        right = side == "right"
    sequence = sorted_sequence._array
    xp = get_array_module(sequence)
    if sorter is not None:
        sequence = xp.take_along_axis(sequence, sorter._array, axis=-1)
    scalar = not isinstance(input, Tensor)
    values = xp.asarray(input, dtype=sequence.dtype) if scalar else input._array
    dtype = np.int32 if out_int32 else np.int64
    if sequence.ndim == 1:
        result = xp.searchsorted(sequence, values, side="right" if right else "left")
        return wrap(xp.asarray(result, dtype=dtype))
    if values.shape[:-1] != sequence.shape[:-1]:
        raise ValueError(
            f"searchsorted: the leading dims of input {values.shape} must match those of "
            f"sorted_sequence {sequence.shape}"
        )
    # Row by row without a loop: count the entries before each value.
    before = (
        sequence[..., None, :] <= values[..., :, None]
        if right
        else (sequence[..., None, :] < values[..., :, None])
    )
    return wrap(before.sum(axis=-1).astype(dtype))


def bucketize(
    input: Any, boundaries: Tensor, *, out_int32: bool = False, right: bool = False
) -> Tensor:
    """The bucket of each value among the sorted 1-D ``boundaries``: ``i`` with
    ``boundaries[i-1] < x <= boundaries[i]`` (``right=True``: ``<= x <``)."""
    if boundaries.ndim != 1:
        raise ValueError(f"bucketize: boundaries must be 1-D, got shape {tuple(boundaries.shape)}")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def isin(
    elements: Any, test_elements: Any, *, assume_unique: bool = False, invert: bool = False
) -> Tensor:
    """True where an element of ``elements`` is among ``test_elements`` (either may be a
    number)."""
    arrays = [v._array if isinstance(v, Tensor) else v for v in (elements, test_elements)]
    xp = get_array_module(*[a for a in arrays if not np.isscalar(a)])
    a, b = (xp.asarray(v) for v in arrays)
    return wrap(xp.asarray(xp.isin(a, b, assume_unique=assume_unique, invert=invert)))


def unique_consecutive(
    input: Tensor,
    return_inverse: bool = False,
    return_counts: bool = False,
    dim: int | None = None,
) -> Any:
    """The first element of every run of equal consecutive elements (slices along ``dim``;
    the flattened tensor when None), with each element's run number and the run lengths
    when asked. One host read: the result's length."""
    array = input._array
    xp = get_array_module(array)
    axis = 0 if dim is None else normalize_dim(dim, input.ndim)
    moved = array.reshape(-1) if dim is None else xp.moveaxis(array, axis, 0)
    n = moved.shape[0]
    if n == 0:
        starts = xp.zeros(0, dtype=bool)
    else:
        changed = (moved[1:] != moved[:-1]).reshape(n - 1, -1).any(axis=1)
        starts = xp.concatenate([xp.ones(1, dtype=bool), changed])
    first = xp.flatnonzero(starts)
    values = xp.moveaxis(moved[first], 0, axis) if dim is not None else moved[first]
    out = [wrap(xp.ascontiguousarray(values))]
    if return_inverse:
        inverse = xp.cumsum(starts) - 1
        out.append(wrap(inverse.reshape(array.shape) if dim is None else inverse))
    if return_counts:
        out.append(wrap(xp.diff(xp.concatenate([first, xp.asarray([n])]))))
    return out[0] if len(out) == 1 else tuple(out)


def _triangle(name: str, row: int, col: int, offset: int, dtype: Any, device: Any) -> Tensor:
    from dtrain._tensor.creation import tensor

    pick = np.tril_indices if name == "tril_indices" else np.triu_indices
    rows, cols = pick(row, offset, col)
    return tensor(np.stack([rows, cols]), dtype=dtype or np.int64, device=device)


def tril_indices(
    row: int, col: int, offset: int = 0, *, dtype: Any = None, device: Any = None
) -> Tensor:
    """The ``(2, N)`` coordinates of the lower triangle of a ``row x col`` matrix (on and
    below diagonal ``offset``), row by row."""
    return _triangle("tril_indices", row, col, offset, dtype, device)


def triu_indices(
    row: int, col: int, offset: int = 0, *, dtype: Any = None, device: Any = None
) -> Tensor:
    """The ``(2, N)`` coordinates of the upper triangle (on and above diagonal ``offset``)."""
    return _triangle("triu_indices", row, col, offset, dtype, device)
