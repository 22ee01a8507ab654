"""``local_device()``: the device this rank should train on, as Ray Train's ``get_device()``.

A training script run by ``dtrain launch --gpus-per-node G``, torchrun, ``mpiexec`` or plain
``python`` asks once and moves its model and batches there; ``init_process_group()`` with no
backend picks nccl exactly when this says CUDA, so the backend and the tensors agree. The
rule itself lives in ``runtime/rank_device.py``, since ``Device("cuda")`` follows it too.
"""

from __future__ import annotations

from dtrain.runtime.device import Device
from dtrain.runtime.rank_device import DEVICE_VARIABLE, rank_device


def local_device() -> Device:
    """The device for this process.

    ``DTRAIN_DEVICE`` when set. Otherwise, with no CUDA device visible: the CPU. With CUDA,
    the GPU of this rank's index on its node (``LOCAL_RANK``, or the MPI launcher's local
    rank; 0 for a single process), as torchrun scripts do with ``cuda:LOCAL_RANK``; but
    when the node runs more ranks than it shows GPUs, ranks would have to share one, which
    NCCL refuses, so every rank gets the CPU, with a warning.

    Raises:
        ValueError: ``DTRAIN_DEVICE`` is not a device name.
    """
    return rank_device(warn=True)


__all__ = ["DEVICE_VARIABLE", "local_device"]
