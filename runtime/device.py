"""Devices: ``"cpu"``, ``"cuda"`` and ``"cuda:N"``, as PyTorch spells them."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array, require_cupy


class Device:
    """A place where arrays live: ``Device("cpu")``, ``Device("cuda:1")``."""

    __slots__ = ("index", "type")

    def __init__(self, spec: str | Device, index: int | None = None) -> None:
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {spec!r}")
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
            self.index = 0

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


def device_of(array: Any) -> Device:
    """The device that holds ``array``."""
    if is_cuda_array(array):
        return Device("cuda", array.device.id)
    return CPU


def to_device(array: Any, device: Device) -> Any:
    """Return ``array`` on ``device``, copying only when it lives elsewhere."""
    if device.type == "cpu":
        return array.get() if is_cuda_array(array) else array
    cupy = require_cupy(f"device '{device}'")
    if device.index >= cupy.cuda.runtime.getDeviceCount():
        raise RuntimeError(
            f"device '{device}' does not exist: this machine has "
            f"{cupy.cuda.runtime.getDeviceCount()} CUDA device(s); pick an index below that"
        )
    if is_cuda_array(array) and array.device.id == device.index:
        return array
    with cupy.cuda.Device(device.index):
        return cupy.asarray(array)


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of ``array`` wherever it lives."""
    return array.get() if is_cuda_array(array) else np.asarray(array)
