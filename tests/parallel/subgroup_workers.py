"""Worker functions for the ``new_subgroups`` tests (run by launcher.py in every rank)."""

from __future__ import annotations

import dtrain as dt
import dtrain.parallel as dist
from dtrain.parallel import api
from dtrain.runtime.backend import cupy_module


def _sum_in(group) -> float | None:
    """All-reduce of (global rank + 1) over ``group`` (None: this rank is in no subgroup)."""
    if group is None:
        return None
    value = dt.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value, group=group)
    return value.item()


def _members(subgroups: list) -> list:
    return [
        None if g is dist.GroupMember.NON_GROUP_MEMBER else dist.get_process_group_ranks(g)
        for g in subgroups
    ]


def _raises(call) -> str | None:
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return None


def subgroups(timeout: float = 30) -> dict:
    dist.init_process_group(timeout=timeout)
    out: dict = {}
    cur, groups = dist.new_subgroups(2)
    out["halves"] = {"sum": _sum_in(cur), "members": _members(groups)}
    cur, groups = dist.new_subgroups_by_enumeration([[0, 2], [1, 3]])
    out["interleaved"] = {"sum": _sum_in(cur), "members": _members(groups)}
    cur, groups = dist.new_subgroups_by_enumeration([[0, 1], [2]])
    out["partial"] = {"sum": _sum_in(cur), "members": _members(groups), "none": cur is None}
    everyone = dist.new_group([0, 1, 2, 3])
    cur, groups = dist.new_subgroups(group_size=4, group=everyone)
    out["whole"] = {"sum": _sum_in(cur), "members": _members(groups)}
    out["errors"] = {
        "overlap": _raises(lambda: dist.new_subgroups_by_enumeration([[0, 1], [1, 2]])),
        "empty": _raises(lambda: dist.new_subgroups_by_enumeration([])),
        "indivisible": _raises(lambda: dist.new_subgroups(3)),
        "too_big": _raises(lambda: dist.new_subgroups(8)),
        "zero": _raises(lambda: dist.new_subgroups(0)),
    }
    before = api._state.groups
    out["errors"]["outside_world"] = _raises(
        lambda: dist.new_subgroups_by_enumeration([[0, 1], [2, 5]])
    )
    out["errors"]["empty_subgroup"] = _raises(lambda: dist.new_subgroups_by_enumeration([[0], []]))
    out["groups_made_by_errors"] = api._state.groups - before
    if cupy_module() is None:
        out["errors"]["no_cuda_default"] = _raises(lambda: dist.new_subgroups())
    probe = dt.tensor([1.0])
    dist.all_reduce(probe)  # the failed calls made no group: every rank still in step
    out["probe"] = probe.item()
    dist.destroy_process_group()
    return out


def of_a_subgroup(timeout: float = 10) -> dict:
    """``new_subgroups(group=g)`` called by every rank, those outside ``g`` included (with
    the NON_GROUP_MEMBER they got); then a new group of everyone still works."""
    dist.init_process_group(timeout=timeout)
    g = dist.new_group([1, 2, 3])
    cur, groups = dist.new_subgroups(1, group=g)
    out = {"sum": _sum_in(cur), "members": _members(groups), "none": cur is None}
    everyone = dist.new_group([0, 1, 2, 3])
    out["after"] = _sum_in(everyone)
    dist.destroy_process_group()
    return out
