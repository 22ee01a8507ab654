"""torch.distributed's process-group API: init_process_group, new_group, get_rank... (the
collectives on tensors are in ``collectives.py``)."""

from __future__ import annotations

import datetime
import logging
import math
import secrets as _secrets
import warnings
from typing import Any

from dtrain.parallel.errors import RendezvousError
from dtrain.parallel.group import ProcessGroup
from dtrain.parallel.local_device import local_device
from dtrain.runtime.config import read_config, under_mpiexec

log = logging.getLogger(__name__)

BACKENDS = ("tcp", "mpi", "nccl")


class _State:
    world: ProcessGroup | None = None
    store: Any = None
    server: Any = None
    secret: bytes = b""
    groups: int = 0


_state = _State()


class GroupMember:
    """``new_group`` returns ``NON_GROUP_MEMBER`` to ranks outside the group."""

    NON_GROUP_MEMBER = object()


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
            "timedelta); pass None for the default (DTRAIN_TIMEOUT, 300 s)"
        )
    return seconds


def _choose_backend() -> str:
    if local_device().type == "cuda":  # the device this rank trains on, not merely a GPU
        try:
            from cupy.cuda import nccl  # noqa: F401

            return "nccl"
        except ImportError:
            pass
    if under_mpiexec():
        return "mpi"
    return "tcp"


def init_process_group(
    backend: str | None = None,
    init_method: str | None = None,
    timeout: Any = None,
    world_size: int | None = None,
    rank: int | None = None,
    pg_options: dict | None = None,
) -> None:
    """Join the job's default process group (every rank calls this once).

    ``backend`` None picks nccl when this rank trains on a GPU (``local_device()``) and NCCL
    is available, mpi under ``mpiexec``, and tcp otherwise. Rank and world size come from
    the arguments, the environment (RANK, WORLD_SIZE — as torchrun and ``dtrain launch`` set
    them) or MPI. ``init_method`` is
    ``env://`` (MASTER_ADDR, MASTER_PORT) or ``tcp://host:port``. ``pg_options`` (tcp only):
    ``{"unix": False}`` keeps same-host peers on TCP, ``{"shm": False}`` off shared memory.
    """
    if _state.world is not None:
        raise RuntimeError(
            "init_process_group was already called; call destroy_process_group() first"
        )
    config = read_config()
    if backend is None:
        backend = config.backend or _choose_backend()
    backend = _backend_name(backend)
    limit = _seconds(timeout, "init_process_group") or config.timeout
    if backend == "mpi" or (under_mpiexec() and rank is None and config.rank is None):
        comm = _mpi_world()
        rank = comm.Get_rank() if rank is None else rank
        world_size = comm.Get_size() if world_size is None else world_size
    rank = config.rank if rank is None else rank
    world_size = config.world_size if world_size is None else world_size
    if rank is None or world_size is None:
        if rank is None and world_size is None and not config.master_port:
            rank, world_size = 0, 1  # a plain single process (MASTER_PORT unset or 0)
        else:
            raise ValueError(
                f"init_process_group: rank={rank} and world_size={world_size}; set RANK and "
                "WORLD_SIZE (dtrain launch and torchrun do), pass them, or run under mpiexec"
            )
    if not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank {rank} is not in [0, {world_size})")
    _check_options(backend, pg_options)
    if backend == "mpi":
        from dtrain.parallel.backends.mpi import MpiGroup

        _state.world = MpiGroup(_mpi_world(), limit, debug=config.debug)
        return
    _state.secret = _job_secret(config.secret, world_size)
    try:
        store = _connect_store(init_method, rank, world_size, limit, config)
        _state.world = _make_group(
            backend, rank, world_size, limit, list(range(world_size)), store, "world", pg_options
        )
        _done_with_store(store, rank, world_size, limit)
    except BaseException:
        destroy_process_group()  # a failed init leaves nothing behind: it may be retried
        raise


def _done_with_store(store: Any, rank: int, world_size: int, timeout: float) -> None:
    """Rank 0 hosts the store: it returns only once every rank is done with it, or a rank 0
    that finished at once would close it under the others' rendezvous (torch's store
    barrier does the same). Through the store, so no collective is counted."""
    store.set(f"world/ready/{rank}", b"1")
    if rank != 0:
        return
    keys = [f"world/ready/{other}" for other in range(1, world_size)]
    try:
        store.wait(keys, timeout)
    except RendezvousError:
        try:
            missing = [other for other, key in enumerate(keys, 1) if not store.check(key)]
        except RendezvousError:  # the store itself is gone
            missing = "unknown"
        raise RendezvousError(
            f"init_process_group: ranks {missing} did not finish init_process_group within "
            f"{timeout:.0f} s (did they exit or fail? their logs say why)"
        ) from None


def _job_secret(secret: str | None, world_size: int) -> bytes:
    if secret:
        return secret.encode()
    if world_size > 1:
        warnings.warn(
            "DTRAIN_SECRET is not set: the rendezvous store and the tcp mesh accept any "
            "process that can reach them. dtrain launch sets a random one per job; set it "
            "yourself when starting ranks by hand",
            stacklevel=3,
        )
    return b""


def _connect_store(
    init_method: str | None, rank: int, world_size: int, timeout: float, config: Any
) -> Any:
    from dtrain.parallel.store import StoreClient, StoreServer

    host, port = config.master_addr, config.master_port
    if init_method and init_method != "env://":
        if not init_method.startswith("tcp://"):
            raise ValueError(f"init_method {init_method!r}: use 'env://' or 'tcp://host:port'")
        host, _, port_text = init_method[len("tcp://") :].rpartition(":")
        port = int(port_text)
    host = host or "127.0.0.1"
    if not port:
        if world_size > 1:
            raise ValueError(
                "MASTER_PORT is not set (or 0): with more than one rank every rank must know "
                "the store's port; set MASTER_PORT (dtrain launch picks a free one)"
            )
        port = 0
    if rank == 0:
        try:
            _state.server = StoreServer(host, port, _state.secret)
        except OSError as exc:
            raise RendezvousError(
                f"rank 0 could not serve the rendezvous store on {host}:{port} ({exc}); the "
                "port is probably in use: pick another MASTER_PORT"
            ) from None
        port = _state.server.port
    _state.store = StoreClient(host, port, _state.secret, timeout)
    _check_world_size(_state.store, rank, world_size)
    return _state.store


def _check_world_size(store: Any, rank: int, world_size: int) -> None:
    """Rank 0 publishes its world size; a rank told another one raises, naming both (else
    it would wait for ranks that never come, and time out naming a store key)."""
    if rank == 0:
        store.set("world/size", str(world_size).encode())
        return
    theirs = int(store.get("world/size").decode())
    if theirs != world_size:
        store.close()
        _state.store = None
        raise RendezvousError(
            f"rank {rank} was told WORLD_SIZE={world_size} but rank 0 was told "
            f"WORLD_SIZE={theirs}; every rank must get the same WORLD_SIZE (and MASTER_PORT: "
            "another job's rank 0 may serve this port)"
        )


def _backend_name(backend: str) -> str:
    """``backend`` lower-cased, ``gloo`` (PyTorch's CPU backend: the same role) as ``tcp``."""
    name = str(backend).lower()
    name = "tcp" if name == "gloo" else name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS} (or None: automatic)")
    return name


def _check_options(backend: str, pg_options: dict | None) -> None:
    from dtrain.parallel.backends.tcp import OPTIONS

    known = OPTIONS if backend == "tcp" else ()
    unknown = sorted(set(pg_options or ()) - set(known))
    if unknown:
        raise ValueError(
            f"pg_options {unknown} are not options of the {backend} backend; "
            f"it takes {list(known) or 'none'}"
        )
    for key, value in (pg_options or {}).items():
        if not isinstance(value, bool):
            raise TypeError(f"pg_options[{key!r}] must be True or False, got {value!r}")


def _make_group(
    backend: str,
    rank: int,
    size: int,
    timeout: float,
    ranks: list[int],
    store: Any,
    prefix: str,
    pg_options: dict | None = None,
) -> ProcessGroup:
    if backend == "tcp":
        from dtrain.parallel.backends.tcp import OPTIONS, TcpGroup

        options = {OPTIONS[k]: bool(v) for k, v in (pg_options or {}).items()}
        return TcpGroup(rank, size, timeout, ranks, store, prefix, _state.secret, **options)
    from dtrain.parallel.backends.nccl import NcclGroup

    return NcclGroup(rank, size, timeout, ranks, store, prefix)


def _mpi_world() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("the mpi backend needs mpi4py: pip install 'dtrain[mpi]'") from None
    return MPI.COMM_WORLD


def is_initialized() -> bool:
    """True between init_process_group and destroy_process_group."""
    return _state.world is not None


def _group(group: Any) -> ProcessGroup | None:
    if group is None:
        if _state.world is None:
            raise RuntimeError(
                "the default process group is not initialised; call "
                "dtrain.parallel.init_process_group() first"
            )
        return _state.world
    if group is GroupMember.NON_GROUP_MEMBER:
        return None
    return group


def get_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (-1 outside it)."""
    g = _group(group)
    return -1 if g is None else g.rank


def get_world_size(group: Any = None) -> int:
    """The number of ranks in ``group`` (-1 outside it)."""
    g = _group(group)
    return -1 if g is None else g.size


def get_backend(group: Any = None) -> str:
    """``"tcp"``, ``"mpi"`` or ``"nccl"``."""
    g = _group(group)
    if g is None:
        raise ValueError("get_backend: this rank is not a member of the group")
    return g.backend


def destroy_process_group(group: Any = None) -> None:
    """Leave ``group`` (the default group, and everything with it, when None)."""
    if group is not None:
        if group is not GroupMember.NON_GROUP_MEMBER:
            group.destroy()
        return
    if _state.world is not None:
        _state.world.destroy()
    if _state.store is not None:
        _state.store.close()
    if _state.server is not None:
        _state.server.close()
    _state.world = _state.store = _state.server = None


def new_group(
    ranks: list[int] | None = None,
    timeout: Any = None,
    backend: str | None = None,
    pg_options: dict | None = None,
) -> Any:
    """Collective over the default group: a group of ``ranks`` (all when None). Every rank
    calls it; ranks outside get ``GroupMember.NON_GROUP_MEMBER``. ``pg_options`` as for
    ``init_process_group``."""
    world = _group(None)
    backend = world.backend if backend is None else _backend_name(backend)
    if (backend == "mpi") != (world.backend == "mpi"):
        raise ValueError(
            f"new_group: backend {backend!r} on a {world.backend!r} world; an mpi world makes "
            "mpi groups only, and other worlds cannot make mpi groups (start under mpiexec)"
        )
    _check_options(backend, pg_options)
    members = sorted(set(range(world.size) if ranks is None else ranks))
    if any(not 0 <= r < world.size for r in members) or not members:
        raise ValueError(
            f"new_group: ranks {ranks} must be a non-empty subset of 0..{world.size - 1}"
        )
    _state.groups += 1
    limit = _seconds(timeout, "new_group") or world.timeout
    if world.backend == "mpi":
        from dtrain.parallel.backends.mpi import MpiGroup

        sub = world.comm.Create_group(world.comm.Get_group().Incl(members))
        return (
            MpiGroup(sub, limit, debug=world.debug, ranks=members)
            if sub != _mpi_null()
            else (GroupMember.NON_GROUP_MEMBER)
        )
    if world.rank not in members:
        return GroupMember.NON_GROUP_MEMBER
    return _make_group(
        backend,
        members.index(world.rank),
        len(members),
        limit,
        members,
        _state.store,
        f"group{_state.groups}",
        pg_options,
    )


def _mpi_null() -> Any:
    from mpi4py import MPI

    return MPI.COMM_NULL


def new_secret() -> str:
    """A random job secret (what ``dtrain launch`` puts in DTRAIN_SECRET)."""
    return _secrets.token_hex(16)


__all__ = [
    "GroupMember",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
    "new_group",
    "new_secret",
]
