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
import errno
import json
import os
import re
import secrets
import shutil
import stat
from typing import Any

import numpy as np

from dtrain._tensor.serialization.checkpoint import _fsync_directory
from dtrain._tensor.serialization.safetensors import CheckpointError, dtype_code

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


def open_directory(path: str) -> int:
    """A file descriptor of the checkpoint directory ``path``: its files opened relative to
    it (``open_file``) all come from one save, even when another save replaces ``path``.

    Raises:
        FileNotFoundError: no such directory.
        CheckpointError: ``path`` is a file.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise FileNotFoundError(f"distributed checkpoint: no directory {path!r}") from None
    except NotADirectoryError:
        raise CheckpointError(
            f"{path}: not a distributed checkpoint: a file, not a directory (a dt.save "
            "checkpoint loads with dt.load)"
        ) from None


def open_file(directory: int, path: str, name: str) -> int:
    """Open the file ``name`` of the checkpoint directory (fd ``directory``, at ``path``)
    for reading; a symbolic link is refused, so a checkpoint reads only its own files.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: it is a symbolic link or not a regular file.
    """
    where = os.path.join(path, name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise CheckpointError(
            f"{where}: a symbolic link; a checkpoint's files must be regular files inside its "
            "directory (copy the target there instead)"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{where}: not a regular file; a checkpoint holds only files")
    return fd


def read_metadata(path: str, directory: int) -> dict:
    """The checked ``.metadata`` document of the checkpoint directory ``path``, opened as
    the file descriptor ``directory`` (``open_directory``).

    Raises:
        CheckpointError: not a dtrain distributed checkpoint, or a corrupted one.
    """
    meta = os.path.join(path, METADATA)
    try:
        fd = open_file(directory, path, METADATA)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: not a distributed checkpoint: it has no {METADATA} file (an "
            "interrupted save never leaves a directory in place; is it the right path?)"
        ) from None
    with open(fd, "rb") as fh:
        raw = fh.read()
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
    try:
        known = dtype_code(np.dtype(dtype)) is not None
    except TypeError:
        known = False
    if not known:
        raise bad(f"{item.get('key')!r} has the dtype {dtype!r}, which safetensors cannot hold")
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


def _check_replaceable(path: str) -> None:
    if os.path.ismount(path):
        raise ValueError(
            f"distributed checkpoint: {path!r} is a mount point, which a save cannot replace "
            "(it writes beside it and swaps the two); save to a directory inside it, e.g. "
            f"{os.path.join(path, 'ckpt')!r}"
        )
    if os.path.lexists(path) and not (
        os.path.isdir(path) and (is_checkpoint(path) or not os.listdir(path))
    ):
        raise FileExistsError(
            f"distributed checkpoint: {path!r} exists and is not a dtrain distributed "
            "checkpoint (nor an empty directory); a save replaces the whole directory, so "
            "remove it or choose another checkpoint_id"
        )


def temporary_sibling(path: str) -> str:
    """Create and return a new hidden directory beside ``path`` for a save in progress
    (beside the target of ``path``'s symbolic links, which the save then replaces).

    Raises:
        FileExistsError: ``path`` exists and is neither an empty directory nor a dtrain
            distributed checkpoint (it would be replaced).
        ValueError: ``path`` is a mount point.
    """
    path = os.path.realpath(path)
    _check_replaceable(path)
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
    """Put the finished, fsynced directory ``tmp`` at ``path`` (at the target of its
    symbolic links): a rename when ``path`` is free, else an atomic exchange (Linux
    ``renameat2``); the parent is fsynced before the previous checkpoint is removed. Where
    exchange is not available the old directory is renamed aside first (a crash between
    the two renames leaves it at ``.<name>.*.old``).

    Raises:
        FileExistsError: something other than a checkpoint appeared at ``path`` meanwhile.
    """
    path = os.path.realpath(path)
    parent = os.path.dirname(path)
    old = None
    if not os.path.lexists(path):
        os.rename(tmp, path)
    else:
        _check_replaceable(path)
        if _exchange(tmp, path):
            old = tmp  # tmp now holds the previous checkpoint
        else:
            old = tmp[: -len(".tmp")] + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
    fsync_directory(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_directory(directory: str) -> None:
    """Make the entries of ``directory`` (files created, renamed) durable."""
    _fsync_directory(directory)


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
    "fsync_directory",
    "is_checkpoint",
    "open_directory",
    "open_file",
    "publish",
    "read_metadata",
    "resolve",
    "temporary_sibling",
    "write_metadata",
]
