"""``dt.cuda``: the GPU, as ``torch.cuda`` names it.

Everything here works on a machine without CUDA too: ``is_available()`` is then False,
``device_count()`` 0, ``synchronize()`` does nothing, and capturing a graph raises an error
that says what is missing.
"""

from __future__ import annotations

from dtrain.runtime.backend import cupy_module
from dtrain.runtime.cuda_graph import CUDAGraph, graph, is_current_stream_capturing, synchronize


def is_available() -> bool:
    """True when cupy is installed and sees a CUDA device."""
    return cupy_module() is not None


def device_count() -> int:
    """How many CUDA devices cupy sees (0 without CUDA)."""
    cupy = cupy_module()
    return 0 if cupy is None else cupy.cuda.runtime.getDeviceCount()


def current_device() -> int:
    """The index of the current CUDA device."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError("current_device: CUDA is not available here; see dt.cuda.is_available")
    return cupy.cuda.runtime.getDevice()


def set_device(device: int) -> None:
    """Make ``cuda:device`` the current device of this thread."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError(f"set_device({device}): CUDA is not available here")
    cupy.cuda.Device(device).use()


def memory_allocated() -> int:
    """Bytes of GPU memory held by live arrays of cupy's default pool."""
    cupy = cupy_module()
    return 0 if cupy is None else cupy.get_default_memory_pool().used_bytes()


__all__ = [
    "CUDAGraph",
    "current_device",
    "device_count",
    "graph",
    "is_available",
    "is_current_stream_capturing",
    "memory_allocated",
    "set_device",
    "synchronize",
]
