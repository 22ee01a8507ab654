"""Writing values at indices: scatter, scatter_add, index_add (out of place; the in-place
forms are in ``inplace_math.py``)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import add_at, normalize_dim
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


def _scatter_key(index: Any, axis: int) -> tuple:
    """Per element of ``index``, its position with dim ``axis`` replaced by the index."""
    xp = get_array_module(index)
    grids = list(xp.ix_(*[xp.arange(size) for size in index.shape]))
    grids[axis] = index
    return tuple(grids)


class Scatter(Op):
    """``out = x; out[... index ...] = src`` along one dim (PyTorch's ``scatter``); with
    ``add``, the values are added (``scatter_add``). Where an index repeats without ``add``,
    one of the values wins, as in PyTorch (which does not say which)."""

    def forward(self, x: Any, src: Any, index: Any, axis: int, add: bool) -> Any:
        self.key, self.add = _scatter_key(index, axis), add
        self.src_shape = getattr(src, "shape", None)
        self.part = tuple(slice(0, n) for n in index.shape)
        values = src[self.part] if self.src_shape is not None else src
        out = x.copy()
        if add:
            add_at(out, self.key, values, "scatter_add")
        else:
            out[self.key] = values
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_x, need_src = self.needs_input_grad
        grad_x = grad_src = None
        if need_x:
            grad_x = grad
            if not self.add:
                grad_x = grad.copy()
                grad_x[self.key] = 0
        if need_src:
            grad_src = xp.zeros(self.src_shape, dtype=grad.dtype)
            grad_src[self.part] = grad[self.key]
        return grad_x, grad_src


class IndexAdd(Op):
    """``out = x; out.select(axis, index[i]) += alpha * source.select(axis, i)``."""

    def forward(self, x: Any, source: Any, index: Any, axis: int, alpha: Any) -> Any:
        xp = get_array_module(x)
        self.index, self.axis, self.alpha = index, axis, alpha
        out = x.copy()
        values = source if alpha == 1 else source * alpha
        # The indexed dim first (a view of out): ufunc.at then needs one index array.
        add_at(xp.moveaxis(out, axis, 0), index, xp.moveaxis(values, axis, 0), "index_add")
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_x, need_source = self.needs_input_grad
        grad_source = None
        if need_source:
            grad_source = xp.take(grad, self.index, axis=self.axis)
            if self.alpha != 1:
                grad_source = grad_source * grad.dtype.type(self.alpha)
        return (grad if need_x else None), grad_source


def _index_array(index: Any, name: str) -> Any:
    array = index._array if isinstance(index, Tensor) else index
    if getattr(getattr(array, "dtype", None), "kind", None) not in ("i", "u"):
        raise TypeError(f"{name}: index must be an integer tensor, got {index!r}")
    return array


def scatter(
    input: Tensor,
    dim: int,
    index: Tensor,
    src: Any = None,
    *,
    value: Any = None,
    reduce: str | None = None,
) -> Tensor:
    """A copy of ``input`` with ``src`` (a tensor, or a number) written at ``index`` along
    ``dim``: for dim 1, ``out[i][index[i][j]] = src[i][j]``. ``reduce='add'`` adds instead.
    Differentiable for ``input`` and ``src``."""
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter: give src (a tensor) or value (a number)")
    if reduce not in (None, "add"):
        raise NotImplementedError(f"scatter: reduce={reduce!r} is not supported; use 'add'")
    return _scatter(input, dim, index, src, reduce == "add", "scatter")


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """A copy of ``input`` with ``src`` added at ``index`` along ``dim`` (repeated indices
    accumulate)."""
    return _scatter(input, dim, index, src, True, "scatter_add")


def _scatter(input: Tensor, dim: int, index: Any, src: Any, add: bool, name: str) -> Tensor:
    axis = normalize_dim(dim, input.ndim)
    index_array = _index_array(index, name)
    if index_array.ndim != input.ndim:
        raise ValueError(
            f"{name}: index has {index_array.ndim} dims but the input has {input.ndim}"
        )
    if isinstance(src, Tensor):
        if src.ndim != input.ndim or any(i > s for i, s in zip(index_array.shape, src.shape)):
            raise ValueError(
                f"{name}: index shape {index_array.shape} does not fit src shape {tuple(src.shape)}"
            )
        if src._array.dtype != input._array.dtype:
            src = src.to(input.dtype)
    elif hasattr(src, "item"):
        src = src.item()
    return Scatter.apply(input, src, index=index_array, axis=axis, add=add)


def index_add(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
    """A copy of ``input`` with ``alpha * source`` slices added at the rows ``index`` names
    along ``dim`` (repeated indices accumulate)."""
    axis = normalize_dim(dim, input.ndim)
    index_array = _index_array(index, "index_add")
    if index_array.ndim != 1 or source.shape[axis] != index_array.shape[0]:
        raise ValueError(
            f"index_add: index must be 1-D with one entry per slice of source along dim "
            f"{dim}; got index shape {index_array.shape}, source shape {tuple(source.shape)}"
        )
    if source._array.dtype != input._array.dtype:
        source = source.to(input.dtype)
    return IndexAdd.apply(input, source, index=index_array, axis=axis, alpha=alpha)
