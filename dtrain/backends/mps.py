"""``dt.backends.mps``: Apple's Metal backend, which dtrain does not have."""

from __future__ import annotations


def is_available() -> bool:
    """False: dtrain runs on the CPU (numpy) and CUDA (cupy) only."""
    return False


def is_built() -> bool:
    """False: dtrain has no MPS backend."""
    return False


__all__ = ["is_available", "is_built"]
