"""``local_device()``: the device this rank should train on, as Ray Train's ``get_device()``.

A training script run by ``dtrain launch --gpus-per-node G``, torchrun, ``mpiexec`` or plain
``python`` asks once and moves its model and batches there; ``init_process_group()`` with no
backend picks nccl exactly when this says CUDA, so the backend and the tensors agree.
"""

from __future__ import annotations

import warnings

from dtrain.runtime.backend import cupy_module
from dtrain.runtime.config import read_config
from dtrain.runtime.device import Device

#: Set by ``dtrain launch`` for a rank it gave a GPU (``cuda:LOCAL_RANK`` among the node's
#: GPUs, which every rank of the node sees); a user may set it too. It wins over the rest.
DEVICE_VARIABLE = "DTRAIN_DEVICE"


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
    config = read_config()
    if config.device:
        try:
            return Device(config.device)
        except ValueError as exc:
            raise ValueError(f"{DEVICE_VARIABLE}={config.device!r}: {exc}") from None
    cupy = cupy_module()
    count = 0 if cupy is None else cupy.cuda.runtime.getDeviceCount()
    if count == 0:
        return Device("cpu")
    local_rank = config.local_rank or 0
    ranks_here = config.local_world_size or 1
    if ranks_here > count:
        warnings.warn(
            f"{ranks_here} ranks on this node but {count} GPU(s) visible: training on the "
            f"CPU. Give each rank its own GPU (dtrain launch --gpus-per-node G, or set "
            f"{DEVICE_VARIABLE}=cuda:N per rank), or run at most {count} rank(s) per node",
            stacklevel=2,
        )
        return Device("cpu")
    return Device("cuda", local_rank)
