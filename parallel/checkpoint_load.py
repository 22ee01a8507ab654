"""``load``: fill a state dict in place from a distributed checkpoint, at any world size.

Every rank reads ``.metadata`` and, for each tensor of its state dict, only the stored
ranges that overlap what it holds: a ``Tensor`` wants elements ``[0, numel)``, a
``ShardedTensor`` its own range ``[offset, offset + n)`` of the row-major flattening; the
bytes come straight from those ranges of the ``.distcp`` files (seek and read, not whole
files). So a checkpoint written by 2 ranks loads on 3, or on 1 into full tensors. Plain
values are replaced in the dict. The ranks then exchange how it went: when any rank failed,
every rank raises.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import numpy as np

from dtrain._tensor.autograd import no_grad
from dtrain._tensor.serialization import safetensors
from dtrain._tensor.serialization.checkpoint import _Decoder, _Placer
from dtrain._tensor.serialization.safetensors import CheckpointError
from dtrain._tensor.tensor import wrap
from dtrain.parallel import checkpoint_fs as fs
from dtrain.parallel.checkpoint_agree import Group
from dtrain.parallel.checkpoint_pending import wait_for_pending
from dtrain.parallel.checkpoint_plan import ARRAYS, key_of, path_id, walk
from dtrain.parallel.sharded_tensor import ShardedTensor


def load(
    state_dict: dict,
    *,
    checkpoint_id: str | os.PathLike | None = None,
    storage_reader: fs.FileSystemReader | None = None,
    planner: Any = None,
    process_group: Any = None,
    no_dist: bool = False,
) -> None:
    """Load a checkpoint written by ``save`` into ``state_dict``, in place (torch's
    ``torch.distributed.checkpoint.load``).

    Each Tensor is overwritten with the stored values and each ShardedTensor's
    ``local_tensor()`` with its range (from whichever stored ranges overlap it, so the
    world size may differ from the save's), cast to its dtype as torch does; plain values
    are replaced in the dict. Keys the checkpoint holds but ``state_dict`` does not are
    ignored. Every file is opened before any is read, so a concurrent save to the same
    directory is either not seen or an error, never mixed in.

    Collective: every rank in the group must call this.

    Args:
        state_dict: the structure to fill, e.g. a fresh model's state dict (``Tensor``
            values share the parameters' memory, so the model is loaded too).
        checkpoint_id: the checkpoint directory.
        storage_reader: a ``FileSystemReader(path)``, another way to give the directory.
        planner: must be None (torch's load planners are not supported).
        process_group: the ranks that load (None: the default group).
        no_dist: load in this process alone, without telling other ranks.

    Raises:
        CheckpointError: the directory is not a dtrain distributed checkpoint, a file of it
            is missing, truncated, corrupted or a symbolic link (the message names the
            path), or a save replaced it while the files were being opened.
        RuntimeError: keys of ``state_dict`` the checkpoint lacks (all of them named).
        ValueError: a tensor whose shape differs from the stored one (named).
        Any of these on every rank when one rank failed.
    """
    path = fs.resolve(checkpoint_id, storage_reader, fs.FileSystemReader, "load")
    wait_for_pending()  # an async_save still writing: read what it writes, not the one before
    if planner is not None:
        raise NotImplementedError("load: planner is not supported by dtrain; pass None")
    group = Group(process_group, "load") if not no_dist else Group.single("load")
    save_id, error = None, None
    try:
        save_id = _load(state_dict, path)
    except BaseException as exc:  # told to every rank; agree re-raises it here
        error = exc
    read = group.agree(save_id, error)
    if len(set(read)) > 1:
        raise CheckpointError(
            f"load: the ranks read different saves of {path} (another job saved there while "
            "they loaded; the state dicts mix the two); load again once no save is running"
        )


def _load(state_dict: dict, path: str) -> str | None:
    """Fill ``state_dict`` from one save; returns that save's id."""
    directory = fs.open_directory(path)
    try:  # every file opened before any data is read: one save, even if path is replaced
        document = fs.read_metadata(path, directory)
        files = _Files(path, directory, document)
    finally:
        os.close(directory)
    try:
        _fill_all(state_dict, path, document, files)
    finally:
        files.close()
    return document.get("save_id")


def _fill_all(state_dict: dict, path: str, document: dict, files: _Files) -> None:
    meta = os.path.join(path, fs.METADATA)
    stored = {path_id(item["path"]): item for item in document["items"]}
    targets = walk(state_dict)
    missing = [key_of(p) for p, _ in targets if path_id(p) not in stored]
    if missing:
        keys = [item.get("key", key_of(item["path"])) for item in document["items"]]
        more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
        raise RuntimeError(
            f"load: the checkpoint {path} holds no {', '.join(missing)}; load a state_dict "
            f"with the saved keys (the checkpoint has {', '.join(keys[:_SHOWN])}{more})"
        )
    for item_path, target in targets:
        item = stored[path_id(item_path)]
        key = key_of(item_path)
        if not isinstance(target, ARRAYS):
            if item["kind"] != "value":
                raise ValueError(
                    f"load: {key} is a {item['dtype']} tensor of shape "
                    f"{tuple(item['shape'])} in the checkpoint but a "
                    f"{type(target).__name__} in state_dict; pass a tensor there"
                )
            _replace(state_dict, item_path, _decode(meta, item["value"]))
            continue
        if item["kind"] == "value":
            raise ValueError(
                f"load: {key} is a plain value in the checkpoint but a "
                f"{type(target).__name__} in state_dict"
            )
        _fill(files, key, item, target)


_SHOWN = 20  # saved keys named in a missing-key error


def _decode(meta: str, node: Any) -> Any:
    return _Decoder(meta, {}, _Placer(meta, None)).decode(node)


def _replace(root: dict, path: list, value: Any) -> None:
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _fill(files: _Files, key: str, item: dict, target: Any) -> None:
    """Copy the stored elements of ``item`` that ``target`` holds into it."""
    shape = tuple(target.shape)
    if shape != tuple(item["shape"]):
        raise ValueError(
            f"load: {key} has shape {tuple(item['shape'])} in the checkpoint but {shape} in "
            "state_dict; build the model with the saved sizes"
        )
    if isinstance(target, ShardedTensor):
        lo, hi = target.offset, target.offset + target.local_tensor().numel()
    else:
        lo, hi = 0, int(np.prod(shape, dtype=np.int64))
    buffer = np.empty(hi - lo, dtype=np.dtype(item["dtype"]))
    done = lo  # elements [lo, done) are read
    for chunk in sorted(item["chunks"], key=lambda c: c["offset"]):
        start, end = max(done, chunk["offset"]), min(hi, chunk["offset"] + chunk["length"])
        if start >= end:
            continue
        if start > done:
            break
        files.read_into(buffer[start - lo : end - lo], chunk, start - chunk["offset"])
        done = end
    if done < hi:
        raise CheckpointError(
            f"{files.path}: no stored range of {key} holds elements [{done}, ...); the "
            "checkpoint is incomplete (its .metadata or files were changed?)"
        )
    if isinstance(target, np.ndarray):
        target[...] = buffer.reshape(shape)  # cast to the target's dtype, as torch's load
        return
    local = target.local_tensor() if isinstance(target, ShardedTensor) else target
    with no_grad():
        local.copy_(wrap(buffer.reshape(local.shape)))  # casts, as torch's load


class _Files:
    """The data files ``document`` names, all opened at once (relative to the checkpoint's
    directory fd); each header is read and checked on first use."""

    def __init__(self, path: str, directory: int, document: dict) -> None:
        self.path = path
        self._fds: dict[str, int | None] = {}  # None: the file is missing
        self._open: dict[str, tuple[BinaryIO, dict, int]] = {}
        names = {c["file"] for item in document["items"] for c in item.get("chunks", ())}
        try:
            for name in sorted(names):
                try:
                    self._fds[name] = fs.open_file(directory, path, name)
                except FileNotFoundError:
                    if os.fstat(directory).st_nlink == 0:
                        raise CheckpointError(
                            f"{path}: replaced by another save while this load opened its "
                            "files (its old directory is gone); load again"
                        ) from None
                    self._fds[name] = None  # an error only if this rank needs it
        except BaseException:
            self.close()
            raise

    def _get(self, name: str) -> tuple[BinaryIO, dict, int]:
        if name not in self._open:
            where = os.path.join(self.path, name)
            fd = self._fds.pop(name)
            if fd is None:
                raise CheckpointError(
                    f"{where}: missing: the checkpoint's .metadata names this file (a file "
                    "was deleted, or the directory was copied only in part)"
                )
            fh = open(fd, "rb")  # noqa: SIM115 - closed in close()
            try:
                size = os.fstat(fh.fileno()).st_size
                entries, _ = safetensors.read_header(fh, where, size)
            except BaseException:
                fh.close()
                raise
            self._open[name] = (fh, {e.name: e for e in entries}, fh.tell())
        return self._open[name]

    def read_into(self, out: np.ndarray, chunk: dict, start: int) -> None:
        """Fill ``out`` (of the dtype .metadata gives) with elements ``[start, start +
        out.size)`` of the chunk's stored array."""
        fh, entries, data = self._get(chunk["file"])
        where = os.path.join(self.path, chunk["file"])
        entry = entries.get(chunk["name"])
        if entry is None:
            raise CheckpointError(
                f"{where}: corrupted: it holds no {chunk['name']!r}, which .metadata names"
            )
        size = int(np.prod(entry.shape, dtype=np.int64))
        if entry.dtype != out.dtype or size != chunk["length"]:
            raise CheckpointError(
                f"{where}: corrupted: {chunk['name']!r} is {entry.dtype} with {size} "
                f"elements but .metadata says {out.dtype} with {chunk['length']}"
            )
        stored = entry.dtype.newbyteorder("<")
        fh.seek(data + entry.begin + start * stored.itemsize)
        if out.dtype == stored:  # read in place: no copy of the bytes
            got = fh.readinto(memoryview(out).cast("B"))
            raw = None
        else:
            raw = fh.read(out.size * stored.itemsize)
            got = len(raw)
        if got != out.size * stored.itemsize:
            raise CheckpointError(f"{where}: truncated while reading {chunk['name']!r}")
        if raw is not None:
            out[...] = np.frombuffer(raw, dtype=stored)

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()
        for fh, _, _ in self._open.values():
            fh.close()
        self._open.clear()


__all__ = ["load"]
