"""A distributed checkpoint's directory: its paths, its ``.metadata`` JSON, and the atomic
swap that puts a finished save in place.

The directory holds one safetensors file per writing rank, ``__<rank>_0.distcp`` (torch's
names), and ``.metadata``: JSON naming, for every key, its global shape and dtype and the
``(file, name, offset, length)`` of each stored range, or its plain value. Nothing in it is
pickled, and it may only name files of the directory itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import secrets
import shutil
from typing import Any

from dtrain._tensor.serialization.checkpoint import _fsync_directory
from dtrain._tensor.serialization.safetensors import CheckpointError

METADATA = ".metadata"
FORMAT = "dtrain-distributed-checkpoint"
VERSION = 1
_DATA_FILE = re.compile(r"__\d+_0\.distcp\Z")


class FileSystemWriter:
    """torch's ``FileSystemWriter(path)``: here only a way to give ``save`` its directory."""

    def __init__(self, path: str | os.PathLike, **options: Any) -> None:
        if options:
            raise NotImplementedError(
                f"FileSystemWriter: options {sorted(options)} are not supported by dtrain; "
                "pass only the path (every rank writes one file, fsynced)"
            )
        self.path = os.fspath(path)


class FileSystemReader:
    """torch's ``FileSystemReader(path)``: here only a way to give ``load`` its directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)


def resolve(checkpoint_id: Any, storage: Any, cls: type, what: str) -> str:
    """The checkpoint directory from ``checkpoint_id`` and/or a ``storage_writer`` /
    ``storage_reader`` of type ``cls``."""
    if storage is not None and not isinstance(storage, cls):
        raise TypeError(
            f"{what}: storage_{'writer' if cls is FileSystemWriter else 'reader'} must be a "
            f"{cls.__name__}, got {type(storage).__name__}"
        )
    if checkpoint_id is None and storage is None:
        raise ValueError(f"{what}: pass checkpoint_id=<directory> (or a {cls.__name__})")
    if checkpoint_id is not None and not isinstance(checkpoint_id, (str, os.PathLike)):
        raise TypeError(
            f"{what}: checkpoint_id must be a directory path, got {type(checkpoint_id).__name__}"
        )
    path = os.fspath(checkpoint_id if checkpoint_id is not None else storage.path)
    if storage is not None and os.path.abspath(storage.path) != os.path.abspath(path):
        raise ValueError(
            f"{what}: checkpoint_id {path!r} and the {cls.__name__}'s path {storage.path!r} "
            "differ; pass one of them"
        )
    return path


def data_file(rank: int) -> str:
    return f"__{rank}_0.distcp"


def write_metadata(directory: str, document: dict) -> None:
    """Write ``.metadata`` into ``directory`` and fsync it."""
    target = os.path.join(directory, METADATA)
    with open(target, "w", encoding="utf-8") as fh:
        json.dump(document, fh, separators=(",", ":"), allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())


def is_checkpoint(path: str) -> bool:
    """Whether ``path`` is a directory holding a dtrain distributed checkpoint's metadata."""
    try:
        with open(os.path.join(path, METADATA), "rb") as fh:
            head = fh.read(200)
    except OSError:
        return False
    return FORMAT.encode() in head


def read_metadata(path: str) -> dict:
    """The checked ``.metadata`` document of the checkpoint directory ``path``.

    Raises:
        FileNotFoundError: no such directory.
        CheckpointError: not a dtrain distributed checkpoint, or a corrupted one.
    """
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise CheckpointError(
                f"{path}: not a distributed checkpoint: a file, not a directory (a dt.save "
                "checkpoint loads with dt.load)"
            )
        raise FileNotFoundError(f"distributed checkpoint: no directory {path!r}")
    meta = os.path.join(path, METADATA)
    try:
        with open(meta, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: not a distributed checkpoint: it has no {METADATA} file (an "
            "interrupted save never leaves a directory in place; is it the right path?)"
        ) from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{meta}: corrupted metadata: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(
            f"{meta}: not a dtrain distributed checkpoint (no format {FORMAT!r}); "
            "torch.distributed.checkpoint's pickled metadata is not read"
        )
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"{meta}: checkpoint format version {document.get('version')!r}; this dtrain "
            f"reads version {VERSION}"
        )
    items = document.get("items")
    if not isinstance(items, list):
        raise CheckpointError(f"{meta}: corrupted metadata: 'items' should be a list")
    for item in items:
        _check_item(meta, item)
    return document


def _check_item(meta: str, item: Any) -> None:
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{meta}: corrupted metadata: {problem}")

    if not isinstance(item, dict) or not isinstance(item.get("path"), list):
        raise bad(f"an item should be an object with a path, got {item!r:.80}")
    if item.get("kind") == "value":
        if "value" not in item:
            raise bad(f"{item.get('key')!r} has no value")
        return
    shape, dtype, chunks = item.get("shape"), item.get("dtype"), item.get("chunks")
    if not isinstance(shape, list) or not all(_count(n) for n in shape):
        raise bad(f"{item.get('key')!r} has shape {shape!r}, not a list of counts")
    if not isinstance(dtype, str) or not isinstance(chunks, list):
        raise bad(f"{item.get('key')!r} needs a dtype and a list of chunks")
    for chunk in chunks:
        if (
            not isinstance(chunk, dict)
            or not isinstance(chunk.get("file"), str)
            or not _DATA_FILE.match(chunk["file"])
            or not isinstance(chunk.get("name"), str)
            or not _count(chunk.get("offset"))
            or not _count(chunk.get("length"))
        ):
            raise bad(
                f"{item.get('key')!r} has the chunk {chunk!r:.120}; a chunk is "
                "{file: '__<rank>_0.distcp', name, offset, length}"
            )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def temporary_sibling(path: str) -> str:
    """Create and return a new hidden directory beside ``path`` for a save in progress.

    Raises:
        FileExistsError: ``path`` exists and is neither an empty directory nor a dtrain
            distributed checkpoint (it would be replaced).
    """
    path = os.path.abspath(path)
    if os.path.lexists(path) and not (
        os.path.isdir(path) and (is_checkpoint(path) or not os.listdir(path))
    ):
        raise FileExistsError(
            f"distributed checkpoint: {path!r} exists and is not a dtrain distributed "
            "checkpoint (nor an empty directory); a save replaces the whole directory, so "
            "remove it or choose another checkpoint_id"
        )
    parent, base = os.path.split(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"distributed checkpoint: the directory {parent!r} of {path!r} does not exist; "
            "create it first (os.makedirs)"
        )
    while True:
        tmp = os.path.join(parent, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            os.mkdir(tmp)
            return tmp
        except FileExistsError:
            continue


def publish(tmp: str, path: str) -> None:
    """Put the finished directory ``tmp`` at ``path``: a rename when ``path`` is free, else
    an atomic exchange (Linux ``renameat2``) and removal of the old one. Where exchange is
    not available the old directory is renamed aside first (a crash between the two
    renames leaves it at ``.<name>.*.old``)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.lexists(path):
        os.rename(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous checkpoint
    else:
        old = tmp[: -len(".tmp")] + ".old"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_directory(parent)


def discard(tmp: str) -> None:
    """Remove an unfinished save's directory."""
    shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically with Linux's renameat2; False where it is unavailable."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        renameat2.argtypes += [ctypes.c_uint]
        at_fdcwd = -100
        return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return False


__all__ = [
    "FORMAT",
    "METADATA",
    "FileSystemReader",
    "FileSystemWriter",
    "data_file",
    "discard",
    "is_checkpoint",
    "publish",
    "read_metadata",
    "resolve",
    "temporary_sibling",
    "write_metadata",
]
