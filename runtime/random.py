"""Random state: one seed (``dt.manual_seed``) drives every backend's generator."""

from __future__ import annotations

import numpy as np

from dtrain.runtime.backend import loaded_cupy
from dtrain.runtime.device_selection import selected_cuda_device


class Generator:
    """A seeded random stream, as ``torch.Generator``; wraps ``numpy.random.Generator``."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = 0
        self.manual_seed(np.random.SeedSequence().entropy % 2**63 if seed is None else seed)

    def manual_seed(self, seed: int) -> Generator:
        """Reset the stream to ``seed``; returns self so it chains as in PyTorch."""
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._seed = int(seed)
        self.numpy = np.random.default_rng(self._seed)
        return self

    def initial_seed(self) -> int:
        """The seed this stream started from."""
        return self._seed

    def get_state(self) -> dict:
        """The numpy bit generator's state, a JSON-friendly dict."""
        return self.numpy.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore a state taken with ``get_state``."""
        self.numpy.bit_generator.state = state


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Seed every backend: the default CPU generator and the GPU's (``seed_cuda``)."""
    default_generator.manual_seed(seed)
    seed_cuda(int(seed))
    return default_generator


# The GPU's stream is cupy's, one per device. Seeding creates a CUDA context and a cuRAND
# generator on the current device, so a rank that has not selected its GPU yet would seed
# (and fill) GPU 0: the seed waits for the selection instead (device_selection.py).
_cuda_seed: int | None = None
_seeded_devices: set[int] = set()


def seed_cuda(seed: int) -> None:
    """Seed the GPU's random stream: the selected GPU's now, or whichever the process
    selects later (as PyTorch seeds every GPU, lazily)."""
    global _cuda_seed
    _cuda_seed = seed % 2**32
    _seeded_devices.clear()
    selected = selected_cuda_device()
    if selected is not None:
        seed_device(selected)


def seed_device(index: int) -> None:
    """Apply the last ``seed_cuda`` to ``cuda:index`` unless it already has it."""
    cupy = loaded_cupy()
    if _cuda_seed is None or index in _seeded_devices or cupy is None:
        return
    with cupy.cuda.Device(index):
        cupy.random.seed(_cuda_seed)
    _seeded_devices.add(index)


def initial_seed() -> int:
    """The seed of the default generator."""
    return default_generator.initial_seed()


def get_rng_state() -> dict:
    """The default generator's state, to put in a checkpoint and restore with
    ``set_rng_state``. Unlike PyTorch's (a uint8 tensor), a dict of plain values, which
    ``dt.save`` stores without pickling. The GPU's stream (cupy's) is not part of it."""
    return default_generator.get_state()


def set_rng_state(state: dict) -> None:
    """Restore the default generator to a state from ``get_rng_state``."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise TypeError(
            f"set_rng_state takes the dict get_rng_state returned, got {type(state).__name__}"
        )
    default_generator.set_state(state)


def seed() -> int:
    """Seed every backend from the operating system's entropy; returns the seed, as
    ``torch.seed``."""
    fresh = int(np.random.SeedSequence().entropy % 2**63)
    manual_seed(fresh)
    return fresh
