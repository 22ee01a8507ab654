"""The array backend: numpy on the CPU, cupy on CUDA devices.

This is the only module in dtrain that imports cupy, and it does so lazily, so a CPU-only
machine never needs it installed.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import numpy as np

_cupy: types.ModuleType | None = None
_cupy_error: str | None = None


def cupy_module() -> types.ModuleType | None:
    """Return the cupy module, or None when cupy or a usable GPU is missing (checked once)."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("cupy found no CUDA device")
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError (no driver), RuntimeError
            _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy


def loaded_cupy() -> types.ModuleType | None:
    """cupy when an earlier call loaded it, else None; never imports it."""
    return _cupy


def require_cupy(what: str) -> types.ModuleType:
    """Return cupy or raise a RuntimeError naming what is missing and how to get it."""
    cupy = cupy_module()
    if cupy is None:
        raise RuntimeError(
            f"{what} needs CUDA, which is not available here ({_cupy_error}). Install the "
            "'cuda' extra (pip install 'dtrain[cuda]') on a machine with an NVIDIA driver and "
            "GPU, or keep the work on device='cpu'."
        )
    return cupy


_is_cuda_type: dict[type, bool] = {np.ndarray: False}  # asked ~600 times a GPT step


def is_cuda_array(array: Any) -> bool:
    """True for a cupy array; never imports cupy to find out."""
    kind = type(array)
    found = _is_cuda_type.get(kind)
    if found is None:
        found = _is_cuda_type[kind] = kind.__module__.startswith("cupy")
    return found


def device_id(array: Any) -> int:
    """The GPU a cupy array lives on, read from its memory pointer: ``array.device.id``
    makes a Device object each time (the optimizers ask per parameter, every step)."""
    return array.data.device_id


_NO_SWITCH = contextlib.nullcontext()
_gpu_count: tuple[Any, int] | None = None  # (the cupy module asked, its device count)


def on_device_of(array: Any) -> contextlib.AbstractContextManager:
    """``with on_device_of(a):`` makes ``a``'s GPU current for the block, as ``with a.device:``
    does, but switches nothing (two CUDA calls and a Device object saved, per op) where that
    GPU is current already: always so where the process sees one GPU."""
    global _gpu_count
    cupy = _cupy
    if cupy is None:  # a cupy array from outside, before dtrain loaded cupy
        return array.device
    if _gpu_count is None or _gpu_count[0] is not cupy:
        _gpu_count = (cupy, cupy.cuda.runtime.getDeviceCount())
    if _gpu_count[1] == 1 or cupy.cuda.runtime.getDevice() == array.data.device_id:
        return _NO_SWITCH
    return array.device


def get_array_module(*arrays: Any) -> types.ModuleType:
    """Return numpy or cupy, whichever owns the given arrays (numpy when none is a cupy array)."""
    for array in arrays:
        if is_cuda_array(array):
            return require_cupy("a cupy array")
    return np


def data_pointer(array: Any) -> int:
    """The address of ``array``'s first element (a numpy or cupy array, views included)."""
    if is_cuda_array(array):
        return array.data.ptr
    return array.__array_interface__["data"][0]


def may_share_memory(a: Any, b: Any) -> bool:
    """Whether two arrays may overlap: numpy's bounds check on the CPU; on CUDA, whether they
    lie in one allocation. cupy's own bounds check costs host time, and the autograd engine
    asks about every view in a step (~140 times in a small GPT's); one allocation is the
    conservative answer for views of one array, and exact for their usual cases: a view and
    its base, or arrays that do not share at all."""
    if is_cuda_array(a):
        return is_cuda_array(b) and a.data.mem is b.data.mem
    if is_cuda_array(b):
        return False
    return bool(np.may_share_memory(a, b))


def scatter_add(target: Any, indices: Any, values: Any) -> None:
    """``target[indices] += values`` with repeated indices summed (numpy's ``add.at``)."""
    if is_cuda_array(target):
        import cupyx

        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)
