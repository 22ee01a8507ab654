"""``get_worker_info``: inside a DataLoader worker, which one this is (as PyTorch's).

dtrain's workers are threads of the loading process, so the information is per thread:
None on any thread that is not a worker (the main one included)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from dtrain.runtime.backend import loaded_cupy
from dtrain.runtime.device_selection import use_selected_device


@dataclass(frozen=True)
class WorkerInfo:
    """``id`` in ``[0, num_workers)``; ``seed``: the loader's base seed plus ``id``, to seed
    per-worker randomness with; ``dataset``: the loader's dataset (the same object on every
    worker: they are threads, not copies)."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


class _Current(threading.local):
    info: WorkerInfo | None = None


_current = _Current()


def get_worker_info() -> WorkerInfo | None:
    """This worker's ``WorkerInfo``, or None outside a DataLoader worker."""
    return _current.info


def become_worker(info: WorkerInfo) -> None:
    """Mark the calling thread as DataLoader worker ``info.id`` (its pool's initializer),
    on the process's GPU: a new thread starts on device 0, and a dataset may index CUDA
    tensors."""
    _current.info = info
    cupy = loaded_cupy()
    if cupy is not None:
        use_selected_device(cupy)
