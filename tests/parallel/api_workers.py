"""Worker functions for the torch.distributed-parity tests (run by launcher.py in every
rank): gather/scatter and all_to_all, the object versions, group handles, torch's keywords.
Each returns what it saw; the tests compare it with numpy references."""

from __future__ import annotations

import datetime

import numpy as np

import dtrain as dt
import dtrain.parallel as dist


def _raises(fn: object, kind: type) -> str:
    try:
        fn()
    except kind as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def rooted(backend: str | None = None, timeout: float = 30) -> dict:
    """gather, scatter, all_to_all_single, all_to_all, with the root on every rank, sync
    and async, Tensors and arrays; the values come back for the test to check."""
    dist.init_process_group(backend, timeout=timeout)
    rank, n = dist.get_rank(), dist.get_world_size()
    out: dict = {"gather": {}, "scatter": {}}
    for root in range(n):
        for async_op in (False, True):
            key = f"{root}/{'async' if async_op else 'sync'}"
            mine = dt.tensor(np.arange(3, dtype=np.float32) + 10 * rank)
            slots = [dt.zeros(3) for _ in range(n)] if rank == root else None
            work = dist.gather(mine, slots, dst=root, async_op=async_op)
            if async_op:
                work.wait()
            out["gather"][key] = None if slots is None else [s.tolist() for s in slots]
            parts = [np.full((2, 2), 100 * i + root, np.int64) for i in range(n)]
            target = np.zeros((2, 2), np.int64)
            work = dist.scatter(
                target, parts if rank == root else None, src=root, async_op=async_op
            )
            if async_op:
                work.wait()
            out["scatter"][key] = target.tolist()
    # all_to_all_single, equal blocks: rank r sends block j = 10 r + j.
    send = np.repeat(np.arange(n, dtype=np.float64) + 10 * rank, 2)
    recv = np.zeros(2 * n)
    dist.all_to_all_single(recv, send)
    out["a2a_equal"] = recv.tolist()
    # uneven: rank r sends (j + 1) rows of value 10 r + j to rank j, each row of width 3.
    rows_out = [j + 1 for j in range(n)]
    send = np.concatenate([np.full((j + 1, 3), 10 * rank + j, np.int32) for j in range(n)])
    recv = np.zeros(((rank + 1) * n, 3), np.int32)
    work = dist.all_to_all_single(recv, send, [rank + 1] * n, rows_out, async_op=True)
    work.wait()
    out["a2a_uneven"] = recv.tolist()
    # Each rank's sizes add up, but every rank sends 2 rows to rank 0, which expects 1 from
    # each: every rank sees it in the size exchange and raises.
    out["a2a_bad_sizes"] = _raises(
        lambda: dist.all_to_all_single(np.zeros(n), np.zeros(2), [1] * n, [2] + [0] * (n - 1)),
        ValueError,
    )
    ins = [dt.tensor(np.full(j + rank + 1, 10.0 * rank + j, np.float32)) for j in range(n)]
    outs = [dt.zeros(rank + i + 1) for i in range(n)]
    dist.all_to_all(outs, ins)
    out["a2a_list"] = [t.tolist() for t in outs]
    dist.destroy_process_group()
    return out


def objects(timeout: float = 30) -> dict:
    """gather_object / scatter_object_list (JSON values) and their argument errors, which
    every rank raises together when the root's arguments are wrong."""
    dist.init_process_group(timeout=timeout)
    rank, n = dist.get_rank(), dist.get_world_size()
    out: dict = {}
    for root in range(n):
        slots = [None] * n if rank == root else None
        dist.gather_object({"rank": rank, "items": list(range(rank))}, slots, dst=root)
        out[f"gather_object/{root}"] = slots
        got = [None]
        given = [{"to": i, "from": root} for i in range(n)] if rank == root else None
        dist.scatter_object_list(got, given, src=root)
        out[f"scatter_object/{root}"] = got[0]
    got = [None]
    out["scatter_wrong_length"] = _raises(
        lambda: dist.scatter_object_list(got, [1] * (n + 1) if rank == 0 else None, src=0),
        ValueError,
    )
    out["scatter_tuple"] = _raises(
        lambda: dist.scatter_object_list(got, [(1, 2)] * n if rank == 0 else None, src=0),
        TypeError,
    )
    out["gather_root_wrong"] = _raises(
        lambda: dist.gather_object(1, [None] if rank == 0 else None, dst=0), ValueError
    )
    out["gather_list_off_root"] = _raises(
        lambda: dist.gather_object(1, [None] * n, dst=(rank + 1) % n), ValueError
    )
    if rank == 0:
        dist.send_object_list([{"a": [1, 2]}, None, "z"], dst=1)
        out["send_tuple"] = _raises(lambda: dist.send_object_list([(1,)], dst=1), TypeError)
        dist.send_object_list([1, 2, 3], dst=1)
    elif rank == 1:
        got = [None] * 3
        out["recv_sender"] = dist.recv_object_list(got)  # from any rank
        out["recv_object_list"] = got
        out["recv_tuple"] = _raises(lambda: dist.recv_object_list([None], src=0), TypeError)
        out["recv_wrong_length"] = _raises(lambda: dist.recv_object_list([None], 0), ValueError)
    objs = [rank, "x"] if rank == 0 else [None, None]
    dist.broadcast_object_list(objs, device="cpu")  # torch's keyword; src defaults to 0
    out["broadcast_device"] = objs
    probe = dt.tensor([1.0])
    dist.all_reduce(probe)
    out["probe"] = probe.tolist()
    dist.destroy_process_group()
    return out


def handles(timeout: float = 30) -> dict:
    """dist.group.WORLD, GroupMember.WORLD, rank lookups, torch's keywords, Work.wait with
    a timedelta, futures, recv from oneself, monitored_barrier, local-synchronised groups."""
    out: dict = {"world_before": dist.group.WORLD is None}
    dist.init_process_group(
        "cpu:gloo,cuda:nccl", timeout=timeout, group_name="main", device_id=None
    )
    rank, n = dist.get_rank(), dist.get_world_size()
    out["backend"] = [dist.get_backend(), dist.get_backend() == dist.Backend.GLOO]
    out["world_is_default"] = [
        dist.group.WORLD is dist.GroupMember.WORLD,
        dist.get_rank(dist.group.WORLD) == rank,
        dist.get_process_group_ranks(dist.group.WORLD),
    ]
    x = dt.tensor([float(rank + 1)])
    dist.all_reduce(x, group=dist.group.WORLD)
    out["all_reduce_world"] = x.tolist()
    last = n - 1
    sub = dist.new_group([last], group_desc="the last rank")
    if rank == last:
        out["sub"] = [
            dist.get_process_group_ranks(sub),
            dist.get_global_rank(sub, 0),
            dist.get_group_rank(sub, last),
            dist.get_backend(sub),
        ]
    # Only the members call it with use_local_synchronization=True.
    if rank != 0:
        local = dist.new_group(list(range(1, n)), use_local_synchronization=True)
        y = dt.tensor([1.0])
        dist.all_reduce(y, group=local)
        out["local_group_sum"] = y.tolist()
    work = dist.all_reduce(dt.tensor([1.0]), async_op=True)
    out["wait_timedelta"] = work.wait(timeout=datetime.timedelta(seconds=timeout))
    out["result"] = [t.tolist() for t in work.result()]
    fut = dist.all_reduce(dt.tensor([2.0]), async_op=True).get_future()
    chained = fut.then(lambda f: f.value()[0] * 10)
    out["future"] = [chained.wait().tolist(), fut.done(), chained.done()]
    out["recv_self"] = _raises(lambda: dist.recv(dt.zeros(1), src=rank), ValueError)
    out["irecv_self"] = _raises(lambda: dist.irecv(dt.zeros(1), src=rank), ValueError)
    dist.barrier(device_ids=[0])
    dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout), wait_all_ranks=True)
    out["second_init"] = _raises(lambda: dist.init_process_group(), ValueError)
    probe = dt.tensor([1.0])
    dist.all_reduce(probe)  # the group survived the refused calls
    out["probe"] = probe.tolist()
    dist.destroy_process_group()
    return out
