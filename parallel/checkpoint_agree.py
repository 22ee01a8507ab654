"""One step of a distributed checkpoint that every rank must finish: each rank's result
or error goes to every rank (JSON, ``all_gather_object``), and when any rank failed every
rank raises, so none goes on to wait for a rank that gave up. Without an initialized
process group the checkpoint is a one-process one and nothing is exchanged."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.serialization.safetensors import CheckpointError
from dtrain.parallel.api import _group, is_initialized
from dtrain.parallel.objects import all_gather_object

# The exception types a peer's failure is raised as here (others: RuntimeError).
_TYPES = {
    cls.__name__: cls
    for cls in (
        CheckpointError,
        ValueError,
        TypeError,
        KeyError,
        FileExistsError,
        FileNotFoundError,
        NotImplementedError,
    )
}


class Group:
    """The ranks a checkpoint spans: ``rank`` and ``size`` in ``process_group`` (None: the
    default group; no initialized group: one process)."""

    def __init__(self, process_group: Any, what: str) -> None:
        self.group, self.what = process_group, what
        if not is_initialized():
            self.pg, self.rank, self.size = None, 0, 1
            return
        self.pg = _group(process_group)
        if self.pg is None:
            raise RuntimeError(
                f"{what}: this rank is not a member of the process_group it was given; call "
                "it only on the group's ranks"
            )
        self.rank, self.size = int(self.pg.rank), int(self.pg.size)

    @classmethod
    def single(cls, what: str) -> Group:
        """This process alone (torch's ``no_dist=True``)."""
        group = cls.__new__(cls)
        group.group, group.what, group.pg, group.rank, group.size = None, what, None, 0, 1
        return group

    def agree(self, result: Any, error: BaseException | None) -> list:
        """Every rank's ``result`` (index = rank in the group); raises on every rank when
        any rank passed an ``error``: its own error, or the first failed peer's.

        Collective: every rank in the group must call this."""
        mine = {"error": [type(error).__name__, str(error)]} if error else {"ok": result}
        if self.pg is None:
            gathered = [mine]
        else:
            gathered = [None] * self.size
            all_gather_object(gathered, mine, self.group)
        failed = [(r, g["error"]) for r, g in enumerate(gathered) if "error" in g]
        if error is not None:
            raise error
        if failed:
            rank, (kind, message) = failed[0]
            cls = _TYPES.get(kind, RuntimeError)
            others = f" (ranks {[r for r, _ in failed]} failed)" if len(failed) > 1 else ""
            text = f"{self.what}: rank {rank} failed{others}: {kind}: {message}"
            raise cls(text)
        return [g["ok"] for g in gathered]


__all__ = ["Group"]
