"""Which GPU a process works on.

cupy runs every kernel, cuBLAS call and NCCL communicator on the *current* device, whatever
device the operands live on, so a rank that sees several GPUs (torchrun, ``mpiexec``,
``dtrain launch --gpus-per-node``) must make its own current, or its work lands on GPU 0.
A process selects once: ``dt.cuda.set_device`` (or ``init_process_group(device_id=)``),
else its first tensor placed on a GPU, else the nccl group, which takes
``local_device()``. Before that, ``"cuda"`` means the rank's own GPU (``rank_device``).
CUDA's current device belongs to a host thread: the threads dtrain runs work on make the
selected one current themselves (``use_selected_device``; the collectives' executor runs
each job on ``process_cuda_device``).
"""

from __future__ import annotations

import os
from typing import Any

from dtrain.runtime.backend import require_cupy

_selected: int | None = None  # None until the process selects
_by_placement = False  # selected by a first placement, not by the script's own choice


def current_cuda_index() -> int:
    """What ``"cuda"`` without an index means: the selected GPU; before a selection, the
    rank's own (``DTRAIN_DEVICE`` or its local rank, as ``local_device()``), else 0."""
    if _selected is not None:
        return _selected
    from dtrain.runtime.rank_device import rank_cuda_index  # imports Device: not at the top

    return rank_cuda_index()


def select_cuda_device(index: int, by_placement: bool = False) -> None:
    """Make ``cuda:index`` this process's GPU: current on this thread, what ``"cuda"``
    means, and seeded by an earlier ``manual_seed``.

    Raises:
        RuntimeError: the process sees no such GPU (the message says what it sees).
    """
    global _selected, _by_placement
    cupy = require_cupy(f"device 'cuda:{index}'")
    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise RuntimeError(missing_device_message(f"cuda:{index}", count))
    cupy.cuda.Device(index).use()
    _selected, _by_placement = index, by_placement
    from dtrain.runtime import random  # random asks this module what is selected

    random.seed_device(index)


def use_selected_device(cupy: Any) -> None:
    """Make the selected GPU current on the calling thread too (a no-op when it is, or
    while nothing is selected)."""
    if _selected is not None and cupy.cuda.runtime.getDevice() != _selected:
        cupy.cuda.Device(_selected).use()


def process_cuda_device(cupy: Any) -> Any:
    """``cupy.cuda.Device`` of the process's GPU: the selected one, else this thread's
    current (for work handed to another thread, which starts on device 0)."""
    return cupy.cuda.Device(_selected) if _selected is not None else cupy.cuda.Device()


def selected_cuda_device() -> int | None:
    """The index the process selected, or None while it has not."""
    return _selected


def selected_by_placement() -> bool:
    """True when the selection came from a first placement rather than the script's choice."""
    return _selected is not None and _by_placement


def missing_device_message(device: str, count: int) -> str:
    """The error for a GPU index this process does not see."""
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
