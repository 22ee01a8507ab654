"""``save``: every rank writes its pieces of a state dict into one checkpoint directory.

The steps, each closed by an exchange in which a failure on any rank makes every rank
raise (``checkpoint_agree``):

1. every rank describes its items; rank 0 creates a hidden sibling directory
   ``.<name>.<random>.tmp`` for the save;
2. every rank runs the same assignment (``checkpoint_plan.assign``) and writes the items
   it was given to ``__<rank>_0.distcp`` (a safetensors file) in that directory, fsynced;
3. rank 0 writes ``.metadata`` last, fsyncs the directory and puts it in place of
   ``checkpoint_id`` (``checkpoint_fs.publish``), then tells every rank how it went.

Until step 3 the previous checkpoint at ``checkpoint_id`` is untouched, so a save that
fails or is killed part way leaves it loadable (and at worst a hidden ``.tmp`` directory).
All ranks must see the same file system, as with torch's ``FileSystemWriter``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import numpy as np

from dtrain._tensor.serialization import safetensors
from dtrain._tensor.tensor import Tensor
from dtrain.parallel import checkpoint_fs as fs
from dtrain.parallel.checkpoint_agree import Group
from dtrain.parallel.checkpoint_pending import wait_for_pending
from dtrain.parallel.checkpoint_plan import assign, describe, key_of, path_id, walk
from dtrain.parallel.sharded_tensor import ShardedTensor
from dtrain.runtime.device import as_numpy


def save(
    state_dict: dict,
    *,
    checkpoint_id: str | os.PathLike | None = None,
    storage_writer: fs.FileSystemWriter | None = None,
    planner: Any = None,
    process_group: Any = None,
    no_dist: bool = False,
) -> dict:
    """Save ``state_dict`` into the directory ``checkpoint_id``, each rank writing its own
    pieces (torch's ``torch.distributed.checkpoint.save``).

    Every ``ShardedTensor`` range and every tensor is written once: a tensor or range that
    several ranks hold (a replicated parameter) by one of them, spread so each writes about
    as many bytes. Plain values are taken from the lowest rank that holds them. The save is
    atomic: an existing checkpoint at ``checkpoint_id`` is replaced only once every rank
    has written its file.

    Collective: every rank in the group must call this.

    Args:
        state_dict: nested dicts and lists of Tensor, ShardedTensor, numpy arrays and plain
            values (what ``dt.save`` takes), with the same structure on every rank.
        checkpoint_id: the checkpoint directory (created; an existing checkpoint or empty
            directory there is replaced).
        storage_writer: a ``FileSystemWriter(path)``, another way to give the directory.
        planner: must be None (torch's save planners are not supported).
        process_group: the ranks that save (None: the default group; without an
            initialized group, this process alone).
        no_dist: save from this process alone, even when a group is initialized.

    Returns:
        The checkpoint's metadata (the ``.metadata`` document), on every rank.

    Raises:
        ValueError, TypeError: the state dict cannot be saved (a cycle, a set, ...), ranks
            disagree on it, or ``checkpoint_id`` is a mount point.
        FileExistsError: ``checkpoint_id`` is something other than a checkpoint.
        RuntimeError: a rank failed to write (on every rank; the message names it).
    """
    path = fs.resolve(checkpoint_id, storage_writer, fs.FileSystemWriter, "save")
    wait_for_pending()  # an async_save still writing: this later save must land after it
    check_planner(planner, "save")
    group = Group(process_group, "save") if not no_dist else Group.single("save")
    return write(state_dict, path, group)


def check_planner(planner: Any, what: str) -> None:
    """Refuse a save planner (``what``: the caller's name)."""
    if planner is not None:
        raise NotImplementedError(f"{what}: planner is not supported by dtrain; pass None")


def write(state_dict: dict, path: str, group: Group, failed: BaseException | None = None) -> dict:
    """The three steps of ``save`` into the directory ``path`` over ``group``; ``failed``:
    this rank has already failed (``async_save``'s staging), so every rank raises in step 1.

    Collective: every rank in the group must call this."""
    items, plan, tmp, error = [], [], None, None
    try:  # every path out of here removes rank 0's unfinished directory
        try:
            if failed is not None:
                raise failed
            items = walk(state_dict)
            plan = [describe(p, v) for p, v in items]
            if group.rank == 0:
                tmp = fs.temporary_sibling(path)
        except BaseException as exc:  # told to every rank; agree re-raises it here
            error = exc
        plans = group.agree({"plan": plan, "tmp": tmp}, error)
        target = plans[0]["tmp"]
        chunks, error = [], None
        try:
            written, entries = assign([p["plan"] for p in plans])
            chunks = _write_rank_file(target, group.rank, items, written[group.rank])
        except BaseException as exc:
            error = exc
        every = group.agree(chunks, error)
        document, error = None, None
        if group.rank == 0:
            try:
                document = _metadata(entries, every, group.size)
                fs.write_metadata(tmp, document)
                fs.fsync_directory(tmp)  # every rank's file entry and .metadata's
                fs.publish(tmp, path)
                tmp = None
            except BaseException as exc:
                error = exc
        outcome = group.agree(document, error)
    finally:
        if tmp is not None:  # only rank 0 holds one
            fs.discard(tmp)
    return outcome[0]


def _write_rank_file(directory: str, rank: int, items: list, mine: list[int]) -> list:
    """Write this rank's share of the items to ``__<rank>_0.distcp``; returns its chunks as
    ``[path id, offset, length, name in the file]``."""
    arrays: dict[str, np.ndarray] = {}
    chunks = []
    for i in mine:
        path, value = items[i]
        key = key_of(path)
        if isinstance(value, ShardedTensor):
            offset, length = value.offset, value.local_tensor().numel()
            array, name = (
                as_numpy(value.local_tensor()._array),
                f"{key}[{offset}:{offset + length}]",
            )
        else:
            array = as_numpy(value._array) if isinstance(value, Tensor) else value
            offset, length, name = 0, int(array.size), key
        unique, k = name, 2
        while unique in arrays or unique == safetensors.METADATA:
            unique, k = f"{name}#{k}", k + 1
        arrays[unique] = array
        chunks.append([path_id(path), offset, length, unique])
    if arrays:
        target = os.path.join(directory, fs.data_file(rank))
        with open(target, "xb") as fh:
            safetensors.write(fh, arrays, {"format": fs.FORMAT})
            fh.flush()
            os.fsync(fh.fileno())
        fs.fsync_directory(directory)  # the file's entry (rank 0 does it again, last)
    return chunks


def _metadata(entries: dict, every: list, world_size: int) -> dict:
    """The ``.metadata`` document: every entry with its chunks (file, name, offset, length)."""
    chunks: dict[str, list] = {}
    for rank, own in enumerate(every):
        for pid, offset, length, name in own:
            chunks.setdefault(pid, []).append(
                {"file": fs.data_file(rank), "name": name, "offset": offset, "length": length}
            )
    items = []
    for pid, entry in entries.items():
        entry = {k: v for k, v in entry.items() if k != "ranges"}
        if entry["kind"] != "value":
            entry["chunks"] = sorted(chunks.get(pid, []), key=lambda c: c["offset"])
        items.append(entry)
    return {
        "format": fs.FORMAT,
        "version": fs.VERSION,
        "world_size": world_size,
        "save_id": secrets.token_hex(8),  # lets the ranks of a load check they read one save
        "items": items,
    }


__all__ = ["check_planner", "save", "write"]
