"""Errors of the distributed layer."""

from __future__ import annotations


class CollectiveError(RuntimeError):
    """A collective failed: a peer died, stalled past the timeout, disagreed on the call,
    or the group was already broken. The message names the op, its sequence number and the
    rank at fault."""

    def __init__(
        self, message: str, op: str | None = None, seq: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(message)
        self.op, self.seq, self.rank = op, seq, rank


class RendezvousError(RuntimeError):
    """The rendezvous store could not be reached, refused us, or timed out."""


class ProcessGroupStateError(RuntimeError, ValueError):
    """The default group is not initialised yet, or already is. torch.distributed raises
    ValueError here; dtrain used RuntimeError: this is both, so either ``except`` works."""
