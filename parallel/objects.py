"""``broadcast_object_list`` and ``all_gather_object``: small objects between ranks, as
JSON — never pickle, so a peer cannot make this process run code. Values JSON would not give
back unchanged (tuples, non-str keys, sets, numpy scalars) are refused, not converted."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from dtrain.parallel.api import _group
from dtrain.parallel.collectives import _group_rank, _not_member, broadcast

_SCALARS = (type(None), bool, int, float, str)  # exact types: subclasses change on the way
_FIX = (
    "send only lists, dicts with str keys, str, int, float, bool and None (dtrain never "
    "pickles); convert first, e.g. list(t) for a tuple, str(k) for a key, x.item() for a "
    "numpy scalar, and convert back on the receiving side"
)


def _check_round_trip(obj: Any, where: str) -> None:
    """Raise TypeError, naming the path, for a value JSON would not give back unchanged
    (a tuple comes back a list, an int key a str key, a set not at all). Iterative: deep
    values must not overflow the stack."""
    todo, seen = [(obj, where)], set()
    while todo:
        value, path = todo.pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind in (list, dict):
            if id(value) in seen:  # shared, or a cycle: json.dumps reports cycles itself
                continue
            seen.add(id(value))
        if kind is list:
            todo.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
            continue
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise TypeError(
                        f"{path} has the {type(key).__name__} key {key!r}, which JSON would "
                        f"turn into the string {str(key)!r}; {_FIX}"
                    )
                todo.append((item, f"{path}[{key!r}]"))
            continue
        change = {tuple: "a list", float: "a float", int: "an int", str: "a str"}
        became = next((v for t, v in change.items() if isinstance(value, t)), None)
        fate = f"JSON would turn it into {became}" if became else "JSON cannot carry it"
        raise TypeError(f"{path} is a {kind.__name__} ({value!r:.60}): {fate}; {_FIX}")


def _encode(obj: Any, where: str) -> np.ndarray:
    _check_round_trip(obj, where)
    try:
        raw = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()
    except ValueError as exc:  # a circular reference
        raise TypeError(f"{where} cannot go through JSON: {exc}") from None
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
            payload = _encode(object_list, "broadcast_object_list: object_list")
        except TypeError as exc:
            error = exc
    # -1 tells the others that src cannot send: every rank raises, none waits for the payload.
    size = np.array([payload.size if error is None else -1], dtype=np.int64)
    broadcast(size, src, group)
    if size[0] < 0:
        raise error or TypeError(
            f"broadcast_object_list: rank {src}'s objects cannot go through JSON unchanged; {_FIX}"
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
        payload = _encode(obj, "all_gather_object: obj")
    except TypeError as exc:
        error = exc
    # A size of -1 marks a rank that cannot send: every rank raises, none waits for it.
    sizes = np.zeros(g.size, dtype=np.int64)
    mine = np.array([payload.size if error is None else -1], dtype=np.int64)
    g.all_gather(sizes, mine, None, async_op=False).wait()
    if (sizes < 0).any():
        bad = [g.ranks[i] for i in np.flatnonzero(sizes < 0)]
        raise error or TypeError(
            f"all_gather_object: the objects of ranks {bad} cannot go through JSON unchanged; "
            f"{_FIX}"
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
