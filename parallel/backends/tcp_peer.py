"""One connection of the tcp backend's mesh: frames out, frames in, and where they land.

Sending: a sender thread writes queued frames (``Peer.post``), so a ring step sends while
it receives; a small frame goes straight from the caller's thread when that thread is idle,
which saves two thread switches.

Receiving: a collective posts, in order, every receive it expects from this peer
(``Peer.expect``): a part of its buffer, whether frames are copied into it or combined with
it, and what to forward once they landed. The receiver thread reads each frame's payload
straight into the first posted receive it belongs to, or into a reused scratch chunk that is
combined from there, and then forwards it. A ring therefore moves each chunk on without
waking the collective's thread. A frame that arrives before its receive is posted (the peer
started the call first) is read into a pooled buffer and landed when the receive is posted.
Every frame's header is checked against the call this rank is making; the group turns a
mismatch into an error that names both calls. Point-to-point frames (a send's) bypass all
this: they go to the group's mailbox (``mailbox.py``), which matches them by tag.
"""

from __future__ import annotations

import collections
import dataclasses
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.parallel import wire
from dtrain.parallel.backends.frames import ABORT, BYE, DATA, HEADER, OP_CODES, Header
from dtrain.parallel.reduce_op import ReduceOp

CHUNK = 2 << 20  # bytes per frame: fewer frames cost less Python; more overlap the steps
DIRECT_MAX = 64 << 10  # frames at most this big may be written from the caller's thread
MAX_CONTROL = 1 << 16  # the longest ABORT message
_SPARE = max(2, (16 << 20) // CHUNK)  # pooled receive buffers kept per peer
_SEND = OP_CODES["send"]
UFUNCS = {
    ReduceOp.SUM: np.add,  # on bools: or
    ReduceOp.AVG: np.add,  # the group divides afterwards
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
    ReduceOp.PRODUCT: np.multiply,  # on bools: and
}


class Sending:
    """Frames on their way to ``peer``: ``event`` is set once written (or failed: ``error``),
    then ``then(sending)`` called, when given."""

    __slots__ = ("error", "event", "peer", "then")

    def __init__(self, peer: int, then: Callable[[Sending], None] | None = None) -> None:
        self.peer, self.error, self.then = peer, None, then
        self.event = threading.Event()


class Posted:
    """A receive a collective posted: frames land in ``part`` in order, copied, or combined
    with ``op`` (``part = base op incoming``, ``base`` being ``part`` unless given); each
    landed byte range is passed to ``forward(lo, hi)``."""

    __slots__ = ("base", "claimed", "expected", "forward", "frames", "landed", "op", "part", "raw")

    def __init__(
        self,
        expected: Header,
        part: Any,
        op: ReduceOp | None = None,
        base: Any = None,
        forward: Callable[[int, int], None] | None = None,
    ) -> None:
        self.expected, self.part, self.op, self.forward = expected, part, op, forward
        self.base = part if base is None else base
        self.raw = part.view(np.uint8)
        self.claimed = self.landed = self.frames = 0  # bytes taken, bytes written, frames

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self.landed == self.raw.size

    def fits(self, header: Header) -> bool:
        """Whether ``header`` is the next frame of this receive: in order, whole items."""
        n = header.nbytes
        if self.raw.size == 0:  # an empty part still gets one (empty) frame
            return n == 0 and self.frames == 0 and header.offset == 0
        return (
            0 < n <= self.raw.size - self.claimed
            and header.offset == self.claimed
            and n % self.part.itemsize == 0
        )

    def land(self, offset: int, payload: Any) -> None:
        """Copy or combine one frame's payload into place."""
        if self.op is None:
            self.raw[offset : offset + payload.size] = payload
            return
        item = self.part.itemsize
        lo, hi = offset // item, (offset + payload.size) // item
        UFUNCS[self.op](self.base[lo:hi], payload.view(self.part.dtype), out=self.part[lo:hi])


class Peer:
    """One connection of ``owner`` (a TcpGroup: ``arrived``, ``closing``, ``_lost``,
    ``_remote_abort``): a sender thread and a receiver thread."""

    def __init__(self, owner: Any, rank: int, sock: socket.socket) -> None:
        self.owner, self.rank, self.sock = owner, rank, sock
        self.arrived: threading.Condition = owner.arrived  # guards what follows, with the group
        self.posted: collections.deque[Posted] = collections.deque()
        self.inbox: collections.deque = collections.deque()  # (header, buffer) not yet posted
        self.spare: list[np.ndarray] = []
        self.scratch = np.empty(CHUNK, dtype=np.uint8)  # where frames to combine land
        self.gone: str | None = None  # why this peer can no longer be heard from
        self.heard = 0  # the last collective this peer sent us data for
        self.outbox: collections.deque = collections.deque()
        self.backlog = 0  # frames queued or being written; guarded by ``state``
        self.state = threading.Condition(threading.Lock())
        self.writing = threading.Lock()  # one writer on the socket at a time
        for loop, role in ((self._send_loop, "send"), (self._recv_loop, "recv")):
            threading.Thread(target=loop, daemon=True, name=f"dtrain-{role}-{rank}").start()

    # ---- sending ---------------------------------------------------------------------------
    def post(
        self,
        header: Header,
        raw: Any = None,
        deadline: float | None = None,
        then: Callable[[Sending], None] | None = None,
    ) -> Sending:
        """Send ``raw`` (bytes or a uint8 array) in frames of at most CHUNK bytes, the first
        at ``header.offset``. With a ``deadline``, a small payload is written from this
        thread when nothing is queued before it; else the sender thread writes it, and
        calls ``then(sending)`` once it is written (or failed)."""
        sending = Sending(self.rank)
        size = 0 if raw is None else len(raw)
        with self.state:
            direct = self.backlog == 0 and size <= DIRECT_MAX and deadline is not None
            self.backlog += 1
            if direct:
                self.writing.acquire()  # free: nothing is queued or being written
            else:
                sending.then = then
                self.outbox.append((header, raw, sending))
                self.state.notify()
        if direct:
            try:
                write_frames(self.sock, header, raw, deadline)
            except (OSError, TimeoutError) as exc:
                sending.error = self._failed(exc)
            finally:
                self.writing.release()
                self._sent(sending)
        return sending

    def stop(self) -> None:
        """End the sender thread once what is queued is written."""
        self.post(Header(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), None)  # kind 0: the stop marker

    def _sent(self, sending: Sending) -> None:
        with self.state:
            self.backlog -= 1
        sending.event.set()
        if sending.then is not None:
            sending.then(sending)

    def _failed(self, exc: BaseException) -> str:
        reason = f"cannot be reached: sending failed ({exc or type(exc).__name__})"
        self.owner._lost(self, reason)
        return reason

    def _send_loop(self) -> None:
        while True:
            with self.state:
                while not self.outbox:
                    self.state.wait()
                header, raw, sending = self.outbox.popleft()
            if header.kind == 0:
                self._sent(sending)
                return
            try:
                with self.writing:
                    write_frames(self.sock, header, raw, None)
            except OSError as exc:
                sending.error = self._failed(exc)
            finally:
                self._sent(sending)

    # ---- receiving -------------------------------------------------------------------------
    def expect(self, receives: list[Posted]) -> None:
        """Post ``receives``, in the order this peer sends them."""
        with self.arrived:
            self.posted.extend(receives)

    def cancel(self) -> None:
        """Drop the posted receives (the collective failed)."""
        with self.arrived:
            self.posted.clear()

    def wait(
        self,
        target: Posted,
        deadline: float,
        check_frame: Callable[[Header, Posted], None],
        check_alive: Callable[[], None],
    ) -> None:
        """Block until ``target`` (posted) is complete, landing the frames that arrived
        before they were posted. ``check_frame`` raises for a frame of another call;
        ``check_alive`` raises when the group broke or the deadline passed."""
        with self.arrived:
            while not target.complete:
                head = self.posted[0] if self.posted else None
                if self.inbox and head is not None and head.claimed == head.landed:
                    check_frame(self.inbox[0][0], head)
                    self._land_early(head)
                    continue
                check_alive()
                self.arrived.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))

    def _land_early(self, head: Posted) -> None:
        """Land the first frame of the inbox into ``head``, which it was checked to belong
        to (holding ``arrived``, released while copying)."""
        header, buffer = self.inbox.popleft()
        head.claimed += header.nbytes
        self.arrived.release()  # land it while the receiver goes on
        try:
            head.land(header.offset, buffer[: header.nbytes])
        finally:
            self.arrived.acquire()
        if len(self.spare) < _SPARE:
            self.spare.append(buffer)
        self._landed(head, header)
        self.arrived.notify_all()  # the receiver may wait to land frames straight in place

    def _landed(self, head: Posted, header: Header) -> None:
        """Account for a landed frame and forward it (holding ``arrived``)."""
        head.landed += header.nbytes
        head.frames += 1
        if head.forward is not None and (header.nbytes or head.raw.size == 0):
            head.forward(header.offset, header.offset + header.nbytes)
        if head.complete:
            if self.posted and self.posted[0] is head:
                self.posted.popleft()
            # Only a completed receive can end a wait (a frame that lands in the middle of
            # one wakes nobody: on a busy machine each wake-up costs a thread switch).
            self.arrived.notify_all()

    def _recv_loop(self) -> None:
        owner = self.owner
        raw_header = bytearray(HEADER.size)
        while True:
            try:
                wire.recv_into_exact(self.sock, memoryview(raw_header))
                header = Header.unpack(bytes(raw_header))
                if header.kind == DATA:
                    if not 0 <= header.nbytes <= CHUNK:
                        raise ValueError(f"a data frame of {header.nbytes} bytes")
                    self._receive_data(header)
                    continue
                if not 0 <= header.nbytes <= MAX_CONTROL:
                    raise ValueError(f"a control frame of {header.nbytes} bytes")
                payload = wire.recv_exact(self.sock, header.nbytes) if header.nbytes else b""
            except (ConnectionError, OSError):
                if not owner.closing:
                    owner._lost(self, "closed its connection (it exited or was killed)")
                return
            except ValueError as exc:
                owner._lost(self, f"sent an unreadable frame ({exc})")
                return
            if header.kind == ABORT:
                owner._remote_abort(self.rank, payload.decode(errors="replace") or "?")
            elif header.kind == BYE:
                owner._lost(self, "left the group (destroy_process_group)")
            else:
                owner._lost(self, f"sent an unreadable frame (kind {header.kind})")
            return

    def _receive_data(self, header: Header) -> None:
        n = header.nbytes
        if header.op == _SEND:  # a point-to-point message: matched by tag, apart (mailbox.py)
            mailbox = self.owner.mailbox
            wire.recv_into_exact(self.sock, memoryview(mailbox.target(self.rank, header)))
            mailbox.landed(self.rank, header)
            return
        with self.arrived:
            self.heard = header.seq
            head = self._direct_target(header)
            if head is not None:
                head.claimed += n
        if head is None:
            buffer = self.spare.pop() if self.spare else np.empty(CHUNK, dtype=np.uint8)
            wire.recv_into_exact(self.sock, memoryview(buffer)[:n])
            with self.arrived:
                self.inbox.append((header, buffer))
                self.arrived.notify_all()
            return
        if head.op is None:
            wire.recv_into_exact(self.sock, memoryview(head.raw[header.offset :])[:n])
        else:
            wire.recv_into_exact(self.sock, memoryview(self.scratch)[:n])
            head.land(header.offset, self.scratch[:n])
        with self.arrived:
            self._landed(head, header)

    def _direct_target(self, header: Header) -> Posted | None:
        """The posted receive ``header``'s payload can be read straight into, or None: then
        it waits in the inbox (holding ``arrived``). Frames that arrived before their receive
        was posted are landed first, in order, and from this thread: otherwise every later
        frame of the call would also take the inbox's extra copy."""
        while self.posted:
            head = self.posted[0]
            if head.claimed != head.landed:  # the collective's thread is landing one
                self.arrived.wait(0.05)
                continue
            if not self.inbox:
                return head if header.same_call(head.expected) and head.fits(header) else None
            early = self.inbox[0][0]
            if not (early.same_call(head.expected) and head.fits(early)):
                return None  # the collective's thread reports the mismatch
            self._land_early(head)
        return None


def write_frames(sock: socket.socket, header: Header, raw: Any, deadline: float | None) -> None:
    """Write ``raw`` as frames of at most CHUNK bytes (one empty frame when it is empty).

    With a ``deadline`` the socket is written without blocking past it (TimeoutError)."""
    size = 0 if raw is None else len(raw)
    start = 0
    while True:
        n = min(CHUNK, size - start)
        frame = dataclasses.replace(header, offset=header.offset + start, nbytes=n)
        buffers = [frame.pack()] + ([raw[start : start + n]] if n else [])
        if deadline is None:
            _send_blocking(sock, buffers)
        else:
            _send_by(sock, buffers, deadline)
        start += n
        if start >= size:
            return


def _send_blocking(sock: socket.socket, buffers: list) -> None:
    total = sum(len(b) for b in buffers)
    sent = sock.sendmsg(buffers)
    if sent < total:  # rare: a signal interrupted the call
        sock.sendall(b"".join(bytes(b) for b in buffers)[sent:])


def _send_by(sock: socket.socket, buffers: list, deadline: float) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        try:
            sent = sock.sendmsg(views, (), socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views:
            views[0] = views[0][sent:]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [sock], [], left)[1]:
                raise TimeoutError("the peer stopped reading")
