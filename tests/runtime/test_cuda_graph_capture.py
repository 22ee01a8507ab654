"""``CUDAGraph.capture_begin`` / ``capture_end`` bookkeeping, with a scripted stand-in for
cupy (tests/gpu captures real steps): the kernels' done-counter of the capture stream is
made before the capture, outside the graph's pool, and zeroed before any replay; the graph
then keeps it, out of the table, so a later stream reusing the handle gets its own."""

from __future__ import annotations

import types

import numpy as np
import pytest

from dtrain.runtime import backend, cublas, cuda_graph
from dtrain.runtime.kernels import build


class _Stream:
    count = 0

    def __init__(self, non_blocking: bool = False) -> None:
        _Stream.count += 1
        self.ptr = 100 + _Stream.count
        self.capturing = False

    def record(self) -> str:
        return "event"

    def wait_event(self, event: str) -> None:
        pass

    def synchronize(self) -> None:
        _log.append(("synchronize", self.ptr))

    def begin_capture(self, mode: int) -> None:
        _log.append(("begin_capture", self.ptr))
        self.capturing = True

    def end_capture(self) -> str:
        _log.append(("end_capture", self.ptr))
        self.capturing = False
        return types.SimpleNamespace(launch=lambda stream: None)

    def __enter__(self) -> _Stream:
        _current.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.pop()


_log: list = []
_current: list = []


class _Allocator:
    def __enter__(self) -> None:
        _log.append(("graph pool on", None))

    def __exit__(self, *exc: object) -> None:
        _log.append(("graph pool off", None))


def _zeros(shape: int, dtype: object) -> np.ndarray:
    _log.append(("zeros", _current[-1].ptr))
    return np.zeros(shape, dtype)


@pytest.fixture
def cupy(monkeypatch):
    _log.clear()
    legacy = _Stream()
    legacy.ptr = 0  # the legacy default stream
    _current[:] = [legacy]
    fake = types.SimpleNamespace(
        zeros=_zeros,
        cuda=types.SimpleNamespace(
            MemoryPool=lambda: types.SimpleNamespace(malloc=None),
            Stream=_Stream,
            get_current_stream=lambda: _current[-1],
            using_allocator=lambda malloc: _Allocator(),
            runtime=types.SimpleNamespace(streamCaptureModeRelaxed=2),
        ),
    )

    class _Device:
        id = 0

        def __init__(self, device: int = 0) -> None:
            pass

        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: object) -> None:
            pass

    fake.cuda.Device = _Device
    monkeypatch.setattr(backend, "_cupy", fake)
    monkeypatch.setattr(build, "_done_counters", {})
    monkeypatch.setattr(cublas, "bind_stream", lambda stream: _log.append(("bind", stream.ptr)))
    return fake


def test_the_capture_stream_gets_its_counter_before_the_capture_and_the_graph_keeps_it(cupy):
    graph = cuda_graph.CUDAGraph()
    graph.capture_begin()
    stream = graph._stream.ptr
    # made on the capture stream, zeroed and waited for, all before the graph's pool and
    # the capture; during the capture the kernels find it
    assert _log[:4] == [
        ("zeros", stream),
        ("synchronize", stream),
        ("graph pool on", None),
        ("bind", stream),
    ]
    assert _log[4] == ("begin_capture", stream)
    found = build.done_counter(cupy, 0)
    assert found is not None and found is build._done_counters[(0, stream)]
    graph.capture_end()
    assert graph._counter is found  # kept alive for the replays
    assert (0, stream) not in build._done_counters  # a stream reusing the handle: its own


def test_a_failed_capture_begin_leaves_the_graph_reusable(cupy, monkeypatch):
    graph = cuda_graph.CUDAGraph()

    def refuse(mode: int) -> None:
        raise RuntimeError("capture refused")

    monkeypatch.setattr(_Stream, "begin_capture", lambda self, mode: refuse(mode))
    with pytest.raises(RuntimeError, match="capture refused"):
        graph.capture_begin()
    assert graph._stream is None and graph._counter is None
    assert not build._done_counters
