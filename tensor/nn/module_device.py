"""``Module.to``'s arguments (PyTorch's call forms: a device, a dtype, a tensor, an int
device index) and the move of one tensor in place."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import Device, to_device
from dtrain.runtime.dtypes import to_dtype


def to_arguments(args: tuple, kwargs: dict) -> tuple[Device | None, np.dtype | None]:
    """``Module.to``'s device and dtype from PyTorch's call forms."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)  # copies here are synchronous anyway
    kwargs.pop("memory_format", None)  # arrays are row-major; there is no other layout
    if kwargs:
        raise TypeError(f"Module.to() got unexpected arguments {sorted(kwargs)}")
    if len(args) > 3:
        raise TypeError(f"Module.to() takes at most 3 positional arguments, got {len(args)}")
    for position, arg in enumerate(args):
        if isinstance(arg, bool) and position > 0:
            continue  # non_blocking
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, str) and arg.partition(":")[0] not in ("cpu", "cuda"):
            try:
                dtype = to_dtype(arg)
            except TypeError:
                raise ValueError(
                    f"Module.to({arg!r}): {arg!r} is neither a device ('cpu', 'cuda', "
                    "'cuda:N') nor a dtype ('float32', 'float64', 'float16')"
                ) from None
        elif isinstance(arg, (str, Device, int, np.integer)) and not isinstance(arg, bool):
            device = arg
        else:
            dtype = arg
    return _as_device(device), None if dtype is None else to_dtype(dtype)


def _as_device(device: Any) -> Device | None:
    return None if device is None else Device(device)  # an int is a CUDA index, as PyTorch


def move_in_place(tensor: Tensor, device: Device | None, dtype: Any) -> None:
    array = tensor._array
    if device is not None:
        array = to_device(array, device)
    if dtype is not None and array.dtype.kind == "f":
        array = array.astype(dtype, copy=False)
    tensor._array = array
