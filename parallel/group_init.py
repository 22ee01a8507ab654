"""``init_process_group``: joining the default group. Rank, world size and backend from
the arguments, the environment or MPI; the rendezvous store (rank 0 serves it, every rank
connects, checks the world size and says when it is done with it); and the backend's group
built on it. Re-exported by ``api.py``."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from dtrain.parallel.errors import ProcessGroupStateError, RendezvousError
from dtrain.parallel.group_state import BACKENDS, _seconds, _state, destroy_process_group
from dtrain.parallel.local_device import local_device
from dtrain.parallel.mpi_rendezvous import store_through_mpi
from dtrain.parallel.process_group import ProcessGroup
from dtrain.runtime.config import read_config, under_mpiexec
from dtrain.runtime.device import Device
from dtrain.runtime.device_selection import select_cuda_device


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
