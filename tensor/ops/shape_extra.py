"""More ops that rearrange elements: diagonal, diag_embed, diagflat, block_diag, fliplr,
flipud, rot90, atleast_1d/2d/3d, column_stack, dstack, tensor_split, hsplit, vsplit,
dsplit, broadcast_tensors, broadcast_shapes, cartesian_prod, combinations, unfold, ravel.

Where PyTorch returns a view (diagonal, unfold), dtrain returns a copy: writing into it does
not change the input.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.reorder import flip
from dtrain._tensor.ops.shape import cat, expand, reshape, stack
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _diagonal_positions(rows: int, cols: int, offset: int, xp: Any) -> tuple[Any, Any]:
    length = max(min(rows + min(offset, 0), cols - max(offset, 0)), 0)
    index = xp.arange(length)
    return index - min(offset, 0), index + max(offset, 0)


class Diagonal(Op):
    """The diagonal ``offset`` of the planes ``(axis1, axis2)``, as a last dim."""

    def forward(self, x: Any, offset: int, axis1: int, axis2: int) -> Any:
        self.shape, self.offset, self.axes = x.shape, offset, (axis1, axis2)
        return get_array_module(x).diagonal(x, offset, axis1, axis2).copy()

    def backward(self, grad: Any) -> tuple:
        return (embed_diagonal(grad, self.shape, self.offset, *self.axes),)


def embed_diagonal(values: Any, shape: tuple, offset: int, axis1: int, axis2: int) -> Any:
    """Zeros of ``shape`` with ``values`` (the last dim) on diagonal ``offset`` of the
    ``(axis1, axis2)`` planes."""
    xp = get_array_module(values)
    moved = [s for i, s in enumerate(shape) if i not in (axis1, axis2)]
    full = xp.zeros((*moved, shape[axis1], shape[axis2]), dtype=values.dtype)
    rows, cols = _diagonal_positions(shape[axis1], shape[axis2], offset, xp)
    full[..., rows, cols] = values
    return xp.moveaxis(full, (-2, -1), (axis1, axis2))


class DiagEmbed(Op):
    """The last dim of ``x`` placed on diagonal ``offset`` of new ``(axis1, axis2)`` planes."""

    def forward(self, x: Any, offset: int, axis1: int, axis2: int) -> Any:
        self.offset, self.axes = offset, (axis1, axis2)
        n = x.shape[-1] + abs(offset)
        shape = list(x.shape[:-1])
        for axis in sorted((axis1, axis2)):
            shape.insert(axis, n)
        return embed_diagonal(x, tuple(shape), offset, axis1, axis2)

    def backward(self, grad: Any) -> tuple:
        return (get_array_module(grad).diagonal(grad, self.offset, *self.axes).copy(),)


def diagonal(input: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal ``offset`` of the ``(dim1, dim2)`` planes, as a last dim (a copy)."""
    axis1, axis2 = normalize_dim(dim1, input.ndim), normalize_dim(dim2, input.ndim)
    if input.ndim < 2 or axis1 == axis2:
        raise ValueError(
            f"diagonal: dim1={dim1} and dim2={dim2} must name two different dims of a tensor "
            f"with at least 2, got shape {tuple(input.shape)}"
        )
    return Diagonal.apply(input, offset=int(offset), axis1=axis1, axis2=axis2)


def diag_embed(input: Tensor, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
    """Matrices whose diagonal ``offset`` (in dims ``dim1``, ``dim2`` of the result) holds
    the last dim of ``input``."""
    axis1, axis2 = normalize_dim(dim1, input.ndim + 1), normalize_dim(dim2, input.ndim + 1)
    if axis1 == axis2:
        raise ValueError(f"diag_embed: dim1={dim1} and dim2={dim2} name the same dim")
    if input.ndim == 0:
        input = input.reshape(1)
    return DiagEmbed.apply(input, offset=int(offset), axis1=axis1, axis2=axis2)


def diagflat(input: Tensor, offset: int = 0) -> Tensor:
    """A matrix with the flattened ``input`` on diagonal ``offset``."""
    return diag_embed(input.reshape(-1), offset)


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def _promoted(arrays: list) -> Any:
    """PyTorch's result dtype: integers with floats give the floats' dtype (numpy's:
    float64), and 0-d tensors count only when their category (bool < int < float) is above
    every dimensioned one's."""
    dims = [a.dtype for a in arrays if a.ndim]
    top = max((_CATEGORY[d.kind] for d in dims), default=-1)
    dtypes = dims + [a.dtype for a in arrays if not a.ndim and _CATEGORY[a.dtype.kind] > top]
    floats = [d for d in dtypes if d.kind == "f"]
    return np.result_type(*floats) if floats else np.result_type(*dtypes)


def block_diag(*tensors: Tensor) -> Tensor:
    """The tensors (0-, 1- or 2-D; 1-D ones are rows) on the diagonal of one matrix."""
    from dtrain._tensor.creation import zeros

    if not tensors:
        raise ValueError("block_diag: give at least one tensor")
    blocks = []
    for i, t in enumerate(tensors):
        if t.ndim > 2:
            raise ValueError(f"block_diag: tensor {i} has shape {tuple(t.shape)}; expected ≤ 2-D")
        blocks.append(t.reshape(1, 1) if t.ndim == 0 else t.reshape(1, -1) if t.ndim == 1 else t)
    dtype = _promoted([t._array for t in tensors])
    width = sum(b.shape[1] for b in blocks)
    rows, left = [], 0
    for b in blocks:
        rows_b, cols_b = b.shape
        parts = [
            zeros(rows_b, left, dtype=dtype, device=b.device),
            b.to(dtype),
            zeros(rows_b, width - left - cols_b, dtype=dtype, device=b.device),
        ]
        rows.append(cat(parts, dim=1))
        left += cols_b
    return cat(rows, dim=0)


def fliplr(input: Tensor) -> Tensor:
    """Reverse the columns (dim 1); at least 2-D."""
    if input.ndim < 2:
        raise ValueError(f"fliplr: expected at least 2 dims, got shape {tuple(input.shape)}")
    return flip(input, 1)


def flipud(input: Tensor) -> Tensor:
    """Reverse the rows (dim 0); at least 1-D."""
    if input.ndim < 1:
        raise ValueError("flipud: expected at least 1 dim, got a 0-d tensor")
    return flip(input, 0)


def rot90(input: Tensor, k: int = 1, dims: Sequence[int] = (0, 1)) -> Tensor:
    """Rotate by 90° ``k`` times in the plane ``dims``, from the first toward the second."""
    if len(dims) != 2:
        raise ValueError(f"rot90: dims must name two dims, got {dims!r}")
    first, second = (normalize_dim(d, input.ndim) for d in dims)
    if input.ndim < 2 or first == second:
        raise ValueError(f"rot90: dims {tuple(dims)} must differ, on a tensor of ≥ 2 dims")
    k %= 4
    if k == 1:
        return flip(input, second).transpose(first, second)
    if k == 2:
        return flip(input, first, second)
    if k == 3:
        return flip(input, first).transpose(first, second)
    return input.clone()


def _tensors(tensors: tuple) -> tuple:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return tuple(tensors[0])
    return tensors


def _atleast(tensors: tuple, shape_of: Any) -> Any:
    listed = len(tensors) == 1 and isinstance(tensors[0], (list, tuple))
    out = tuple(t.reshape(*shape_of(t)) for t in _tensors(tensors))
    return out[0] if len(out) == 1 and not listed else out


def atleast_1d(*tensors: Tensor) -> Any:
    """Each tensor with at least 1 dim (a 0-d one becomes shape (1,))."""
    return _atleast(tensors, lambda t: t.shape if t.ndim >= 1 else (1,))


def atleast_2d(*tensors: Tensor) -> Any:
    """Each tensor with at least 2 dims (leading 1s added)."""
    return _atleast(tensors, lambda t: t.shape if t.ndim >= 2 else (1,) * (2 - t.ndim) + t.shape)


def atleast_3d(*tensors: Tensor) -> Any:
    """Each tensor with at least 3 dims: (n,) → (1, n, 1), (m, n) → (m, n, 1)."""

    def shape_of(t: Tensor) -> tuple:
        if t.ndim == 0:
            return (1, 1, 1)
        if t.ndim == 1:
            return (1, t.shape[0], 1)
        return (*t.shape, 1) if t.ndim == 2 else t.shape

    return _atleast(tensors, shape_of)


def column_stack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dim 1, 0-d and 1-D tensors taken as columns."""
    return cat([t.reshape(-1, 1) if t.ndim <= 1 else t for t in tensors], dim=1)


def dstack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dim 2, after ``atleast_3d``."""
    return cat(list(atleast_3d(list(tensors))), dim=2)


def tensor_split(input: Tensor, indices_or_sections: Any, dim: int = 0) -> tuple:
    """Split along ``dim`` into ``n`` near-equal parts (the first ``size % n`` one longer),
    or at the listed indices."""
    axis = normalize_dim(dim, input.ndim)
    if input.ndim == 0:
        raise ValueError("tensor_split: expected at least 1 dim, got a 0-d tensor")
    size = input.shape[axis]
    split = indices_or_sections
    if isinstance(split, Tensor):
        split = split.item() if split.ndim == 0 else split.tolist()
    if isinstance(split, int):
        if split <= 0:
            raise ValueError(f"tensor_split: sections must be positive, got {split}")
        base, extra = divmod(size, split)
        bounds = list(itertools.accumulate([base + 1] * extra + [base] * (split - extra)))[:-1]
    else:
        bounds = list(split)
    # Each bound clamped to [0, size] on its own; piece i is edges[i]:edges[i + 1], empty
    # when the bounds decrease (Python's slicing, as PyTorch).
    edges = [0, *(min(max(b + size if b < 0 else b, 0), size) for b in bounds), size]
    return tuple(
        input.narrow(axis, start, max(stop - start, 0)) for start, stop in itertools.pairwise(edges)
    )


def _split_dim(name: str, input: Tensor, sections: Any, dim: int, least: int) -> tuple:
    if input.ndim < least:
        raise ValueError(f"{name}: expected at least {least} dims, got {tuple(input.shape)}")
    if isinstance(sections, int) and input.shape[dim] % sections:
        raise ValueError(
            f"{name}: dim {dim} of size {input.shape[dim]} does not split into {sections} "
            "equal parts; use tensor_split for unequal ones"
        )
    return tensor_split(input, sections, dim)


def hsplit(input: Tensor, indices_or_sections: Any) -> tuple:
    """``tensor_split`` along dim 1 (dim 0 for 1-D), into equal parts when given a count."""
    return _split_dim("hsplit", input, indices_or_sections, 1 if input.ndim > 1 else 0, 1)


def vsplit(input: Tensor, indices_or_sections: Any) -> tuple:
    """``tensor_split`` along dim 0 of a tensor of at least 2 dims."""
    return _split_dim("vsplit", input, indices_or_sections, 0, 2)


def dsplit(input: Tensor, indices_or_sections: Any) -> tuple:
    """``tensor_split`` along dim 2 of a tensor of at least 3 dims."""
    return _split_dim("dsplit", input, indices_or_sections, 2, 3)


def broadcast_shapes(*shapes: Any) -> Any:
    """The shape the given shapes broadcast to (a ``Size``)."""
    from dtrain._tensor.size import Size

    listed = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    try:
        return Size(np.broadcast_shapes(*listed))
    except ValueError:
        raise ValueError(
            f"broadcast_shapes: shapes {' and '.join(map(str, listed))} do not broadcast"
        ) from None


def broadcast_tensors(*tensors: Tensor) -> tuple:
    """The tensors expanded to their common broadcast shape (views)."""
    tensors = _tensors(tensors)
    shape = broadcast_shapes(*[t.shape for t in tensors])
    return tuple(expand(t, tuple(shape)) for t in tensors)


def cartesian_prod(*tensors: Tensor) -> Tensor:
    """Every combination of one element from each 1-D tensor, as rows (one tensor: itself)."""
    from dtrain._tensor.ops.reorder import meshgrid

    tensors = _tensors(tensors)
    if len(tensors) == 1:
        return tensors[0]
    grids = meshgrid(*tensors, indexing="ij")
    return stack([g.reshape(-1) for g in grids], dim=1)


def combinations(input: Tensor, r: int = 2, with_replacement: bool = False) -> Tensor:
    """The length-``r`` combinations of a 1-D tensor's elements, as rows (itertools order)."""
    if input.ndim != 1:
        raise ValueError(f"combinations: expected a 1-D tensor, got shape {tuple(input.shape)}")
    if r < 0:
        raise ValueError(f"combinations: r must be non-negative, got {r}")
    pick = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    rows = list(pick(range(input.shape[0]), r))
    if r == 0 or not rows:
        from dtrain._tensor.creation import zeros

        return input[:0] if r == 0 else zeros(0, r, dtype=input.dtype, device=input.device)
    index = np.asarray(rows, dtype=np.int64).reshape(-1)
    xp = get_array_module(input._array)
    return input[wrap(xp.asarray(index))].reshape(len(rows), r)


def unfold(input: Tensor, dimension: int, size: int, step: int) -> Tensor:
    """Every window of ``size`` elements along ``dimension``, ``step`` apart, as a new last
    dim (a copy, where PyTorch's is a view)."""
    from dtrain._tensor.ops.indexing import index_select

    if input.ndim == 0:
        return unfold(input.reshape(1), 0, size, step).reshape(size)
    axis = normalize_dim(dimension, input.ndim)
    length = input.shape[axis]
    if not 0 <= size <= length or step <= 0:
        raise ValueError(
            f"unfold: size {size} must be in [0, {length}] (dim {dimension}) and step {step} "
            "positive"
        )
    count = (length - size) // step + 1
    xp = get_array_module(input._array)
    index = (xp.arange(count)[:, None] * step + xp.arange(size)[None, :]).reshape(-1)
    windows = index_select(input, axis, wrap(index))
    shape = (*input.shape[:axis], count, size, *input.shape[axis + 1 :])
    return windows.reshape(*shape).movedim(axis + 1, -1)


def ravel(input: Tensor) -> Tensor:
    """The elements as a 1-D tensor."""
    return reshape(input, -1)


def row_stack(tensors: Sequence[Tensor]) -> Tensor:
    """``vstack``."""
    from dtrain._tensor.ops.shape import vstack

    return vstack(tensors)


def ger(input: Tensor, vec2: Tensor) -> Tensor:
    """``outer`` (PyTorch's older name)."""
    from dtrain._tensor.ops.linalg import outer

    return outer(input, vec2)


def msort(input: Tensor) -> Tensor:
    """``input`` sorted along dim 0 (the values of ``sort(input, 0)``)."""
    from dtrain._tensor.ops.indexing import sort

    return sort(input, 0).values
