"""The default process group's state, and what every process-group function shares:
the world (``_state``), ``GroupMember`` / ``group.WORLD``, ``Backend`` names, the timeout
argument, ``_group`` (None: the world) and ``destroy_process_group``. Re-exported by
``api.py``."""

from __future__ import annotations

import datetime
import math
from typing import Any

from dtrain.parallel.errors import ProcessGroupStateError
from dtrain.parallel.process_group import ProcessGroup

BACKENDS = ("tcp", "mpi", "nccl")


class _State:
    world: ProcessGroup | None = None
    store: Any = None
    server: Any = None
    secret: bytes = b""
    groups: int = 0
    local_groups: dict = {}  # noqa: RUF012 - reset with the world (destroy_process_group)


_state = _State()


class _World:
    """A class attribute that reads the default group (None before init_process_group)."""

    def __get__(self, instance: Any, owner: Any) -> ProcessGroup | None:
        return _state.world


class GroupMember:
    """``WORLD`` is the default group; ``new_group`` returns ``NON_GROUP_MEMBER`` to ranks
    outside the group."""

    WORLD = _World()
    NON_GROUP_MEMBER = object()


class group:  # noqa: N801 - torch.distributed's name: ``dist.group.WORLD``
    """``group.WORLD``: the default process group (None before init_process_group), to pass
    as ``group=`` anywhere (the same as None)."""

    WORLD = _World()


class Backend(str):
    """Backend names as torch.distributed spells them: ``Backend("GLOO") == "gloo"``.
    ``GLOO`` is dtrain's ``TCP`` (the same backend, under the name you asked for)."""

    UNDEFINED = "undefined"
    GLOO = "gloo"
    NCCL = "nccl"
    MPI = "mpi"
    TCP = "tcp"

    def __new__(cls, name: str) -> Backend:
        lowered = str(name).lower()
        if lowered not in (*BACKENDS, "gloo", "undefined"):
            raise ValueError(f"unknown backend {name!r}; use one of {(*BACKENDS, 'gloo')}")
        return super().__new__(cls, lowered)


def _seconds(timeout: Any, caller: str) -> float | None:
    """``timeout`` (seconds or a timedelta) in seconds; None: the default."""
    if timeout is None:
        return None
    try:
        seconds = (
            timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
        )
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"{caller}: timeout={timeout!r} must be a finite number of seconds above 0 (or a "
            "timedelta); pass None for the default (DTRAIN_TIMEOUT, 1800 s)"
        )
    return seconds


def is_initialized() -> bool:
    """True between init_process_group and destroy_process_group."""
    return _state.world is not None


def _group(group: Any) -> ProcessGroup | None:
    if group is None:
        if _state.world is None:
            raise ProcessGroupStateError(
                "Default process group has not been initialized; call "
                "dtrain.parallel.init_process_group() first"
            )
        return _state.world
    if group is GroupMember.NON_GROUP_MEMBER:
        return None
    return group


def destroy_process_group(group: Any = None) -> None:
    """Leave ``group`` (the default group, and everything with it, when None)."""
    if group is not None:
        if group is not GroupMember.NON_GROUP_MEMBER:
            group.destroy()
        return
    from dtrain.parallel.checkpoint_pending import before_destroy

    before_destroy()  # an async_save finishes first; the checkpoint group goes with the world
    if _state.world is not None:
        _state.world.destroy()
    if _state.store is not None:
        _state.store.close()
    if _state.server is not None:
        _state.server.close()
    _state.world = _state.store = _state.server = None
    _state.local_groups = {}
