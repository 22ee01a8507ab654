"""Shape ops: reshape, view, flatten, unflatten, transpose, swapaxes, permute, movedim,
squeeze, unsqueeze, expand, repeat, cat, stack, hstack, vstack, tril, triu. Those numpy can
do without a copy return views that share the input's version counter, as PyTorch's views do."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim, unbroadcast
from dtrain._tensor.tensor import Tensor, mark_view
from dtrain.runtime.backend import get_array_module


class Reshape(Op):
    def forward(self, x: Any, shape: tuple) -> Any:
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, grad: Any) -> tuple:
        return (grad.reshape(self.shape),)


class Permute(Op):
    def forward(self, x: Any, axes: tuple) -> Any:
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad: Any) -> tuple:
        inverse = [0] * len(self.axes)
        for position, axis in enumerate(self.axes):
            inverse[axis] = position
        return (grad.transpose(inverse),)


class Expand(Op):
    def forward(self, x: Any, shape: tuple) -> Any:
        self.shape = x.shape
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, grad: Any) -> tuple:
        return (unbroadcast(grad, self.shape),)


class Repeat(Op):
    def forward(self, x: Any, repeats: tuple) -> Any:
        self.shape = (1,) * (len(repeats) - x.ndim) + x.shape
        self.in_shape, self.repeats = x.shape, repeats
        return get_array_module(x).tile(x, repeats)

    def backward(self, grad: Any) -> tuple:
        # Split every axis into (repeat, size) and sum over the repeat axes.
        split = []
        for repeat, size in zip(self.repeats, self.shape):
            split += [repeat, size]
        summed = grad.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return (summed.reshape(self.in_shape),)


class Cat(Op):
    def forward(self, *arrays: Any, axis: int) -> Any:
        self.axis = axis
        self.sizes = [a.shape[axis] for a in arrays]
        return get_array_module(*arrays).concatenate(arrays, axis=axis)

    def backward(self, grad: Any) -> tuple:
        grads = []
        start = 0
        index = [slice(None)] * grad.ndim
        for size, needed in zip(self.sizes, self.needs_input_grad):
            index[self.axis] = slice(start, start + size)
            grads.append(grad[tuple(index)] if needed else None)
            start += size
        return tuple(grads)


class Stack(Op):
    def forward(self, *arrays: Any, axis: int) -> Any:
        self.axis = axis
        return get_array_module(*arrays).stack(arrays, axis=axis)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return tuple(
            xp.take(grad, i, axis=self.axis) if needed else None
            for i, needed in enumerate(self.needs_input_grad)
        )


class TriangleMask(Op):
    def forward(self, x: Any, diagonal: int, upper: bool) -> Any:
        xp = get_array_module(x)
        self.diagonal, self.upper = diagonal, upper
        return xp.triu(x, diagonal) if upper else xp.tril(x, diagonal)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        return ((xp.triu if self.upper else xp.tril)(grad, self.diagonal),)


def _sizes(shape: Sequence) -> tuple:
    """Accept both ``f(2, 3)`` and ``f((2, 3))``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def reshape(input: Tensor, *shape: Any) -> Tensor:
    """The same elements in a new shape (one size may be -1); a view when the layout allows."""
    shape = _sizes(shape)
    known = 1
    for size in shape:
        if size != -1:
            known *= size
    numel = input.numel()
    if shape.count(-1) > 1 or (numel != known if -1 not in shape else known == 0 or numel % known):
        raise RuntimeError(
            f"shape {list(shape)} is invalid for a tensor of shape {tuple(input.shape)} "
            f"({numel} elements); the sizes must multiply to {numel} (at most one -1)"
        )
    return mark_view(Reshape.apply(input, shape=shape), input)


view = reshape


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one."""
    if input.ndim == 0:
        return reshape(input, 1)
    start = normalize_dim(start_dim, input.ndim, "start_dim")
    end = normalize_dim(end_dim, input.ndim, "end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = input.shape
    return reshape(input, shape[:start] + (-1,) + shape[end + 1 :])


def permute(input: Tensor, *dims: Any) -> Tensor:
    """Reorder the dims: ``x.permute(2, 0, 1)``."""
    dims = _sizes(dims)
    axes = tuple(normalize_dim(d, input.ndim) for d in dims)
    if sorted(axes) != list(range(input.ndim)):
        raise ValueError(
            f"permute: dims {list(dims)} must name each of the {input.ndim} dims exactly once"
        )
    return mark_view(Permute.apply(input, axes=axes), input)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims."""
    axes = list(range(input.ndim))
    a, b = normalize_dim(dim0, input.ndim), normalize_dim(dim1, input.ndim)
    if input.ndim == 0:  # dims 0 and -1 of a 0-d tensor name the tensor itself
        return reshape(input, ())
    axes[a], axes[b] = axes[b], axes[a]
    return mark_view(Permute.apply(input, axes=tuple(axes)), input)


def movedim(input: Tensor, source: Any, destination: Any) -> Tensor:
    """Move dims ``source`` (an int or a sequence) to positions ``destination``; the
    others keep their order (``moveaxis`` is its alias, as numpy's)."""
    sources = tuple(source) if isinstance(source, (tuple, list)) else (source,)
    destinations = tuple(destination) if isinstance(destination, (tuple, list)) else (destination,)
    if len(sources) != len(destinations):
        raise ValueError(
            f"movedim: source {source!r} and destination {destination!r} must name as many dims"
        )
    src = [normalize_dim(d, input.ndim, "source") for d in sources]
    dst = [normalize_dim(d, input.ndim, "destination") for d in destinations]
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError(
            f"movedim: repeated dim in source {source!r} or destination {destination!r}"
        )
    order = [d for d in range(input.ndim) if d not in src]
    for position, dim in sorted(zip(dst, src)):
        order.insert(position, dim)
    return permute(input, *order)


moveaxis = movedim


def swapaxes(input: Tensor, axis0: int, axis1: int) -> Tensor:
    """Swap two dims: ``transpose``'s numpy name (``swapdims`` too)."""
    return transpose(input, axis0, axis1)


swapdims = swapaxes


def unflatten(input: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dim ``dim`` into ``sizes`` (one of them may be -1)."""
    axis = normalize_dim(dim, input.ndim)
    sizes = tuple(int(size) for size in sizes)
    if not sizes:
        raise ValueError("unflatten: sizes must name at least one size")
    shape = input.shape
    known = math.prod(size for size in sizes if size != -1)
    if sizes.count(-1) > 1 or (
        known != shape[axis] if -1 not in sizes else known == 0 or shape[axis] % known
    ):
        raise ValueError(
            f"unflatten: sizes {list(sizes)} do not split dim {dim} of size {shape[axis]} "
            "(they must multiply to it, with at most one -1)"
        )
    return reshape(input, shape[:axis] + sizes + shape[axis + 1 :])


def squeeze(input: Tensor, dim: Any = None) -> Tensor:
    """Drop dims of size 1 (all of them, or only ``dim`` if it has size 1)."""
    shape = input.shape
    if dim is None:
        new = tuple(size for size in shape if size != 1)
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {normalize_dim(d, input.ndim) for d in dims}
        new = tuple(size for i, size in enumerate(shape) if not (i in axes and size == 1))
    return input if new == shape else reshape(input, new)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """Insert a dim of size 1 at ``dim``."""
    axis = normalize_dim(dim, input.ndim + 1)
    shape = input.shape
    return reshape(input, shape[:axis] + (1,) + shape[axis:])


def expand(input: Tensor, *sizes: Any) -> Tensor:
    """Broadcast to ``sizes`` without copying (-1 keeps a size); new dims go in front."""
    sizes = _sizes(sizes)
    shape = input.shape
    if len(sizes) < len(shape):
        raise ValueError(
            f"expand: {list(sizes)} has fewer dims than the tensor's shape {tuple(shape)}"
        )
    lead = len(sizes) - len(shape)
    target = []
    for i, size in enumerate(sizes):
        old = shape[i - lead] if i >= lead else None
        if size == -1:
            if old is None:
                raise ValueError(f"expand: -1 is not allowed for the new leading dim {i}")
            size = old
        if old is not None and old != 1 and old != size:
            raise ValueError(
                f"expand: the size {old} of dim {i - lead} cannot become {size}; only "
                f"dims of size 1 expand (shape {tuple(shape)} to {list(sizes)})"
            )
        target.append(size)
    return mark_view(Expand.apply(input, shape=tuple(target)), input)


def repeat(input: Tensor, *repeats: Any) -> Tensor:
    """Tile the tensor ``repeats[i]`` times along dim i (copies, unlike expand)."""
    repeats = _sizes(repeats)
    if len(repeats) < input.ndim:
        raise ValueError(
            f"repeat: {list(repeats)} has fewer entries than the tensor has dims ({input.ndim})"
        )
    return Repeat.apply(input, repeats=repeats)


def _tensor_list(tensors: Any, what: str) -> list:
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{what}: expected a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: element {i} is {type(t).__name__}, expected a Tensor")
    dtypes = {t._array.dtype for t in tensors}
    if len(dtypes) > 1:
        # A float dtype wins over integers as in PyTorch (numpy: int64 + float32 → float64).
        floats = [d for d in dtypes if d.kind == "f"]
        common = get_array_module(tensors[0]._array).result_type(*(floats or dtypes))
        tensors = [t.to(common) for t in tensors]
    return tensors


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim; all other sizes must match."""
    tensors = _tensor_list(tensors, "cat")
    axis = normalize_dim(dim, tensors[0].ndim)
    first = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != len(first) or any(
            a != b for d, (a, b) in enumerate(zip(t.shape, first)) if d != axis
        ):
            raise ValueError(
                f"cat: tensor {i} has shape {tuple(t.shape)} but tensor 0 has "
                f"{tuple(first)}; all sizes except dim {axis} must match"
            )
    return Cat.apply(*tensors, axis=axis)


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join same-shaped tensors along a new dim."""
    tensors = _tensor_list(tensors, "stack")
    first = tensors[0].shape
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != first:
            raise ValueError(
                f"stack: tensor {i} has shape {tuple(t.shape)} but tensor 0 has {tuple(first)}; "
                "stack needs equal shapes"
            )
    return Stack.apply(*tensors, axis=normalize_dim(dim, len(first) + 1))


def hstack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dim 1 (dim 0 for 1-D tensors); 0-d tensors count as 1-D."""
    tensors = [t if t.ndim else reshape(t, 1) for t in _tensor_list(tensors, "hstack")]
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors: Sequence[Tensor]) -> Tensor:
    """Join along dim 0, 1-D tensors of size n first made rows of shape (1, n)."""
    tensors = _tensor_list(tensors, "vstack")
    return cat([t if t.ndim >= 2 else reshape(t, 1, -1) for t in tensors], 0)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """Keep the lower triangle (on and below ``diagonal``) of the last two dims."""
    _check_matrix(input, "tril")
    return TriangleMask.apply(input, diagonal=diagonal, upper=False)


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """Keep the upper triangle (on and above ``diagonal``) of the last two dims."""
    _check_matrix(input, "triu")
    return TriangleMask.apply(input, diagonal=diagonal, upper=True)


def _check_matrix(input: Tensor, name: str) -> None:
    # numpy would turn a 1-D input into a matrix; PyTorch refuses it.
    if input.ndim < 2:
        raise ValueError(
            f"{name}: needs a tensor with at least 2 dims, got shape {tuple(input.shape)}; "
            "reshape it into a matrix first"
        )
