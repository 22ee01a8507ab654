"""torch.distributed's ``P2POp`` and ``batch_isend_irecv``: a batch of sends and receives
posted together, whose order between sends and receives does not matter.

A backend that has its own way to post a batch offers ``_batch_p2p(ops, timeout) ->
list[Work]``, ``ops`` being ``("send" | "recv", array, group_peer, tag)`` in list order:
nccl posts them all inside one NCCL group call (``ncclGroupStart``/``End``), the only way a
ring of blocking NCCL sends and receives cannot deadlock, and may send to this rank there
(``_p2p_to_self``). Elsewhere dtrain posts the sends first, then the receives (each kind in
list order, so the messages between one pair of ranks in one direction still match in
order): a tcp send completes once its bytes are written (the peer's receiver thread files
them in its mailbox by tag, receive posted or not) and an mpi send is an ``Isend``, so no
order of a batch can deadlock. Receives on tcp match by (source, tag) and never wait on the
group's collectives, as gloo's (``backends/mailbox.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
from typing import Any

from dtrain.parallel.collectives import _array, _bump, _group_rank, _p2p_group, irecv, isend
from dtrain.parallel.work import Work


class P2POp:
    """One operation of ``batch_isend_irecv``: ``op`` is ``isend`` or ``irecv``, ``peer``
    the global rank to send to or receive from (or ``group_peer``, its rank in ``group``),
    ``group`` None for the default group.

    Raises:
        ValueError: ``op`` is neither ``isend`` nor ``irecv``; both or neither of ``peer`` and
            ``group_peer``; a peer that is not an int (a bool or float), outside the group, or
            this rank (allowed on nccl only, as torch's gloo fails on it); ``tag`` not an int
            in 0..2**31 - 1.
        TypeError: ``tensor`` is not a tensor.
    """

    def __init__(
        self,
        op: Callable,
        tensor: Any,
        peer: int | None = None,
        group: Any = None,
        tag: int = 0,
        group_peer: int | None = None,
    ) -> None:
        if op is not isend and op is not irecv:
            name = getattr(op, "__name__", type(op).__name__)
            raise ValueError(
                f"P2POp: op={name!r}; expected dtrain.parallel.isend or dtrain.parallel.irecv"
            )
        _array(tensor, "P2POp")
        g = _p2p_group(group, "P2POp")
        if (peer is None) == (group_peer is None):
            raise ValueError(
                f"P2POp: peer={peer!r}, group_peer={group_peer!r}; pass exactly one of them"
            )
        if not _is_int(tag) or not 0 <= tag < 2**31:
            raise ValueError(f"P2POp: tag={tag!r}; pass an int in 0..2**31 - 1")
        if peer is not None and not _is_int(peer):
            raise ValueError(f"P2POp: peer={peer!r} must be an int (a global rank)")
        if group_peer is not None:
            if not _is_int(group_peer) or not 0 <= group_peer < len(g.ranks):
                raise ValueError(
                    f"P2POp: group_peer={group_peer!r} is not a rank of the group "
                    f"(0..{len(g.ranks) - 1})"
                )
            peer = g.ranks[group_peer]
        peer, tag = int(peer), int(tag)
        self.op, self.tensor, self.group, self.tag = op, tensor, group, tag
        self.peer = peer
        self.group_peer = _group_rank(g, peer, "dst" if op is isend else "src")
        # Refused here, so a batch never posts half its ops. NCCL takes a send to this rank
        # and its receive in one group call (as torch's batch does); gloo fails on it.
        if self.group_peer == g.rank and not getattr(g, "_p2p_to_self", False):
            raise ValueError(
                f"P2POp: peer {peer} is this rank, which the {g.backend} backend cannot send "
                "to or receive from; pick another rank (only nccl batches allow this rank)"
            )

    def __repr__(self) -> str:
        kind = "isend" if self.op is isend else "irecv"
        return f"P2POp({kind}, peer={self.peer}, tag={self.tag}, shape={self.tensor.shape})"


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def batch_isend_irecv(p2p_op_list: list[P2POp]) -> list[Work]:
    """Post every send and receive of ``p2p_op_list`` at once; returns their ``Work``s in
    list order. Sends and receives may come in any order (``[recv_from_1, send_to_1]`` is
    ``[send_to_1, recv_from_1]``); several between one pair of ranks in one direction match
    in list order. Every op must use the same group.

    Messages match by source and tag, as gloo's; on nccl (no tags) the batch is one NCCL
    group call, whose Works complete together.

    Raises:
        ValueError: an empty list, an entry that is not a P2POp, or mixed groups.
    """
    if not isinstance(p2p_op_list, list) or not p2p_op_list:
        raise ValueError(
            f"batch_isend_irecv: expected a non-empty list of P2POp, got {p2p_op_list!r}"
        )
    for i, entry in enumerate(p2p_op_list):
        if not isinstance(entry, P2POp):
            raise ValueError(
                f"batch_isend_irecv: entry {i} is {type(entry).__name__}; every entry must be "
                "a dtrain.parallel.P2POp"
            )
    group = p2p_op_list[0].group
    g = _p2p_group(group, "batch_isend_irecv")
    for i, entry in enumerate(p2p_op_list):
        if _p2p_group(entry.group, "batch_isend_irecv") is not g:
            raise ValueError(
                f"batch_isend_irecv: entry {i} uses another group than entry 0; all ops need "
                "to use the same group"
            )
    batched = getattr(g, "_batch_p2p", None)
    if batched is not None:
        ops = [
            ("send" if p.op is isend else "recv", _array(p.tensor, "P2POp"), p.group_peer, p.tag)
            for p in p2p_op_list
        ]
        posted = batched(ops, None)
        _bump(*[p.tensor for p in p2p_op_list if p.op is irecv])
        return posted
    works: list[Work | None] = [None] * len(p2p_op_list)
    for want in (isend, irecv):
        for i, p in enumerate(p2p_op_list):
            if p.op is want:
                works[i] = p.op(p.tensor, p.peer, group=p.group, tag=p.tag)
    return works


__all__ = ["P2POp", "batch_isend_irecv"]
