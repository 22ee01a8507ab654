"""In-place ops (``add_``, ``x[i] = v`` …): they change a tensor's memory and bump its
version counter, so a backward that needs the old values refuses to run.

While autograd records, an in-place op on a tensor in the graph is recorded as its
out-of-place twin on a copy, and the tensor takes the result and the new history. A leaf
that requires grad may only be changed under ``no_grad`` (as optimizers do), as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.ops.arithmetic import add, div, mul, sub
from dtrain._tensor.ops.copy import clone
from dtrain._tensor.ops.indexing import IndexPut, convert_key
from dtrain._tensor.ops.select import clamp
from dtrain._tensor.tensor import Tensor, rebase
from dtrain.runtime.backend import get_array_module


def _records(tensor: Tensor, *others: Any) -> bool:
    if not _grad_state.enabled:
        return False
    return tensor.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in others)


def _check_target(tensor: Tensor, name: str) -> None:
    if tensor._requires_grad and tensor.grad_fn is None:
        raise RuntimeError(
            f"{name}: a leaf tensor that requires grad cannot be changed in place while "
            "autograd records, or its gradient would be wrong. Do it inside "
            "`with dtrain.no_grad():` (as optimizers do), or use the out-of-place form"
        )
    if tensor._base is not None:
        raise RuntimeError(
            f"{name}: changing a view of another tensor in place while autograd records is "
            "not supported; change the base tensor, or use the out-of-place form"
        )


def _write(tensor: Tensor, array: Any, name: str) -> Tensor:
    if array.shape != tensor._array.shape:
        raise RuntimeError(
            f"{name}: the result has shape {array.shape} but the tensor has "
            f"{tensor._array.shape}; an in-place op cannot change a tensor's shape"
        )
    tensor._array[...] = array
    tensor._version[0] += 1
    return tensor


def _record(tensor: Tensor, compute: Callable[[Tensor], Tensor], name: str) -> Tensor:
    _check_target(tensor, name)
    result = compute(clone(tensor))
    _write(tensor, result._array, name)
    rebase(tensor, result.grad_fn)
    tensor._requires_grad = result._requires_grad
    return tensor


def _apply_ufunc(tensor: Tensor, ufunc: str, operand: Any, name: str) -> Tensor:
    array = tensor._array
    xp = get_array_module(array)
    try:
        getattr(xp, ufunc)(array, operand, out=array, casting="same_kind")
    except ValueError:
        if not array.flags.writeable:  # numpy's read-only error would be misreported below
            raise RuntimeError(
                f"{name}: this tensor is an expanded view whose elements share memory; "
                "call .clone() on it before changing it in place"
            ) from None
        shape = getattr(operand, "shape", ())
        raise RuntimeError(
            f"{name}: an operand of shape {shape} does not broadcast to the tensor's shape "
            f"{array.shape}; an in-place op cannot change a tensor's shape"
        ) from None
    except TypeError:  # PyTorch's error here is a RuntimeError
        raise RuntimeError(
            f"{name}: cannot store a {getattr(operand, 'dtype', type(operand).__name__)} "
            f"result in a tensor of dtype {array.dtype} in place; convert the tensor first "
            "(e.g. x = x.float())"
        ) from None
    tensor._version[0] += 1
    return tensor


def _operand(value: Any) -> Any:
    return value._array if isinstance(value, Tensor) else value


def add_(tensor: Tensor, other: Any, alpha: float = 1) -> Tensor:
    """In place: ``tensor += alpha * other``."""
    if _records(tensor, other):
        return _record(tensor, lambda t: add(t, other, alpha=alpha), "add_")
    operand = _operand(other)
    return _apply_ufunc(tensor, "add", operand if alpha == 1 else operand * alpha, "add_")


def sub_(tensor: Tensor, other: Any, alpha: float = 1) -> Tensor:
    """In place: ``tensor -= alpha * other``."""
    if _records(tensor, other):
        return _record(tensor, lambda t: sub(t, other, alpha=alpha), "sub_")
    operand = _operand(other)
    return _apply_ufunc(tensor, "subtract", operand if alpha == 1 else operand * alpha, "sub_")


def mul_(tensor: Tensor, other: Any) -> Tensor:
    """In place: ``tensor *= other``."""
    if _records(tensor, other):
        return _record(tensor, lambda t: mul(t, other), "mul_")
    return _apply_ufunc(tensor, "multiply", _operand(other), "mul_")


def div_(tensor: Tensor, other: Any) -> Tensor:
    """In place: ``tensor /= other``."""
    if _records(tensor, other):
        return _record(tensor, lambda t: div(t, other), "div_")
    return _apply_ufunc(tensor, "true_divide", _operand(other), "div_")


def clamp_(tensor: Tensor, min: Any = None, max: Any = None) -> Tensor:
    """In place: limit values to ``[min, max]``."""
    if _records(tensor, min, max):
        return _record(tensor, lambda t: clamp(t, min, max), "clamp_")
    if min is None and max is None:
        raise ValueError("clamp_: give at least one of min and max")
    array = tensor._array
    get_array_module(array).clip(array, _operand(min), _operand(max), out=array)
    tensor._version[0] += 1
    return tensor


def _overwrite(tensor: Tensor, name: str) -> None:
    """Writing values that do not depend on the old ones: the tensor leaves the graph."""
    if _grad_state.enabled and tensor._requires_grad:
        _check_target(tensor, name)
        tensor.grad_fn = None
        tensor._requires_grad = False


def fill_(tensor: Tensor, value: Any) -> Tensor:
    """In place: set every element to ``value``."""
    _overwrite(tensor, "fill_")
    tensor._array.fill(value.item() if isinstance(value, Tensor) else value)
    tensor._version[0] += 1
    return tensor


def zero_(tensor: Tensor) -> Tensor:
    """In place: set every element to 0."""
    return fill_(tensor, 0)


def copy_(tensor: Tensor, source: Any) -> Tensor:
    """In place: copy ``source``'s values (broadcast, cast and moved as needed)."""
    if _records(tensor, source):
        if not isinstance(source, Tensor):  # an array or a number: the recorded path needs .to
            from dtrain._tensor.creation import as_tensor

            source = as_tensor(source, device=tensor.device)
        return _record(tensor, lambda t: source.to(t.dtype).expand(*t.shape).clone(), "copy_")
    array = tensor._array
    values = _operand(source)
    xp = get_array_module(array)
    if xp is not np:
        values = xp.asarray(values)
    elif hasattr(values, "get"):  # a cupy array into a numpy tensor
        values = values.get()
    try:
        xp.copyto(array, values, casting="unsafe")
    except ValueError:
        raise RuntimeError(
            f"copy_: source of shape {getattr(values, 'shape', ())} does not broadcast to the "
            f"tensor's shape {array.shape}"
        ) from None
    tensor._version[0] += 1
    return tensor


def fill_random_(tensor: Tensor, values: Any, name: str) -> Tensor:
    """In place: store freshly sampled ``values`` (``normal_``, ``uniform_``)."""
    _overwrite(tensor, name)
    tensor._array[...] = values
    tensor._version[0] += 1
    return tensor


def setitem(tensor: Tensor, key: Any, value: Any) -> None:
    """``tensor[key] = value``, recorded by autograd when either side is in the graph."""
    key, _ = convert_key(key)
    # An integer or bool tensor holds no gradient: values written into it leave the graph.
    if _records(tensor, value) and tensor._array.dtype.kind in "fc":
        _check_target(tensor, "index assignment")
        if isinstance(value, Tensor) and value._array.dtype != tensor._array.dtype:
            value = value.to(tensor._array.dtype)
        result = IndexPut.apply(tensor, value, key=key)
        _write(tensor, result._array, "index assignment")
        rebase(tensor, result.grad_fn)
        tensor._requires_grad = True
        return
    try:
        tensor._array[key] = _operand(value)
    except (ValueError, IndexError) as exc:
        raise type(exc)(
            f"cannot assign a value of shape {getattr(_operand(value), 'shape', ())} to "
            f"index {key!r} of a tensor of shape {tensor._array.shape}: {exc}"
        ) from None
    tensor._version[0] += 1
