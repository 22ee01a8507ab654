"""Devices: ``"cpu"``, ``"cuda"`` and ``"cuda:N"``, as PyTorch spells them."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array, require_cupy
from dtrain.runtime.device_selection import (
    current_cuda_index,
    missing_device_message,
    select_cuda_device,
    selected_cuda_device,
    use_selected_device,
)


class Device:
    """A place where arrays live: ``Device("cpu")``, ``Device("cuda:1")``."""

    __slots__ = ("index", "type")

    def __init__(self, spec: str | int | Device, index: int | None = None) -> None:
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            if index is not None:
                raise TypeError(f"Device({spec}, {index}): give the index once: Device({spec})")
            if spec < 0:
                raise ValueError(f"device {spec}: a CUDA device index must not be negative")
            self.type, self.index = "cuda", int(spec)  # as PyTorch: an int is a CUDA index
            return
        if not isinstance(spec, str):
            raise TypeError(
                f"device must be a string such as 'cpu' or 'cuda:0', or a CUDA index, got {spec!r}"
            )
        kind, _, number = spec.partition(":")
        if kind not in ("cpu", "cuda") or (number and not number.isdigit()):
            raise ValueError(
                f"unknown device {spec!r}; use 'cpu', 'cuda' or 'cuda:N' with N a GPU index"
            )
        if kind == "cpu" and (number or index is not None):
            raise ValueError(f"device {spec!r}: the CPU has no index; use 'cpu'")
        self.type = kind
        self.index = int(number) if number else index
        if kind == "cuda" and self.index is None:
            self.index = current_cuda_index()  # the process's GPU (device_selection.py)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Device(other)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"device(type='{self.type}'" + (
            ")" if self.index is None else f", index={self.index})"
        )


CPU = Device("cpu")


def cuda_device(device: int | str | Device | None) -> Device:
    """The GPU ``.cuda(device)`` names: the process's for None, else ``device``, which
    must be a CUDA one (PyTorch refuses ``.cuda("cpu")`` too)."""
    chosen = Device("cuda") if device is None else Device(device)
    if chosen.type != "cuda":
        raise ValueError(f"cuda({device!r}): name a CUDA device (an index or 'cuda:N')")
    return chosen


def device_of(array: Any) -> Device:
    """The device that holds ``array``."""
    if is_cuda_array(array):
        return Device("cuda", array.device.id)
    return CPU


def to_device(array: Any, device: Device) -> Any:
    """Return ``array`` on ``device``, copying only when it lives elsewhere."""
    if device.type == "cpu":
        return array.get() if is_cuda_array(array) else array
    if is_cuda_array(array) and array.device.id == device.index:
        return array
    cupy = require_cupy(f"device '{device}'")
    with cuda_context(device):
        return cupy.asarray(array)


def cuda_context(device: Device) -> Any:
    """``cupy.cuda.Device`` of a CUDA ``device`` to place an array on, checked as
    ``checked_cuda_device``; the first placement selects the process's GPU."""
    cupy, context = checked_cuda_device(device)
    if selected_cuda_device() is None:
        select_cuda_device(device.index, by_placement=True)
    else:
        use_selected_device(cupy)  # this thread may not have made it current yet
    return context


def checked_cuda_device(device: Device) -> tuple[Any, Any]:
    """cupy and the ``cupy.cuda.Device`` of a CUDA ``device``: an index this process does
    not see is an error that says what it sees (and, under ``dtrain launch``, its own)."""
    cupy = require_cupy(f"device '{device}'")
    count = cupy.cuda.runtime.getDeviceCount()
    if device.index >= count:
        raise RuntimeError(missing_device_message(str(device), count))
    return cupy, cupy.cuda.Device(device.index)


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of ``array`` wherever it lives."""
    return array.get() if is_cuda_array(array) else np.asarray(array)
