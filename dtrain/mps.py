"""``dt.mps``: Apple's Metal GPUs (``torch.mps``), which dtrain does not run on. As
``dt.backends.mps``, it answers the probes scripts make before choosing a device."""

from __future__ import annotations

from dtrain.backends.mps import is_available


def device_count() -> int:
    """0: dtrain has no MPS backend."""
    return 0


__all__ = ["device_count", "is_available"]
