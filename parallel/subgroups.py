"""torch.distributed's ``new_subgroups`` and ``new_subgroups_by_enumeration``: several
disjoint groups at once, each made by ``new_group``."""

from __future__ import annotations

from typing import Any

from dtrain.parallel import api
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

    Collective: every rank of the default group must call this.

    Returns:
        ``(cur_subgroup, subgroups)``: this rank's subgroup, and every subgroup in order
        (``GroupMember.NON_GROUP_MEMBER`` for those this rank is not in).

    Raises:
        ValueError: ``group_size`` None without CUDA, not positive, above the group's size,
            or not dividing it.
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
    ranks = api.get_process_group_ranks(group)
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
        ValueError: an empty list, a rank in two subgroups, or a rank outside the world
            (checked before any group is made, so every rank raises alike).
    """
    if not ranks_per_subgroup_list:
        raise ValueError("new_subgroups_by_enumeration: ranks_per_subgroup_list cannot be empty")
    owner: dict = {}
    for ranks in ranks_per_subgroup_list:
        for rank in ranks:
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
