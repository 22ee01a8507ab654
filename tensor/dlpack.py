"""DLPack: zero-copy exchange of tensors with numpy, cupy, PyTorch, JAX and others.

``Tensor.__dlpack__`` hands out the tensor's array through the array's own exporter (numpy's
or cupy's), so the consumer sees the same memory. ``from_dlpack`` imports any object with
``__dlpack__``/``__dlpack_device__`` (or a bare DLPack capsule) through numpy for host
memory and cupy for CUDA memory, chosen by the producer's ``__dlpack_device__()``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import is_cuda_array, require_cupy
from dtrain.runtime.dtypes import SUPPORTED

# DLDeviceType codes (dlpack.h).
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_HOST = (KDL_CPU, KDL_CUDA_HOST)  # numpy reads page-locked host memory too
_CUDA = (KDL_CUDA, KDL_CUDA_MANAGED)


def export(
    tensor: Tensor,
    stream: Any = None,
    max_version: tuple[int, int] | None = None,
    dl_device: tuple[int, int] | None = None,
    copy: bool | None = None,
) -> Any:
    """``tensor``'s DLPack capsule (what ``Tensor.__dlpack__`` returns).

    Raises:
        BufferError: ``tensor`` requires grad (as PyTorch: export ``tensor.detach()``).
    """
    if tensor._requires_grad:
        raise BufferError(
            "__dlpack__: cannot export a tensor that requires grad (the consumer would "
            "bypass autograd); export tensor.detach() instead"
        )
    array = tensor._array
    if not is_cuda_array(array) and stream == -1:
        stream = None  # -1 means "no synchronisation"; host memory has no stream at all
    # Only what the caller gave is passed on, so older exporters without a keyword work.
    options = {
        name: value
        for name, value in (
            ("stream", stream),
            ("max_version", max_version),
            ("dl_device", dl_device),
            ("copy", copy),
        )
        if value is not None
    }
    return array.__dlpack__(**options)


def device(tensor: Tensor) -> tuple[int, int]:
    """``(device_type, device_id)`` as DLPack codes: ``(1, 0)`` on the CPU, ``(2, N)`` on
    ``cuda:N`` (what ``Tensor.__dlpack_device__`` returns)."""
    array = tensor._array
    if is_cuda_array(array):
        return (KDL_CUDA, int(array.device.id))
    return (KDL_CPU, 0)


class _Capsule:
    """A bare capsule dressed as an exporter, so numpy's and cupy's importers accept it."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule
        self.device = _capsule_device(capsule)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device

    def __dlpack__(self, **_: Any) -> Any:
        return self.capsule


_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

# Where DLTensor.device sits: DLTensor starts {void* data; DLDevice device}, at offset 0 of
# DLManagedTensor and after {version, manager_ctx, deleter, flags} in the versioned struct.
_POINTER = ctypes.sizeof(ctypes.c_void_p)
_VERSIONED_HEAD = 8 + 2 * _POINTER + 8  # DLPackVersion, manager_ctx, deleter, uint64 flags
_DEVICE_OFFSET = {b"dltensor": _POINTER, b"dltensor_versioned": _VERSIONED_HEAD + _POINTER}


def _capsule_device(capsule: Any) -> tuple[int, int]:
    name = _get_name(capsule)
    if name not in _DEVICE_OFFSET:
        raise ValueError(
            f"from_dlpack: capsule named {name!r} is not an unused DLPack tensor (a capsule "
            "can be imported only once); export the tensor again"
        )
    address = _get_pointer(capsule, name) + _DEVICE_OFFSET[name]
    pair = (ctypes.c_int32 * 2).from_address(address)
    return (int(pair[0]), int(pair[1]))


def from_dlpack(obj: Any) -> Tensor:
    """A tensor sharing memory with ``obj``: a numpy, cupy, PyTorch or JAX array (anything
    with ``__dlpack__``) or a DLPack capsule. CUDA memory becomes a CUDA tensor.

    Args:
        obj: the producer. It keeps ownership rules of its own: writes through either side
            are seen by both.

    Returns:
        A tensor that does not require grad.

    Raises:
        TypeError: ``obj`` speaks no DLPack, lives on a device dtrain cannot use, or has a
            dtype dtrain does not support.
    """
    if type(obj).__name__ == "PyCapsule":
        obj = _Capsule(obj)
    elif not (hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")):
        raise TypeError(
            f"from_dlpack: {type(obj).__name__} has no __dlpack__/__dlpack_device__; pass a "
            "numpy, cupy, PyTorch or JAX array or a DLPack capsule, or copy plain data with "
            "dtrain.tensor(...)"
        )
    device_type, device_id = obj.__dlpack_device__()
    if device_type in _HOST:
        array = np.from_dlpack(obj)
    elif device_type in _CUDA:
        cupy = require_cupy(f"from_dlpack of a CUDA tensor (device {device_id})")
        with cupy.cuda.Device(int(device_id)):
            array = cupy.from_dlpack(obj)
    else:
        raise TypeError(
            f"from_dlpack: the producer lives on DLPack device type {int(device_type)}; dtrain "
            "imports CPU (1), CUDA (2), CUDA host (3) and CUDA managed (13) memory only; move "
            "it to the CPU or a GPU first"
        )
    if array.dtype not in SUPPORTED:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(
            f"from_dlpack: dtype {array.dtype} is not supported by dtrain; convert it to one "
            f"of {names} on the producer's side first"
        )
    return Tensor(array)


def to_dlpack(tensor: Tensor) -> Any:
    """``tensor``'s DLPack capsule (legacy, unversioned), as ``torch.utils.dlpack.to_dlpack``."""
    return export(tensor)


__all__ = ["device", "export", "from_dlpack", "to_dlpack"]
