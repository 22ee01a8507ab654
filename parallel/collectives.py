"""torch.distributed's collectives on tensors: all_reduce, broadcast, ..., send/recv.

Collective calls name their group rank arguments as PyTorch does (``src``/``dst`` are global
ranks). ``async_op=True`` returns a ``Work``; otherwise the call returns when done.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.parallel.api import _group, _seconds
from dtrain.parallel.process_group import ProcessGroup, check_writeable
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Chained, Work
from dtrain.runtime.backend import cupy_module


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
    work._result = [t for t in changed if isinstance(t, Tensor)]
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
    check_writeable("reduce", array, "tensor" if g.rank == root else None)
    scratch = array.copy()
    work = g.all_reduce(scratch, op, timeout, name="reduce", async_op=async_op)
    if g.rank == root:
        work = Chained(work, lambda: array.__setitem__(Ellipsis, scratch))
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
        check_writeable("all_gather", out, f"tensor_list[{i}]")
    xp = np if type(array) is np.ndarray else cupy_module()
    gathered = xp.empty((g.size, *array.shape), dtype=array.dtype)
    inner = g.all_gather(gathered, array, timeout, async_op=async_op)

    def copy_out() -> None:
        for out, part in zip(outputs, gathered):
            out[...] = part

    work = Chained(inner, copy_out)
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


def barrier(
    group: Any = None,
    async_op: bool = False,
    device_ids: list[int] | None = None,
    timeout: float | None = None,
) -> Work | None:
    """Wait until every rank of the group has called barrier. ``device_ids`` (torch's, for
    NCCL) is accepted and has no effect.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("barrier")
    return _finish(g.barrier(timeout, async_op=async_op), async_op)


def monitored_barrier(group: Any = None, timeout: Any = None, wait_all_ranks: bool = False) -> None:
    """A barrier with a deadline (``timeout``: seconds or a timedelta; None: the group's).
    A rank that does not arrive in time is named in the CollectiveError, as every dtrain
    collective names it (tcp; mpi names the op only). ``wait_all_ranks`` is accepted: the
    error names the first missing rank.

    Collective: every rank in the group must call this."""
    barrier(group, timeout=_seconds(timeout, "monitored_barrier"))


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
    if source == g.rank:
        raise ValueError(f"recv: src {src} is this rank; receive from another rank")
    work = g.recv(_array(tensor, "recv"), source, tag, timeout)
    _bump(tensor)
    return work


__all__ = [
    "all_gather",
    "all_gather_into_tensor",
    "all_reduce",
    "barrier",
    "broadcast",
    "irecv",
    "isend",
    "monitored_barrier",
    "recv",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "send",
]
