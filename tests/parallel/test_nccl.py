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
