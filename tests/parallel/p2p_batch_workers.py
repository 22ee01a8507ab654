"""Worker functions for the ``batch_isend_irecv`` tests (run by launcher.py in every rank)."""

from __future__ import annotations

import numpy as np

import dtrain as dt
import dtrain.parallel as dist


def _raises(call, kind) -> str | None:
    try:
        call()
    except kind as exc:
        return str(exc)
    return None


def ring(size: int = 5, recv_first: bool = False, timeout: float = 30) -> dict:
    """Each rank sends its rank-filled tensor right and receives from the left, in one batch
    (receive listed first when ``recv_first``); then two messages to the right in one batch,
    which must arrive in list order; then a ring in a subgroup of ranks 1.. by group_peer."""
    dist.init_process_group(timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    right, left = (rank + 1) % world, (rank - 1) % world
    out: dict = {}
    send = dt.arange(size, dtype=dt.float32) + 1000 * rank
    got = dt.zeros(size)
    ops = [dist.P2POp(dist.isend, send, right), dist.P2POp(dist.irecv, got, left)]
    works = dist.batch_isend_irecv(ops[::-1] if recv_first else ops)
    out["works"] = len(works)
    for work in works:
        work.wait()
    out["ring"] = got.tolist()

    first, second = np.full(3, rank + 0.5, np.float32), np.full(3, rank + 0.25, np.float32)
    into = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    works = dist.batch_isend_irecv(
        [
            dist.P2POp(dist.irecv, into[0], left),
            dist.P2POp(dist.isend, first, right),
            dist.P2POp(dist.irecv, into[1], left),
            dist.P2POp(dist.isend, second, right),
        ]
    )
    for work in works:
        work.wait()
    out["ordered"] = [a.tolist() for a in into]

    sub = dist.new_group(list(range(1, world)))
    if sub is not dist.GroupMember.NON_GROUP_MEMBER and world > 2:
        me, n = dist.get_rank(sub), dist.get_world_size(sub)
        box = np.zeros(2, np.int64)
        ops = [
            dist.P2POp(dist.isend, np.full(2, rank, np.int64), group=sub, group_peer=(me + 1) % n),
            dist.P2POp(dist.irecv, box, group=sub, group_peer=(me - 1) % n),
        ]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        out["subgroup"] = box.tolist()
        out["errors"] = {
            "mixed_groups": _raises(
                lambda: dist.batch_isend_irecv(
                    [
                        dist.P2POp(dist.isend, np.zeros(1), 1 + (me + 1) % n, group=sub),
                        dist.P2POp(dist.irecv, np.zeros(1), left),
                    ]
                ),
                ValueError,
            ),
            "outside_peer": _raises(
                lambda: dist.P2POp(dist.isend, np.zeros(1), 0, group=sub), ValueError
            ),
        }
    out["bad"] = {
        "op": _raises(lambda: dist.P2POp(dist.send, got, right), ValueError),
        "empty": _raises(lambda: dist.batch_isend_irecv([]), ValueError),
        "entry": _raises(lambda: dist.batch_isend_irecv([(dist.isend, got, right)]), ValueError),
        "both_peers": _raises(
            lambda: dist.P2POp(dist.isend, got, right, group_peer=right), ValueError
        ),
        "tensor": _raises(lambda: dist.P2POp(dist.isend, [1.0], right), TypeError),
        "self": _raises(lambda: dist.P2POp(dist.irecv, got, rank), ValueError),
        "float_peer": _raises(lambda: dist.P2POp(dist.isend, got, float(right)), ValueError),
        "bool_group_peer": _raises(
            lambda: dist.P2POp(dist.isend, got, group_peer=bool(right)), ValueError
        ),
        "negative_tag": _raises(lambda: dist.P2POp(dist.irecv, got, left, tag=-1), ValueError),
        "huge_tag": _raises(lambda: dist.P2POp(dist.isend, got, right, tag=2**31), ValueError),
        "float_tag": _raises(lambda: dist.P2POp(dist.isend, got, right, tag=1.0), ValueError),
    }
    out["numpy_peer"] = dist.P2POp(dist.isend, got, np.int64(right), tag=np.int32(3)).peer
    probe = dt.tensor([1.0])
    dist.all_reduce(probe)
    out["probe"] = probe.tolist()
    dist.destroy_process_group()
    return out


def tags_out_of_order(timeout: float = 30) -> dict:
    """Rank 1 sends tag 1 then tag 2 (isend, then a batch of tags 5 and 6); rank 0 receives
    tag 2 first (and tag 6 first in its batch): matched by tag, as gloo does."""
    dist.init_process_group(timeout=timeout)
    out: dict = {}
    if dist.get_rank() == 1:
        first = dist.isend(np.full(4, 1.0, np.float32), 0, tag=1)
        second = dist.isend(np.full(4, 2.0, np.float32), 0, tag=2)
        first.wait()
        second.wait()
        ops = [dist.P2POp(dist.isend, dt.full((3,), 5.0), 0, tag=5)]
        ops.append(dist.P2POp(dist.isend, dt.full((3,), 6.0), 0, tag=6))
        for work in dist.batch_isend_irecv(ops):
            work.wait()
    elif dist.get_rank() == 0:
        one, two = np.zeros(4, np.float32), np.zeros(4, np.float32)
        out["sources"] = [dist.recv(two, 1, tag=2), dist.recv(one, src=None, tag=1)]
        out["by_tag"] = [one.tolist(), two.tolist()]
        five, six = dt.zeros(3), dt.zeros(3)
        ops = [dist.P2POp(dist.irecv, six, 1, tag=6), dist.P2POp(dist.irecv, five, 1, tag=5)]
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        out["batch_by_tag"] = [five.tolist(), six.tolist()]
    dist.barrier()
    dist.destroy_process_group()
    return out


def p2p_apart_from_collectives(timeout: float = 30) -> dict:
    """An irecv posted before an all_reduce that the sender joins before it sends; an isend
    posted behind an async all_reduce that the receiver joins only after its recv. Both
    complete on tcp (gloo's behaviour), neither holds the other."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    x = np.full(2, rank + 1.0)
    out: dict = {}
    if rank == 0:
        got = np.zeros(3)
        work = dist.irecv(got, 1, tag=3)
        dist.all_reduce(x)
        work.wait()
        out["irecv_first"] = got.tolist()
        reduced = dist.all_reduce(x, async_op=True)
        sent = dist.isend(np.full(3, 9.0), 1, tag=4)
        sent.wait()
        reduced.wait()
    else:
        dist.all_reduce(x)
        dist.send(np.full(3, 7.0), 0, tag=3)
        got = np.zeros(3)
        dist.recv(got, 0, tag=4)
        out["isend_behind"] = got.tolist()
        dist.all_reduce(x)
    out["reduced"] = x.tolist()
    dist.destroy_process_group()
    return out


def p2p_errors(timeout: float = 30) -> dict:
    """Rank 0's receive times out (rank 1 sent another tag) and names the peer and both
    tags; on a fresh group, a receive of the wrong size names both signatures."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    out: dict = {}
    first, second = dist.new_group(), dist.new_group()
    if rank == 1:
        dist.send(np.ones(2, np.float32), 0, group=first, tag=5)
        dist.send(np.ones(4, np.float32), 0, group=second, tag=0)
    else:
        for key, call in (
            ("timeout", lambda: dist.recv(np.zeros(2, np.float32), 1, first, tag=4, timeout=1)),
            ("size", lambda: dist.recv(np.zeros(5, np.float32), 1, second)),
        ):
            try:
                call()
                out[key] = None
            except dist.CollectiveError as exc:
                out[key] = {"message": str(exc), "op": exc.op, "rank": exc.rank}
        out["broken"] = _raises(lambda: dist.recv(np.zeros(2), 1, first), dist.CollectiveError)
    dist.barrier()
    dist.destroy_process_group()
    return out


def any_source_after_senders_left(timeout: float = 60) -> dict:
    """Rank 1 leaves the group; rank 0's receive from any rank (its only possible sender
    gone) fails at once, naming rank 1, instead of waiting for the timeout."""
    dist.init_process_group(timeout=timeout)
    rank = dist.get_rank()
    dist.barrier()
    out: dict = {}
    if rank == 0:
        try:
            dist.recv(np.zeros(2), None, tag=3)
            out["error"] = None
        except dist.CollectiveError as exc:
            out["error"] = {"message": str(exc), "op": exc.op}
    dist.destroy_process_group()
    return out
