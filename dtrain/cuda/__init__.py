"""``dt.cuda``: the GPU, as ``torch.cuda`` names it.

Everything here works on a machine without CUDA too: ``is_available()`` is then False,
``device_count()`` 0, ``synchronize()`` does nothing, and capturing a graph raises an error
that says what is missing.
"""

from __future__ import annotations

import numpy as np

from dtrain.cuda import amp
from dtrain.runtime.backend import cupy_module
from dtrain.runtime.cuda_graph import CUDAGraph, graph, is_current_stream_capturing, synchronize
from dtrain.runtime.device import Device, select_cuda_device


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


def set_device(device: int | str | Device) -> None:
    """Make ``device`` (an index, ``"cuda:N"`` or a Device) this process's current GPU, as
    ``torch.cuda.set_device``: kernels, cuBLAS and the nccl group run there."""
    if cupy_module() is None:
        raise RuntimeError(f"set_device({device!r}): CUDA is not available here")
    chosen = Device(device)
    if chosen.type != "cuda":
        raise ValueError(f"set_device({device!r}): name a CUDA device, e.g. 0 or 'cuda:0'")
    select_cuda_device(chosen.index)


def memory_allocated() -> int:
    """Bytes of GPU memory held by live arrays of cupy's default pool."""
    cupy = cupy_module()
    return 0 if cupy is None else cupy.get_default_memory_pool().used_bytes()


def memory_reserved() -> int:
    """Bytes of GPU memory cupy's default pool holds, in use or cached for reuse."""
    cupy = cupy_module()
    return 0 if cupy is None else cupy.get_default_memory_pool().total_bytes()


def empty_cache() -> None:
    """Give the GPU memory cached by cupy's pools (free blocks) back to the driver."""
    cupy = cupy_module()
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()


def manual_seed(seed: int) -> None:
    """Seed the GPU's random stream (cupy's); does nothing without CUDA, as PyTorch's."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {seed!r}")
    cupy = cupy_module()
    if cupy is not None:
        cupy.random.seed(int(seed) % 2**32)


def manual_seed_all(seed: int) -> None:
    """``manual_seed``: dtrain drives one GPU per process, so "all" is the current one."""
    manual_seed(seed)


def is_bf16_supported() -> bool:
    """False: cupy has no bfloat16, so dtrain's half precision on CUDA is float16
    (scripts that pick bfloat16 when supported fall back to float16 + ``GradScaler``)."""
    return False


def get_device_name(device: int | None = None) -> str:
    """The CUDA device's name (``"NVIDIA H100 80GB HBM3"``)."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError("get_device_name: CUDA is not available here; see dt.cuda.is_available")
    index = cupy.cuda.runtime.getDevice() if device is None else int(device)
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


__all__ = [
    "CUDAGraph",
    "amp",
    "current_device",
    "device_count",
    "empty_cache",
    "get_device_name",
    "graph",
    "is_available",
    "is_bf16_supported",
    "is_current_stream_capturing",
    "manual_seed",
    "manual_seed_all",
    "memory_allocated",
    "memory_reserved",
    "set_device",
    "synchronize",
]
