"""Devices: ``"cpu"``, ``"cuda"`` and ``"cuda:N"``, as PyTorch spells them."""

from __future__ import annotations

import os
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
    return cupy.cuda.Device(device.index)


def _missing_device(device: Device, count: int) -> str:
    message = (
        f"device '{device}' does not exist: this process sees {count} CUDA device(s); pick "
        "an index below that"
    )
    if os.environ.get("DTRAIN_DEVICE") and os.environ.get("LOCAL_RANK"):
        # A torchrun script's cuda:LOCAL_RANK under `dtrain launch --gpus-per-node`: each
        # rank sees only its own GPU(s), from cuda:0.
        message += (
            f". dtrain launch gives each rank its own GPU as {os.environ['DTRAIN_DEVICE']} "
            "(CUDA_VISIBLE_DEVICES per rank), so cuda:LOCAL_RANK does not name it: use "
            "dtrain.parallel.local_device()"
        )
    return message


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of ``array`` wherever it lives."""
    return array.get() if is_cuda_array(array) else np.asarray(array)
