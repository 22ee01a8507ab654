"""``dt.accelerator``: PyTorch's device-generic API (``torch.accelerator``), whose one
accelerator here is CUDA (``dt.cuda``). pytorch/examples now pick their device with it:
``dt.accelerator.current_accelerator() if dt.accelerator.is_available() else "cpu"``."""

from __future__ import annotations

from dtrain import cuda
from dtrain.runtime.device import Device


def is_available() -> bool:
    """True when a CUDA GPU is usable (``dt.cuda.is_available()``)."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False) -> Device | None:
    """``device("cuda")`` (the process's GPU) where CUDA is usable, else None (also with
    ``check_available``, as PyTorch: there is no other accelerator type to name)."""
    return Device("cuda") if cuda.is_available() else None


def device_count() -> int:
    """How many GPUs this process sees (0 without CUDA)."""
    return cuda.device_count()


def current_device_index() -> int:
    """The process's GPU index (``dt.cuda.current_device()``)."""
    return cuda.current_device()


def set_device_index(device: int | str | Device) -> None:
    """Make ``device`` the process's GPU (``dt.cuda.set_device``)."""
    cuda.set_device(device)


def synchronize(device: int | str | Device | None = None) -> None:
    """Wait for the GPU's queued work (no-op without CUDA)."""
    cuda.synchronize(device)


class device_index:  # noqa: N801 - torch.accelerator's name; a context manager class
    """``with dt.accelerator.device_index(i):`` — PyTorch switches the current GPU inside
    the block and back after it. A dtrain process works on one GPU (docs/gpu.md
    "Devices"), so entering makes GPU ``i`` the process's GPU (``dt.cuda.set_device``) and
    leaving restores nothing. None does nothing. As in PyTorch, only entering the block
    acts: a bare ``device_index(rank)`` call does nothing.

    Raises:
        RuntimeError: on entering, with an index where CUDA is not available.
    """

    def __init__(self, device: int | None, /) -> None:
        self.device = device

    def __enter__(self) -> device_index:
        if self.device is None:
            return self
        if not cuda.is_available():
            raise RuntimeError(
                f"accelerator.device_index({self.device!r}): CUDA is not available here; "
                "enter it only when dt.accelerator.is_available()"
            )
        cuda.set_device(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        return None


current_device_idx = current_device_index  # PyTorch 2.6's names, kept by PyTorch as aliases
set_device_idx = set_device_index

__all__ = [
    "current_accelerator",
    "current_device_idx",
    "current_device_index",
    "device_count",
    "device_index",
    "is_available",
    "set_device_idx",
    "set_device_index",
    "synchronize",
]
