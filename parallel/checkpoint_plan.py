"""What a distributed checkpoint stores: a state dict cut into items, and who writes each.

A state dict (nested dicts and lists) is walked down to its *items*: every ``Tensor``,
``ShardedTensor`` and numpy array, and every other value or container that holds no array
(an optimizer's ``param_groups``, a step count) as one plain value. An item is named by its
*path*, the list of keys and list positions that lead to it (``["model", "fc.weight"]``);
its *key* is the path joined by dots, as torch's flattened state dicts name them.

Each rank describes its items as JSON (``describe``); every rank gets every rank's
descriptions and runs the same ``assign``, so all agree on which rank writes what without
another round: a range (a whole tensor is the range ``[0, numel)``) that several ranks
hold is written once, by the holder with the fewest bytes assigned so far (torch's
de-duplication balances the same way); plain values come from the lowest rank holding them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dtrain._tensor.serialization.checkpoint import _Encoder
from dtrain._tensor.serialization.safetensors import dtype_code
from dtrain._tensor.tensor import Tensor
from dtrain.parallel.sharded_tensor import ShardedTensor

ARRAYS = (Tensor, ShardedTensor, np.ndarray)


def key_of(path: list) -> str:
    """The dotted name of a path (``["optim", "state", "fc.weight", "exp_avg"]`` ->
    ``"optim.state.fc.weight.exp_avg"``)."""
    return ".".join(str(k) for k in path)


def path_id(path: list) -> str:
    """A path as an exact dictionary key (dots inside keys cannot make two paths collide)."""
    return json.dumps(path, separators=(",", ":"))


def _holds_arrays(node: Any) -> bool:
    todo, seen = [node], set()
    while todo:
        value = todo.pop()
        if isinstance(value, ARRAYS):
            return True
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in seen:  # shared or cyclic: its contents are already queued
                continue
            seen.add(id(value))
            todo.extend(value.values() if isinstance(value, Mapping) else value)
    return False


def walk(state_dict: Mapping) -> list[tuple[list, Any]]:
    """``(path, item)`` for every item of ``state_dict``, in the dict's order.

    Dicts (str or int keys) and lists are walked into while they hold an array; a tuple
    holding an array is a TypeError (a loaded one could not be filled in place), a
    container that holds itself a ValueError.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"distributed checkpoint: state_dict must be a dict, got {type(state_dict).__name__}"
        )
    items: list[tuple[list, Any]] = []
    # (path, node, ids of the containers above it): a node among them is a cycle
    todo: list[tuple[list, Any, frozenset]] = [([], state_dict, frozenset())]
    while todo:
        path, node, above = todo.pop()
        if isinstance(node, ARRAYS) or (path and not _holds_arrays(node)):
            items.append((path, node))
            continue
        if id(node) in above:
            raise ValueError(
                f"distributed checkpoint: {key_of(path)} contains itself (a container "
                "inside itself); break the cycle, a state dict must be a tree"
            )
        above = above | {id(node)}
        if isinstance(node, Mapping):
            children = []
            for key, value in node.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(
                        f"distributed checkpoint: {key_of(path) or 'state_dict'} has the key "
                        f"{key!r} of type {type(key).__name__}; keys must be str or int"
                    )
                children.append((path + [key], value, above))
        elif isinstance(node, list):
            children = [(path + [i], value, above) for i, value in enumerate(node)]
        else:
            raise TypeError(
                f"distributed checkpoint: {key_of(path)} is a {type(node).__name__} holding "
                "tensors; use a list or a dict (a tuple cannot be loaded in place)"
            )
        todo.extend(reversed(children))
    return items


def dtype_name(item: Any) -> str:
    """The numpy dtype name of an array item (``"float32"``)."""
    if isinstance(item, ShardedTensor):
        item = item.local_tensor()
    array = item._array if isinstance(item, Tensor) else item
    return np.dtype(array.dtype).name


def describe(path: list, item: Any) -> dict:
    """One item as JSON: ``kind`` (tensor, sharded, ndarray or value), and for arrays the
    global ``shape``, ``dtype`` and the stored range ``offset``/``length``."""
    where = key_of(path)
    if isinstance(item, ShardedTensor):
        kind, shape, offset, length = (
            "sharded",
            item.shape,
            item.offset,
            item.local_tensor().numel(),
        )
    elif isinstance(item, (Tensor, np.ndarray)):
        kind = "tensor" if isinstance(item, Tensor) else "ndarray"
        shape, offset, length = tuple(item.shape), 0, int(math.prod(item.shape))
    else:
        encoder = _Encoder()
        return {"path": path, "kind": "value", "value": encoder.encode(item, where)}
    dtype = dtype_name(item)
    if dtype_code(np.dtype(dtype)) is None:
        raise TypeError(
            f"distributed checkpoint: {where} has dtype {dtype}, which safetensors cannot "
            "hold; convert it first"
        )
    return {
        "path": path,
        "kind": kind,
        "shape": [int(n) for n in shape],
        "dtype": dtype,
        "offset": int(offset),
        "length": int(length),
    }


def assign(plans: list[list[dict]]) -> tuple[list[list[int]], dict[str, dict]]:
    """Decide who writes what, from every rank's ``describe`` list (index = rank).

    Returns:
        For each rank, the indices of its own items it writes; and for each path id the
        merged entry: ``key``, ``path``, ``kind`` and either ``value`` or ``shape``,
        ``dtype`` and ``ranges`` (``[offset, length, rank]`` per written range).

    Raises:
        ValueError: ranks disagree on an item's shape, dtype or kind, or the ranges of a
            tensor leave some of its elements unwritten.
    """
    entries: dict[str, dict] = {}
    holders: dict[tuple, list[tuple[int, int]]] = {}  # (path id, offset, length) -> (rank, i)
    for rank, plan in enumerate(plans):
        for i, item in enumerate(plan):
            pid = path_id(item["path"])
            entry = entries.get(pid)
            if entry is None:
                entry = entries[pid] = {"key": key_of(item["path"]), **item, "ranges": []}
                entry.pop("offset", None), entry.pop("length", None)
                if item["kind"] == "value":
                    del entry["ranges"]
            elif (entry["kind"] == "value") != (item["kind"] == "value") or (
                item["kind"] != "value"
                and (entry["shape"], entry["dtype"]) != (item["shape"], item["dtype"])
            ):
                raise ValueError(
                    f"distributed checkpoint: ranks disagree on {entry['key']}: "
                    f"{_what(entry)} on one rank, {_what(item)} on rank {rank}; every rank "
                    "must pass the same structure"
                )
            if item["kind"] != "value":
                holders.setdefault((pid, item["offset"], item["length"]), []).append((rank, i))
    written: list[list[int]] = [[] for _ in plans]
    load = [0] * len(plans)
    # Largest first, each to the least loaded of its holders: the bytes spread evenly.
    order = sorted(
        holders.items(),
        key=lambda kv: -kv[0][2] * np.dtype(entries[kv[0][0]]["dtype"]).itemsize,
    )
    for (pid, offset, length), ranks in order:
        rank, i = min(ranks, key=lambda ri: (load[ri[0]], ri[0]))
        written[rank].append(i)
        load[rank] += length * np.dtype(entries[pid]["dtype"]).itemsize
        entries[pid]["ranges"].append([offset, length, rank])
    for entry in entries.values():
        if entry["kind"] != "value":
            entry["ranges"].sort()
            _check_covered(entry)
    for own in written:
        own.sort()
    return written, entries


def _what(item: dict) -> str:
    if item["kind"] == "value":
        return "a plain value"
    return f"a {item['dtype']} tensor of shape {tuple(item['shape'])}"


def _check_covered(entry: dict) -> None:
    total, end = math.prod(entry["shape"]), 0
    for offset, length, _ in entry["ranges"]:
        if offset > end:
            break
        end = max(end, offset + length)
    if end < total:
        raise ValueError(
            f"distributed checkpoint: no rank holds elements [{end}, ...) of {entry['key']} "
            f"(shape {tuple(entry['shape'])}, {total} elements); the ShardedTensor ranges of "
            "all ranks together must cover the tensor"
        )


__all__ = ["ARRAYS", "assign", "describe", "dtype_name", "key_of", "path_id", "walk"]
