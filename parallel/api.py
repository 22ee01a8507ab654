"""torch.distributed's process-group API: init_process_group, new_group, get_rank... (the
collectives on tensors are in ``collectives.py``).

Here: the availability checks and the queries on a group. The default group's state,
``GroupMember``, ``Backend`` and ``destroy_process_group`` are in ``group_state.py``,
``init_process_group`` in ``group_init.py`` and ``new_group`` in ``group_create.py``; this
module re-exports them, so ``dtrain.parallel.api`` names the whole API."""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets as _secrets
import warnings
from typing import Any

# Re-exported: the private names are what other modules and tests use from here.
from dtrain.parallel.group_create import new_group
from dtrain.parallel.group_init import _bind_device as _bind_device
from dtrain.parallel.group_init import _choose_backend as _choose_backend
from dtrain.parallel.group_init import init_process_group
from dtrain.parallel.group_state import (
    Backend,
    GroupMember,
    _group,
    destroy_process_group,
    group,
    is_initialized,
)
from dtrain.parallel.group_state import _seconds as _seconds
from dtrain.parallel.group_state import _state as _state
from dtrain.parallel.process_group import ProcessGroup

log = logging.getLogger(__name__)


def is_available() -> bool:
    """True: dtrain.parallel is always built in (torch's ``dist.is_available()``)."""
    return True


def is_gloo_available() -> bool:
    """True: ``"gloo"`` runs on dtrain's tcp backend, which is always there."""
    return True


def is_nccl_available() -> bool:
    """True when cupy's NCCL bindings load NCCL (the nccl backend can then be used)."""
    try:
        with warnings.catch_warnings():  # cupy warns when libnccl is missing
            warnings.simplefilter("ignore")
            from cupy.cuda import nccl
    except Exception:  # ImportError, or cupy failing to find its libraries
        return False
    return bool(getattr(nccl, "available", True))


def is_mpi_available() -> bool:
    """True when mpi4py is installed (the mpi backend can then be used under mpiexec)."""
    return importlib.util.find_spec("mpi4py") is not None


def is_torchelastic_launched() -> bool:
    """True when this process was started by torchrun (it sets TORCHELASTIC_RUN_ID)."""
    return os.environ.get("TORCHELASTIC_RUN_ID") is not None


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (-1 outside it)."""
    g = _group(group)
    return -1 if g is None else int(g.rank)  # a plain int (JSON, user code)


def get_world_size(group: Any = None) -> int:
    """The number of ranks in ``group`` (-1 outside it)."""
    g = _group(group)
    return -1 if g is None else int(g.size)


def get_backend(group: Any = None) -> str:
    """``"tcp"``, ``"mpi"`` or ``"nccl"``; ``"gloo"`` when the group was made with that
    name (it runs on tcp)."""
    g = _group(group)
    if g is None:
        raise ValueError("get_backend: this rank is not a member of the group")
    return Backend(getattr(g, "asked", g.backend))


def _member_group(group: Any, caller: str) -> ProcessGroup:
    g = _group(group)
    if g is None:
        raise ValueError(f"{caller}: this rank is not a member of the group")
    return g


def get_process_group_ranks(group: Any = None) -> list[int]:
    """The global ranks of ``group``'s members, in group-rank order."""
    return list(_member_group(group, "get_process_group_ranks").ranks)


def get_global_rank(group: Any, group_rank: int) -> int:
    """The global rank of ``group``'s rank ``group_rank``."""
    ranks = _member_group(group, "get_global_rank").ranks
    if not isinstance(group_rank, int) or not 0 <= group_rank < len(ranks):
        raise ValueError(
            f"get_global_rank: group rank {group_rank!r} is not in 0..{len(ranks) - 1}"
        )
    return ranks[group_rank]


def get_group_rank(group: Any, global_rank: int) -> int:
    """``global_rank``'s rank within ``group``."""
    ranks = _member_group(group, "get_group_rank").ranks
    if global_rank not in ranks:
        raise ValueError(f"get_group_rank: global rank {global_rank!r} is not in group {ranks}")
    return ranks.index(global_rank)


def get_default_backend_for_device(device: Any) -> str:
    """torch's backend name for ``device``'s type: ``"gloo"`` (dtrain's tcp) for the CPU,
    ``"nccl"`` for CUDA; what pytorch/examples pass to ``init_process_group``.

    Raises:
        ValueError: ``device`` is not a CPU or CUDA device (e.g. ``"mps"``).
    """
    from dtrain.runtime.device import Device

    kind = Device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"get_default_backend_for_device: no backend for device {device!r}")
    return Backend.NCCL if kind == "cuda" else Backend.GLOO


def new_secret() -> str:
    """A random job secret (what ``dtrain launch`` puts in DTRAIN_SECRET)."""
    return _secrets.token_hex(16)


__all__ = [
    "Backend",
    "GroupMember",
    "destroy_process_group",
    "get_backend",
    "get_default_backend_for_device",
    "get_global_rank",
    "get_group_rank",
    "get_process_group_ranks",
    "get_rank",
    "get_world_size",
    "group",
    "init_process_group",
    "is_available",
    "is_gloo_available",
    "is_initialized",
    "is_mpi_available",
    "is_nccl_available",
    "is_torchelastic_launched",
    "new_group",
    "new_secret",
]
