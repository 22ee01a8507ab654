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
Whoever completes an item (that thread, or a caller finishing its own) first claims it
under the lock, so each Work completes once. Every step costs O(1) (O(log n) for the
deadlines' heap) in the number of open items; only a lost peer or an abort looks at all.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from typing import Any

import numpy as np

from dtrain.parallel.backends.frames import DTYPES, Header
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.work import Work


class Receive:
    """A posted receive: ``flat`` (a ``_flat`` of the caller's array) gets a message from
    group rank ``src`` (any when None) with ``tag``; ``source`` says who sent it.
    ``finished`` is set, under the mailbox's lock, by whoever claims it to complete it."""

    __slots__ = (
        "deadline",
        "dtype",
        "error",
        "finished",
        "flat",
        "label",
        "message",
        "order",
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
        self.order = 0  # when it was posted: a message takes the earliest that matches

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
    ``abort_reason``, ``broken``, ``_break``), guarded by ``lock``."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.lock = threading.Condition(threading.Lock())
        # Posted receives no message matched yet, in post order: from one rank by (src, tag),
        # from any rank by tag. Claimed ones (failed) are dropped when they reach the front.
        self.named: dict[tuple[int, int], collections.deque[Receive]] = {}
        self.anywhere: dict[int, collections.deque[Receive]] = {}
        self.posts = 0
        self.waiting: dict[tuple[int, int], collections.deque] = {}  # (src, tag): unmatched
        self.incoming: dict[int, Message] = {}  # the message each peer is sending now
        self.open: dict[Receive | Outgoing, None] = {}  # not claimed: peers watched, in order
        self.deadlines: list[tuple[float, int, Receive | Outgoing]] = []  # a heap; stale kept
        self.pushes = itertools.count()  # ties in the heap: never compare the items
        self.ready: list[Receive | Outgoing] = []  # to finish on the thread
        self.woken = False  # a peer was lost or the group aborted: look at every open item
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
        receive = self._take_posted(src, tag)
        if receive is not None:
            if receive.fits(message.header):
                message.receive, receive.message = receive, message
                return
            receive.error = self._mismatch(receive, message)
            self._ready(receive)  # fails it; the message waits, as unmatched
        message.buffer = np.empty(message.total, dtype=np.uint8)
        self.waiting.setdefault((src, tag), collections.deque()).append(message)

    def _take_posted(self, src: int, tag: int) -> Receive | None:
        """Remove and return the earliest posted receive for a message from ``src`` with
        ``tag``: from that rank or from any (holding ``lock``)."""
        named = _head(self.named, (src, tag))
        anyone = _head(self.anywhere, tag)
        if named is None and anyone is None:
            return None
        if anyone is None or (named is not None and named.order < anyone.order):
            table, key = self.named, (src, tag)
        else:
            table, key = self.anywhere, tag
        queue = table[key]
        receive = queue.popleft()
        if not queue:
            del table[key]
        return receive

    # ---- the callers' side -----------------------------------------------------------------
    def post(self, receive: Receive) -> None:
        """Match ``receive`` with the first message waiting for it, or post it. A message
        that had arrived whole is copied on this thread."""
        with self.lock:
            self._start()
            message = self._first_waiting(receive.src, receive.tag)
            if message is None:
                receive.order, self.posts = self.posts, self.posts + 1
                if receive.src is None:
                    self.anywhere.setdefault(receive.tag, collections.deque()).append(receive)
                else:
                    key = (receive.src, receive.tag)
                    self.named.setdefault(key, collections.deque()).append(receive)
                self._watch(receive)
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
            if now:
                receive.finished = True  # claimed: no one else has seen it
            else:
                self._watch(receive)  # it lands as it arrives
        if now:
            self._finish(receive)

    def watch(self, outgoing: Outgoing) -> None:
        """Watch a queued send's deadline and peer until it is written (``sent``)."""
        with self.lock:
            self._start()
            self._watch(outgoing)

    def sent(self, outgoing: Outgoing, sending: Any) -> None:
        """A queued send was written (or failed): finish its Work on the thread."""
        with self.lock:
            outgoing.sending = sending
            self._ready(outgoing)

    def finish_here(self, item: Receive | Outgoing) -> None:
        """Finish ``item`` on this thread (it is done: a send written from this thread)
        instead of handing it to the mailbox's thread; nothing, when that thread already
        claimed it (to fail it)."""
        with self.lock:
            claimed = self._claim(item)
        if claimed:
            self._finish(item)

    def wake(self) -> None:
        """Look again at the peers and the group (one was lost, or the group aborted)."""
        with self.lock:
            self.woken = True
            self.lock.notify_all()

    def close(self, reason: str) -> None:
        """Fail what is still open with ``reason`` and end the thread."""
        with self.lock:
            items = [item for item in list(self.open) if self._claim(item)]
            self.named, self.anywhere, self.ready, self.deadlines = {}, {}, [], []
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

    def _watch(self, item: Receive | Outgoing) -> None:
        """Keep ``item`` open: its deadline and peer are watched (holding ``lock``)."""
        self.open[item] = None
        if len(self.deadlines) > 2 * len(self.open) + 64:  # mostly claimed ones: drop them
            self.deadlines = [entry for entry in self.deadlines if not entry[2].finished]
            heapq.heapify(self.deadlines)
        heapq.heappush(self.deadlines, (item.deadline, next(self.pushes), item))
        if self._reason(item, time.monotonic()) is not None:  # already lost: the thread looks
            self.woken = True
            self.lock.notify_all()

    def _claim(self, item: Receive | Outgoing) -> bool:
        """Take ``item`` to complete it: False when someone else did (holding ``lock``).
        A receive failed while its message arrives leaves the rest of it to a scratch
        buffer, not to the caller's array."""
        if item.finished:
            return False
        item.finished = True
        self.open.pop(item, None)
        message = getattr(item, "message", None)
        if message is not None and message.receive is item and not message.complete:
            message.buffer, message.receive = np.empty(message.total, dtype=np.uint8), None
        return True

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
                    done = [item for item in self.ready if self._claim(item)]
                    self.ready = []
                    now = time.monotonic()
                    failed = self._broken(now) if self.woken else []
                    failed += self._expired(now)
                    if done or failed:
                        break
                    left = self.deadlines[0][0] - now if self.deadlines else 1.0
                    self.lock.wait(min(max(left, 0.0), 1.0))
            for item in done:
                self._finish(item)
            for item, reason in failed:
                self._fail(item, reason)

    def _broken(self, now: float) -> list[tuple[Receive | Outgoing, str]]:
        """Claim every open item that cannot finish: the group aborted or broke, a
        receive's peer is gone, or past the deadline (holding ``lock``; after ``wake``)."""
        self.woken = False
        failed = []
        for item in list(self.open):
            reason = self._reason(item, now)
            if reason is not None and self._claim(item):
                failed.append((item, reason))
        return failed

    def _expired(self, now: float) -> list[tuple[Receive | Outgoing, str]]:
        """Claim the open items past their deadline (holding ``lock``)."""
        failed = []
        while self.deadlines and (self.deadlines[0][2].finished or self.deadlines[0][0] <= now):
            item = heapq.heappop(self.deadlines)[2]
            if self._claim(item):
                failed.append((item, self._reason(item, now) or self._timed_out(item)))
        return failed

    def _reason(self, item: Receive | Outgoing, now: float) -> str | None:
        """Why ``item`` cannot finish, or None. A send is left to its writer, which fails
        when the peer's connection is gone: the peer may read the message and leave before
        the writer reports it written."""
        group = self.group
        if group.abort_reason is not None:
            return f"{item.label}: the group was aborted: {group.abort_reason}"
        if group.broken is not None:
            return f"{item.label}: the group broke ({group.broken})"
        if isinstance(item, Receive):
            peer = _peer(item)
            if peer is not None and group.peers[peer].gone is not None:
                return f"{item.label}: rank {group.ranks[peer]} {group.peers[peer].gone}"
            if peer is None and group.peers and all(p.gone for p in group.peers.values()):
                return f"{item.label}: no rank is left to send it: {'; '.join(self._gone())}"
        if now >= item.deadline:
            return self._timed_out(item)
        return None

    def _gone(self) -> list[str]:
        """``rank 1 closed its connection (...)``: each peer lost, in rank order."""
        peers = self.group.peers
        return [
            f"rank {self.group.ranks[p]} {peers[p].gone}"
            for p in sorted(peers)
            if peers[p].gone is not None
        ]

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
            gone = self._gone()
            lost = f" ({'; '.join(gone)})" if gone else ""
            return f"{item.label}: timed out; no rank sent a message with tag {item.tag}{lost}"
        tags = sorted({t for (s, t), q in self.waiting.items() if s == item.src and q})
        also = f" (messages with tags {tags} from it are waiting here)" if tags else ""
        return (
            f"{item.label}: timed out; rank {group.ranks[item.src]} sent no message with tag "
            f"{item.tag}{also}: it did not call send, or sent with another tag"
        )

    def _finish(self, item: Receive | Outgoing) -> None:
        """Complete ``item``'s Work, which this thread claimed (outside ``lock``)."""
        if isinstance(item, Outgoing):
            if item.sending.error is not None:
                self._fail(
                    item, f"{item.label}: rank {self.group.ranks[item.dst]} {item.sending.error}"
                )
                return
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
        item.work._complete()

    def _fail(self, item: Receive | Outgoing, reason: str, break_group: bool = True) -> None:
        """Complete ``item``'s Work, which this thread claimed, with ``reason``."""
        peer = _peer(item)
        op = "send" if isinstance(item, Outgoing) else "recv"
        rank = None if peer is None else self.group.ranks[peer]
        error = CollectiveError(reason, op=op, rank=rank)
        if break_group:
            self.group._break(reason)
        item.work._complete(error)


def _head(table: dict, key: Any) -> Receive | None:
    """The first unclaimed receive of ``table[key]``, dropping claimed ones before it."""
    queue = table.get(key)
    while queue and queue[0].finished:
        queue.popleft()
    if not queue:
        table.pop(key, None)
        return None
    return queue[0]


def _peer(item: Receive | Outgoing) -> int | None:
    """The group rank ``item`` depends on: its destination, its source, or the rank whose
    message an any-source receive is taking (None while it waits for any)."""
    if isinstance(item, Outgoing):
        return item.dst
    return item.message.src if item.message is not None else item.src
