"""torch.distributed's API: init_process_group, the collectives on tensors, new_group.

Collective calls name their group rank arguments as PyTorch does (``src``/``dst`` are global
ranks). ``async_op=True`` returns a ``Work``; otherwise the call returns when done.
"""

from __future__ import annotations

import datetime
import logging
import secrets as _secrets
import warnings
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.parallel.errors import RendezvousError
from dtrain.parallel.group import ProcessGroup
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Work
from dtrain.runtime.backend import cupy_module
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


def _seconds(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _choose_backend() -> str:
    if cupy_module() is not None:
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

    ``backend`` None picks nccl when CUDA and NCCL are available, mpi under ``mpiexec``, and
    tcp otherwise. Rank and world size come from the arguments, the environment (RANK,
    WORLD_SIZE — as torchrun and ``dtrain launch`` set them) or MPI. ``init_method`` is
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
    backend = backend.lower()
    if backend == "gloo":
        backend = "tcp"  # PyTorch's CPU backend name: the same role
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS} (or None: automatic)")
    limit = _seconds(timeout) or config.timeout
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
    store = _connect_store(init_method, rank, world_size, limit, config)
    _state.world = _make_group(
        backend, rank, world_size, limit, list(range(world_size)), store, "world", pg_options
    )


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
    return _state.store


def _check_options(backend: str, pg_options: dict | None) -> None:
    from dtrain.parallel.backends.tcp import OPTIONS

    known = OPTIONS if backend == "tcp" else ()
    unknown = sorted(set(pg_options or ()) - set(known))
    if unknown:
        raise ValueError(
            f"pg_options {unknown} are not options of the {backend} backend; "
            f"it takes {list(known) or 'none'}"
        )


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
    _check_options(backend or world.backend, pg_options)
    members = sorted(set(range(world.size) if ranks is None else ranks))
    if any(not 0 <= r < world.size for r in members) or not members:
        raise ValueError(
            f"new_group: ranks {ranks} must be a non-empty subset of 0..{world.size - 1}"
        )
    _state.groups += 1
    limit = _seconds(timeout) or world.timeout
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
        backend or world.backend,
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


# ---- collectives on tensors ------------------------------------------------------------------
def _array(tensor: Any, name: str) -> Any:
    if isinstance(tensor, Tensor):
        return tensor._array
    if hasattr(tensor, "dtype") and hasattr(tensor, "shape"):
        return tensor
    raise TypeError(f"{name}: expected a dtrain Tensor (or an array), got {type(tensor).__name__}")


def _bump(*tensors: Any) -> None:
    for t in tensors:
        if isinstance(t, Tensor):
            t._version[0] += 1


def _finish(work: Work, async_op: bool, *changed: Any) -> Work | None:
    _bump(*changed)
    if async_op:
        return work
    work.wait()
    return None


def _group_rank(group: ProcessGroup, global_rank: int, what: str) -> int:
    if global_rank not in group.ranks:
        raise ValueError(f"{what}={global_rank} is not a member of this group ({group.ranks})")
    return group.ranks.index(global_rank)


def _p2p_group(group: Any, name: str) -> ProcessGroup:
    g = _group(group)
    if g is None:
        raise ValueError(
            f"{name}: this rank is not a member of the group; use a group it belongs to "
            "(or the default group)"
        )
    return g


def _not_member(name: str) -> None:
    warnings.warn(f"{name}: this rank is not a member of the group; nothing to do", stacklevel=3)


def all_reduce(
    tensor: Any,
    op: Any = ReduceOp.SUM,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Reduce ``tensor`` across the group, in place on every rank.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("all_reduce")
    work = g.all_reduce(_array(tensor, "all_reduce"), op, timeout, async_op=async_op)
    return _finish(work, async_op, tensor)


def broadcast(
    tensor: Any, src: int, group: Any = None, async_op: bool = False, timeout: float | None = None
) -> Work | None:
    """Copy ``tensor`` from global rank ``src`` to every rank of the group.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("broadcast")
    root = _group_rank(g, src, "src")
    work = g.broadcast(_array(tensor, "broadcast"), root, timeout, async_op=async_op)
    return _finish(work, async_op, tensor)


def reduce(
    tensor: Any,
    dst: int,
    op: Any = ReduceOp.SUM,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Reduce ``tensor`` across the group into global rank ``dst``'s tensor (the others keep
    theirs). Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("reduce")
    root = _group_rank(g, dst, "dst")
    array = _array(tensor, "reduce")
    scratch = array.copy()
    work = g.all_reduce(scratch, op, timeout, name="reduce", async_op=async_op)
    if g.rank == root:
        work = _Chained(work, lambda: array.__setitem__(Ellipsis, scratch))
    return _finish(work, async_op, tensor)


def all_gather(
    tensor_list: list,
    tensor: Any,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Fill ``tensor_list[i]`` with rank i's ``tensor``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("all_gather")
    array = _array(tensor, "all_gather")
    if len(tensor_list) != g.size:
        raise ValueError(
            f"all_gather: tensor_list has {len(tensor_list)} entries; the group has {g.size} ranks"
        )
    outputs = [_array(t, "all_gather") for t in tensor_list]
    for i, out in enumerate(outputs):
        if out.shape != array.shape or out.dtype != array.dtype:
            raise ValueError(
                f"all_gather: tensor_list[{i}] has shape {out.shape} and dtype "
                f"{out.dtype}; every entry must match the input {array.shape} {array.dtype}"
            )
    xp = np if type(array) is np.ndarray else cupy_module()
    gathered = xp.empty((g.size, *array.shape), dtype=array.dtype)
    inner = g.all_gather(gathered, array, timeout, async_op=async_op)

    def copy_out() -> None:
        for out, part in zip(outputs, gathered):
            out[...] = part

    work = _Chained(inner, copy_out)
    return _finish(work, async_op, *tensor_list)


def all_gather_into_tensor(
    output_tensor: Any,
    input_tensor: Any,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Concatenate every rank's ``input_tensor`` along dim 0 into ``output_tensor``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("all_gather_into_tensor")
    out = _array(output_tensor, "all_gather_into_tensor")
    inner = _array(input_tensor, "all_gather_into_tensor")
    work = g.all_gather(out, inner, timeout, async_op=async_op)
    return _finish(work, async_op, output_tensor)


def reduce_scatter(
    output: Any,
    input_list: list,
    op: Any = ReduceOp.SUM,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Rank i's ``output`` becomes the reduction of every rank's ``input_list[i]``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("reduce_scatter")
    if len(input_list) != g.size:
        raise ValueError(
            f"reduce_scatter: input_list has {len(input_list)} entries; the group "
            f"has {g.size} ranks"
        )
    arrays = [_array(t, "reduce_scatter") for t in input_list]
    out = _array(output, "reduce_scatter")
    for i, a in enumerate(arrays):
        if a.shape != out.shape or a.dtype != out.dtype:
            raise ValueError(
                f"reduce_scatter: input_list[{i}] has shape {a.shape} {a.dtype}; "
                f"every entry must match the output {out.shape} {out.dtype}"
            )
    xp = np if type(out) is np.ndarray else cupy_module()
    work = g.reduce_scatter(out, xp.stack(arrays), op, timeout, async_op=async_op)
    return _finish(work, async_op, output)


def reduce_scatter_tensor(
    output: Any,
    input: Any,
    op: Any = ReduceOp.SUM,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Rank i's ``output`` becomes the reduction of every rank's i-th block of ``input``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("reduce_scatter_tensor")
    work = g.reduce_scatter(
        _array(output, "reduce_scatter_tensor"),
        _array(input, "reduce_scatter_tensor"),
        op,
        timeout,
        async_op=async_op,
    )
    return _finish(work, async_op, output)


def barrier(group: Any = None, async_op: bool = False, timeout: float | None = None) -> Work | None:
    """Wait until every rank of the group has called barrier.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("barrier")
    return _finish(g.barrier(timeout, async_op=async_op), async_op)


def send(
    tensor: Any, dst: int, group: Any = None, tag: int = 0, timeout: float | None = None
) -> None:
    """Send ``tensor`` to global rank ``dst``; returns once it is on its way."""
    isend(tensor, dst, group, tag, timeout).wait()


def isend(
    tensor: Any, dst: int, group: Any = None, tag: int = 0, timeout: float | None = None
) -> Work:
    """Asynchronous ``send``."""
    g = _p2p_group(group, "isend")
    return g.send(_array(tensor, "send"), _group_rank(g, dst, "dst"), tag, timeout)


def recv(
    tensor: Any,
    src: int | None = None,
    group: Any = None,
    tag: int = 0,
    timeout: float | None = None,
) -> int:
    """Receive into ``tensor`` from global rank ``src`` (any when None); returns the sender."""
    g = _p2p_group(group, "recv")
    work = irecv(tensor, src, group, tag, timeout)
    work.wait()
    return g.ranks[work.source["source"]]


def irecv(
    tensor: Any,
    src: int | None = None,
    group: Any = None,
    tag: int = 0,
    timeout: float | None = None,
) -> Work:
    """Asynchronous ``recv``."""
    g = _p2p_group(group, "irecv")
    source = None if src is None else _group_rank(g, src, "src")
    work = g.recv(_array(tensor, "recv"), source, tag, timeout)
    _bump(tensor)
    return work


class _Chained(Work):
    """A Work that runs ``then`` once the inner collective finished."""

    def __init__(self, inner: Work, then: Any) -> None:
        super().__init__(inner.description)
        self.inner, self.then = inner, then

    def is_completed(self) -> bool:
        return self.inner.is_completed()

    def is_success(self) -> bool:
        return self.inner.is_success()

    def exception(self) -> BaseException | None:
        return self.inner.exception()

    def wait(self, timeout: float | None = None) -> bool:
        self.inner.wait(timeout)
        if self.then is not None:
            then, self.then = self.then, None
            then()
        return True


def new_secret() -> str:
    """A random job secret (what ``dtrain launch`` puts in DTRAIN_SECRET)."""
    return _secrets.token_hex(16)


__all__ = [
    "GroupMember",
    "all_gather",
    "all_gather_into_tensor",
    "all_reduce",
    "barrier",
    "broadcast",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "irecv",
    "is_initialized",
    "isend",
    "new_group",
    "new_secret",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "send",
]
