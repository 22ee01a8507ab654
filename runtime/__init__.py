"""Devices, the numpy|cupy array backend, dtypes and random state (no tensor code here)."""

from dtrain.runtime.backend import cupy_module, get_array_module, is_cuda_array, require_cupy
from dtrain.runtime.device import CPU, Device, as_numpy, device_of, to_device
from dtrain.runtime.random import Generator, default_generator, initial_seed, manual_seed

__all__ = [
    "CPU",
    "Device",
    "Generator",
    "as_numpy",
    "cupy_module",
    "default_generator",
    "device_of",
    "get_array_module",
    "initial_seed",
    "is_cuda_array",
    "manual_seed",
    "require_cupy",
    "to_device",
]
