"""The device a rank trains on, from what its launcher said: ``DTRAIN_DEVICE``, else its
place on the node (``LOCAL_RANK`` or the MPI launcher's) among the GPUs it sees.

``dtrain.parallel.local_device()`` is this with a warning; ``Device("cuda")`` uses it too,
so before a process selects a GPU, ``"cuda"`` already means the rank's own.
"""

from __future__ import annotations

import warnings

from dtrain.runtime.backend import cupy_module
from dtrain.runtime.config import read_config
from dtrain.runtime.device import Device

#: Set by ``dtrain launch`` for a rank it gave a GPU (``cuda:LOCAL_RANK`` among the node's
#: GPUs, which every rank of the node sees); a user may set it too. It wins over the rest.
DEVICE_VARIABLE = "DTRAIN_DEVICE"


def rank_device(warn: bool = True) -> Device:
    """``DTRAIN_DEVICE`` when set (plain ``cuda``: ``cuda:LOCAL_RANK``). Otherwise, with no
    CUDA device visible: the CPU. With CUDA, the GPU of this rank's index on its node
    (``LOCAL_RANK``, or the MPI launcher's local rank; 0 for a single process), as
    torchrun scripts do with ``cuda:LOCAL_RANK``; but when the node runs more ranks than it
    shows GPUs, ranks would have to share one, which NCCL refuses, so every rank gets the
    CPU (with a warning when ``warn``).

    Raises:
        ValueError: ``DTRAIN_DEVICE`` is not a device name.
    """
    config = read_config()
    if config.device == "cuda":  # no index: the GPU of the rank's place on its node
        return Device("cuda", config.local_rank or 0)
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
        if warn:
            warnings.warn(
                f"{ranks_here} ranks on this node but {count} GPU(s) visible: training on the "
                f"CPU. Give each rank its own GPU (dtrain launch --gpus-per-node G, or set "
                f"{DEVICE_VARIABLE}=cuda:N per rank), or run at most {count} rank(s) per node",
                stacklevel=3,
            )
        return Device("cpu")
    return Device("cuda", local_rank)


def rank_cuda_index() -> int:
    """The index plain ``"cuda"`` means before the process selects a GPU: the rank's own
    (``rank_device``), else 0 (no GPU known: the placement's own check then says so)."""
    device = rank_device(warn=False)
    return device.index if device.type == "cuda" else 0


def launcher_named_device() -> bool:
    """True when the environment says which device this rank is (``DTRAIN_DEVICE`` or a
    local rank), rather than ``rank_device()`` falling back to GPU 0 of a lone process."""
    config = read_config()
    return bool(config.device) or config.local_rank is not None
