"""torch.distributed's process-group API: init_process_group, new_group, get_rank... (the
collectives on tensors are in ``collectives.py``)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import logging
import math
import os
import secrets as _secrets
import warnings
from typing import Any

from dtrain.parallel.errors import ProcessGroupStateError, RendezvousError
from dtrain.parallel.local_device import local_device
from dtrain.parallel.mpi_rendezvous import store_through_mpi
from dtrain.parallel.process_group import ProcessGroup
from dtrain.runtime.config import read_config, under_mpiexec
from dtrain.runtime.device import Device
from dtrain.runtime.device_selection import select_cuda_device

log = logging.getLogger(__name__)

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
    store: Any = None,
    group_name: str = "",
    pg_options: dict | None = None,
    device_id: Any = None,
) -> None:
    """Join the job's default process group (every rank calls this once).

    ``backend`` None picks nccl when this rank trains on a GPU (``local_device()``) and NCCL
    is available, mpi under ``mpiexec``, and tcp otherwise; ``"gloo"`` is tcp, and a
    per-device string such as ``"cpu:gloo,cuda:nccl"`` takes the entry for the device this
    rank trains on. Rank and world size come from the arguments (-1: unset, as in torch),
    the environment (RANK, WORLD_SIZE — as torchrun and ``dtrain launch`` set them) or MPI.
    ``init_method`` is ``env://`` (MASTER_ADDR, MASTER_PORT; under torchrun, whose agent
    serves MASTER_PORT itself, dtrain's store uses MASTER_PORT + 1) or ``tcp://host:port``.
    ``pg_options`` (tcp only): ``{"unix": False}`` keeps same-host peers on TCP,
    ``{"shm": False}`` off shared memory. ``device_id`` (a CUDA device or index), as
    torch's, makes that GPU the process's (``dt.cuda.set_device``) before the group binds
    to it. ``group_name`` is accepted and has no effect; ``store`` must be None (dtrain
    serves its own store).

    Raises:
        ProcessGroupStateError: (a ValueError and a RuntimeError) when already initialised.
    """
    if _state.world is not None:
        raise ProcessGroupStateError(
            "init_process_group was already called; call destroy_process_group() first"
        )
    if store is not None:
        raise ValueError(
            f"init_process_group: store={type(store).__name__} is not supported; dtrain's "
            "rank 0 serves its own authenticated store: pass init_method ('env://' or "
            "'tcp://host:port') or set MASTER_ADDR and MASTER_PORT instead"
        )
    rank = None if rank == -1 else rank
    world_size = None if world_size == -1 else world_size
    if device_id is not None:
        _bind_device(device_id)
    config = read_config()
    if backend is None:
        backend = config.backend or _choose_backend()
    asked = _per_device(backend)
    backend = _backend_name(asked)
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
        _state.world.asked = str(asked).lower()
        return
    try:
        if world_size > 1 and _needs_mpi_rendezvous(init_method, rank, config):
            from dtrain.parallel.store import StoreServer

            host, port, _state.secret, _state.server = store_through_mpi(
                config.secret.encode() if config.secret else None,
                config.master_addr,
                limit,
                lambda bind, secret: StoreServer(bind, 0, secret),
            )
            config = dataclasses.replace(config, master_addr=host, master_port=port)
        else:
            _state.secret = _job_secret(config.secret, world_size)
        store = _connect_store(init_method, rank, world_size, limit, config)
        _state.world = _make_group(
            backend, rank, world_size, limit, list(range(world_size)), store, "world", pg_options
        )
        _state.world.asked = str(asked).lower()
        _done_with_store(store, rank, world_size, limit)
    except BaseException:
        destroy_process_group()  # a failed init leaves nothing behind: it may be retried
        raise


def _bind_device(device_id: Any) -> None:
    """``init_process_group(device_id=...)``: select that GPU, as torch binds to it."""
    device = Device(device_id)
    if device.type != "cuda":
        raise ValueError(
            f"init_process_group: device_id={device_id!r} must name a CUDA device (e.g. "
            "dt.device('cuda', local_rank)); leave it out for CPU ranks"
        )
    select_cuda_device(device.index)


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


def _needs_mpi_rendezvous(init_method: str | None, rank: int, config: Any) -> bool:
    """Under mpiexec with no store port given, ranks numbered as MPI numbers them (MPI's
    rank 0 serves the store): MPI carries its address (mpi_rendezvous.py)."""
    return (
        under_mpiexec()
        and not config.master_port
        and init_method in (None, "env://")
        and rank == config.rank
    )


def _job_secret(secret: str | None, world_size: int) -> bytes:
    if secret:
        return secret.encode()
    if world_size > 1:
        warnings.warn(
            "DTRAIN_SECRET is not set: the rendezvous store and the tcp mesh accept any "
            "process that can reach them. dtrain launch sets a random one per job; set it "
            "yourself when starting ranks by hand or with torchrun",
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
    elif port and under_torchelastic_agent_store():
        # torchrun's agent already serves its own store (a TCPStore) on MASTER_PORT; every
        # rank derives the same other port for dtrain's.
        port += 1
    host = host or "127.0.0.1"
    if not port:
        if world_size > 1:
            raise ValueError(
                "MASTER_PORT is not set (or 0): with more than one rank every rank must know "
                "the store's port; set MASTER_PORT (dtrain launch picks a free one)"
            )
        port = 0
    if rank == 0 and _state.server is None:  # (the MPI rendezvous has made it already)
        try:
            _state.server = StoreServer(host, port, _state.secret)
        except OSError as exc:
            raise RendezvousError(
                f"rank 0 could not serve the rendezvous store on {host}:{port} ({exc}); the "
                "port is probably in use: pick another MASTER_PORT"
                + (
                    " (under torchrun dtrain serves on MASTER_PORT + 1: pick a --master-port "
                    "whose next port is free)"
                    if under_torchelastic_agent_store() and init_method in (None, "env://")
                    else ""
                )
            ) from None
        port = _state.server.port
    _state.store = StoreClient(host, port, _state.secret, timeout)
    _check_world_size(_state.store, rank, world_size)
    return _state.store


def under_torchelastic_agent_store() -> bool:
    """True under torchrun, whose agent serves a store on MASTER_PORT (it sets
    TORCHELASTIC_USE_AGENT_STORE=True); dtrain's rank 0 then serves on MASTER_PORT + 1."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() in ("true", "1")


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


def _per_device(backend: str) -> str:
    """The entry of a per-device backend string (``"cpu:gloo,cuda:nccl"``) for the device
    this rank trains on; a plain name unchanged. A CPU rank with no ``cpu:`` entry gets tcp;
    a GPU rank with no ``cuda:`` entry gets the ``cpu:`` one."""
    text = str(backend)
    if ":" not in text:
        return text
    entries = {}
    for part in text.split(","):
        device, sep, name = part.strip().partition(":")
        if not sep or device.lower() not in ("cpu", "cuda") or not name:
            raise ValueError(
                f"backend {backend!r}: write a per-device backend as 'cpu:gloo,cuda:nccl' "
                "(device 'cpu' or 'cuda', then a backend name)"
            )
        entries[device.lower()] = name
    device = local_device().type
    return entries.get(device) or entries.get("cpu") or "tcp"


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
            raise ProcessGroupStateError(
                "Default process group has not been initialized; call "
                "dtrain.parallel.init_process_group() first"
            )
        return _state.world
    if group is GroupMember.NON_GROUP_MEMBER:
        return None
    return group


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
    _state.local_groups = {}


def new_group(
    ranks: list[int] | None = None,
    timeout: Any = None,
    backend: str | None = None,
    pg_options: dict | None = None,
    use_local_synchronization: bool = False,
    group_desc: str | None = None,
    device_id: Any = None,
    sort_ranks: bool = True,
) -> Any:
    """Collective over the default group: a group of ``ranks`` (all when None). Every rank
    calls it, and ranks outside get ``GroupMember.NON_GROUP_MEMBER``; with
    ``use_local_synchronization=True`` only the members need to (as in torch, members must
    then create their groups in the same order). ``pg_options`` as for
    ``init_process_group``; ``group_desc`` and ``device_id`` are accepted and have no
    effect. Group ranks follow global rank order (``sort_ranks=False`` with unsorted
    ``ranks`` is refused)."""
    world = _group(None)
    asked = None if backend is None else str(_per_device(backend)).lower()
    backend = world.backend if backend is None else _backend_name(asked)
    if (backend == "mpi") != (world.backend == "mpi"):
        raise ValueError(
            f"new_group: backend {backend!r} on a {world.backend!r} world; an mpi world makes "
            "mpi groups only, and other worlds cannot make mpi groups (start under mpiexec)"
        )
    _check_options(backend, pg_options)
    if not sort_ranks and ranks is not None and list(ranks) != sorted(ranks):
        raise ValueError(
            f"new_group: ranks {list(ranks)} with sort_ranks=False: dtrain numbers a group's "
            "ranks in global rank order; pass them sorted (or sort_ranks=True)"
        )
    members = sorted(set(range(world.size) if ranks is None else ranks))
    if any(not 0 <= r < world.size for r in members) or not members:
        raise ValueError(
            f"new_group: ranks {ranks} must be a non-empty subset of 0..{world.size - 1}"
        )
    limit = _seconds(timeout, "new_group") or world.timeout
    if use_local_synchronization:
        # Only members call: the store prefix counts groups per member list, not globally.
        if world.rank not in members:
            return GroupMember.NON_GROUP_MEMBER
        key = ".".join(map(str, members))
        _state.local_groups[key] = count = _state.local_groups.get(key, 0) + 1
        prefix = f"local{key}-{count}"
    else:
        _state.groups += 1
        prefix = f"group{_state.groups}"
    made = _new_subgroup(world, backend, members, limit, prefix, pg_options)
    if made is not GroupMember.NON_GROUP_MEMBER:
        made.asked = asked or getattr(world, "asked", world.backend)
        made.desc = group_desc
    return made


def _new_subgroup(
    world: ProcessGroup,
    backend: str,
    members: list[int],
    limit: float,
    prefix: str,
    pg_options: dict | None,
) -> Any:
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
        prefix,
        pg_options,
    )


def _mpi_null() -> Any:
    from mpi4py import MPI

    return MPI.COMM_NULL


def new_secret() -> str:
    """A random job secret (what ``dtrain launch`` puts in DTRAIN_SECRET)."""
    return _secrets.token_hex(16)


__all__ = [
    "Backend",
    "GroupMember",
    "destroy_process_group",
    "get_backend",
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
