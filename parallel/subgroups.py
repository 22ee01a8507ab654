"""torch.distributed's ``new_subgroups`` and ``new_subgroups_by_enumeration``: several
disjoint groups at once, each made by ``new_group``."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from dtrain.parallel import api
from dtrain.parallel.objects import all_gather_object
from dtrain.runtime.backend import cupy_module


def new_subgroups(
    group_size: int | None = None,
    group: Any = None,
    timeout: Any = None,
    backend: str | None = None,
    pg_options: dict | None = None,
    group_desc: str | None = None,
) -> tuple[Any, list]:
    """Split ``group`` (the default group when None) into consecutive subgroups of
    ``group_size`` ranks; ``group_size`` None is the number of CUDA devices this machine
    shows (intra-machine subgroups, as in torch).

    Collective: every rank of the default group must call this, the ranks outside
    ``group`` too (passing the ``GroupMember.NON_GROUP_MEMBER`` that ``new_group`` gave
    them): with a ``group``, one ``all_gather_object`` over the default group tells them its
    ranks, and they take part in making each subgroup (torch's non-members raise instead).

    Returns:
        ``(cur_subgroup, subgroups)``: this rank's subgroup, and every subgroup in order
        (``GroupMember.NON_GROUP_MEMBER`` for those this rank is not in).

    Raises:
        ValueError: ``group_size`` None without CUDA, not positive, above the group's size,
            or not dividing it; no rank is a member of ``group``.
    """
    if group_size is None:
        cupy = cupy_module()
        if cupy is None:
            raise ValueError(
                "new_subgroups: group_size=None means one subgroup per machine of "
                "torch.cuda.device_count() ranks, and no CUDA device is visible; pass "
                "group_size"
            )
        group_size = int(cupy.cuda.runtime.getDeviceCount())
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"new_subgroups: group_size={group_size!r} must be a positive int")
    ranks = _ranks_of(group)
    if len(ranks) < group_size:
        raise ValueError(
            f"new_subgroups: group_size={group_size} exceeds the group's size {len(ranks)}"
        )
    if len(ranks) % group_size:
        raise ValueError(
            f"new_subgroups: the group's size {len(ranks)} is not divisible by "
            f"group_size={group_size}; pick a divisor, or use new_subgroups_by_enumeration"
        )
    return new_subgroups_by_enumeration(
        [ranks[i : i + group_size] for i in range(0, len(ranks), group_size)],
        timeout=timeout,
        backend=backend,
        pg_options=pg_options,
        group_desc=group_desc,
    )


def _ranks_of(group: Any) -> list[int]:
    """``group``'s global ranks, on its members and (through one all_gather_object over the
    default group) on the ranks outside it as well."""
    world = api._group(None)
    if group is None or group is world:
        return list(world.ranks)
    mine = None if group is api.GroupMember.NON_GROUP_MEMBER else api.get_process_group_ranks(group)
    everyone: list = [None] * world.size
    all_gather_object(everyone, mine)
    known = [ranks for ranks in everyone if ranks is not None]
    if not known:
        raise ValueError(
            "new_subgroups: every rank passed GroupMember.NON_GROUP_MEMBER as group; pass the "
            "group new_group returned on its members"
        )
    if any(ranks != known[0] for ranks in known):
        raise ValueError(
            f"new_subgroups: the ranks passed different groups ({known[0]} and "
            f"{next(r for r in known if r != known[0])}); every member must pass the same group"
        )
    return known[0]


def new_subgroups_by_enumeration(
    ranks_per_subgroup_list: list,
    timeout: Any = None,
    backend: str | None = None,
    pg_options: dict | None = None,
    group_desc: str | None = None,
) -> tuple[Any, list]:
    """One subgroup per list of global ranks in ``ranks_per_subgroup_list``; the lists must
    not overlap, and a rank may be in none.

    Collective: every rank of the default group must call this.

    Returns:
        ``(cur_subgroup, subgroups)``: this rank's subgroup (None when it is in none), and
        every subgroup in order (``GroupMember.NON_GROUP_MEMBER`` for those it is not in).

    Raises:
        ValueError: an empty list or subgroup, a rank in two subgroups, or a rank outside
            the world (checked before any group is made, so every rank raises alike).
    """
    if not ranks_per_subgroup_list:
        raise ValueError("new_subgroups_by_enumeration: ranks_per_subgroup_list cannot be empty")
    owner: dict = {}
    world = api.get_world_size()
    for ranks in ranks_per_subgroup_list:
        if not ranks:
            raise ValueError(
                f"new_subgroups_by_enumeration: an empty subgroup in {ranks_per_subgroup_list}; "
                "every subgroup needs at least one rank"
            )
        for rank in ranks:
            if isinstance(rank, bool) or not isinstance(rank, Integral) or not 0 <= rank < world:
                raise ValueError(
                    f"new_subgroups_by_enumeration: rank {rank!r} of subgroup {list(ranks)} is "
                    f"not a rank of the world (0..{world - 1})"
                )
            if rank in owner:
                raise ValueError(
                    f"new_subgroups_by_enumeration: rank {rank} has appeared in both subgroup "
                    f"{list(owner[rank])} and {list(ranks)}; subgroups must not overlap"
                )
            owner[rank] = ranks
    me = api.get_rank()
    subgroups, current = [], None
    for ranks in ranks_per_subgroup_list:
        made = api.new_group(
            ranks=list(ranks),
            timeout=timeout,
            backend=backend,
            pg_options=pg_options,
            group_desc=group_desc,
        )
        subgroups.append(made)
        if me in ranks:
            current = made
    return current, subgroups


__all__ = ["new_subgroups", "new_subgroups_by_enumeration"]
