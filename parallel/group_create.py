"""``new_group``: a group of some of the default group's ranks, made over the world's
store (or MPI's communicator), with the world's backend or another one. Re-exported by
``api.py``."""

from __future__ import annotations

from typing import Any

from dtrain.parallel.group_init import _backend_name, _check_options, _make_group, _per_device
from dtrain.parallel.group_state import GroupMember, _group, _seconds, _state
from dtrain.parallel.process_group import ProcessGroup


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
