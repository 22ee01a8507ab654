"""``broadcast_object_list`` and ``all_gather_object``: small objects between ranks, as
JSON — never pickle, so a peer cannot make this process run code."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from dtrain.parallel.api import _group
from dtrain.parallel.collectives import _group_rank, _not_member, broadcast


def _encode(obj: Any) -> np.ndarray:
    try:
        raw = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()
    except TypeError as exc:
        raise TypeError(
            f"objects sent between ranks must be JSON-serialisable (dtrain never pickles): {exc}"
        ) from None
    return np.frombuffer(raw, dtype=np.uint8).copy()


def broadcast_object_list(object_list: list, src: int = 0, group: Any = None) -> None:
    """Replace ``object_list``'s items with global rank ``src``'s (JSON values only).

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("broadcast_object_list")
    payload, error = np.empty(0, np.uint8), None
    if _group_rank(g, src, "src") == g.rank:
        try:
            payload = _encode(object_list)
        except TypeError as exc:
            error = exc
    # -1 tells the others that src cannot send: every rank raises, none waits for the payload.
    size = np.array([payload.size if error is None else -1], dtype=np.int64)
    broadcast(size, src, group)
    if size[0] < 0:
        raise error or TypeError(
            f"broadcast_object_list: rank {src}'s objects are not JSON-serialisable (dtrain "
            "never pickles); send lists, dicts, strings, numbers, booleans and None"
        )
    if payload.size != size[0]:
        payload = np.empty(int(size[0]), dtype=np.uint8)
    broadcast(payload, src, group)
    object_list[:] = json.loads(payload.tobytes().decode())
    return None


def all_gather_object(object_list: list, obj: Any, group: Any = None) -> None:
    """Fill ``object_list[i]`` with rank i's ``obj`` (JSON values only).

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("all_gather_object")
    payload, error = np.empty(0, np.uint8), None
    try:
        payload = _encode(obj)
    except TypeError as exc:
        error = exc
    # A size of -1 marks a rank that cannot send: every rank raises, none waits for it.
    sizes = np.zeros(g.size, dtype=np.int64)
    mine = np.array([payload.size if error is None else -1], dtype=np.int64)
    g.all_gather(sizes, mine, None, async_op=False).wait()
    if (sizes < 0).any():
        bad = [g.ranks[i] for i in np.flatnonzero(sizes < 0)]
        raise error or TypeError(
            f"all_gather_object: the objects of ranks {bad} are not JSON-serialisable (dtrain "
            "never pickles); send lists, dicts, strings, numbers, booleans and None"
        )
    longest = int(sizes.max())
    padded = np.zeros(longest, dtype=np.uint8)
    padded[: payload.size] = payload
    gathered = np.empty(g.size * longest, dtype=np.uint8)
    g.all_gather(gathered, padded, None, async_op=False).wait()
    object_list[:] = [
        json.loads(gathered[i * longest : i * longest + int(sizes[i])].tobytes().decode())
        for i in range(g.size)
    ]
    return None
