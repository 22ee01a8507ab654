"""The tcp backend's point-to-point mailbox, driven directly: a stand-in group, messages
handed in as a peer's receiver thread would hand them (``target`` then ``landed``)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from dtrain.parallel.backends.frames import DATA, DTYPE_CODES, OP_CODES, Header
from dtrain.parallel.backends.mailbox import Mailbox, Outgoing, Receive
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.process_group import _flat
from dtrain.parallel.work import Work

FAR = 3600.0  # a deadline no test reaches: what fails here fails for another reason
# A deadline that only the code before a fix reaches: it then fails with the wrong message.
LATER = 30.0


class _Group:
    """What the mailbox reads of a TcpGroup: ranks, peers (their ``gone``), abort/broken."""

    def __init__(self, size: int = 2, rank: int = 0) -> None:
        self.rank, self.ranks = rank, list(range(size))
        self.peers = {p: SimpleNamespace(gone=None) for p in range(size) if p != rank}
        self.abort_reason: str | None = None
        self.broken: str | None = None
        self.breaks: list[str] = []

    def _break(self, reason: str) -> None:
        self.breaks.append(reason)  # the real group aborts and wakes the mailbox


class _CountingWork(Work):
    """A Work that records each completion (a Work must complete once)."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.completions: list = []

    def _complete(self, error: BaseException | None = None) -> None:
        self.completions.append(error)
        super()._complete(error)


def _receive(box: Mailbox, into: np.ndarray, src: int | None, tag: int, within: float = FAR):
    flat = _flat(into, keep=False)
    receive = Receive(flat, src, tag, DTYPE_CODES[flat.flat.dtype], time.monotonic() + within)
    sender = "any rank" if src is None else f"rank {src}"
    receive.label = f"recv from {sender} (tag {tag})"
    receive.work = _CountingWork(receive.label)
    receive.work.source = receive.source
    box.post(receive)
    return receive


def _frame(src: int, message: np.ndarray, tag: int, lo: int = 0, hi: int | None = None):
    """Bytes ``lo:hi`` of ``message`` as the frame a send's header describes."""
    raw = message.view(np.uint8)
    hi = raw.size if hi is None else hi
    dtype = DTYPE_CODES[message.dtype]
    header = Header(DATA, OP_CODES["send"], dtype, 0, src, 0, message.size, lo, hi - lo, tag)
    return header, raw[lo:hi]


def _deliver(box: Mailbox, src: int, header: Header, payload: np.ndarray) -> None:
    box.target(src, header)[...] = payload
    box.landed(src, header)


def _outgoing(box: Mailbox, dst: int = 1) -> Outgoing:
    label = f"send to rank {dst} (tag 0)"
    outgoing = Outgoing(_CountingWork(label), dst, time.monotonic() + FAR, label)
    box.watch(outgoing)
    return outgoing


def _error(work: Work) -> str:
    with pytest.raises(CollectiveError) as info:
        work.wait()
    return str(info.value)


def test_many_open_receives_match_in_order_without_scanning_them(monkeypatch):
    """Finishing one of many open items must not look at all the others (that made n open
    operations cost O(n^2)): the full scan runs only after a wake-up."""
    scans = []
    scan = Mailbox._broken
    monkeypatch.setattr(Mailbox, "_broken", lambda self, *a: scans.append(1) or scan(self, *a))
    box = Mailbox(_Group())
    n, tags = 300, 7
    bufs = [np.zeros(2) for _ in range(n)]
    receives = [_receive(box, bufs[i], 1, i % tags) for i in range(n)]
    sends = [_outgoing(box) for _ in range(n)]
    for i in range(n):
        _deliver(box, 1, *_frame(1, np.full(2, float(i)), i % tags))
        if i % 2:
            sends[i].sending = SimpleNamespace(error=None)
            box.finish_here(sends[i])
        else:
            box.sent(sends[i], SimpleNamespace(error=None))
    for receive in receives:
        receive.work.wait()
    for send in sends:
        send.work.wait()
    want = np.repeat(np.arange(n, dtype=np.float64)[:, None], 2, axis=1)
    np.testing.assert_array_equal(np.array(bufs), want)  # each in the order sent, per tag
    assert [r.source["source"] for r in receives] == [1] * n
    assert scans == []
    assert not box.open
    box.close("done")


def test_a_wake_up_fails_what_lost_its_peer_and_nothing_else():
    box = Mailbox(_Group(size=3))
    from_one = _receive(box, np.zeros(2), 1, 0)
    from_two = _receive(box, np.zeros(2), 2, 0)
    from_any = _receive(box, np.zeros(2), None, 0, within=LATER)
    box.group.peers[1].gone = "closed its connection (it exited or was killed)"
    box.wake()
    assert "recv from rank 1 (tag 0): rank 1 closed its connection" in _error(from_one.work)
    # The scan that failed it saw the others: a sender is left for both.
    assert not from_two.work.is_completed() and not from_any.work.is_completed()
    box.close("done")


def test_an_any_source_receive_fails_once_every_sender_is_gone():
    box = Mailbox(_Group(size=3))
    receive = _receive(box, np.zeros(2), None, 4, within=LATER)
    box.group.peers[2].gone = "left the group (destroy_process_group)"
    box.group.peers[1].gone = "closed its connection (it exited or was killed)"
    box.wake()
    message = _error(receive.work)
    assert message.startswith("recv from any rank (tag 4): no rank is left to send it"), message
    assert "rank 1 closed its connection" in message and "rank 2 left the group" in message
    # Posted afterwards, one fails at once too.
    late = _receive(box, np.zeros(2), None, 4, within=LATER)
    assert "no rank is left to send it" in _error(late.work)
    box.close("done")


def test_a_failure_racing_a_finished_send_completes_its_work_once(monkeypatch):
    """The group aborts while a send is written from the caller's thread: the mailbox's
    thread takes the send to fail it, and the caller, done writing, finishes it just then
    (the hook puts it in the worst place: after the thread took it, before it failed it).
    Whoever claimed it first completes it, once."""
    box = Mailbox(_Group())
    outgoing = _outgoing(box)
    hooked = threading.Event()
    fail = Mailbox._fail

    def racing_fail(self, item, reason, break_group=True):
        if item is outgoing:
            outgoing.sending = SimpleNamespace(error=None)  # written after all
            self.finish_here(outgoing)
        fail(self, item, reason, break_group)
        if item is outgoing:
            hooked.set()

    monkeypatch.setattr(Mailbox, "_fail", racing_fail)
    box.group.abort_reason = "rank 1 reported: boom"
    box.wake()
    hooked.wait()
    assert len(outgoing.work.completions) == 1, outgoing.work.completions
    assert "the group was aborted: rank 1 reported: boom" in _error(outgoing.work)
    box.close("done")


def test_a_send_finished_here_is_not_failed_by_a_later_abort():
    box = Mailbox(_Group())
    outgoing = _outgoing(box)
    outgoing.sending = SimpleNamespace(error=None)
    box.finish_here(outgoing)
    box.group.abort_reason = "rank 1 reported: boom"
    sentinel = _receive(box, np.zeros(1), 1, 0)  # fails once the thread looked again
    assert "aborted" in _error(sentinel.work)
    box.finish_here(outgoing)  # a second finish is a no-op
    assert outgoing.work.completions == [None]
    box.close("done")


@pytest.mark.parametrize("how", ["destroyed", "aborted"])
def test_a_failed_receive_no_longer_writes_into_the_callers_array(how):
    box = Mailbox(_Group())
    into = np.zeros(8)
    receive = _receive(box, into, 1, 0)
    message = np.arange(1.0, 9.0)
    _deliver(box, 1, *_frame(1, message, 0, 0, 32))  # the first half lands in place
    if how == "destroyed":
        box.close("the group was destroyed")
    else:
        box.group.abort_reason = "rank 1 reported: boom"
        box.wake()
    _error(receive.work)
    _deliver(box, 1, *_frame(1, message, 0, 32, 64))  # the rest goes elsewhere
    np.testing.assert_array_equal(into, [1, 2, 3, 4, 0, 0, 0, 0])
    assert receive.work.completions[0] is not None and len(receive.work.completions) == 1
    box.close("done")


def test_messages_take_the_earliest_matching_receive_named_or_any():
    box = Mailbox(_Group(size=3))
    bufs = [np.zeros(1) for _ in range(4)]
    first_any = _receive(box, bufs[0], None, 5)
    from_two = _receive(box, bufs[1], 2, 5)
    second_any = _receive(box, bufs[2], None, 5)
    from_one = _receive(box, bufs[3], 1, 5)
    for src, value in ((2, 10.0), (2, 11.0), (1, 12.0), (1, 13.0)):
        _deliver(box, src, *_frame(src, np.array([value]), 5))
    for receive in (first_any, from_two, second_any, from_one):
        receive.work.wait()
    assert [float(b[0]) for b in bufs] == [10.0, 11.0, 12.0, 13.0]
    assert first_any.source == {"source": 2} and second_any.source == {"source": 1}
    box.close("done")
