"""Devices: ``"cpu"``, ``"cuda"`` and ``"cuda:N"``, as PyTorch spells them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array, loaded_cupy, require_cupy


class Device:
    """A place where arrays live: ``Device("cpu")``, ``Device("cuda:1")``."""

    __slots__ = ("index", "type")

    def __init__(self, spec: str | int | Device, index: int | None = None) -> None:
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
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
            self.index = current_cuda_index()  # as PyTorch: "cuda" is the current device

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

#: The CUDA device this process chose (``select_cuda_device``); None until it chooses.
_selected: int | None = None


def current_cuda_index() -> int:
    """The current CUDA device's index (0 before cupy is loaded: nothing chose another)."""
    cupy = loaded_cupy()
    return 0 if cupy is None else cupy.cuda.runtime.getDevice()


def select_cuda_device(index: int) -> None:
    """Make ``cuda:index`` this process's current device, for good.

    cupy runs every kernel, cuBLAS call and NCCL communicator on the *current* device,
    whatever device the operands live on, so a rank must make its own GPU current or its
    work lands on GPU 0 (through peer access, or an error). A process selects once:
    ``dt.cuda.set_device``, else its first placement on a GPU, else the nccl group, which
    takes ``local_device()``.
    """
    global _selected
    require_cupy(f"device 'cuda:{index}'").cuda.Device(index).use()
    _selected = index


def selected_cuda_device() -> int | None:
    """The index ``select_cuda_device`` chose, or None while nothing has."""
    return _selected


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
    """``cupy.cuda.Device`` of a CUDA ``device``, checked first: an index this process does
    not see is an error that says what it sees (and, under ``dtrain launch``, why)."""
    cupy = require_cupy(f"device '{device}'")
    count = cupy.cuda.runtime.getDeviceCount()
    if device.index >= count:
        raise RuntimeError(_missing_device(device, count))
    if _selected is None:  # the first placement on a GPU picks the process's device
        select_cuda_device(device.index)
    return cupy.cuda.Device(device.index)


def _missing_device(device: Device, count: int) -> str:
    message = (
        f"device '{device}' does not exist: this process sees {count} CUDA device(s); pick "
        "an index below that"
    )
    if os.environ.get("DTRAIN_DEVICE"):
        # a rank started by dtrain launch --gpus-per-node (or a user's setting)
        message += (
            f"; this rank's device is {os.environ['DTRAIN_DEVICE']} (DTRAIN_DEVICE, "
            "dtrain.parallel.local_device())"
        )
    return message


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of ``array`` wherever it lives."""
    return array.get() if is_cuda_array(array) else np.asarray(array)
