"""Filled tensors and ranges: ``zeros``, ``ones``, ``empty``, ``full``, their ``*_like``
forms, ``eye``, ``arange`` and ``linspace``; and the size arguments they take.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.creation_data import _finish
from dtrain._tensor.default_device import uses_default_device
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import require_cupy
from dtrain.runtime.device import Device, cuda_context, device_of
from dtrain.runtime.dtypes import DEFAULT_FLOAT, DEFAULT_INT, to_dtype


def _shape(size: Sequence) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    shape = tuple(size)
    for s in shape:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"sizes must be non-negative ints, got {list(shape)}")
    return shape


def size_argument(value: Any, name: str, where: str, minimum: int = 0) -> int:
    """A layer's size argument (``in_features``, ``groups`` ...) as a Python int.

    Takes any integer, numpy's included (``np.prod(shape)``); a bool is refused, as
    ``Linear(2, True)`` is a mistake for ``Linear(2, 1, bias=True)``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: it is below ``minimum``.
    """
    try:
        size = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        size = None
    if size is None:
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if size < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {size}")
    return size


def _sizes(sizes: tuple, size: Any) -> tuple:
    """The shape from ``f(2, 3)``, ``f((2, 3))`` or ``f(size=(2, 3))``."""
    if size is None:
        return sizes
    if sizes:
        raise TypeError(f"give the sizes {sizes} or size={size!r}, not both")
    return (tuple(size) if isinstance(size, (tuple, list)) else (size,),)


def _xp(device: Any) -> Any:
    if device is not None and Device(device).type == "cuda":
        return require_cupy(f"device '{device}'")
    return np


def _filled(
    kind: str, size: Sequence, dtype: Any, device: Any, requires_grad: bool, value: Any = 0
) -> Tensor:
    shape = _shape(size)
    dtype = DEFAULT_FLOAT if dtype is None else to_dtype(dtype)
    xp = _xp(device)
    if device is not None and Device(device).type == "cuda":
        with cuda_context(Device(device)):
            array = _fill(xp, kind, shape, dtype, value)
    else:
        array = _fill(xp, kind, shape, dtype, value)
    return _finish(array, None, None, requires_grad)


def _fill(xp: Any, kind: str, shape: tuple, dtype: Any, value: Any) -> Any:
    if kind == "empty":
        return xp.empty(shape, dtype=dtype)
    return xp.full(shape, value, dtype=dtype)


@uses_default_device
def zeros(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of zeros: ``zeros(2, 3)``, ``zeros((2, 3))`` or ``zeros(size=(2, 3))``."""
    return _filled("full", _sizes(sizes, size), dtype, device, requires_grad, 0)


@uses_default_device
def ones(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ones."""
    return _filled("full", _sizes(sizes, size), dtype, device, requires_grad, 1)


@uses_default_device
def empty(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor whose values are whatever the memory held."""
    return _filled("empty", _sizes(sizes, size), dtype, device, requires_grad)


@uses_default_device
def full(
    size: Sequence,
    fill_value: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor filled with ``fill_value`` (its dtype follows the value, as in PyTorch)."""
    if dtype is None:
        dtype = (
            np.bool_
            if isinstance(fill_value, bool)
            else (DEFAULT_INT if isinstance(fill_value, int) else DEFAULT_FLOAT)
        )
    fill_value = check_fill_value(fill_value, to_dtype(dtype), "full")
    return _filled("full", (tuple(size),), dtype, device, requires_grad, fill_value)


# The next wider dtype, named in the error for a value that overflows one.
_WIDER = {"int8": "int16", "uint8": "int16", "int16": "int32", "int32": "int64"}
_WIDER.update({"float16": "float32", "float32": "float64"})


def check_fill_value(value: Any, dtype: Any, where: str) -> Any:
    """``value`` as ``full`` / ``fill_`` store it in ``dtype``, refusing a finite number
    the dtype cannot hold, as PyTorch does. An integer dtype takes a float that truncates
    into its range; an unsigned one also takes a negative int down to ``-max``, wrapped
    (``-1`` is 255 in uint8, as PyTorch); float dtypes take inf and nan. A tensor value is
    not checked (PyTorch casts it).

    Returns:
        The value to store (``value`` itself, or wrapped for an unsigned dtype).

    Raises:
        RuntimeError: ``value`` overflows ``dtype``; the message names both and the fix.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        return value
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            return value
        low, high = float(np.finfo(dtype).min), float(np.finfo(dtype).max)
        try:
            fits = low <= float(value) <= high
        except OverflowError:  # an int past float64's range
            fits = False
        held = f"{low:g} to {high:g}"
    elif dtype.kind in "iu":
        low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        held = f"{low} to {high}"
        if isinstance(value, (float, np.floating)):
            fits = math.isfinite(value) and low <= value <= high
        elif dtype.kind == "u" and -high <= int(value) < 0:
            return int(value) % (high + 1)
        else:
            fits = low <= int(value) <= high
    else:
        return value
    if not fits:
        text = repr(value) if len(repr(value)) <= 24 else f"{str(value)[:12]}... (an int)"
        wider = _WIDER.get(dtype.name)
        raise RuntimeError(
            f"{where}: value {text} cannot be converted to type {dtype.name} without "
            f"overflow ({dtype.name} holds {held}); pass a value in that range"
            + (f" or a wider dtype such as {wider}" if wider else "")
        )
    return value


def _like(t: Tensor, dtype: Any, device: Any) -> tuple:
    return (t.dtype if dtype is None else dtype), (
        device_of(t._array) if device is None else device
    )


def zeros_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Zeros with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return zeros(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Ones with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return ones(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Uninitialised memory with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return empty(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(
    input: Tensor,
    fill_value: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``fill_value`` everywhere, with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return full(input.shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


@uses_default_device
def eye(
    n: int,
    m: int | None = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """The ``n × m`` identity matrix."""
    array = _xp(device).eye(n, m, dtype=DEFAULT_FLOAT if dtype is None else to_dtype(dtype))
    return _finish(array, None, device, requires_grad)


@uses_default_device
def arange(
    start: float,
    end: float | None = None,
    step: float = 1,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``[start, end)`` in steps; int64 when every argument is an int, else float32."""
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = DEFAULT_INT if integral else DEFAULT_FLOAT
    array = _xp(device).arange(
        start, end, step, dtype=np.float64 if to_dtype(dtype).kind == "f" else None
    )
    return _finish(array, dtype, device, requires_grad)


@uses_default_device
def linspace(
    start: float,
    end: float,
    steps: int,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if steps < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {steps}")
    array = _xp(device).linspace(start, end, steps)
    return _finish(array, DEFAULT_FLOAT if dtype is None else dtype, device, requires_grad)


__all__ = [
    "arange",
    "check_fill_value",
    "empty",
    "empty_like",
    "eye",
    "full",
    "full_like",
    "linspace",
    "ones",
    "ones_like",
    "size_argument",
    "zeros",
    "zeros_like",
]
