"""The shape, view and indexing methods of ``Tensor``.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class ShapeMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: reshaping, views and indexing."""

    __slots__ = ()

    def reshape(self, *shape: Any) -> Tensor:
        return _fn.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        return _fn.view(self, *shape)

    def view_as(self, other: Tensor) -> Tensor:
        return _fn.view(self, other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _fn.flatten(self, start_dim, end_dim)

    def unflatten(self, dim: int, sizes: Any) -> Tensor:
        return _fn.unflatten(self, dim, sizes)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _fn.transpose(self, dim0, dim1)

    def swapaxes(self, axis0: int, axis1: int) -> Tensor:
        return _fn.transpose(self, axis0, axis1)

    swapdims = swapaxes

    def movedim(self, source: Any, destination: Any) -> Tensor:
        return _fn.movedim(self, source, destination)

    moveaxis = movedim

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise ValueError(f"t() expects at most 2 dims, got {self.ndim}; use transpose()")
        return self.T

    def permute(self, *dims: Any) -> Tensor:
        return _fn.permute(self, *dims)

    def squeeze(self, dim: Any = None) -> Tensor:
        return _fn.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _fn.unsqueeze(self, dim)

    def expand(self, *sizes: Any) -> Tensor:
        return _fn.expand(self, *sizes)

    def expand_as(self, other: Tensor) -> Tensor:
        return _fn.expand(self, other.shape)

    def repeat(self, *repeats: Any) -> Tensor:
        return _fn.repeat(self, *repeats)

    def split(self, split_size: Any, dim: int = 0) -> tuple:
        return _fn.split(self, split_size, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple:
        return _fn.chunk(self, chunks, dim)

    def unbind(self, dim: int = 0) -> tuple:
        return _fn.unbind(self, dim)

    def flip(self, *dims: Any) -> Tensor:
        return _fn.flip(self, *dims)

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        return _fn.roll(self, shifts, dims)

    def narrow(self, dim: int, start: Any, length: int) -> Tensor:
        return _fn.narrow(self, dim, start, length)

    def select(self, dim: int, index: int) -> Tensor:
        return _fn.select(self, dim, index)

    def repeat_interleave(
        self, repeats: Any, dim: int | None = None, *, output_size: int | None = None
    ) -> Tensor:
        return _fn.repeat_interleave(self, repeats, dim, output_size=output_size)

    def tile(self, *dims: Any) -> Tensor:
        return _fn.tile(self, *dims)

    def broadcast_to(self, size: Any) -> Tensor:
        return _fn.broadcast_to(self, size)

    def scatter(self, dim: int, index: Tensor, src: Any = None, **kwargs: Any) -> Tensor:
        return _fn.scatter(self, dim, index, src, **kwargs)

    def scatter_add(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return _fn.scatter_add(self, dim, index, src)

    def index_add(self, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
        return _fn.index_add(self, dim, index, source, alpha=alpha)

    def index_fill(self, dim: int, index: Tensor, value: Any) -> Tensor:
        return _fn.index_fill(self, dim, index, value)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _fn.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _fn.triu(self, diagonal)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        return _fn.gather(self, dim, index)

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        return _fn.index_select(self, dim, index)

    def nonzero(self, *, as_tuple: bool = False) -> Any:
        return _fn.nonzero(self, as_tuple=as_tuple)

    def masked_select(self, mask: Tensor) -> Tensor:
        return _fn.masked_select(self, mask)

    # More rearranging and indexing (tensor/ops/shape_extra.py, select_extra.py).
    def fliplr(self) -> Tensor:
        return _fn.fliplr(self)

    def flipud(self) -> Tensor:
        return _fn.flipud(self)

    def rot90(self, k: int = 1, dims: Any = (0, 1)) -> Tensor:
        return _fn.rot90(self, k, dims)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
        return _fn.diagonal(self, offset, dim1, dim2)

    def diag_embed(self, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
        return _fn.diag_embed(self, offset, dim1, dim2)

    def diagflat(self, offset: int = 0) -> Tensor:
        return _fn.diagflat(self, offset)

    def tensor_split(self, indices_or_sections: Any, dim: int = 0) -> tuple:
        return _fn.tensor_split(self, indices_or_sections, dim)

    def hsplit(self, indices_or_sections: Any) -> tuple:
        return _fn.hsplit(self, indices_or_sections)

    def vsplit(self, indices_or_sections: Any) -> tuple:
        return _fn.vsplit(self, indices_or_sections)

    def dsplit(self, indices_or_sections: Any) -> tuple:
        return _fn.dsplit(self, indices_or_sections)

    def unfold(self, dimension: int, size: int, step: int) -> Tensor:
        return _fn.unfold(self, dimension, size, step)

    def ravel(self) -> Tensor:
        return _fn.ravel(self)

    def take(self, index: Tensor) -> Tensor:
        return _fn.take(self, index)

    def take_along_dim(self, indices: Tensor, dim: int | None = None) -> Tensor:
        return _fn.take_along_dim(self, indices, dim)

    def index_copy(self, dim: int, index: Tensor, source: Tensor) -> Tensor:
        return _fn.index_copy(self, dim, index, source)

    def index_copy_(self, dim: int, index: Tensor, source: Tensor) -> Tensor:
        return _fn.index_copy_(self, dim, index, source)

    def scatter_reduce(
        self, dim: int, index: Tensor, src: Tensor, reduce: str, *, include_self: bool = True
    ) -> Tensor:
        return _fn.scatter_reduce(self, dim, index, src, reduce, include_self=include_self)

    def scatter_reduce_(
        self, dim: int, index: Tensor, src: Tensor, reduce: str, *, include_self: bool = True
    ) -> Tensor:
        return _fn.scatter_reduce_(self, dim, index, src, reduce, include_self=include_self)

    def unique_consecutive(
        self, return_inverse: bool = False, return_counts: bool = False, dim: int | None = None
    ) -> Any:
        return _fn.unique_consecutive(self, return_inverse, return_counts, dim)

    def isin(
        self, test_elements: Any, *, assume_unique: bool = False, invert: bool = False
    ) -> Tensor:
        return _fn.isin(self, test_elements, assume_unique=assume_unique, invert=invert)

    def squeeze_(self, dim: Any = None) -> Tensor:
        return _fn.squeeze_(self, dim)

    def unsqueeze_(self, dim: int) -> Tensor:
        return _fn.unsqueeze_(self, dim)

    def transpose_(self, dim0: int, dim1: int) -> Tensor:
        return _fn.transpose_(self, dim0, dim1)

    swapaxes_ = swapdims_ = transpose_

    def t_(self) -> Tensor:
        return _fn.t_(self)

    def msort(self) -> Tensor:
        return _fn.msort(self)
