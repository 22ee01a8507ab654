"""Tensors from data: ``tensor``, ``as_tensor`` and ``from_numpy``.

``_finish`` (dtype, device and ``requires_grad`` on a new array) serves every creation
module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.default_device import uses_default_device
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.device import Device, to_device
from dtrain.runtime.dtypes import DEFAULT_FLOAT, DEFAULT_INT, SUPPORTED, to_dtype


def _finish(array: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    if dtype is not None:
        array = array.astype(to_dtype(dtype), copy=False)
    if device is not None:
        array = to_device(array, Device(device))
    t = wrap(array)
    if requires_grad:
        t.requires_grad = True
    return t


def _from_data(data: Any, copy: bool, dtype: Any = None) -> Any:
    """An array from Python data, numpy/cupy arrays or tensors, with PyTorch's dtypes (for
    Python data, ``dtype`` when given: 0.05 in float64 is not rounded through float32)."""
    if isinstance(data, Tensor):
        return data._array.copy() if copy else data._array
    if isinstance(data, np.ndarray) or is_cuda_array(data):
        return data.copy() if copy else data
    if isinstance(data, np.generic):
        return np.array(data)
    try:
        array = np.array(data)
    except ValueError as exc:
        raise ValueError(f"cannot make a tensor from {data!r}: {exc}") from None
    if dtype is not None and array.dtype.kind in "biuf":
        return array.astype(to_dtype(dtype), copy=False)
    if array.dtype == np.float64:
        array = array.astype(DEFAULT_FLOAT)  # Python floats default to float32
    elif array.dtype.kind in "iu":
        array = array.astype(DEFAULT_INT)
    if array.dtype not in SUPPORTED:
        raise TypeError(
            f"cannot make a tensor from {type(data).__name__} data of numpy dtype {array.dtype}; "
            "use numbers or bools (nested lists of equal length)"
        )
    return array


@uses_default_device
def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (numbers, nested lists, numpy arrays)."""
    return _finish(_from_data(data, copy=True, dtype=dtype), dtype, device, requires_grad)


@uses_default_device
def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like ``tensor`` but shares memory with a numpy array or tensor when it can."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return _finish(_from_data(data, copy=False, dtype=dtype), dtype, device, False)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array``, keeping its dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    to_dtype(array.dtype)  # refuses unsupported dtypes with a clear message
    return wrap(array)


__all__ = [
    "as_tensor",
    "from_numpy",
    "tensor",
]
