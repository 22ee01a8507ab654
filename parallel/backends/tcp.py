"""The tcp backend: a full mesh of authenticated sockets between the ranks.

Large collectives run as rings pipelined in chunks: all-reduce is a reduce-scatter followed by
an all-gather, and each chunk a rank receives is forwarded to the next rank as soon as it has
landed, so all ``2 (n - 1)`` steps overlap; a large broadcast is a pipelined chain. Small
collectives are one direct exchange with every peer, reduced in rank order (the
latency-optimal choice for a handful of ranks). Every rank ends with bitwise-identical
results. How frames move and land on one connection is ``tcp_peer.py``.

When every rank of the group is on this host, collectives go through shared memory instead
(``shm.py``; ``DTRAIN_SHM=0`` turns that off); the sockets then carry point-to-point messages
and failures. Point-to-point messages are matched by tag apart from the collectives, and never
wait on the group's executor (``mailbox.py``). Any failure — a dead or stalled peer, a
mismatched call — breaks the group on every rank: the rank that sees it tells the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.parallel.backends import mesh, shm
from dtrain.parallel.backends.frames import ABORT, BYE, DATA, DTYPE_CODES, OP_CODES, OPS, Header
from dtrain.parallel.backends.mailbox import Mailbox, Outgoing, Receive
from dtrain.parallel.backends.tcp_peer import MAX_CONTROL, UFUNCS, Peer, Posted
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.process_group import ProcessGroup, _flat
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.store import StoreClient
from dtrain.parallel.work import Work

log = logging.getLogger(__name__)

SMALL = 64 << 10  # at most this many bytes: one direct exchange instead of a ring or chain
# pg_options of init_process_group/new_group -> TcpGroup's keyword (docs/parallel.md)
OPTIONS = {"unix": "unix", "shm": "use_shm"}
_GRACE_S = 1.0  # after a timeout, how long to wait for the rank that can name the culprit


class TcpGroup(ProcessGroup):
    """A process group over TCP sockets (any world size, CPU arrays), through shared memory
    when every rank is on this host."""

    backend = "tcp"

    def __init__(
        self,
        rank: int,
        size: int,
        timeout: float,
        ranks: list[int],
        store: StoreClient,
        prefix: str,
        secret: bytes,
        use_shm: bool | None = None,
        unix: bool = True,
    ) -> None:
        super().__init__(rank, size, timeout, ranks)
        self.closing = False
        self.abort_reason: str | None = None
        self.arrived = threading.Condition()
        self.peers: dict[int, Peer] = {}
        self.shm: shm.ShmLink | None = None
        self.mailbox = Mailbox(self)  # before the peers: their receivers hand it messages
        if size > 1:
            sockets = mesh.connect(
                rank, size, self.ranks, timeout, store, prefix, secret, unix=unix
            )
            self.peers = {peer: Peer(self, peer, conn) for peer, conn in sockets.items()}
            wanted = shm.enabled() if use_shm is None else use_shm
            self.shm = shm.ShmLink.open(self, store, prefix, wanted)

    # ---- failure handling ----------------------------------------------------------------
    def _name(self, peer: int) -> str:
        return f"rank {self.ranks[peer]}"

    def _lost(self, peer: Peer, reason: str) -> None:
        with self.arrived:
            if peer.gone is None:
                peer.gone = reason
            self.arrived.notify_all()
        self.mailbox.wake()

    def _remote_abort(self, peer: int, reason: str) -> None:
        with self.arrived:
            if self.abort_reason is None:
                self.abort_reason = f"{self._name(peer)} reported: {reason}"
            self.arrived.notify_all()
        self.mailbox.wake()

    def _abort(self, message: str) -> None:
        self.mailbox.wake()  # its open sends and receives fail: the group is broken
        raw = message.encode()[:MAX_CONTROL]
        header = Header(ABORT, 0, 0, 0, self.rank, 0, 0, 0, len(raw), 0)
        deadline = time.monotonic() + _GRACE_S
        sends = [peer.post(header, raw) for peer in self.peers.values() if peer.gone is None]
        for sending in sends:  # written before we return: the caller may exit right away
            sending.event.wait(max(0.0, deadline - time.monotonic()))

    def _close(self) -> None:
        self.closing = True
        self.mailbox.close("the group was destroyed (destroy_process_group) before it finished")
        bye = Header(BYE, 0, 0, 0, self.rank, 0, 0, 0, 0, 0)
        sends = [peer.post(bye) for peer in self.peers.values() if peer.gone is None]
        for sending in sends:
            sending.event.wait(1.0)
        for peer in self.peers.values():
            peer.stop()
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
            peer.sock.close()
        if self.shm is not None:
            self.shm.close()

    def check_alive(self, op: str, seq: int, deadline: float, waiting_for: list[int]) -> None:
        """Raise if the group was aborted, a rank in ``waiting_for`` is gone, or the deadline
        passed (shared memory has no connection to lose: the sockets tell)."""
        if self.abort_reason is not None:
            raise CollectiveError(
                f"{op} #{seq}: the group was aborted: {self.abort_reason}", op=op, seq=seq
            )
        for peer in waiting_for:
            gone = self.peers[peer].gone
            if gone is not None:
                raise CollectiveError(
                    f"{op} #{seq}: {self._name(peer)} {gone}",
                    op=op,
                    seq=seq,
                    rank=self.ranks[peer],
                )
        if time.monotonic() >= deadline:
            names = ", ".join(self._name(p) for p in waiting_for)
            raise CollectiveError(
                f"{op} #{seq}: timed out waiting for {names}, which has not joined this "
                "collective (stalled, deadlocked, or making different calls)",
                op=op,
                seq=seq,
                rank=self.ranks[waiting_for[0]] if waiting_for else None,
            )

    def _raise_if_broken(self, peer: int, expected: Header, deadline: float) -> None:
        """``check_alive`` for a wait on ``peer`` (called holding ``arrived``)."""
        op, seq, source = OPS.get(expected.op, "?"), expected.seq, self.peers[peer]
        if (
            time.monotonic() >= deadline
            and self.abort_reason is None
            and source.gone is None
            and 0 < seq <= source.heard
        ):
            # The peer joined this call and waits, like us, on a rank that did not (in a
            # ring, every rank times out at once). The rank next to that one names it in
            # its abort: wait a moment for that before saying what we know.
            self.arrived.wait_for(lambda: self.abort_reason is not None, _GRACE_S)
            if self.abort_reason is None:
                raise CollectiveError(
                    f"{op} #{seq}: timed out; {self._name(peer)} joined this collective but "
                    "stopped sending: another rank has not joined it (stalled, deadlocked, or "
                    "making different calls)",
                    op=op,
                    seq=seq,
                )
        self.check_alive(op, seq, deadline, [peer])

    def _check_frame(self, peer: int, header: Header, posted: Posted) -> None:
        """Raise when ``header`` is not the next frame of ``posted``."""
        expected = posted.expected
        name = OPS.get(expected.op)
        if not header.same_call(expected):
            raise CollectiveError(
                f"{name} #{expected.seq}: {self._name(peer)} called "
                f"{header.signature()} (call #{header.seq}) but {self._name(self.rank)} called "
                f"{expected.signature()} (call #{expected.seq}); every rank must make the same "
                "collective calls, with the same shapes and dtypes, in the same order",
                op=name,
                seq=expected.seq,
                rank=self.ranks[peer],
            )
        if not posted.fits(header):
            raise CollectiveError(
                f"{name} #{expected.seq}: {self._name(peer)} sent a part of the wrong "
                f"size ({header.offset}+{header.nbytes} of {posted.raw.size} bytes)",
                op=name,
                seq=expected.seq,
                rank=self.ranks[peer],
            )

    # ---- moving parts -----------------------------------------------------------------------
    def _header(self, op: str, flat: Any, reduce: int, seq: int, tag: int = 0) -> Header:
        """The header of ``op``'s frames: the call's signature, offset and size 0."""
        code, dtype = OP_CODES[op], DTYPE_CODES[flat.dtype]
        return Header(DATA, code, dtype, reduce, self.rank, seq, flat.size, 0, 0, tag)

    def _forwarder(self, peer: int, header: Header, raw: Any, sends: list) -> Callable:
        """``forward(a, b)``: send ``raw[a:b]`` on to ``peer`` (as bytes a..b of the part)."""
        target = self.peers[peer]

        def forward(a: int, b: int) -> None:
            sends.append(target.post(dataclasses.replace(header, offset=a), raw[a:b]))

        return forward

    def _receive(self, expected: dict[int, list[Posted]], deadline: float) -> None:
        """Post ``expected[peer]`` (receives, in order) on each peer, then wait for all."""
        for peer, receives in expected.items():
            self.peers[peer].expect(receives)
        self._wait(expected, deadline)

    def _wait(self, expected: dict[int, list[Posted]], deadline: float) -> None:
        try:
            for peer, receives in expected.items():
                if receives:
                    self.peers[peer].wait(
                        receives[-1],
                        deadline,
                        lambda header, posted, peer=peer: self._check_frame(peer, header, posted),
                        lambda peer=peer, receives=receives: self._raise_if_broken(
                            peer, receives[0].expected, deadline
                        ),
                    )
        except BaseException:
            for peer in expected:
                self.peers[peer].cancel()
            raise

    def _wait_sent(self, sends: list, deadline: float, op: str, seq: int = 0) -> None:
        """Wait until every ``Sending`` in ``sends`` is written; raise if one failed."""
        label = f"{op} #{seq}" if seq else op
        for sending in sends:
            if not sending.event.wait(max(0.0, deadline - time.monotonic())):
                raise CollectiveError(
                    f"{label}: timed out sending to {self._name(sending.peer)}, which stopped "
                    "reading (stalled or deadlocked)",
                    op=op,
                    seq=seq or None,
                    rank=self.ranks[sending.peer],
                )
            if sending.error is not None:
                raise CollectiveError(
                    f"{label}: {self._name(sending.peer)} {sending.error}",
                    op=op,
                    seq=seq or None,
                    rank=self.ranks[sending.peer],
                )

    def _exchange(self, header: Header, send: Callable, recv: Callable, deadline: float) -> None:
        """Send ``send(peer)`` to every peer and receive ``recv(peer)`` from each. The sends
        start after this rank, in rank order, so no two ranks target one peer at once."""
        others = [(self.rank + k) % self.size for k in range(1, self.size)]
        expected = {peer: [Posted(header, recv(peer))] for peer in others}
        for peer in others:
            self.peers[peer].expect(expected[peer])
        sends = [self.peers[p].post(header, send(p).view(np.uint8), deadline) for p in others]
        self._wait(expected, deadline)
        self._wait_sent(sends, deadline, OPS[header.op], header.seq)

    def _ring(
        self,
        header: Header,
        out: Any,
        segments: list,
        combine: list,
        deadline: float,
        source: Any = None,
    ) -> None:
        """Run ``len(combine)`` ring steps over ``out``'s segments. Step t sends segment
        ``rank - t - 1`` (from ``source`` at step 0, when given) and receives segment
        ``rank - t - 2``, combined with ``combine[t]`` (over ``source``'s segment when given)
        or copied when None; each landed chunk goes on to the right at once."""
        n, me = self.size, self.rank
        right, left = (me + 1) % n, (me - 1) % n
        sends: list = []
        receives = []
        for t, op in enumerate(combine):
            lo, hi = segments[(me - t - 2) % n]
            base = None if op is None or source is None else source[lo:hi]
            posted = Posted(header, out[lo:hi], op, base)
            if t + 1 < len(combine):
                posted.forward = self._forwarder(right, header, posted.raw, sends)
            receives.append(posted)
        self.peers[left].expect(receives)  # before sending: the replies land in place
        lo, hi = segments[(me - 1) % n]
        first = out if source is None else source
        sends.append(self.peers[right].post(header, first[lo:hi].view(np.uint8)))
        self._wait({left: receives}, deadline)
        self._wait_sent(sends, deadline, OPS[header.op], header.seq)

    def _segments(self, count: int) -> list[tuple[int, int]]:
        base, extra = divmod(count, self.size)
        bounds, start = [], 0
        for i in range(self.size):
            stop = start + base + (1 if i < extra else 0)
            bounds.append((start, stop))
            start = stop
        return bounds

    # ---- collectives ----------------------------------------------------------------------
    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        if self.shm is not None:
            self.shm.all_reduce(flat, op, deadline, seq)
            return
        header = self._header("all_reduce", flat, int(op), seq)
        n = self.size
        if flat.nbytes <= SMALL:
            parts = np.empty((n, flat.size), dtype=flat.dtype)
            parts[self.rank] = flat
            self._exchange(header, lambda peer: flat, lambda peer: parts[peer], deadline)
            _reduce_in_rank_order(op, flat, list(parts))
            return
        # Reduce-scatter (n-1 steps, combining), then all-gather (n-1 steps, copying).
        combine = [op] * (n - 1) + [None] * (n - 1)
        self._ring(header, flat, self._segments(flat.size), combine, deadline)

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        if self.shm is not None:
            self.shm.all_gather(out, flat, deadline, seq)
            return
        m, n = flat.size, self.size
        header = self._header("all_gather", flat, 0, seq)
        out[self.rank * m : (self.rank + 1) * m] = flat
        if out.nbytes <= SMALL:
            blocks = out.reshape(n, m)
            self._exchange(header, lambda peer: flat, lambda peer: blocks[peer], deadline)
            return
        # Step t sends block rank-t and receives block rank-t-1: _ring's steps, shifted by one.
        segments = [((i + 1) % n * m, ((i + 1) % n + 1) * m) for i in range(n)]
        self._ring(header, out, segments, [None] * (n - 1), deadline)

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        if self.shm is not None:
            self.shm.reduce_scatter(out, flat, op, deadline, seq)
            return
        m, n = out.size, self.size
        header = self._header("reduce_scatter", flat, int(op), seq)
        blocks = flat.reshape(n, m)
        if flat.nbytes <= SMALL:
            parts = np.empty((n, m), dtype=flat.dtype)
            parts[self.rank] = blocks[self.rank]
            self._exchange(header, lambda peer: blocks[peer], lambda peer: parts[peer], deadline)
            _reduce_in_rank_order(op, out, list(parts))
            return
        # The ring's last step lands this rank's block, fully reduced, in work[rank].
        work = np.empty_like(flat)
        segments = [(i * m, (i + 1) * m) for i in range(n)]
        self._ring(header, work, segments, [op] * (n - 1), deadline, source=flat)
        out[...] = work[self.rank * m : (self.rank + 1) * m]

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        if self.shm is not None:
            self.shm.broadcast(flat, root, deadline, seq)
            return
        header = self._header("broadcast", flat, root, seq)
        n, me, none = self.size, self.rank, flat[:0]
        small = flat.nbytes <= SMALL
        # Everyone hears from everyone (the root's data, or an empty frame with the call's
        # signature from the others), so ranks that disagree on the root are all told.
        others = [(me + k) % n for k in range(1, n)]
        expected = {
            peer: [Posted(header, flat if small and peer == root else none)] for peer in others
        }
        position, after, before = (me - root) % n, (me + 1) % n, (me - 1) % n
        sends: list = []
        if not small and position:  # then a chain root -> root+1 -> ..., pipelined
            chain = Posted(header, flat)
            if position < n - 1:
                chain.forward = self._forwarder(after, header, chain.raw, sends)
            expected[before].append(chain)
        for peer in others:
            self.peers[peer].expect(expected[peer])
        mine = flat if small and me == root else none
        sends += [self.peers[p].post(header, mine.view(np.uint8), deadline) for p in others]
        if not small and position == 0:
            sends.append(self.peers[after].post(header, flat.view(np.uint8)))
        self._wait(expected, deadline)
        self._wait_sent(sends, deadline, "broadcast", seq)

    # ---- point-to-point: the mailbox, apart from the collectives ------------------------------
    def _work(self, label: str) -> Work:
        return Work(f"{label} on rank {self.ranks[self.rank]} ({self.backend})")

    def _post_send(self, array: Any, dst: int, tag: int, timeout: float | None) -> Work:
        """Write the message at once (small) or queue it on the peer's sender thread: not
        behind this rank's collectives, whose frames the peer's receiver tells apart."""
        label = f"send to rank {self.ranks[dst]} (tag {tag})"
        self._refuse_if_broken("send", label)
        flat = _flat(array).flat  # a copy when not contiguous, kept until written
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        header = self._header("send", flat, 0, 0, tag)
        work = self._work(label)
        outgoing = Outgoing(work, dst, deadline, label)
        self.mailbox.watch(outgoing)
        sending = self.peers[dst].post(
            header, flat.view(np.uint8), deadline, lambda s: self.mailbox.sent(outgoing, s)
        )
        if sending.then is None:  # written from this thread: done (or failed) now
            outgoing.sending = sending
            self.mailbox.finish_here(outgoing)
        return work

    def _post_recv(self, array: Any, src: int | None, tag: int, timeout: float | None) -> Work:
        """Post the receive in the mailbox (matched by source and tag, in post order): not
        behind this rank's collectives, so a collective issued after it does not wait."""
        sender = "any rank" if src is None else f"rank {self.ranks[src]}"
        label = f"recv from {sender} (tag {tag})"
        self._refuse_if_broken("recv", label)
        flat = _flat(array, keep=False)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        receive = Receive(flat, src, tag, DTYPE_CODES[flat.flat.dtype], deadline)
        receive.label, receive.work = label, self._work(label)
        receive.work.source = receive.source  # filled when done, as the base class does
        self.mailbox.post(receive)
        return receive.work


def _reduce_in_rank_order(op: ReduceOp, out: Any, parts: list) -> None:
    """``out = parts[0] op parts[1] op ...``: the same order, so the same bits, on every rank."""
    ufunc = UFUNCS[op]
    ufunc(parts[0], parts[1], out=out)
    for part in parts[2:]:
        ufunc(out, part, out=out)
