"""``Checkpoint``: a directory of files, as Ray Train's (``from_directory``, ``as_directory``,
``to_directory``, ``get_metadata``). dtrain's live on the local (or a shared) file system;
``report`` copies a worker's directory into the run's ``checkpoint_<n>`` folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

_METADATA = ".metadata.json"  # Ray Train's file name for a checkpoint's metadata


class Checkpoint:
    """A directory holding a checkpoint's files (``path``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(os.fspath(path))

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> Checkpoint:
        """The checkpoint whose files are in ``path`` (read when it is reported).

        Raises:
            ValueError: ``path`` is not a directory.
        """
        if not os.path.isdir(path):
            raise ValueError(
                f"Checkpoint.from_directory({os.fspath(path)!r}): not a directory; write the "
                "checkpoint's files into a directory first (e.g. tempfile.TemporaryDirectory())"
            )
        return cls(path)

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copy the files into ``path`` (a new temporary directory when None); returns it."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint_")
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """The checkpoint as a local directory: its own path (it is on the file system
        already), so read it and do not change it."""
        yield self.path

    def get_metadata(self) -> dict[str, Any]:
        """The metadata dict stored with the checkpoint (``{}`` when none)."""
        try:
            with open(os.path.join(self.path, _METADATA), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Store ``metadata`` (JSON: str keys, lists, numbers, str, bool, None) with it."""
        from dtrain.launch.trainer_refs import check_json

        check_json(metadata, "metadata")
        with open(os.path.join(self.path, _METADATA), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle)

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the stored metadata."""
        self.set_metadata({**self.get_metadata(), **metadata})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"
