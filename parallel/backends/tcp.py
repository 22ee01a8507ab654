"""The tcp backend: a full mesh of authenticated sockets between the ranks.

Large all-reduces run as a ring reduce-scatter + all-gather, pipelined in chunks; small
ones as one exchange with every peer, reduced in rank order (the latency-optimal choice
for a handful of ranks). Every rank ends with bitwise-identical results. A receiver thread
per peer reads frames into an inbox; a sender thread per peer writes them, so each ring step
sends and receives at once. Any failure — a dead or stalled peer, a mismatched call —
breaks the group on every rank: the rank that sees it tells the others.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import socket
import struct
import threading
import time
from typing import Any

import numpy as np

from dtrain.parallel import wire
from dtrain.parallel.backends.frames import (
    ABORT,
    BYE,
    DATA,
    DTYPE_CODES,
    HEADER,
    OP_CODES,
    OPS,
    Header,
)
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.group import ProcessGroup
from dtrain.parallel.reduce_op import ReduceOp, combine_into
from dtrain.parallel.store import StoreClient

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per frame: the receiver reduces one chunk while the next arrives
SMALL = 64 << 10  # at most this many bytes: one direct exchange instead of the ring
_PURPOSE = b"dtrain-tcp-mesh"
_RANK = struct.Struct("!i")


class _Peer:
    """One connection: a sender thread draining a queue, a receiver thread filling an inbox."""

    def __init__(self, group: TcpGroup, rank: int, sock: socket.socket) -> None:
        self.group, self.rank, self.sock = group, rank, sock
        self.outbox: queue.Queue = queue.Queue()
        self.inbox: collections.deque = collections.deque()
        self.gone: str | None = None  # why this peer can no longer be heard from
        threading.Thread(target=self._send_loop, daemon=True, name=f"dtrain-send-{rank}").start()
        threading.Thread(target=self._recv_loop, daemon=True, name=f"dtrain-recv-{rank}").start()

    def post(self, header: Header, payload: Any = None) -> threading.Event:
        done = threading.Event()
        self.outbox.put((header.pack(), payload, done))
        return done

    def _send_loop(self) -> None:
        while True:
            item = self.outbox.get()
            if item is None:
                return
            raw, payload, done = item
            try:
                self.sock.sendall(raw)
                if payload is not None and len(payload):
                    self.sock.sendall(payload)
            except OSError as exc:
                self.group._lost(self, f"the connection failed while sending ({exc})")
            finally:
                done.set()

    def _recv_loop(self) -> None:
        group = self.group
        while True:
            try:
                header = Header.unpack(wire.recv_exact(self.sock, HEADER.size))
                payload = None
                if header.nbytes:
                    payload = np.empty(header.nbytes, dtype=np.uint8)
                    wire.recv_into_exact(self.sock, memoryview(payload))
            except (ConnectionError, OSError):
                if not group.closing:
                    group._lost(self, "closed its connection (it exited or was killed)")
                return
            except ValueError as exc:
                group._lost(self, f"sent an unreadable frame ({exc})")
                return
            if header.kind == ABORT:
                reason = bytes(payload).decode(errors="replace") if payload is not None else "?"
                group._remote_abort(self.rank, reason)
                return
            if header.kind == BYE:
                group._lost(self, "left the group (destroy_process_group)")
                return
            with group.arrived:
                self.inbox.append((header, payload))
                group.arrived.notify_all()


class TcpGroup(ProcessGroup):
    """A process group over TCP sockets (any world size, CPU arrays)."""

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
    ) -> None:
        super().__init__(rank, size, timeout, ranks)
        self.closing = False
        self.abort_reason: str | None = None
        self.arrived = threading.Condition()
        self.peers: dict[int, _Peer] = {}
        if size > 1:
            self._connect(store, prefix, secret)

    # ---- setup --------------------------------------------------------------------------
    def _connect(self, store: StoreClient, prefix: str, secret: bytes) -> None:
        host = store.local_address()
        listener = socket.create_server((host, 0), backlog=self.size)
        listener.settimeout(self.timeout)
        store.set(f"{prefix}/addr/{self.rank}", f"{host}:{listener.getsockname()[1]}".encode())
        sockets: dict[int, socket.socket] = {}
        accepted_error: list = []

        def accept_higher() -> None:  # ranks above ours connect to us
            try:
                while len([r for r in sockets if r > self.rank]) < self.size - 1 - self.rank:
                    conn, _ = listener.accept()
                    conn.settimeout(self.timeout)
                    if not wire.challenge(conn, secret, _PURPOSE):
                        log.warning("tcp: refused a mesh connection without the job secret")
                        conn.close()
                        continue
                    (peer,) = _RANK.unpack(wire.recv_exact(conn, _RANK.size))
                    if not self.rank < peer < self.size or peer in sockets:
                        conn.close()
                        continue
                    sockets[peer] = conn
            except OSError as exc:
                accepted_error.append(exc)

        acceptor = threading.Thread(target=accept_higher, daemon=True)
        acceptor.start()
        for peer in range(self.rank):  # we connect to the ranks below ours
            host_port = store.get(f"{prefix}/addr/{peer}").decode()
            peer_host, port = host_port.rsplit(":", 1)
            conn = socket.create_connection((peer_host, int(port)), timeout=self.timeout)
            wire.prove(conn, secret, _PURPOSE)
            conn.sendall(_RANK.pack(self.rank))
            sockets[peer] = conn
        acceptor.join(self.timeout)
        listener.close()
        if acceptor.is_alive() or accepted_error or len(sockets) != self.size - 1:
            missing = sorted(set(range(self.size)) - set(sockets) - {self.rank})
            raise CollectiveError(
                f"tcp: rank {self.ranks[self.rank]} could not connect to ranks "
                f"{[self.ranks[m] for m in missing]} within {self.timeout:.0f} s "
                f"({accepted_error[0] if accepted_error else 'no connection'})"
            )
        for peer, conn in sockets.items():
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.peers[peer] = _Peer(self, peer, conn)

    # ---- failure handling ----------------------------------------------------------------
    def _name(self, peer: int) -> str:
        return f"rank {self.ranks[peer]}"

    def _lost(self, peer: _Peer, reason: str) -> None:
        with self.arrived:
            if peer.gone is None:
                peer.gone = reason
            self.arrived.notify_all()

    def _remote_abort(self, peer: int, reason: str) -> None:
        with self.arrived:
            if self.abort_reason is None:
                self.abort_reason = f"{self._name(peer)} reported: {reason}"
            self.arrived.notify_all()

    def _abort(self, message: str) -> None:
        raw = message.encode()
        for peer in self.peers.values():
            if peer.gone is None:
                header = Header(ABORT, 0, 0, 0, self.rank, 0, 0, 0, len(raw), 0)
                peer.post(header, raw)

    def _close(self) -> None:
        self.closing = True
        events = []
        for peer in self.peers.values():
            if peer.gone is None:
                events.append(peer.post(Header(BYE, 0, 0, 0, self.rank, 0, 0, 0, 0, 0)))
        for event in events:
            event.wait(1.0)
        for peer in self.peers.values():
            peer.outbox.put(None)
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
            peer.sock.close()

    # ---- frames ---------------------------------------------------------------------------
    def _header(
        self, op: str, flat: Any, reduce: int, seq: int, offset: int, nbytes: int, tag: int = 0
    ) -> Header:
        return Header(
            DATA,
            OP_CODES[op],
            DTYPE_CODES[flat.dtype],
            reduce,
            self.rank,
            seq,
            flat.size,
            offset,
            nbytes,
            tag,
        )

    def _send_chunks(
        self, peer: int, op: str, flat: Any, part: Any, reduce: int, seq: int, tag: int = 0
    ) -> list:
        """Queue ``part`` (a slice of ``flat``) to ``peer`` in chunks; returns their events."""
        raw = part.view(np.uint8)
        target = self.peers[peer]
        if raw.size == 0:
            return [target.post(self._header(op, flat, reduce, seq, 0, 0, tag))]
        return [
            target.post(
                self._header(op, flat, reduce, seq, start, min(CHUNK, raw.size - start), tag),
                raw[start : start + CHUNK],
            )
            for start in range(0, raw.size, CHUNK)
        ]

    def _take(self, peer: int, expected: Header, deadline: float) -> tuple[Header, Any]:
        """The next frame from ``peer``, checked against the call this rank is making."""
        source = self.peers[peer]
        with self.arrived:
            while not source.inbox:
                self._raise_if_broken(peer, expected, deadline)
                self.arrived.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
            header, payload = source.inbox.popleft()
        if not header.same_call(expected):
            raise CollectiveError(
                f"{OPS.get(expected.op)} #{expected.seq}: {self._name(peer)} called "
                f"{header.signature()} (call #{header.seq}) but {self._name(self.rank)} called "
                f"{expected.signature()} (call #{expected.seq}); every rank must make the same "
                "collective calls, with the same shapes and dtypes, in the same order",
                op=OPS.get(expected.op),
                seq=expected.seq,
                rank=self.ranks[peer],
            )
        return header, payload

    def _raise_if_broken(self, peer: int, expected: Header, deadline: float) -> None:
        label = f"{OPS.get(expected.op)} #{expected.seq}"
        if self.abort_reason is not None:
            raise CollectiveError(
                f"{label}: the group was aborted: {self.abort_reason}",
                op=OPS.get(expected.op),
                seq=expected.seq,
            )
        gone = self.peers[peer].gone
        if gone is not None:
            raise CollectiveError(
                f"{label}: {self._name(peer)} {gone}",
                op=OPS.get(expected.op),
                seq=expected.seq,
                rank=self.ranks[peer],
            )
        if time.monotonic() >= deadline:
            raise CollectiveError(
                f"{label}: timed out waiting for {self._name(peer)}, which has not joined this "
                "collective (stalled, deadlocked, or making different calls)",
                op=OPS.get(expected.op),
                seq=expected.seq,
                rank=self.ranks[peer],
            )

    def _receive_part(
        self,
        peer: int,
        op: str,
        flat: Any,
        part: Any,
        reduce: int,
        seq: int,
        deadline: float,
        combine: ReduceOp | None = None,
        tag: int = 0,
    ) -> None:
        """Receive ``part`` from ``peer`` chunk by chunk: copied in, or combined when
        ``combine`` is a reduce op."""
        expected = self._header(op, flat, reduce, seq, 0, 0, tag)
        raw = part.view(np.uint8)
        received = 0
        while True:
            header, payload = self._take(peer, expected, deadline)
            if header.nbytes == 0:
                if raw.size:
                    raise CollectiveError(f"{op} #{seq}: {self._name(peer)} sent an empty part")
                return
            if header.offset != received or received + header.nbytes > raw.size:
                raise CollectiveError(
                    f"{op} #{seq}: {self._name(peer)} sent a part of the wrong "
                    f"size ({header.offset}+{header.nbytes} of {raw.size} bytes)"
                )
            if combine is None:
                raw[received : received + header.nbytes] = payload
            else:
                itemsize = part.itemsize
                start = received // itemsize
                incoming = payload.view(part.dtype)
                combine_into(np, combine, part[start : start + incoming.size], incoming)
            received += header.nbytes
            if received == raw.size:
                return

    @staticmethod
    def _wait_sent(events: list, deadline: float) -> None:
        for event in events:
            event.wait(max(0.0, deadline - time.monotonic()))

    # ---- collectives ----------------------------------------------------------------------
    def _segments(self, count: int) -> list[tuple[int, int]]:
        base, extra = divmod(count, self.size)
        bounds, start = [], 0
        for i in range(self.size):
            stop = start + base + (1 if i < extra else 0)
            bounds.append((start, stop))
            start = stop
        return bounds

    def _all_reduce(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        if flat.nbytes <= SMALL:
            self._all_reduce_direct(flat, op, deadline, seq)
        else:
            segments = self._segments(flat.size)
            self._ring_reduce_scatter(flat, flat, segments, op, "all_reduce", deadline, seq)
            self._ring_all_gather(flat, segments, "all_reduce", int(op), deadline, seq)

    def _all_reduce_direct(self, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        events = []
        for peer in self.peers:
            events += self._send_chunks(peer, "all_reduce", flat, flat, int(op), seq)
        parts = {}
        for peer in self.peers:
            parts[peer] = np.empty_like(flat)
            self._receive_part(peer, "all_reduce", flat, parts[peer], int(op), seq, deadline)
        self._wait_sent(events, deadline)
        parts[self.rank] = flat.copy()
        # Reduce in rank order, so every rank computes bitwise the same result.
        flat[...] = parts[0]
        for rank in range(1, self.size):
            combine_into(np, op, flat, parts[rank])

    def _ring_reduce_scatter(
        self,
        work: Any,
        flat: Any,
        segments: list,
        op: ReduceOp,
        name: str,
        deadline: float,
        seq: int,
    ) -> None:
        """After it, ``work``'s segment ``rank`` holds the reduction over all ranks."""
        right, left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        for step in range(self.size - 1):
            send_start, send_stop = segments[(self.rank - step - 1) % self.size]
            recv_start, recv_stop = segments[(self.rank - step - 2) % self.size]
            events = self._send_chunks(right, name, flat, work[send_start:send_stop], int(op), seq)
            self._receive_part(
                left, name, flat, work[recv_start:recv_stop], int(op), seq, deadline, combine=op
            )
            self._wait_sent(events, deadline)

    def _ring_all_gather(
        self,
        out: Any,
        segments: list,
        name: str,
        reduce: int,
        deadline: float,
        seq: int,
        signature_of: Any = None,
    ) -> None:
        """Each rank starts with its own segment of ``out`` filled; ends with all of them."""
        like = out if signature_of is None else signature_of
        right, left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        for step in range(self.size - 1):
            send_start, send_stop = segments[(self.rank - step) % self.size]
            recv_start, recv_stop = segments[(self.rank - step - 1) % self.size]
            events = self._send_chunks(right, name, like, out[send_start:send_stop], reduce, seq)
            self._receive_part(left, name, like, out[recv_start:recv_stop], reduce, seq, deadline)
            self._wait_sent(events, deadline)

    def _all_gather(self, out: Any, flat: Any, deadline: float, seq: int) -> None:
        n = flat.size
        segments = [(i * n, (i + 1) * n) for i in range(self.size)]
        out[self.rank * n : (self.rank + 1) * n] = flat
        self._ring_all_gather(out, segments, "all_gather", 0, deadline, seq, signature_of=flat)

    def _reduce_scatter(self, out: Any, flat: Any, op: ReduceOp, deadline: float, seq: int) -> None:
        n = out.size
        segments = [(i * n, (i + 1) * n) for i in range(self.size)]
        work = flat.copy()
        self._ring_reduce_scatter(work, flat, segments, op, "reduce_scatter", deadline, seq)
        out[...] = work[self.rank * n : (self.rank + 1) * n]

    def _broadcast(self, flat: Any, root: int, deadline: float, seq: int) -> None:
        if self.rank == root:
            events = []
            for peer in self.peers:
                events += self._send_chunks(peer, "broadcast", flat, flat, root, seq)
            self._wait_sent(events, deadline)
        else:
            self._receive_part(root, "broadcast", flat, flat, root, seq, deadline)

    def _send(self, flat: Any, dst: int, tag: int, deadline: float) -> None:
        self._wait_sent(self._send_chunks(dst, "send", flat, flat, 0, 0, tag), deadline)

    def _recv(self, flat: Any, src: int | None, tag: int, deadline: float) -> int:
        if src is None:
            src = self._first_sender(deadline)
        self._receive_part(src, "send", flat, flat, 0, 0, deadline, tag=tag)
        return src

    def _first_sender(self, deadline: float) -> int:
        with self.arrived:
            while True:
                for peer, conn in self.peers.items():
                    if conn.inbox and conn.inbox[0][0].op == OP_CODES["send"]:
                        return peer
                if self.abort_reason is not None:
                    raise CollectiveError(f"recv: the group was aborted: {self.abort_reason}")
                if time.monotonic() >= deadline:
                    raise CollectiveError("recv from any rank: timed out; no rank sent anything")
                self.arrived.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
