"""``broadcast_object_list``, ``all_gather_object``, ``gather_object``,
``scatter_object_list``, ``send_object_list`` and ``recv_object_list``: small objects
between ranks, as JSON — never pickle, so a peer
cannot make this process run code. Values JSON would not give back unchanged (tuples,
non-str keys, sets, numpy scalars) are refused, not converted."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from dtrain.parallel.api import _group
from dtrain.parallel.collectives import (
    _group_rank,
    _not_member,
    all_reduce,
    broadcast,
    recv,
    send,
)
from dtrain.parallel.reduce_op import ReduceOp

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


def _broadcast_json(
    obj: Any, src: int, g: Any, name: str, what: str, error: BaseException | None = None
) -> Any:
    """Global rank ``src``'s ``obj`` on every rank of ``g``. When src cannot send it
    (``error``, or a value JSON would change) every rank raises, none waits for it."""
    payload = np.empty(0, np.uint8)
    if _group_rank(g, src, "src") == g.rank and error is None:
        try:
            payload = _encode(obj, f"{name}: {what}")
        except TypeError as exc:
            error = exc
    size = np.array([payload.size], dtype=np.int64)
    if _group_rank(g, src, "src") == g.rank and error is not None:
        # Tells the others that src cannot send, and which error it raised.
        size[0] = -2 if isinstance(error, ValueError) else -1
    broadcast(size, src, g)
    if size[0] == -2:
        raise error or ValueError(
            f"{name}: rank {src} was given wrong arguments (its error says which)"
        )
    if size[0] < 0:
        raise error or TypeError(
            f"{name}: rank {src}'s objects cannot go through JSON unchanged; {_FIX}"
        )
    if payload.size != size[0]:
        payload = np.empty(int(size[0]), dtype=np.uint8)
    broadcast(payload, src, g)
    return json.loads(payload.tobytes().decode())


def broadcast_object_list(
    object_list: list, src: int | None = None, group: Any = None, device: Any = None
) -> None:
    """Replace ``object_list``'s items with global rank ``src``'s (None: 0; JSON values
    only). ``device`` (torch's staging device) is accepted and has no effect: nothing is
    pickled into a tensor.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("broadcast_object_list")
    src = g.ranks[0] if src is None else src
    object_list[:] = _broadcast_json(object_list, src, g, "broadcast_object_list", "object_list")
    return None


def scatter_object_list(
    scatter_object_output_list: list,
    scatter_object_input_list: list | None = None,
    src: int | None = None,
    group: Any = None,
) -> None:
    """Rank i's ``scatter_object_output_list[0]`` becomes global rank ``src``'s
    ``scatter_object_input_list[i]`` (``src`` None: 0; JSON values only).

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("scatter_object_list")
    name = "scatter_object_list"
    if not isinstance(scatter_object_output_list, list) or not scatter_object_output_list:
        raise ValueError(
            f"{name}: scatter_object_output_list must be a non-empty list (its first item "
            f"receives the object), got {scatter_object_output_list!r:.60}"
        )
    src = g.ranks[0] if src is None else src
    error = None
    if _group_rank(g, src, "src") == g.rank:
        given = scatter_object_input_list
        if not isinstance(given, list) or len(given) != g.size:
            error = ValueError(
                f"{name}: scatter_object_input_list on the source rank {src} must be a list "
                f"of one object per rank ({g.size}), got {given!r:.60}"
            )
    objects = _broadcast_json(
        scatter_object_input_list, src, g, name, "scatter_object_input_list", error
    )
    scatter_object_output_list[0] = objects[g.rank]
    return None


def gather_object(
    obj: Any, object_gather_list: list | None = None, dst: int | None = None, group: Any = None
) -> None:
    """Fill global rank ``dst``'s ``object_gather_list[i]`` (``dst`` None: 0) with rank i's
    ``obj`` (JSON values only); the other ranks pass None.

    Collective: every rank in the group must call this."""
    g = _group(group)
    if g is None:
        return _not_member("gather_object")
    dst = g.ranks[0] if dst is None else dst
    at_root = _group_rank(g, dst, "dst") == g.rank
    error = None
    if at_root and (object_gather_list is None or len(object_gather_list) != g.size):
        error = ValueError(
            f"gather_object: object_gather_list on the destination rank {dst} must be a list "
            f"with one slot per rank ({g.size}), e.g. [None] * world_size"
        )
    if not at_root and object_gather_list:
        error = ValueError(
            f"gather_object: object_gather_list must be None on ranks other than the "
            f"destination (global rank {dst}), as in torch.distributed"
        )
    # Every rank learns whether any rank's arguments are wrong, and all raise: none waits.
    wrong = np.array([0 if error is None else 1], dtype=np.int64)
    all_reduce(wrong, ReduceOp.MAX, group)
    if wrong[0]:
        raise error or ValueError(
            "gather_object: another rank was given wrong arguments (its error says which)"
        )
    gathered: list = [None] * g.size
    all_gather_object(gathered, obj, group)
    if at_root:
        object_gather_list[:] = gathered
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


def send_object_list(object_list: list, dst: int, group: Any = None) -> None:
    """Send ``object_list`` (JSON values only) to global rank ``dst``, which takes it with
    ``recv_object_list`` into a list of the same length. A list JSON would change is a
    TypeError here, and ``dst``'s ``recv_object_list`` raises too instead of waiting."""
    payload, error = np.empty(0, np.uint8), None
    try:
        payload = _encode(object_list, "send_object_list: object_list")
    except TypeError as exc:
        error = exc
    send(np.array([-1 if error else payload.size], dtype=np.int64), dst, group)
    if error is not None:
        raise error
    send(payload, dst, group)


def recv_object_list(object_list: list, src: int | None = None, group: Any = None) -> int:
    """Replace ``object_list``'s items with those global rank ``src`` (any when None) sent
    with ``send_object_list``; returns the sender's rank, as torch.distributed's.

    Raises:
        TypeError: the sender's list could not go through JSON (it raised too).
        ValueError: it holds a different number of objects than ``object_list``.
    """
    size = np.empty(1, dtype=np.int64)
    sender = recv(size, src, group)
    if size[0] < 0:
        raise TypeError(
            f"recv_object_list: rank {sender}'s objects cannot go through JSON unchanged; {_FIX}"
        )
    payload = np.empty(int(size[0]), dtype=np.uint8)
    recv(payload, sender, group)
    objects = json.loads(payload.tobytes().decode())
    if len(objects) != len(object_list):
        raise ValueError(
            f"recv_object_list: rank {sender} sent {len(objects)} object(s) but object_list "
            f"has {len(object_list)} slot(s); give both sides lists of the same length"
        )
    object_list[:] = objects
    return sender
