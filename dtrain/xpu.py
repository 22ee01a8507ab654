"""``dt.xpu``: Intel GPUs (``torch.xpu``), which dtrain does not run on. Scripts probe it
before choosing a device (``torch.xpu.is_available()``), so the probe answers."""

from __future__ import annotations


def is_available() -> bool:
    """False: dtrain runs on the CPU (numpy) and CUDA (cupy) only."""
    return False


def device_count() -> int:
    """0: dtrain has no XPU backend."""
    return 0


__all__ = ["device_count", "is_available"]
