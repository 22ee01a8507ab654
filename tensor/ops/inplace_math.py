"""More in-place ops: ``//=``, ``%=``, masked_fill_, the unary math ops' ``x.sqrt_()`` forms,
index_fill_, fill_diagonal_, exp_, sigmoid_, relu_, lerp_,
addcmul_, addcdiv_, scatter_, scatter_add_, index_add_ — and the out-of-place index_fill,
lerp, addcmul and addcdiv. As in ``inplace.py``: recorded as the out-of-place op on a copy while
autograd records, else computed and written into the tensor's memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.ops.inplace import _record, _records, _write
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.device import as_numpy

_wrap = wrap  # fill_diagonal_'s parameter takes the name


def _inplace(
    tensor: Tensor, compute: Callable[[Tensor], Tensor], name: str, *others: Any
) -> Tensor:
    if _records(tensor, *others):
        return _record(tensor, compute, name)
    result = compute(tensor.detach())  # nothing requires grad here, or autograd is off
    dtype = result._array.dtype
    if dtype != tensor._array.dtype and not np.can_cast(dtype, tensor._array.dtype, "same_kind"):
        raise RuntimeError(  # as PyTorch's
            f"{name}: the result type {dtype} can't be cast to the tensor's dtype "
            f"{tensor.dtype} in place; convert the tensor first (e.g. x = x.float())"
        )
    if not getattr(tensor._array.flags, "writeable", True):  # numpy's message misleads here
        raise RuntimeError(
            f"{name}: this tensor is an expanded view whose elements share memory; call "
            ".clone() on it before changing it in place"
        )
    return _write(tensor, result._array.astype(tensor._array.dtype, copy=False), name)


def floor_divide_(tensor: Tensor, other: Any) -> Tensor:
    """In place: ``tensor //= other``."""
    from dtrain._tensor.ops.divide import floor_divide

    return _inplace(tensor, lambda t: floor_divide(t, other), "floor_divide_", other)


def remainder_(tensor: Tensor, other: Any) -> Tensor:
    """In place: ``tensor %= other``."""
    from dtrain._tensor.ops.divide import remainder

    return _inplace(tensor, lambda t: remainder(t, other), "remainder_", other)


def masked_fill_(tensor: Tensor, mask: Tensor, value: Any) -> Tensor:
    """In place: set the elements where ``mask`` is true to ``value``."""
    from dtrain._tensor.ops.select import masked_fill

    return _inplace(tensor, lambda t: masked_fill(t, mask, value), "masked_fill_", value)


def exp_(tensor: Tensor) -> Tensor:
    """In place: ``e ** tensor``."""
    from dtrain._tensor.ops.unary import exp

    return _inplace(tensor, exp, "exp_")


def unary_(tensor: Tensor, function: Callable[..., Tensor], *args: Any) -> Tensor:
    """In place: the elementwise ``function`` (``sqrt``, ``abs``, ``pow`` ...) with extra
    arguments ``args``; a tensor argument (``pow_``'s exponent) gets its gradient. A float
    function on an integer tensor is a TypeError, as in PyTorch (the float result can't be
    stored in it)."""
    name = f"{function.__name__}_"
    return _inplace(tensor, lambda t: function(t, *args), name, *args)


def sigmoid_(tensor: Tensor) -> Tensor:
    """In place: the logistic sigmoid."""
    from dtrain._tensor.ops.activation import sigmoid

    return _inplace(tensor, sigmoid, "sigmoid_")


def relu_(tensor: Tensor) -> Tensor:
    """In place: ``max(tensor, 0)``."""
    from dtrain._tensor.ops.activation import relu

    return _inplace(tensor, relu, "relu_")


def index_fill(input: Tensor, dim: int, index: Tensor, value: Any) -> Tensor:
    """``input`` with the slices at ``index`` along ``dim`` set to ``value`` (a number or
    a 0-d tensor); the gradient flows to the other elements, and to ``value`` from the
    filled ones when it is a tensor that requires grad."""
    from dtrain._tensor.ops._util import normalize_dim
    from dtrain._tensor.ops.select import masked_fill, where

    axis = normalize_dim(dim, input.ndim)
    positions = index._array if isinstance(index, Tensor) else np.asarray(index)
    if positions.ndim > 1 or positions.dtype.kind not in "iu":
        raise TypeError(
            f"index_fill: index must be a 1-D integer tensor, got {positions.dtype} of shape "
            f"{positions.shape}"
        )
    xp = get_array_module(input._array)
    size = input.shape[axis] if input.ndim else 1
    positions = xp.asarray(positions)
    # cupy wraps an out-of-range index silently where numpy raises: check on both (on CUDA
    # one host sync, for the one flag).
    if positions.size and bool(xp.any((positions < -size) | (positions >= size))):
        bad = as_numpy(positions)
        bad = bad[(bad < -size) | (bad >= size)]
        raise IndexError(
            f"index_fill: index {int(bad[0])} is out of range for dim {dim} of size {size}"
        )
    mask = xp.zeros(size, dtype=bool)
    mask[positions] = True
    mask = (
        mask.reshape((size,) + (1,) * (input.ndim - axis - 1)) if input.ndim else mask.reshape(())
    )
    if isinstance(value, Tensor) and value.requires_grad and _grad_state.enabled:
        if value.ndim:
            raise RuntimeError(
                f"index_fill: value must be a 0-d tensor or a number, got shape {value.shape}"
            )
        return where(wrap(mask), value.to(input.dtype), input)
    return masked_fill(input, wrap(mask), value)


def index_fill_(tensor: Tensor, dim: int, index: Tensor, value: Any) -> Tensor:
    """In place: ``index_fill``."""
    return _inplace(tensor, lambda t: index_fill(t, dim, index, value), "index_fill_", value)


def fill_diagonal_(tensor: Tensor, fill_value: Any, wrap: bool = False) -> Tensor:
    """In place: set the main diagonal (``i == j == ...``) to ``fill_value``; every dim must
    have the same size beyond 2-D. A tall matrix with ``wrap=True`` restarts the diagonal
    every ``cols + 1`` rows, as PyTorch (and numpy.fill_diagonal)."""
    from dtrain._tensor.ops.select import masked_fill

    if tensor.ndim < 2 or (tensor.ndim > 2 and len(set(tensor.shape)) != 1):
        raise ValueError(
            f"fill_diagonal_: the tensor must be at least 2-D with all dims equal beyond 2-D, "
            f"got shape {tensor.shape}"
        )
    xp = get_array_module(tensor._array)
    mask = xp.zeros(tensor.shape, dtype=bool)  # on the tensor's device: no host copy
    xp.fill_diagonal(mask, True, wrap=wrap)
    return _inplace(
        tensor, lambda t: masked_fill(t, _wrap(mask), fill_value), "fill_diagonal_", fill_value
    )


def lerp(input: Tensor, end: Any, weight: Any) -> Tensor:
    """``input + weight * (end - input)``; ``weight`` a number or a tensor."""
    return input + weight * (end - input)


def lerp_(tensor: Tensor, end: Any, weight: Any) -> Tensor:
    """In place: ``tensor += weight * (end - tensor)`` (an exponential moving average)."""
    return _inplace(tensor, lambda t: lerp(t, end, weight), "lerp_", end, weight)


def addcmul(input: Tensor, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
    """``input + value * tensor1 * tensor2``."""
    return input + value * tensor1 * tensor2 if value != 1 else input + tensor1 * tensor2


def addcdiv(input: Tensor, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
    """``input + value * tensor1 / tensor2``."""
    return input + value * tensor1 / tensor2 if value != 1 else input + tensor1 / tensor2


def addcmul_(tensor: Tensor, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
    """In place: ``tensor += value * tensor1 * tensor2``."""
    return _inplace(
        tensor, lambda t: addcmul(t, tensor1, tensor2, value=value), "addcmul_", tensor1, tensor2
    )


def addcdiv_(tensor: Tensor, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
    """In place: ``tensor += value * tensor1 / tensor2``."""
    return _inplace(
        tensor, lambda t: addcdiv(t, tensor1, tensor2, value=value), "addcdiv_", tensor1, tensor2
    )


def scatter_(
    tensor: Tensor,
    dim: int,
    index: Tensor,
    src: Any = None,
    *,
    value: Any = None,
    reduce: str | None = None,
) -> Tensor:
    """In place: ``scatter``."""
    from dtrain._tensor.ops.scatter import scatter

    return _inplace(
        tensor,
        lambda t: scatter(t, dim, index, src, value=value, reduce=reduce),
        "scatter_",
        src,
    )


def scatter_add_(tensor: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """In place: ``scatter_add``."""
    from dtrain._tensor.ops.scatter import scatter_add

    return _inplace(tensor, lambda t: scatter_add(t, dim, index, src), "scatter_add_", src)


def index_add_(
    tensor: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1
) -> Tensor:
    """In place: ``index_add``."""
    from dtrain._tensor.ops.scatter import index_add

    return _inplace(
        tensor, lambda t: index_add(t, dim, index, source, alpha=alpha), "index_add_", source
    )
