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
