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


class IndexCopy(Op):
    """``out = x`` with the slices at ``index`` along ``axis`` replaced by those of ``src``.
    Where an index repeats, one of the slices wins (PyTorch does not say which)."""

    def forward(self, x: Any, src: Any, index: Any, axis: int) -> Any:
        xp = get_array_module(x)
        self.index, self.axis = index, axis
        out = x.copy()
        xp.moveaxis(out, axis, 0)[index] = xp.moveaxis(src, axis, 0)
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_x, need_src = self.needs_input_grad
        grad_x = grad_src = None
        if need_x:
            grad_x = grad.copy()
            xp.moveaxis(grad_x, self.axis, 0)[self.index] = 0
        if need_src:
            grad_src = xp.take(grad, self.index, axis=self.axis)
        return grad_x, grad_src


def index_copy(input: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """A copy of ``input`` with the slices at ``index`` along ``dim`` replaced by those of
    ``source`` (differentiable for both). Where an index repeats, one of its slices wins."""
    if input.ndim == 0:  # PyTorch treats a 0-d tensor as one element along dim 0
        normalize_dim(dim, 0)
        flat = index_copy(input.reshape(1), 0, index.reshape(-1), source.reshape(-1))
        return flat.reshape(())
    axis = normalize_dim(dim, input.ndim)
    index_array = _index_array(index, "index_copy")
    if index_array.ndim > 1:
        raise ValueError(f"index_copy: index must be 0-d or 1-D, got shape {index_array.shape}")
    index_array = index_array.reshape(-1)
    expected = (*input.shape[:axis], index_array.size, *input.shape[axis + 1 :])
    if tuple(source.shape) != expected:
        raise ValueError(
            f"index_copy: source has shape {tuple(source.shape)} but {expected} was expected "
            f"(input's shape with dim {axis} the length of index)"
        )
    if source._array.dtype != input._array.dtype:
        source = source.to(input.dtype)
    return IndexCopy.apply(input, source, index=index_array, axis=axis)


def index_copy_(tensor: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """In place: ``index_copy``."""
    from dtrain._tensor.ops.inplace_math import _inplace

    return _inplace(tensor, lambda t: index_copy(t, dim, index, source), "index_copy_", source)


# The dtypes cupy's ufunc.at takes (its atomics, cupy/_core/_routines_indexing.pyx); cupy
# has no multiply.at at all. Other dtypes take a sorted segmented reduction instead.
# amax/amin take the sorted path on cupy for every dtype: on the H100 (cupy 14.2,
# 2026-11-28) maximum.at on float64 rounded the values it wrote through float32
# (1.3664634705496859 came back as 1.3664634227752686), so the result was wrong and the
# gradient, which finds the winners by equality, zero (float32 was exact).
_CUPY_AT_DTYPES = {
    "sum": frozenset(["int32", "uint32", "uint64", "float16", "float32", "float64"]),
}


def _reduce_at(target: Any, key: tuple, values: Any, reduce: str) -> None:
    """``ufunc.at(target, key, values)`` for ``reduce``'s ufunc, on numpy or cupy (whose
    ``.at`` has no ``multiply`` and takes only some dtypes) for every dtype."""
    xp = get_array_module(target)
    if reduce in ("sum", "mean"):
        if xp is np or target.dtype.name in _CUPY_AT_DTYPES["sum"]:
            add_at(target, key, values, "scatter_reduce")
            return
        _sorted_reduce_at(target, key, values, xp.add, xp)
        return
    ufunc = {"prod": xp.multiply, "amax": xp.maximum, "amin": xp.minimum}[reduce]
    if xp is np or target.dtype.name in _CUPY_AT_DTYPES.get(reduce, ()):
        ufunc.at(target, key, values)
        return
    _sorted_reduce_at(target, key, values, ufunc, xp)


def _sorted_reduce_at(target: Any, key: tuple, values: Any, ufunc: Any, xp: Any) -> None:
    """``ufunc.at(target, key, values)`` without atomics, for any dtype: sort the target
    positions, combine each run of equal positions with a segmented scan (log2(longest run)
    passes of elementwise ops), and combine each run's result into ``target`` once."""
    positions = xp.arange(target.size).reshape(target.shape)[key]
    if positions.size == 0:
        return
    values = xp.broadcast_to(xp.asarray(values, dtype=target.dtype), positions.shape)
    positions, values = positions.reshape(-1), values.reshape(-1)
    order = xp.argsort(positions)
    positions, acc = positions[order], values[order]
    n = positions.size
    head = xp.concatenate([xp.ones(1, bool), positions[1:] != positions[:-1]])
    run_starts = xp.flatnonzero(head)
    starts = run_starts[xp.cumsum(head) - 1]  # the index where each element's run begins
    longest = int(xp.diff(xp.concatenate([run_starts, xp.asarray([n])])).max())  # host sync
    index = xp.arange(n)
    step = 1
    while step < longest:  # Hillis-Steele: each element combines its run up to itself
        shifted = xp.concatenate([acc[:step], acc[:-step]])
        acc = xp.where(index - step >= starts, ufunc(acc, shifted), acc)
        step *= 2
    last = xp.concatenate([head[1:], xp.ones(1, bool)])  # a run's last element holds it all
    where = xp.unravel_index(positions[last], target.shape)
    target[where] = ufunc(target[where], acc[last])  # unique positions: no two writes collide


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
        _reduce_at(out, key, values, reduce)
        count = None
        if reduce == "mean":
            positions = xp.arange(x.size).reshape(x.shape)[key].reshape(-1)
            count = xp.bincount(positions, minlength=x.size).reshape(x.shape).astype(x.dtype)
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
            add_at(count, key, src_wins.astype(grad.dtype), "scatter_reduce")
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
    if dtype.kind == "b":
        return reduce == "amin"  # False is below every bool, True above
    if dtype.kind == "f":
        return -np.inf if reduce == "amax" else np.inf
    info = np.iinfo(dtype)
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
    if input.ndim == 0:  # PyTorch treats a 0-d tensor as one element along dim 0
        normalize_dim(dim, 0)
        flat = scatter_reduce(
            input.reshape(1),
            0,
            index.reshape(-1),
            src.reshape(-1),
            reduce,
            include_self=include_self,
        )
        return flat.reshape(())
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
    if isinstance(input, Tensor):
        values = input._array
    else:
        values = xp.asarray(input)  # a number keeps its value: 3.5 is not truncated to 3
        if values.dtype.kind == "f" and sequence.dtype.kind == "f":
            values = values.astype(sequence.dtype)  # a Python float does not widen floats
    common = np.result_type(sequence.dtype, values.dtype)
    sequence = sequence.astype(common, copy=False)
    values = values.astype(common, copy=False)
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
    seq, val = sequence[..., None, :], values[..., :, None]
    before = seq <= val if right else seq < val
    if common.kind == "f":  # NaN sorts last, as in numpy's 1-D search and PyTorch
        before = before | (xp.isnan(val) & (xp.isnan(seq) if right else ~xp.isnan(seq)))
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
