"""The tcp backend's point-to-point messages, apart from its collectives.

A send's frames carry its tag; each peer's receiver thread hands them here, where the
message lands straight in the first posted receive that matches its source and tag (gloo's
rule: messages between two ranks with one tag match in send order, other tags do not wait
for them) or, when none is posted yet, in a buffer that the first matching receive takes.
Receives and sends never wait on the group's executor, so an ``irecv`` posted before a
collective does not hold it, and an ``isend`` posted after one does not wait for it.

One thread per group (started with its first point-to-point call) finishes the Works:
copies a buffered message into its receive, and fails what passed its deadline or lost its
peer, naming the peer and the tag. A failure breaks the group, as a collective's does.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

from dtrain.parallel.backends.frames import DTYPES, Header
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.work import Work


class Receive:
    """A posted receive: ``flat`` (a ``_flat`` of the caller's array) gets a message from
    group rank ``src`` (any when None) with ``tag``; ``source`` says who sent it."""

    __slots__ = (
        "deadline",
        "dtype",
        "error",
        "finished",
        "flat",
        "label",
        "message",
        "raw",
        "source",
        "src",
        "tag",
        "work",
    )

    def __init__(self, flat: Any, src: int | None, tag: int, dtype: int, deadline: float) -> None:
        self.flat, self.raw = flat, flat.flat.view(np.uint8)
        self.src, self.tag, self.dtype, self.deadline = src, tag, dtype, deadline
        self.label = ""
        self.work: Work | None = None
        self.source: dict = {}
        self.message: Message | None = None
        self.error: str | None = None
        self.finished = False

    def fits(self, header: Header) -> bool:
        return header.dtype == self.dtype and header.count == self.flat.flat.size

    def wanted(self) -> str:
        """``message(float32, 4 elements, tag 2)``: what this receive waits for."""
        return f"message({DTYPES[self.dtype]}, {self.flat.flat.size} elements, tag {self.tag})"


class Message:
    """A message from ``src`` arriving or arrived: in ``buffer``, or straight in
    ``receive.raw`` when ``buffer`` is None."""

    __slots__ = ("buffer", "header", "landed", "order", "receive", "src", "total")

    def __init__(self, src: int, header: Header, order: int) -> None:
        self.src, self.header, self.order = src, header, order
        self.total = header.count * DTYPES[header.dtype].itemsize
        self.landed = -1  # bytes landed; -1 before the first frame (an empty one counts)
        self.buffer: np.ndarray | None = None
        self.receive: Receive | None = None

    @property
    def complete(self) -> bool:
        return self.landed >= self.total


class Outgoing:
    """A send queued on a peer's sender thread (written: ``sending.event``)."""

    __slots__ = ("deadline", "dst", "finished", "label", "sending", "work")

    def __init__(self, work: Work, dst: int, deadline: float, label: str) -> None:
        self.work, self.dst, self.deadline, self.label = work, dst, deadline, label
        self.sending: Any = None
        self.finished = False


class Mailbox:
    """The point-to-point state of ``group`` (a TcpGroup: ``peers``, ``ranks``, ``rank``,
    ``abort_reason``, ``_break``), guarded by ``lock``."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.lock = threading.Condition(threading.Lock())
        self.pending: list[Receive] = []  # posted, no message matched yet, in post order
        self.waiting: dict[tuple[int, int], collections.deque] = {}  # (src, tag): unmatched
        self.incoming: dict[int, Message] = {}  # the message each peer is sending now
        self.open: list[Receive | Outgoing] = []  # not finished: deadlines and peers watched
        self.ready: list[Receive | Outgoing] = []  # to finish on the thread
        self.arrivals = 0
        self.thread: threading.Thread | None = None
        self.closed = False

    # ---- the receiver threads' side ---------------------------------------------------------
    def target(self, src: int, header: Header) -> Any:
        """Where the payload of ``header`` (a frame from ``src``) goes: bytes of the
        matching receive, or of the message's buffer.

        Raises:
            ValueError: the frame does not continue the message ``src`` is sending (the
                receiver thread reports the connection unreadable).
        """
        with self.lock:
            message = self.incoming.get(src)
            if message is None:
                if header.offset != 0 or not 0 <= header.dtype < len(DTYPES) or header.count < 0:
                    raise ValueError(f"a stray message part {header}")
                message = Message(src, header, self.arrivals)
                self.arrivals += 1
                self._arrived(message)
                self.incoming[src] = message
            elif not header.same_call(message.header) or header.offset != max(message.landed, 0):
                raise ValueError(f"a message part out of order ({header})")
            if header.offset + header.nbytes > message.total:
                raise ValueError(f"a message part past its end ({header})")
            into = message.receive.raw if message.buffer is None else message.buffer
            return into[header.offset : header.offset + header.nbytes]

    def landed(self, src: int, header: Header) -> None:
        """The frame ``header`` from ``src`` was read into its ``target``."""
        with self.lock:
            message = self.incoming[src]
            message.landed = max(message.landed, 0) + header.nbytes
            if not message.complete:
                return
            del self.incoming[src]
            if message.receive is not None:
                self._ready(message.receive)

    def _arrived(self, message: Message) -> None:
        """Match a new message with the first posted receive for it, or keep it."""
        src, tag = message.src, message.header.tag
        for receive in self.pending:
            if receive.tag == tag and receive.src in (None, src):
                self.pending.remove(receive)
                if receive.fits(message.header):
                    message.receive, receive.message = receive, message
                    return
                receive.error = self._mismatch(receive, message)
                self._ready(receive)  # fails it; the message waits, as unmatched
                break
        message.buffer = np.empty(message.total, dtype=np.uint8)
        self.waiting.setdefault((src, tag), collections.deque()).append(message)

    # ---- the callers' side -----------------------------------------------------------------
    def post(self, receive: Receive) -> None:
        """Match ``receive`` with the first message waiting for it, or post it. A message
        that had arrived whole is copied on this thread."""
        with self.lock:
            self._start()
            message = self._first_waiting(receive.src, receive.tag)
            if message is None:
                self.open.append(receive)
                self.pending.append(receive)
                return
            queue = self.waiting[(message.src, message.header.tag)]
            queue.popleft()
            if not queue:
                del self.waiting[(message.src, message.header.tag)]
            if receive.fits(message.header):
                message.receive, receive.message = receive, message
            else:
                receive.error = self._mismatch(receive, message)
            now = receive.error is not None or message.complete
            if not now:
                self.open.append(receive)  # it lands as it arrives
        if now:
            self._finish(receive)

    def watch(self, outgoing: Outgoing) -> None:
        """Watch a queued send's deadline and peer until it is written (``sent``)."""
        with self.lock:
            self._start()
            self.open.append(outgoing)

    def sent(self, outgoing: Outgoing, sending: Any) -> None:
        """A queued send was written (or failed): finish its Work on the thread."""
        with self.lock:
            outgoing.sending = sending
            self._ready(outgoing)

    def finish_here(self, item: Receive | Outgoing) -> None:
        """Finish ``item`` on this thread (it is done: a message that was waiting, a send
        written from this thread) instead of handing it to the mailbox's thread."""
        with self.lock:
            if item in self.open:
                self.open.remove(item)
            if item in self.ready:
                self.ready.remove(item)
        if not item.finished:
            self._finish(item)

    def wake(self) -> None:
        """Look again at the peers and the group (one was lost, or the group aborted)."""
        with self.lock:
            self.lock.notify_all()

    def close(self, reason: str) -> None:
        """Fail what is still open with ``reason`` and end the thread."""
        with self.lock:
            items, self.open, self.ready, self.pending = self.open, [], [], []
            self.closed = True
            self.lock.notify_all()
        for item in items:
            self._fail(item, f"{item.label}: {reason}", break_group=False)

    def _first_waiting(self, src: int | None, tag: int) -> Message | None:
        if src is not None:
            queue = self.waiting.get((src, tag))
            return queue[0] if queue else None
        firsts = [q[0] for (_, t), q in self.waiting.items() if t == tag and q]
        return min(firsts, key=lambda m: m.order, default=None)

    def _mismatch(self, receive: Receive, message: Message) -> str:
        peer = self.group.ranks[message.src]
        return (
            f"{receive.label}: rank {peer} sent {message.header.signature()} but rank "
            f"{self.group.ranks[self.group.rank]} expected to receive {receive.wanted()}; "
            "a receive's tensor must have the sent tensor's shape and dtype"
        )

    def _ready(self, item: Receive | Outgoing) -> None:
        self.ready.append(item)
        self.lock.notify_all()

    def _start(self) -> None:
        if self.thread is None:
            name = f"dtrain-p2p-rank{self.group.ranks[self.group.rank]}"
            self.thread = threading.Thread(target=self._run, name=name, daemon=True)
            self.thread.start()

    # ---- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.lock:
                while True:
                    if self.closed:
                        return
                    done, self.ready = self.ready, []
                    failed = self._broken(done)
                    if done or failed:
                        break
                    deadlines = [item.deadline for item in self.open]
                    left = min(deadlines, default=time.monotonic() + 1.0) - time.monotonic()
                    self.lock.wait(min(max(left, 0.0), 1.0))
                for item in done + [item for item, _ in failed]:
                    if item in self.open:
                        self.open.remove(item)
                    if isinstance(item, Receive) and item in self.pending:
                        self.pending.remove(item)
            for item in done:
                if not item.finished:
                    self._finish(item)
            for item, reason in failed:
                if not item.finished:
                    self._fail(item, reason)

    def _broken(self, done: list) -> list[tuple[Receive | Outgoing, str]]:
        """The open items, other than ``done``, that cannot finish: the group aborted or
        broke, a receive's peer gone, or past the deadline (holding ``lock``). A send is
        left to its writer, which fails when the peer's connection is gone: the peer may
        read the message and leave before the writer reports it written."""
        group, now, failed = self.group, time.monotonic(), []
        for item in self.open:
            if any(item is d for d in done):
                continue
            peer = None if isinstance(item, Outgoing) else _peer(item)
            if group.abort_reason is not None:
                failed.append((item, f"{item.label}: the group was aborted: {group.abort_reason}"))
            elif group.broken is not None:
                failed.append((item, f"{item.label}: the group broke ({group.broken})"))
            elif peer is not None and group.peers[peer].gone is not None:
                failed.append(
                    (item, f"{item.label}: rank {group.ranks[peer]} {group.peers[peer].gone}")
                )
            elif now >= item.deadline:
                failed.append((item, self._timed_out(item)))
        return failed

    def _timed_out(self, item: Receive | Outgoing) -> str:
        group = self.group
        if isinstance(item, Outgoing):
            return (
                f"{item.label}: timed out sending to rank {group.ranks[item.dst]}, which "
                "stopped reading (stalled or deadlocked)"
            )
        if item.message is not None:
            return (
                f"{item.label}: timed out; rank {group.ranks[item.message.src]} started sending "
                f"the message with tag {item.tag} but stopped (stalled)"
            )
        if item.src is None:
            return f"{item.label}: timed out; no rank sent a message with tag {item.tag}"
        tags = sorted({t for (s, t), q in self.waiting.items() if s == item.src and q})
        also = f" (messages with tags {tags} from it are waiting here)" if tags else ""
        return (
            f"{item.label}: timed out; rank {group.ranks[item.src]} sent no message with tag "
            f"{item.tag}{also}: it did not call send, or sent with another tag"
        )

    def _finish(self, item: Receive | Outgoing) -> None:
        """Complete ``item``'s Work (on the thread, outside ``lock``)."""
        if isinstance(item, Outgoing):
            if item.sending.error is not None:
                self._fail(
                    item, f"{item.label}: rank {self.group.ranks[item.dst]} {item.sending.error}"
                )
                return
            item.finished = True
            item.work._complete()
            return
        if item.error is not None:
            self._fail(item, item.error)
            return
        message = item.message
        try:
            if message.buffer is not None:
                item.raw[...] = message.buffer
            item.flat.__exit__(None)  # a non-contiguous array gets its copy back
            item.source["source"] = message.src
        except BaseException as exc:  # a local failure: as any collective's, it breaks the group
            self._fail(item, f"{item.label}: failed locally ({type(exc).__name__}: {exc})")
            return
        item.finished = True
        item.work._complete()

    def _fail(self, item: Receive | Outgoing, reason: str, break_group: bool = True) -> None:
        item.finished = True
        peer = _peer(item)
        op = "send" if isinstance(item, Outgoing) else "recv"
        rank = None if peer is None else self.group.ranks[peer]
        error = CollectiveError(reason, op=op, rank=rank)
        if break_group:
            self.group._break(reason)
        item.work._complete(error)


def _peer(item: Receive | Outgoing) -> int | None:
    """The group rank ``item`` depends on: its destination, its source, or the rank whose
    message an any-source receive is taking (None while it waits for any)."""
    if isinstance(item, Outgoing):
        return item.dst
    return item.message.src if item.message is not None else item.src
