"""torch.distributed's rooted and personalised collectives — gather, scatter, all_to_all,
all_to_all_single — built on the group's all_gather and broadcast, so every backend has them.

They move more bytes than a dedicated algorithm would (gather and all_to_all gather every
rank's input on every rank, scatter broadcasts the whole list): fine for metrics, indices
and small tensors, not for bulk traffic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.parallel.api import _group
from dtrain.parallel.collectives import _array, _finish, _group_rank, _not_member
from dtrain.parallel.process_group import ProcessGroup, check_writeable
from dtrain.parallel.work import Chained, Work
from dtrain.runtime.backend import cupy_module


def _xp(array: Any) -> Any:
    return np if type(array) is np.ndarray else cupy_module()


def _outputs(name: str, tensors: list, like: Any, what: str, size: int) -> list:
    """The arrays of ``tensors`` (one per rank, each shaped and typed as ``like``)."""
    if tensors is None or len(tensors) != size:
        raise ValueError(
            f"{name}: {what} has {None if tensors is None else len(tensors)} entries; the "
            f"root rank must pass one per rank of the group ({size})"
        )
    arrays = [_array(t, name) for t in tensors]
    for i, a in enumerate(arrays):
        if a.shape != like.shape or a.dtype != like.dtype:
            raise ValueError(
                f"{name}: {what}[{i}] has shape {a.shape} and dtype {a.dtype}; every entry "
                f"must match the tensor's {like.shape} {like.dtype}"
            )
    return arrays


def _not_at_root(name: str, tensors: list | None, what: str, root: int) -> None:
    if tensors:
        raise ValueError(
            f"{name}: {what} must be None (or empty) on ranks other than the root "
            f"(global rank {root}), as in torch.distributed"
        )


def gather(
    tensor: Any,
    gather_list: list | None = None,
    dst: int | None = None,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Fill global rank ``dst``'s ``gather_list[i]`` (``dst`` None: 0) with rank i's
    ``tensor``; the other ranks pass ``gather_list=None``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("gather")
    dst = g.ranks[0] if dst is None else dst
    root = _group_rank(g, dst, "dst")
    array = _array(tensor, "gather")
    outputs: list = []
    if g.rank == root:
        outputs = _outputs("gather", gather_list, array, "gather_list", g.size)
        for i, out in enumerate(outputs):
            check_writeable("gather", out, f"gather_list[{i}]")
    else:
        _not_at_root("gather", gather_list, "gather_list", dst)
    gathered = _xp(array).empty((g.size, *array.shape), dtype=array.dtype)
    inner = g.all_gather(gathered, array, timeout, async_op=async_op, name="gather")

    def copy_out() -> None:
        for out, part in zip(outputs, gathered):
            out[...] = part

    return _finish(Chained(inner, copy_out), async_op, *(gather_list if outputs else ()))


def scatter(
    tensor: Any,
    scatter_list: list | None = None,
    src: int | None = None,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Rank i's ``tensor`` becomes global rank ``src``'s ``scatter_list[i]`` (``src``
    None: 0); the other ranks pass ``scatter_list=None``.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("scatter")
    src = g.ranks[0] if src is None else src
    root = _group_rank(g, src, "src")
    out = _array(tensor, "scatter")
    check_writeable("scatter", out, "tensor")
    xp = _xp(out)
    if g.rank == root:
        payload = xp.stack(_outputs("scatter", scatter_list, out, "scatter_list", g.size))
    else:
        _not_at_root("scatter", scatter_list, "scatter_list", src)
        payload = xp.empty((g.size, *out.shape), dtype=out.dtype)
    inner = g.broadcast(payload, root, timeout, async_op=async_op, name="scatter")
    work = Chained(inner, lambda: out.__setitem__(Ellipsis, payload[g.rank]))
    return _finish(work, async_op, tensor)


def _splits(name: str, given: list | None, rows: int, size: int, what: str) -> list[int]:
    if given is None or len(given) == 0:
        if rows % size:
            raise ValueError(
                f"{name}: dim 0 of the {what} ({rows}) does not divide by the group size "
                f"({size}); pass {what}_split_sizes"
            )
        return [rows // size] * size
    splits = [int(s) for s in given]
    if len(splits) != size or any(s < 0 for s in splits) or sum(splits) != rows:
        raise ValueError(
            f"{name}: {what}_split_sizes={list(given)} must be {size} sizes >= 0 that add up "
            f"to the {what}'s dim 0 ({rows})"
        )
    return splits


def all_to_all_single(
    output: Any,
    input: Any,
    output_split_sizes: list[int] | None = None,
    input_split_sizes: list[int] | None = None,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Rank j's ``output`` block i (along dim 0) becomes rank i's ``input`` block j. Blocks
    are equal (dim 0 divided by the group size) unless the split sizes say otherwise.

    Collective: every rank in the group must call this. With split sizes, one small
    blocking all_gather of every rank's sizes comes first."""
    g = _group(group)
    if g is None:
        return _not_member("all_to_all_single")
    name = "all_to_all_single"
    out, inp = _array(output, name), _array(input, name)
    if out.dtype != inp.dtype or out.shape[1:] != inp.shape[1:]:
        raise ValueError(
            f"{name}: output {out.shape} {out.dtype} and input {inp.shape} {inp.dtype} must "
            "have the same dtype and the same shape after dim 0"
        )
    check_writeable(name, out, "output")
    sends = _splits(name, input_split_sizes, inp.shape[0], g.size, "input")
    recvs = _splits(name, output_split_sizes, out.shape[0], g.size, "output")
    xp = _xp(inp)
    if input_split_sizes or output_split_sizes:
        # Every rank's sizes, on every rank: all of them see a mismatch and raise together.
        both = np.empty((g.size, 2, g.size), dtype=np.int64)
        mine = np.array([sends, recvs], np.int64)
        g.all_gather(both, mine, timeout, async_op=False, name=name).wait()
        table = both[:, 0]  # table[i][j]: the rows rank i sends rank j
        if not (both[:, 1] == table.T).all():
            j = int(np.flatnonzero((both[:, 1] != table.T).any(axis=1))[0])
            raise ValueError(
                f"{name}: rank {g.ranks[j]} expects blocks of {both[j, 1].tolist()} rows but "
                f"the ranks send it {table[:, j].tolist()}; every rank's output_split_sizes "
                "must match what the others send it"
            )
    else:
        table = np.full((g.size, g.size), sends[0], dtype=np.int64)
    longest = int(table.sum(axis=1).max())
    padded = xp.zeros((longest, *inp.shape[1:]), dtype=inp.dtype)
    padded[: inp.shape[0]] = inp
    gathered = xp.empty((g.size, *padded.shape), dtype=inp.dtype)
    inner = g.all_gather(gathered, padded, timeout, async_op=async_op, name=name)

    def copy_out() -> None:
        row = 0
        for i in range(g.size):
            start = int(table[i, : g.rank].sum())
            count = int(table[i, g.rank])
            out[row : row + count] = gathered[i, start : start + count]
            row += count

    return _finish(Chained(inner, copy_out), async_op, output)


def all_to_all(
    output_tensor_list: list,
    input_tensor_list: list,
    group: Any = None,
    async_op: bool = False,
    timeout: float | None = None,
) -> Work | None:
    """Rank j's ``output_tensor_list[i]`` becomes rank i's ``input_tensor_list[j]``
    (shapes may differ between pairs; one dtype).

    Collective: every rank in the group must call this. One small blocking all_gather of
    the sizes comes first."""
    g: ProcessGroup | None = _group(group)
    if g is None:
        return _not_member("all_to_all")
    name = "all_to_all"
    ins = [_array(t, name) for t in input_tensor_list]
    outs = [_array(t, name) for t in output_tensor_list]
    if len(ins) != g.size or len(outs) != g.size:
        raise ValueError(
            f"{name}: got {len(outs)} outputs and {len(ins)} inputs; pass one of each per rank "
            f"of the group ({g.size})"
        )
    dtypes = {a.dtype for a in (*ins, *outs)}
    if len(dtypes) != 1:
        raise ValueError(
            f"{name}: every tensor must have one dtype, got {sorted(map(str, dtypes))}"
        )
    for i, out in enumerate(outs):
        check_writeable(name, out, f"output_tensor_list[{i}]")
    xp = _xp(ins[0])
    flat_in = xp.concatenate([xp.ravel(a) for a in ins]) if ins else xp.empty(0)
    flat_out = xp.empty(sum(a.size for a in outs), dtype=flat_in.dtype)
    inner = all_to_all_single(
        flat_out,
        flat_in,
        [a.size for a in outs],
        [a.size for a in ins],
        group=group,
        async_op=True,
        timeout=timeout,
    )

    def copy_out() -> None:
        start = 0
        for out in outs:
            out[...] = flat_out[start : start + out.size].reshape(out.shape)
            start += out.size

    return _finish(Chained(inner, copy_out), async_op, *output_tensor_list)


__all__ = ["all_to_all", "all_to_all_single", "gather", "scatter"]
