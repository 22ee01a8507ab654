"""``dt.cuda``: the GPU, as ``torch.cuda`` names it.

Everything here works on a machine without CUDA too: ``is_available()`` is then False,
``device_count()`` 0, ``synchronize()`` does nothing, and capturing a graph raises an error
that says what is missing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.cuda import amp
from dtrain.runtime.backend import cupy_module
from dtrain.runtime.cuda_graph import CUDAGraph, graph, is_current_stream_capturing
from dtrain.runtime.cuda_graph import synchronize as _synchronize_current
from dtrain.runtime.device import Device, checked_cuda_device
from dtrain.runtime.device_selection import current_cuda_index, select_cuda_device
from dtrain.runtime.random import seed_cuda


def is_available() -> bool:
    """True when cupy is installed and sees a CUDA device."""
    return cupy_module() is not None


def device_count() -> int:
    """How many CUDA devices cupy sees (0 without CUDA)."""
    cupy = cupy_module()
    return 0 if cupy is None else cupy.cuda.runtime.getDeviceCount()


def current_device() -> int:
    """The index of the process's GPU: the one it selected, else the rank's own
    (``local_device()``), as ``"cuda"`` means (see docs/gpu.md, "Devices")."""
    if cupy_module() is None:
        raise RuntimeError("current_device: CUDA is not available here; see dt.cuda.is_available")
    return current_cuda_index()


def set_device(device: int | str | Device) -> None:
    """Make ``device`` (an index, ``"cuda:N"`` or a Device) this process's GPU, as
    ``torch.cuda.set_device``: kernels, cuBLAS and the nccl group run there. A negative
    index does nothing, as PyTorch's."""
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool) and device < 0:
        return
    if cupy_module() is None:
        raise RuntimeError(f"set_device({device!r}): CUDA is not available here")
    chosen = Device(device)
    if chosen.type != "cuda":
        raise ValueError(f"set_device({device!r}): name a CUDA device, e.g. 0 or 'cuda:0'")
    select_cuda_device(chosen.index)


def _on(device: int | str | Device | None) -> Any:
    """``cupy.cuda.Device`` of ``device`` (None: the process's GPU), checked as set_device."""
    chosen = Device("cuda") if device is None else Device(device)
    if chosen.type != "cuda":
        raise ValueError(f"{device!r}: name a CUDA device, e.g. 0 or 'cuda:0'")
    return checked_cuda_device(chosen)[1]  # asks about it: selects nothing


def synchronize(device: int | str | Device | None = None) -> None:
    """Wait for all work on a GPU (the process's by default); no-op without CUDA."""
    cupy = cupy_module()
    if cupy is not None:
        with _on(device):
            _synchronize_current()


def memory_allocated(device: int | str | Device | None = None) -> int:
    """Bytes of GPU memory held by live arrays of cupy's default pool on ``device``."""
    cupy = cupy_module()
    if cupy is None:
        return 0
    with _on(device):
        return cupy.get_default_memory_pool().used_bytes()


def memory_reserved(device: int | str | Device | None = None) -> int:
    """Bytes of GPU memory cupy's default pool holds on ``device``, in use or cached."""
    cupy = cupy_module()
    if cupy is None:
        return 0
    with _on(device):
        return cupy.get_default_memory_pool().total_bytes()


def empty_cache() -> None:
    """Give the GPU memory cached by cupy's pools (free blocks) back to the driver."""
    cupy = cupy_module()
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()


def manual_seed(seed: int) -> None:
    """Seed the GPU's random stream (cupy's): the process's GPU, now or once it selects
    one (so seeding first, then ``set_device``, seeds the right GPU); nothing without CUDA."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {seed!r}")
    seed_cuda(int(seed))


def manual_seed_all(seed: int) -> None:
    """``manual_seed``: dtrain drives one GPU per process, so "all" is the process's."""
    manual_seed(seed)


def is_bf16_supported() -> bool:
    """False: cupy has no bfloat16, so dtrain's half precision on CUDA is float16
    (scripts that pick bfloat16 when supported fall back to float16 + ``GradScaler``)."""
    return False


def get_device_name(device: int | str | Device | None = None) -> str:
    """A CUDA device's name (``"NVIDIA H100 80GB HBM3"``; the process's GPU by default)."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError("get_device_name: CUDA is not available here; see dt.cuda.is_available")
    index = _on(device).id
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
