"""The nccl backend's pieces that need no GPU (the GPU tests are in test_gpu_nccl.py)."""

from __future__ import annotations

import pytest


def test_nccl_unique_id_round_trips_through_store_bytes():
    # cupy 14 hands out bytes, older cupy a tuple of ints; both must come back as given.
    from dtrain.parallel.backends.nccl import _decode_unique_id, _encode_unique_id

    raw = bytes(range(128))
    assert _decode_unique_id(_encode_unique_id(raw)) == raw
    ints = tuple(range(-64, 64))
    assert _decode_unique_id(_encode_unique_id(ints)) == ints
    with pytest.raises(ValueError, match="malformed unique id"):
        _decode_unique_id(b"X123")


def test_host_arrays_are_staged_through_the_gpu(monkeypatch):
    # dtrain's own control messages (barriers, object collectives, DDP's parameter check)
    # are numpy arrays; NCCL moves device memory only. A one-rank stand-in communicator
    # checks it is handed device memory, and the results come back to the host array.
    import sys

    import numpy as np

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    from dtrain.parallel.backends import nccl

    install(monkeypatch, kernels="references")
    cupy = sys.modules["cupy"]
    seen = []

    class OneRank:
        def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 - NCCL's
            seen.append(("all_reduce", send, count))

        def bcast(self, ptr, count, dtype, root, stream):
            seen.append(("broadcast", ptr, count))

    group = nccl.NcclGroup.__new__(nccl.NcclGroup)
    group.device, group.comm = 0, OneRank()
    monkeypatch.setattr(
        nccl,
        "_nccl",
        lambda: __import__("types").SimpleNamespace(
            NCCL_INT64=1,
            NCCL_UINT8=2,
            NCCL_FLOAT32=3,
            NCCL_FLOAT16=4,
            NCCL_FLOAT64=5,
            NCCL_INT32=6,
            NCCL_INT8=7,
            NCCL_SUM=0,
            NCCL_MAX=1,
            NCCL_MIN=2,
            NCCL_PROD=3,
        ),
    )
    monkeypatch.setattr(nccl.NcclGroup, "_run", lambda self, name, seq, deadline, launch: launch(0))
    real = nccl.NcclGroup._on_device
    host = np.arange(4, dtype=np.int64)
    group._all_reduce(host, nccl.ReduceOp.SUM, 0.0, 1)
    group._broadcast(np.zeros(3, np.uint8), 0, 0.0, 2)
    assert [name for name, *_ in seen] == ["all_reduce", "broadcast"]
    assert all(isinstance(ptr, int) for _, ptr, _ in seen) and [c for *_, c in seen] == [4, 3]
    np.testing.assert_array_equal(host, np.arange(4))  # one rank: the sum is itself
    device = cupy.arange(3, dtype=np.float32)
    with real(group, device) as same:
        assert same is device  # device memory is used as it is
    with real(group, host) as copy:
        copy[...] = 7  # what a collective writes lands in the host array
    np.testing.assert_array_equal(host, [7, 7, 7, 7])


class _GroupedComm:
    """A stand-in NCCL communicator of rank ``rank`` of ``size``: it records the calls, and
    refuses a send or receive outside a group call (a real one would block there until the
    peer's matching call, which in a ring is itself waiting: a deadlock). At ``groupEnd`` a
    send to this rank lands in its receive; a receive from another rank gets ``incoming``."""

    def __init__(
        self,
        rank: int,
        size: int,
        incoming: dict | None = None,
        fail: str = "",
        end_fails: bool = False,
    ) -> None:
        self.rank, self.size, self.incoming, self.fail = rank, size, incoming or {}, fail
        self.end_fails = end_fails  # groupEnd raises too, as NCCL does for a failed group
        self.calls: list = []
        self.open = False
        self.pending: list = []

    def group_start(self) -> None:
        self.calls.append("groupStart")
        self.open = True

    def group_end(self) -> None:
        self.calls.append("groupEnd")
        self.open = False
        if self.end_fails:
            raise RuntimeError("NCCL error: the group failed")
        from kernel_signatures import FakeCupyArray

        sent = [
            FakeCupyArray.registry[ptr]
            for kind, ptr, peer in self.pending
            if kind == "send" and peer == self.rank
        ]
        for kind, ptr, peer in self.pending:
            if kind == "recv":
                into = FakeCupyArray.registry[ptr]
                into[...] = sent.pop(0) if peer == self.rank else self.incoming[peer]
        self.pending = []

    def _post(self, kind: str, ptr: int, count: int, peer: int) -> None:
        self.calls.append((kind, peer, count))
        if not self.open:
            raise AssertionError(f"{kind} to {peer} outside a group call: it would block")
        if kind == self.fail:
            raise RuntimeError(f"NCCL error: {kind} failed")
        self.pending.append((kind, ptr, peer))

    def send(self, ptr, count, dtype, peer, stream):
        self._post("send", ptr, count, peer)

    def recv(self, ptr, count, dtype, peer, stream):
        self._post("recv", ptr, count, peer)

    def destroy(self):
        pass


def _stand_in_group(monkeypatch, comm: _GroupedComm):
    """A NcclGroup over ``comm`` on the CUDA emulator, its jobs run as the real ones are
    (the group's executor, ``_run`` polling an event)."""
    import sys
    import types
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    from dtrain.parallel.backends import nccl
    from dtrain.parallel.process_group import ProcessGroup

    install(monkeypatch, kernels="references")
    cupy = sys.modules["cupy"]
    polls = []

    class Event:  # done on the second poll: the batch is on the stream a while
        def __init__(self, **options):
            self.polled = 0

        def record(self, stream):
            polls.append(stream)

        @property
        def done(self):
            self.polled += 1
            return self.polled > 1

    monkeypatch.setattr(cupy.cuda, "Event", Event, raising=False)
    codes = {"FLOAT32": 3, "INT64": 1, "UINT8": 2, "FLOAT16": 4, "FLOAT64": 5, "INT32": 6}
    standin = types.SimpleNamespace(
        groupStart=comm.group_start,
        groupEnd=comm.group_end,
        NCCL_INT8=7,
        **{f"NCCL_{k}": v for k, v in codes.items()},
    )
    monkeypatch.setattr(nccl, "_nccl", lambda: standin)
    group = nccl.NcclGroup.__new__(nccl.NcclGroup)
    ProcessGroup.__init__(group, comm.rank, comm.size, 30.0, list(range(comm.size)))
    group.device, group.comm = 0, comm
    return group, cupy, np, polls


def test_a_ring_batch_is_one_nccl_group(monkeypatch):
    # Rank 1 of 3 sends right (2) and receives from the left (0), receive listed first:
    # both are posted inside one group call, so neither blocks before the other is posted.
    comm = _GroupedComm(1, 3, incoming={0: 10.0})
    group, cupy, np, polls = _stand_in_group(monkeypatch, comm)
    got, sent = cupy.zeros(4, dtype=np.float32), cupy.arange(4, dtype=np.float32)
    works = group._batch_p2p([("recv", got, 0, 0), ("send", sent, 2, 0)], None)
    assert len(works) == 2
    for work in works:
        work.wait()
    assert comm.calls == ["groupStart", ("recv", 0, 4), ("send", 2, 4), "groupEnd"]
    assert len(polls) == 1  # one event for the whole batch
    np.testing.assert_array_equal(cupy.asnumpy(got), np.full(4, 10.0))
    assert works[0].source == {"source": 0}
    group.destroy()


def test_a_batch_to_this_rank_lands_in_place_and_stages_host_arrays(monkeypatch):
    # One rank sends to itself and receives, as the GPU machine's one-rank test does; numpy
    # arrays (and a non-contiguous one) go through device copies and come back.
    comm = _GroupedComm(0, 1)
    group, cupy, np, _ = _stand_in_group(monkeypatch, comm)
    host_send = np.arange(6, dtype=np.int64)
    base = np.zeros((3, 4), dtype=np.int64)
    host_recv = base[:, ::2]  # strided: received through a contiguous copy
    dev_send, dev_recv = cupy.arange(5, dtype=np.float32) * 2, cupy.zeros(5, dtype=np.float32)
    ops = [
        ("recv", host_recv, 0, 0),
        ("send", host_send, 0, 0),
        ("recv", dev_recv, 0, 0),
        ("send", dev_send, 0, 0),
    ]
    for work in group._batch_p2p(ops, None):
        work.wait()
    assert comm.calls == [
        "groupStart",
        ("recv", 0, 6),
        ("send", 0, 6),
        ("recv", 0, 5),
        ("send", 0, 5),
        "groupEnd",
    ]
    # Sends to this rank meet its receives in list order.
    np.testing.assert_array_equal(host_recv, np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(base[:, 1::2], np.zeros((3, 2)))  # the gaps untouched
    np.testing.assert_array_equal(cupy.asnumpy(dev_recv), np.arange(5) * 2)
    np.testing.assert_array_equal(host_send, np.arange(6))  # a send's input stays as it was
    group.destroy()


def test_a_failing_op_still_ends_the_group(monkeypatch):
    import pytest as _pytest

    from dtrain.parallel.errors import CollectiveError

    comm = _GroupedComm(0, 2, incoming={1: 1.0}, fail="recv")
    group, cupy, np, _ = _stand_in_group(monkeypatch, comm)
    ops = [("send", cupy.ones(2, dtype=np.float32), 1, 0)]
    ops.append(("recv", cupy.zeros(2, dtype=np.float32), 1, 0))
    works = group._batch_p2p(ops, None)
    with _pytest.raises(RuntimeError, match="recv failed"):
        works[1].wait()
    assert comm.calls[-1] == "groupEnd" and not comm.open
    with _pytest.raises(CollectiveError, match="broken"):  # the group broke, as on any failure
        group._batch_p2p(ops, None)
    group.destroy()


def test_a_failing_op_keeps_its_error_when_group_end_fails_too(monkeypatch):
    import pytest as _pytest

    comm = _GroupedComm(0, 2, incoming={1: 1.0}, fail="recv", end_fails=True)
    group, cupy, np, _ = _stand_in_group(monkeypatch, comm)
    ops = [("send", cupy.ones(2, dtype=np.float32), 1, 0)]
    ops.append(("recv", cupy.zeros(2, dtype=np.float32), 1, 0))
    works = group._batch_p2p(ops, None)
    with _pytest.raises(RuntimeError, match="recv failed") as info:
        works[1].wait()
    assert "the group failed" in str(info.value.__context__)  # groupEnd's, chained
    assert comm.calls[-1] == "groupEnd" and not comm.open
    group.destroy()
