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


def tags_in_send_order(timeout: float = 30) -> dict:
    """tcp matches a pair's messages in send order and checks the tag: rank 1 receiving
    tag 2 before tag 1, where rank 0 sent tag 1 first, raises (gloo would match by tag)."""
    dist.init_process_group(timeout=timeout)
    out: dict = {}
    if dist.get_rank() == 0:
        ops = [dist.P2POp(dist.isend, dt.ones(2), 1, tag=1)]
        ops.append(dist.P2POp(dist.isend, dt.ones(2), 1, tag=2))
    else:
        ops = [dist.P2POp(dist.irecv, dt.zeros(2), 0, tag=2)]
        ops.append(dist.P2POp(dist.irecv, dt.zeros(2), 0, tag=1))
    try:
        for work in dist.batch_isend_irecv(ops):
            work.wait()
    except dist.CollectiveError as exc:
        out["error"] = str(exc)
    return out
